"""Benchmark runner: ``python -m benchmarks.run [--rows N] [--reps K] [--workloads ...]``.

Builds the data once, then times every (workload, repetition, contender) in its
own subprocess (see :mod:`benchmarks.child`), alternating contenders, verifies
each result and writes a Markdown report (plus optional JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.contenders import CONTENDERS
from benchmarks.workloads import (
    CONNECT_RTTS,
    WORKLOADS,
    Params,
    expand,
    split_entry,
    split_rtt,
    with_rtts,
    workload,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.md"
PACKAGES = (
    "pyarrow",
    "pandas",
    "numpy",
    "deltalake",
    "plateau",
    "minimalkv",
    "dask",
    "distributed",
    "azure-storage-blob",
    "dataset-kit",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="W1 rows (default 10M)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--workloads", default="all", help="e.g. W1,W2,W5 (W5 = all three)")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"from {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report path")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--w5-partitions", type=int, default=20_000)
    parser.add_argument("--w5-rows-per-partition", type=int, default=10)
    parser.add_argument("--w7-blobs", type=int, default=2_000)
    parser.add_argument("--w8-partitions", type=int, default=200, help="W8 partitions")
    parser.add_argument("--w8-rows-per-partition", type=int, default=50_000)
    parser.add_argument("--w9-blobs", type=int, default=10_000, help="W9 unreferenced blobs")
    parser.add_argument(
        "--w9-azure-blobs",
        type=int,
        default=2_000,
        help="W9-azure unreferenced blobs (in-memory Azurite slows down as blobs pile up)",
    )
    parser.add_argument("--w10-partitions", type=int, default=1_000, help="W10 partitions")
    parser.add_argument("--w10-rows-per-partition", type=int, default=1_000)
    parser.add_argument(
        "--azurite",
        action="store_true",
        help="also run the Azurite workloads (W9-azure, W10-azure*); each of their "
        "measurements starts its own in-memory Azurite (node + .cache/azurite, see "
        "dataset_kit.testing.azurite)",
    )
    parser.add_argument(
        "--azurite-rtt-ms",
        type=rtt_list,
        default=[],
        metavar="MS[,MS...]",
        help="implies --azurite; e.g. 0,5,20: also run every selected Azurite workload "
        "K as K-rtt<MS>, its timed operation going through a proxy that adds an MS ms "
        "network round trip (benchmarks/latency_proxy.py); setup and checks stay direct",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per child, seconds")
    parser.add_argument(
        "--prefault-mib",
        type=int,
        default=2048,
        help="each child touches and frees this much memory just before its timed "
        "operation, or 1.1x the largest peak measured so far in the workload if more (0: "
        "off); in a VM that hands freed memory back to its host, the first touch of "
        "memory otherwise costs 0.02-2.5 s per GiB at random",
    )
    parser.add_argument(
        "--max-rep-seconds",
        type=float,
        default=None,
        help="skip further repetitions of a contender/workload after one took longer",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--input",
        choices=("native", "pandas"),
        default="native",
        help="native: Arrow for pyarrow/deltalake, pandas for the others; pandas: everyone",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    args = parser.parse_args(argv)
    if args.rows < 30 or args.reps < 1 or args.w5_partitions < 2 or args.w7_blobs < 1:
        parser.error("need --rows >= 30, --reps >= 1, --w5-partitions >= 2, --w7-blobs >= 1")
    sizes = (args.w8_partitions, args.w8_rows_per_partition, args.w9_blobs, args.w9_azure_blobs)
    if min(*sizes, args.w10_partitions, args.w10_rows_per_partition) < 1:
        parser.error("the W8-W10 sizes must be >= 1")
    if args.azurite_rtt_ms:
        args.azurite = True
    return args


def rtt_list(text: str) -> list[float]:
    """``"0,5,20"`` -> ``[0.0, 5.0, 20.0]`` (sorted, duplicates dropped)."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of milliseconds: {text!r}") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"need round trips >= 0 ms, got {text!r}")
    return values


