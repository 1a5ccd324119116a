"""One measurement in a fresh process: ``python -m benchmarks.child SPEC.json``.

Imports the contender, loads inputs and performs setup (untimed), then times
exactly one operation with ``time.perf_counter``, records its peak memory and
computes check values (untimed) that the parent compares with the expected ones.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 2**20


def _quiet_warnings() -> None:
    """Silence library deprecation noise (minimalkv, plateau, dask, pandas)."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("ignore", message=".*inplace keyword.*")


def _rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    """Peak RSS per getrusage (KiB on Linux).

    Caveat: after fork+exec the kernel seeds it with the parent's RSS, and
    clear_refs does not reset it, so it is only the fallback.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _hwm_bytes() -> int | None:
    """This process's own RSS high-water mark (VmHWM), or None without /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_bytes() -> int:
    """VmHWM if available, else ru_maxrss."""
    hwm = _hwm_bytes()
    return _maxrss_bytes() if hwm is None else hwm


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _count_data_files(path: str) -> int:
    """Parquet data files under ``path`` (Delta log checkpoints excluded)."""
    count = 0
    for _root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        count += sum(1 for name in files if name.endswith(".parquet"))
    return count


def _frame_check(frame: Any) -> dict[str, Any]:
    """Row count, product_id checksum and column names of a result frame."""
    return {
        "rows": len(frame),
        "product_id_sum": int(frame["product_id"].sum()),
        "columns": sorted(str(c) for c in frame.columns),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute one spec and return the result record (never raises)."""
    _quiet_warnings()
    out: dict[str, Any] = {"status": "error"}
    try:
        from benchmarks.contenders import Unsupported, load
        from benchmarks.workloads import Params

        contender = load(spec["contender"])
        out["baseline_after_imports_mib"] = _peak_bytes() / MIB
        params = Params.from_json(spec["params"])
        op, check = _prepare(contender, spec, params)
        gc.collect()
        reset = _reset_peak() and _hwm_bytes() is not None
        # Without a resettable VmHWM: peak minus the after-import baseline.
        before = _rss_bytes() if reset else int(out["baseline_after_imports_mib"] * MIB)
        start = time.perf_counter()
        result = op()
        seconds = time.perf_counter() - start
        out["peak_mib"] = max(0, _peak_bytes() - before) / MIB
        out["memory_method"] = "vmhwm-reset" if reset else "peak-minus-baseline"
        out["rss_before_mib"] = before / MIB
        out["seconds"] = seconds
        out["check"] = check(result)
        out["status"] = "ok"
    except Unsupported as exc:
        out.update(status="unsupported", error_type=type(exc).__name__, error=str(exc))
    except NotImplementedError as exc:
        out.update(status="not_implemented", error_type=type(exc).__name__, error=str(exc))
    except BaseException as exc:  # report every failure, never crash the runner
        out.update(
            status="error",
            error_type=type(exc).__name__,
            error=str(exc)[:2000],
            traceback=traceback.format_exc()[-4000:],
        )
    return out


def _prepare(
    contender: Any, spec: dict[str, Any], params: Any
) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
    """Untimed setup for the workload; return (timed operation, check)."""
    from benchmarks.data import read_ipc

    def load_input(name: str) -> Any:
        table = read_ipc(params.inputs[name])
        return table.to_pandas() if spec["input_format"] == "pandas" else table

    key: str = spec["workload"]
    path: str = spec["path"]
    base: str | None = spec.get("base")

    def rows_check(_: Any) -> dict[str, Any]:
        return {"rows": contender.count_rows(path)}

    if key in ("W1", "W5-write"):
        data = load_input("main" if key == "W1" else "w5")
        partition_on = ["date"] if key == "W1" else ["part"]
        os.makedirs(path, exist_ok=True)
        return (lambda: contender.write(data, path, partition_on)), rows_check
    if key == "W7":
        garbage, replacement = load_input("w7_garbage"), load_input("w7_replacement")
        os.makedirs(path, exist_ok=True)
        contender.make_garbage(garbage, replacement, path, "part")
        del garbage, replacement
        files_before = _count_data_files(path)

        def gc_check(_: Any) -> dict[str, Any]:
            removed = files_before - _count_data_files(path)
            return {"removed": removed, "rows": contender.count_rows(path)}

        return (lambda: contender.gc(path)), gc_check
    assert base is not None, f"{key} needs a base dataset"
    if key == "W2":
        return (lambda: contender.read_all(base)), _frame_check
    if key == "W3":

        def w3_check(frame: Any) -> dict[str, Any]:
            return _frame_check(frame) | {
                "dates": sorted({str(v) for v in frame["date"].unique()}),
                "store_ids": sorted({int(v) for v in frame["store_id"].unique()}),
            }

        return (
            lambda: contender.read_selective(base, params.w3_date, params.w3_store_ids)
        ), w3_check
    if key == "W4":
        shutil.copytree(base, path)
        data = load_input("append")
        return (lambda: contender.append(data, path)), rows_check
    if key == "W5-open":
        return (lambda: contender.open(base)), lambda h: {
            "partitions": contender.count_partitions(h)
        }
    if key == "W5-read":
        return (lambda: contender.read_one_partition(base, params.w5_predicate)), _frame_check
    raise ValueError(f"unknown workload {key!r}")


def main(argv: list[str] | None = None) -> int:
    """Read the spec file named on the command line, write the result file."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    result = run(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