def build_inputs(args: argparse.Namespace, data_dir: Path, workloads: list[str]) -> Params:
    """Generate the inputs of ``workloads`` once (Arrow IPC files) and the expected values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from benchmarks import data

    data_dir.mkdir(parents=True)
    need = {split_rtt(k)[0] for k in workloads}  # a -rtt<N> variant needs its workload's
    append_rows = max(1, args.rows // len(data.DATES))
    w5_target = args.w5_partitions // 2 + 7
    params = Params(
        rows=args.rows,
        append_rows=append_rows,
        w5_partitions=args.w5_partitions,
        w5_rows_per_partition=args.w5_rows_per_partition,
        w7_blobs=args.w7_blobs,
        w7_rows_per_blob=5,
        w3_date=data.W3_DATE,
        w3_store_ids=list(data.W3_STORE_IDS),
        w5_predicate=[[("part", "==", w5_target)]],
        w8_partitions=args.w8_partitions,
        w8_rows_per_partition=args.w8_rows_per_partition,
        w9_blobs=args.w9_blobs,
        w9_azure_blobs=args.w9_azure_blobs,
        w10_partitions=args.w10_partitions,
        w10_rows_per_partition=args.w10_rows_per_partition,
    )
    columns = sorted(data.W1_COLUMNS)

    def save(name: str, table: Any) -> None:
        path = data_dir / f"{name}.arrow"
        data.write_ipc(table, path)
        params.inputs[name] = str(path)

    if need & {"W1", "W2", "W3", "W4", "W6"}:
        main = data.make_frame(args.rows, args.seed)
        save("main", main)
        mask = pc.and_(
            pc.equal(main["date"], params.w3_date),
            pc.is_in(main["store_id"], value_set=pa.array(params.w3_store_ids, pa.int64())),
        )
        w3 = main.filter(mask)
        total = pc.sum(main["product_id"]).as_py()
        params.expected["W1"] = {"rows": args.rows}
        params.expected["W2"] = {"rows": args.rows, "product_id_sum": total, "columns": columns}
        params.expected["W3"] = {
            "rows": w3.num_rows,
            "product_id_sum": pc.sum(w3["product_id"]).as_py() or 0,
            "columns": columns,
            "dates": [params.w3_date] if w3.num_rows else [],
            "store_ids": sorted(set(w3["store_id"].to_pylist())),
        }
        params.expected["W6"] = {
            "rows": args.rows,
            "product_id_sum": total,
            "partitions": len(pc.unique(main["store_id"])),
        }
        del main, w3
        save("append", data.make_frame(append_rows, args.seed + 1, dates=[data.APPEND_DATE]))
        params.expected["W4"] = {"rows": args.rows + append_rows}

    if need & {"W5-write", "W5-open", "W5-read"}:
        w5 = data.make_partitioned(args.w5_partitions, args.w5_rows_per_partition, args.seed + 2)
        save("w5", w5)
        hit = w5.filter(pc.equal(w5["part"], w5_target))
        params.expected["W5-write"] = {"rows": w5.num_rows}
        params.expected["W5-open"] = {"partitions": args.w5_partitions}
        params.expected["W5-read"] = {
            "rows": hit.num_rows,
            "product_id_sum": pc.sum(hit["product_id"]).as_py(),
            "columns": sorted([*columns, "part"]),
        }
        del w5, hit
    if need & {"W7", "W7-lite"}:
        save("w7_garbage", data.make_partitioned(args.w7_blobs, 5, args.seed + 3))
        replacement = data.make_partitioned(10, 10, args.seed + 4, first_part=args.w7_blobs)
        save("w7_replacement", replacement)
        for key in ("W7", "W7-lite"):
            params.expected[key] = {"removed": args.w7_blobs, "rows": replacement.num_rows}
    if "W8" in need:
        from benchmarks.compute import revenue_arrow

        w8 = data.make_partitioned(args.w8_partitions, args.w8_rows_per_partition, args.seed + 5)
        save("w8", w8)
        out = revenue_arrow(w8)
        params.expected["W8-base"] = {"rows": w8.num_rows}
        params.expected["W8"] = {
            "rows": out.num_rows,
            "product_id_sum": pc.sum(out["product_id"]).as_py() or 0,
            "columns": sorted([*columns, "part", "revenue"]),
            "partitions": len(pc.unique(out["part"])),
        }
        del w8, out
    for key, blobs in (("W9-local", args.w9_blobs), ("W9-azure", args.w9_azure_blobs)):
        if key not in need:
            continue
        name = "w9" if key == "W9-local" else "w9_azure"
        save(f"{name}_garbage", data.make_partitioned(blobs, 5, args.seed + 6))
        replacement = data.make_partitioned(1, 10, args.seed + 7, first_part=blobs)
        save(f"{name}_replacement", replacement)
        params.expected[WORKLOADS[key].base or ""] = {"rows": replacement.num_rows}
        params.expected[key] = {"removed": blobs, "rows": replacement.num_rows}
    if any(key.startswith("W10-") for key in need):
        parts, per = args.w10_partitions, args.w10_rows_per_partition
        w10 = data.make_partitioned(parts, per, args.seed + 8)
        extra = data.make_partitioned(1, per, args.seed + 9, first_part=parts)
        save("w10", w10)
        save("w10_append", extra)
        full_sum = pc.sum(w10["product_id"]).as_py()
        both = {"columns": sorted([*columns, "part"])}
        params.expected["W10-base"] = {"rows": w10.num_rows}
        for key in ("W10-local", "W10-azure", "W10-azure-azure"):
            params.expected[key] = both | {
                "copied": parts,
                "rows": w10.num_rows,
                "product_id_sum": full_sum,
            }
        for key in ("W10-local-incr", "W10-azure-incr"):
            params.expected[key] = both | {
                "copied": 1,
                "rows": w10.num_rows + extra.num_rows,
                "product_id_sum": full_sum + pc.sum(extra["product_id"]).as_py(),
            }
            # the naive full copy copies every data blob again
            params.expected[f"{key}/naive:full"] = {"copied": parts + 1}
    return params


def input_format(args: argparse.Namespace, contender: str) -> str:
    """The format ("arrow" or "pandas") the contender receives its input in."""
    return CONTENDERS[contender].native_input if args.input == "native" else "pandas"


def func_format(args: argparse.Namespace, contender: str) -> str:
    """W8: the flavour of the per-partition function (plateau's dask API is pandas only;
    dataset_kit and the pyarrow loop use Arrow unless ``--input pandas``)."""
    return "pandas" if args.input == "pandas" or contender == "plateau" else "arrow"


def verify(check: dict[str, Any] | None, expected: dict[str, Any]) -> tuple[bool, str | None]:
    """(verified, mismatch message). A check value of None means "cannot tell"."""
    if check is None:
        return False, None
    verified = True
    for key, want in expected.items():
        got = check.get(key)
        if got is None:
            verified = False
        elif got != want:
            return False, f"{key}: got {got!r}, expected {want!r}"
    return verified, None


class Runner:
    """Spawns the children, keeps base datasets and collects the measurements."""

    def __init__(self, args: argparse.Namespace, params: Params, workdir: Path) -> None:
        self.args = args
        self.params = params
        self.workdir = workdir
        self.bases: dict[tuple[str, str], str] = {}
        self.base_failures: dict[tuple[str, str], dict[str, Any]] = {}
        self.peaks: dict[str, float] = {}  # workload -> largest peak MiB measured so far
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )

    def spawn(self, entry: str, key: str, path: Path, base: str | None, tag: str) -> dict[str, Any]:
        """Run one child for ``entry`` (``contender[:variant]``); return its result record."""
        contender, variant = split_entry(entry)
        specs = self.workdir / "specs"
        specs.mkdir(exist_ok=True)
        stem = specs / f"{entry.replace(':', '-')}-{key}-{tag}"
        result_file, log_file = stem.with_suffix(".result.json"), stem.with_suffix(".log")
        spec = {
            "contender": contender,
            "variant": variant,
            "workload": key,
            "path": str(path),
            "base": base,
            "tag": tag,
            "input_format": input_format(self.args, contender),
            "func_format": func_format(self.args, contender),
            "params": self.params.to_json(),
            "prefault_mib": self.prefault_mib(key),
            "result": str(result_file),
        }
        spec_file = stem.with_suffix(".spec.json")
        spec_file.write_text(json.dumps(spec))
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.child", str(spec_file)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {
                    "status": "error",
                    "error_type": "Timeout",
                    "error": f"no result after {self.args.timeout:g} s",
                }
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): the child goes too
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        wall = time.perf_counter() - start
        if not result_file.exists():
            tail = log_file.read_text(errors="replace")[-1500:]
            kind = f"Signal{-returncode}" if returncode < 0 else f"Exit{returncode}"
            return {"status": "error", "error_type": kind, "error": tail, "wall_s": wall}
        result: dict[str, Any] = json.loads(result_file.read_text())
        result["wall_s"] = wall
        if result.get("status") == "ok":
            expected = self.params.expected_for(key, entry)
            verified, mismatch = verify(result.get("check"), expected)
            result["verified"] = verified
            if mismatch:
                result.update(status="error", error_type="WrongResult", error=mismatch)
        return result

    def base_for(self, contender: str, producer: str) -> str | dict[str, Any]:
        """Path of the dataset ``producer`` wrote for ``contender`` (built on demand)."""
        if (contender, producer) in self.bases:
            return self.bases[(contender, producer)]
        if (contender, producer) in self.base_failures:
            return self.base_failures[(contender, producer)]
        path = self.workdir / "bases" / contender / producer
        progress(f"  setup: {contender} {producer} (untimed)")
        result = self.spawn(contender, producer, path, None, "setup")
        if result["status"] == "ok":
            self.bases[(contender, producer)] = str(path)
            return str(path)
        self.base_failures[(contender, producer)] = result
        return result

    def discard(self, path: Path) -> None:
        """Put a measurement's output aside; it is deleted with the work directory.

        Deleting it at once slowed the next measurement down: on an ext4 mounted with
        ``discard`` (this machine kind) the freed blocks are trimmed as the journal
        commits, and metadata operations waited on it (W5-write of 20,000 partitions:
        4.5 s for the first contender of a repetition, up to 3x that for the last).
        """
        if not path.exists():
            return
        trash = self.workdir / "trash"
        trash.mkdir(exist_ok=True)
        os.replace(path, trash / f"{len(list(trash.iterdir()))}-{path.name}")

    def prefault_mib(self, key: str) -> int:
        """``--prefault-mib``, raised to 1.1x the largest peak measured so far in ``key``
        (so that every contender's allocations fit in memory the guest holds)."""
        if self.args.prefault_mib <= 0:
            return 0
        return max(self.args.prefault_mib, math.ceil(1.1 * self.peaks.get(key, 0.0)))

    def measure(self, entry: str, key: str, rep: int) -> dict[str, Any]:
        """One repetition of one workload for one entry (``contender[:variant]``)."""
        contender = split_entry(entry)[0]
        producer = workload(key).base
        base: str | None = None
        if producer is not None:
            found = self.base_for(contender, producer)
            if isinstance(found, dict):
                error = (
                    f"setup ({producer}) failed: {found.get('error_type')}: {found.get('error')}"
                )
                return {**found, "error": error, "rep": rep}
            base = found
        path = self.workdir / "runs" / entry.replace(":", "-") / f"{key}-rep{rep}"
        # earlier measurements' writes reach the disk now, not during this one
        os.sync()
        result = self.spawn(entry, key, path, base, f"rep{rep}")
        result["rep"] = rep
        keep = key in ("W1", "W5-write") and (contender, key) not in self.bases
        if keep and result["status"] == "ok":
            target = self.workdir / "bases" / contender / key
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            self.bases[(contender, key)] = str(target)
        else:
            self.discard(path)
            if keep:
                self.base_failures.setdefault((contender, key), result)
        return result

    def run(self, workloads: list[str], contenders: list[str]) -> dict[str, dict[str, list]]:
        """All repetitions, entries (contenders and their variants) rotating round-robin.

        An entry/workload stops after a failure, or after one repetition
        longer than ``--max-rep-seconds``.
        """
        results: dict[str, dict[str, list]] = {
            k: {e: [] for e in entries_of(k, contenders)} for k in workloads
        }
        done: set[tuple[str, str]] = set()
        cap = self.args.max_rep_seconds
        for index, key in enumerate(workloads):
            entries = list(results[key])
            for rep in range(self.args.reps):
                shift = (rep + index) % max(1, len(entries))
                for entry in entries[shift:] + entries[:shift]:
                    if (entry, key) in done:
                        continue
                    result = self.measure(entry, key, rep)
                    results[key][entry].append(result)
                    peak = float(result.get("peak_mib") or 0.0)
                    self.peaks[key] = max(self.peaks.get(key, 0.0), peak)
                    progress(f"[{key} rep {rep + 1}/{self.args.reps}] {entry}: {describe(result)}")
                    if result["status"] != "ok" or (cap and result["seconds"] > cap):
                        done.add((entry, key))
        return results


def entries_of(key: str, contenders: list[str]) -> list[str]:
    """The entries of workload ``key`` whose contender was selected.

    Classic workloads keep the ``--contenders`` order; pipeline workloads their own.
    """
    entries = workload(key).entries
    if not workload(key).pipeline:
        return [c for c in contenders if c in entries]
    return [e for e in entries if split_entry(e)[0] in contenders]


def describe(result: dict[str, Any]) -> str:
    """One progress line."""
    if result["status"] == "ok":
        flag = "" if result.get("verified") else " (unverified)"
        return f"{result['seconds']:.3f} s, {result.get('peak_mib', 0):.0f} MiB{flag}"
    return f"{result['status']}: {result.get('error_type')}: {str(result.get('error'))[:160]}"


def progress(message: str) -> None:
    """Progress to stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def git_commit() -> str:
    """Short HEAD commit, or 'unknown'."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no commit)"
    commit = out.stdout.strip()
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dataset_kit"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return f"{commit} + uncommitted changes in dataset_kit/" if dirty else commit


def versions() -> str:
    """Installed versions of the relevant packages."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (source tree)" if name == "dataset-kit" else f"{name} (missing)")
    return ", ".join(found)


def classic_meta(args: argparse.Namespace, workloads: list[str]) -> dict:
    """The sizes line of W1-W7 (only when any of them is selected)."""
    if all(workload(k).pipeline for k in workloads):
        return {}
    return {
        "rows": f"{args.rows:,} (W1-W4); W5: {args.w5_partitions:,} partitions x "
        f"{args.w5_rows_per_partition} rows; W7: {args.w7_blobs:,} blobs"
    }


def pipeline_meta(args: argparse.Namespace, workloads: list[str], skipped: list[str]) -> dict:
    """Report header lines about W8-W10 (only when any of them is selected)."""
    if not any(workload(k).pipeline for k in workloads + skipped):
        return {}
    w8 = args.w8_partitions * args.w8_rows_per_partition
    w10 = args.w10_partitions * args.w10_rows_per_partition
    function = (
        "pandas for everyone"
        if args.input == "pandas"
        else "Arrow for dataset_kit and the pyarrow loop, pandas for plateau"
    )
    meta = {
        "pipeline sizes": f"W8: {args.w8_partitions:,} partitions x "
        f"{args.w8_rows_per_partition:,} rows ({w8:,}); W9: {args.w9_blobs:,} blobs "
        f"(Azurite: {args.w9_azure_blobs:,}); "
        f"W10: {args.w10_partitions:,} partitions x {args.w10_rows_per_partition:,} rows "
        f"({w10:,})",
        "W8 function flavour": function,
        "azurite": "on (a fresh in-memory Azurite on this machine per measurement)"
        if args.azurite
        else f"off (pass --azurite for {', '.join(skipped) or 'the Azurite workloads'})",
    }
    if args.azurite_rtt_ms:
        rtts = ", ".join(f"{v:g}" for v in args.azurite_rtt_ms)
        meta["azurite round-trip proxy"] = (
            f"{rtts} ms (the -rtt<N> entries: timed operation through a proxy adding N ms per "
            f"request/response round trip, plus {CONNECT_RTTS:g} round trips per new "
            "connection; see the method notes)"
        )
    return meta


def load_text(load: tuple[float, float, float]) -> str:
    """Load average as '1.23 / 0.80 / 0.50'."""
    return " / ".join(f"{v:.2f}" for v in load)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that the running child is killed and the work
    directory (gigabytes of datasets) is removed, as after Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown or not contenders:
        progress(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
        return 2
    try:
        workloads = with_rtts(expand(args.workloads), args.azurite_rtt_ms)
    except ValueError as exc:
        progress(str(exc))
        return 2
    skipped = [k for k in workloads if workload(k).azurite and not args.azurite]
    if skipped:
        progress(f"skipping {', '.join(skipped)}: pass --azurite to run them")
        workloads = [k for k in workloads if k not in skipped]
    if not workloads:
        progress("no workload left to run")
        return 2
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dk-bench-", dir=args.workdir))
    progress(f"workdir {workdir}; load average {load_text(load_before)}")
    try:
        params = build_inputs(args, workdir / "data", workloads)
        progress(f"inputs generated in {time.perf_counter() - t0:.1f} s")
        if any(workload(k).azurite for k in workloads):
            from dataset_kit.testing.azurite import AZURITE_VERSION, find_azurite

            # installs it once if needed; every Azurite measurement then starts its own
            progress(f"azurite {AZURITE_VERSION}: {find_azurite()}")
        results = Runner(args, params, workdir).run(workloads, contenders)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    from benchmarks.data import DATES

    inputs = ", ".join(f"{CONTENDERS[c].label}: {input_format(args, c)}" for c in contenders)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        **classic_meta(args, workloads),
        **pipeline_meta(args, workloads, skipped),
        "reps": args.reps
        if args.max_rep_seconds is None
        else f"{args.reps} (fewer where one took > {args.max_rep_seconds:g} s)",
        "input": inputs,
        "prefault": f"{args.prefault_mib} MiB per child before the timed operation, or 1.1x "
        "the largest peak measured so far in the workload if more"
        if args.prefault_mib
        else "off",
        "git commit": git_commit(),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "versions": versions(),
        "load average (1/5/15 min) before": load_text(load_before),
        "load average (1/5/15 min) after": load_text(load_after),
        "total wall time": f"{time.perf_counter() - t0:.0f} s",
    }
    summary = {k: {e: report.summarize(rs) for e, rs in results[k].items()} for k in workloads}
    report.add_ratios(summary)
    titles = {k: params.title(k, len(DATES)) for k in workloads}
    text = report.markdown(meta, titles, contenders, summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "params": params.to_json(), "summary": summary, "raw": results}
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    if not args.quiet:
        print(text)
    progress(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    _exit_on_sigterm()
    sys.exit(main())
