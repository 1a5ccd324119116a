"""One measurement in a fresh process: ``python -m benchmarks.child SPEC.json``.

Imports the contender, loads inputs and performs setup (untimed), then times
exactly one operation with ``time.perf_counter``, records its peak memory and
computes check values (untimed) that the parent compares with the expected ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import json
import os
import resource
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
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


def _prefault(mib: int) -> float:
    """Touch ``mib`` MiB of new memory and free it again; return the seconds it took.

    This machine kind is a VM whose guest hands freed memory back to its host (virtio
    free page reporting). Touching such memory again costs anything from 0.02 to 2.5 s
    per GiB, at random, while memory the guest still holds costs the same every time.
    Done just before the timed operation, the operation's own allocations reuse the
    pages touched here (the guest reports free pages after about 2 s), so each
    contender is timed at its own work, not at the host's. Every contender gets the same.
    """
    if mib <= 0:
        return 0.0
    import numpy as np

    start = time.perf_counter()
    block = np.ones(mib * MIB, dtype=np.uint8)  # malloc'd by mmap, unmapped by del
    del block
    return time.perf_counter() - start


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
        notes: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:  # clusters, containers: closed after the check
            op, check = _prepare(contender, spec, params, stack, notes)
            _import_lazy_names()
            gc.collect()
            out["prefault_mib"] = int(spec.get("prefault_mib", 0))
            out["prefault_s"] = round(_prefault(out["prefault_mib"]), 3)
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
        if notes:
            out["notes"] = notes
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


def _import_lazy_names() -> None:
    """Import the public names of dataset_kit, if loaded: it imports them on first use, and
    imports are not part of the timed operation (they are not for the other contenders,
    whose modules import everything up front). Without this, dataset_kit's first API call
    paid for importing the API inside the clock."""
    package = sys.modules.get("dataset_kit")
    for name in getattr(package, "__all__", ()):
        getattr(package, name)


def _import_all(names: Iterable[str]) -> None:
    """Import ``names`` (missing optional modules are skipped)."""
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _start_cluster(
    contender: Any, stack: contextlib.ExitStack, notes: dict[str, Any], modules: list[str]
) -> Any:
    """A 2-worker LocalCluster (processes, 1 thread each), warmed up; untimed.

    Warm-up: every worker imports the contender's modules and runs one task, so the
    timed computation does not pay for worker-side imports either. The time it all
    took is reported as ``cluster_startup_s``.
    """
    from dataset_kit.testing.dask_cluster import local_cluster

    started = time.perf_counter()
    client = stack.enter_context(local_cluster(n_workers=2, threads_per_worker=1))
    client.run(_import_all, [type(contender).__module__, *modules])
    client.submit(sum, [1, 2], pure=False).result()
    notes["cluster_startup_s"] = time.perf_counter() - started
    return client


def _data_files(path: str) -> dict[str, Any]:
    """Count, size spread and distinct ``store_id=`` directories of the Parquet files."""
    sizes: list[int] = []
    partitions: set[str] = set()
    for directory, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        for name in names:
            if name.endswith(".parquet") and not name.startswith(("_", ".")):
                sizes.append(os.path.getsize(os.path.join(directory, name)))
                parts = [p for p in directory.split(os.sep) if p.startswith("store_id=")]
                partitions.update(parts)
    sizes.sort()
    if not sizes:
        return {"files": 0, "partitions": 0}
    return {
        "files": len(sizes),
        "partitions": len(partitions),
        "file_mib_min": sizes[0] / MIB,
        "file_mib_median": sizes[len(sizes) // 2] / MIB,
        "file_mib_max": sizes[-1] / MIB,
    }


@contextlib.contextmanager
def _worker_memory(client: Any, notes: dict[str, Any]) -> Iterator[None]:
    """Sample the workers' summed RSS every 0.2 s while the block runs (the client's own
    peak is measured as usual); the highest sum is the ``workers_peak_mib`` note."""
    import threading

    stop = threading.Event()
    peak = [0]

    def rss() -> int:
        import psutil

        return int(psutil.Process().memory_info().rss)

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                peak[0] = max(peak[0], sum(client.run(rss).values()))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        notes["workers_peak_mib"] = peak[0] / MIB


def _prepare_pipeline(
    contender: Any,
    spec: dict[str, Any],
    params: Any,
    stack: contextlib.ExitStack,
    notes: dict[str, Any],
) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
    """Untimed setup of W8-W10; return (timed operation, check)."""
    from benchmarks import azurite
    from benchmarks.contenders import Location
    from benchmarks.workloads import workload as find_workload

    key: str = spec["workload"]
    path: str = spec["path"]
    base: str | None = spec.get("base")
    variant: str = spec.get("variant", "")
    workload = find_workload(key)
    assert base is not None, f"{key} needs a base dataset"
    modules = contender.pipeline_modules()
    _import_all(modules)
    cs = timed_cs = ""
    if workload.azurite:
        # A fresh in-memory Azurite per measurement: one long-lived emulator slows down
        # as blobs come and go, and once stopped answering altogether mid-run.
        from dataset_kit.testing.azurite import azurite_server

        cs = timed_cs = stack.enter_context(azurite_server())
        if workload.rtt_ms is not None:
            timed_cs = _through_proxy(cs, workload.rtt_ms, stack, notes)

    def fresh_container() -> Location:
        """A new container name; setup and checks use it directly."""
        name = azurite.container_name(key, spec["contender"], variant, spec.get("tag", ""))
        return Location(container=name, connection_string=cs)

    def timed(location: Location) -> Location:
        """The same container as the timed operation reaches it (through the proxy)."""
        return dataclasses.replace(location, connection_string=timed_cs or None)

    key = workload.plain  # a -rtt<N> variant is set up and checked as its workload

    if key == "W6":
        cluster = variant in ("cluster", "cluster-p2p", "dask")
        client = _start_cluster(contender, stack, notes, modules) if cluster else None
        if client is not None:
            stack.enter_context(_worker_memory(client, notes))

        def w6_check(_: Any) -> dict[str, Any]:
            notes.update(_data_files(path))
            frame = contender.read_all(path)
            return _frame_check(frame) | {"partitions": notes["partitions"]}

        return (lambda: contender.repartition(base, path, variant=variant, client=client)), w6_check
    if key == "W8":
        client = _start_cluster(contender, stack, notes, modules) if variant == "cluster" else None
        os.makedirs(path, exist_ok=True)

        def w8_check(_: Any) -> dict[str, Any]:
            frame = contender.read_all(path)
            return _frame_check(frame) | {
                "partitions": contender.count_partitions(contender.open(path))
            }

        return (
            lambda: contender.compute(
                base, path, variant=variant, client=client, func_format=spec["func_format"]
            )
        ), w8_check
    if key.startswith("W9-"):
        if workload.azurite:
            location = fresh_container()
            started = time.perf_counter()
            notes["uploaded"] = azurite.upload_tree(base, cs, location.container)
            notes["upload_s"] = time.perf_counter() - started

            def count() -> int:
                return azurite.count_blobs(cs, location.container)
        else:
            shutil.copytree(base, path)
            location = Location(path=path)
            os.sync()  # as in W7: a GC deletes blobs that were written back long ago

            def count() -> int:
                return _count_data_files(path)

        files_before = count()
        gc_location = timed(location) if workload.azurite else location

        def gc_check(_: Any) -> dict[str, Any]:
            return {
                "removed": files_before - count(),
                "rows": contender.count_rows_at(location),
            }

        return (lambda: contender.gc_at(gc_location)), gc_check
    if key.startswith("W10-"):
        import dataset_kit as dk
        from benchmarks.data import read_ipc

        assert base is not None, f"{key} needs a base dataset"
        source = Location(path=base)
        target = fresh_container() if workload.azurite else Location(path=os.path.join(path, "dst"))
        if key == "W10-azure-azure":  # the dataset lives in Azurite too (uploaded untimed)
            origin = fresh_container()
            started = time.perf_counter()
            notes["uploaded"] = azurite.upload_tree(base, cs, origin.container)
            notes["upload_s"] = time.perf_counter() - started
            source = timed(origin)
        if key.endswith("-incr"):
            source = Location(path=os.path.join(path, "src"))
            shutil.copytree(base, source.local_path())
            contender.backup(source, target, variant=variant)  # the first, full backup
            append = read_ipc(params.inputs["w10_append"]).to_pandas()
            dk.update_dataset(
                append, store=dk.open_store(source.local_path()), dataset_uuid="bench"
            )

        def backup_check(copied: int) -> dict[str, Any]:
            notes["copied"] = copied
            store = (
                dk.open_store(
                    f"azure://{target.container}", connection_string=target.connection_string
                )
                if target.is_azure
                else dk.open_store(target.local_path())
            )
            frame = dk.read_table(store=store, dataset_uuid="bench")
            return {"copied": copied} | _frame_check(frame)

        backup_target = timed(target) if workload.azurite else target
        return (lambda: contender.backup(source, backup_target, variant=variant)), backup_check
    raise ValueError(f"unknown workload {key!r}")


def _through_proxy(
    connection_string: str, rtt_ms: float, stack: contextlib.ExitStack, notes: dict[str, Any]
) -> str:
    """Start a latency proxy in front of Azurite (stopped with ``stack``) and return the
    connection string through it. The notes get the connections the timed operation
    opened through the proxy (each paid the modelled handshake)."""
    from benchmarks.latency_proxy import (
        blob_endpoint_address,
        latency_proxy,
        rewrite_blob_endpoint,
    )
    from benchmarks.workloads import CONNECT_RTTS

    proxy = stack.enter_context(
        latency_proxy(
            *blob_endpoint_address(connection_string), rtt_ms=rtt_ms, connect_rtts=CONNECT_RTTS
        )
    )

    # runs before the proxy stops (LIFO), after the timed operation and its check
    def count_connections() -> None:
        with contextlib.suppress(Exception):  # a note only: never fail a measurement
            notes["proxy_connections"] = proxy.stats().connections

    stack.callback(count_connections)
    notes["rtt_ms"] = rtt_ms
    return rewrite_blob_endpoint(connection_string, proxy.host, proxy.port)


def _prepare(
    contender: Any,
    spec: dict[str, Any],
    params: Any,
    stack: contextlib.ExitStack,
    notes: dict[str, Any],
) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
    """Untimed setup for the workload; return (timed operation, check)."""
    from benchmarks.data import read_ipc
    from benchmarks.workloads import split_rtt

    def load_input(name: str) -> Any:
        table = read_ipc(params.inputs[name])
        return table.to_pandas() if spec["input_format"] == "pandas" else table

    key: str = spec["workload"]
    path: str = spec["path"]
    base: str | None = spec.get("base")

    def rows_check(_: Any) -> dict[str, Any]:
        return {"rows": contender.count_rows(path)}

    if key in ("W1", "W5-write", "W8-base", "W10-base"):
        name = {"W1": "main", "W5-write": "w5", "W8-base": "w8", "W10-base": "w10"}[key]
        data = load_input(name)
        partition_on = ["date"] if key == "W1" else ["part"]
        os.makedirs(path, exist_ok=True)
        return (lambda: contender.write(data, path, partition_on)), rows_check
    if key in ("W9-base", "W9-azure-base"):
        name = "w9" if key == "W9-base" else "w9_azure"
        garbage, replacement = load_input(f"{name}_garbage"), load_input(f"{name}_replacement")
        os.makedirs(path, exist_ok=True)
        return (lambda: contender.make_garbage(garbage, replacement, path, "part")), rows_check
    plain = split_rtt(key)[0]
    if plain in ("W6", "W8", "W9-local", "W9-azure") or plain.startswith("W10-"):
        return _prepare_pipeline(contender, spec, params, stack, notes)
    if key in ("W7", "W7-lite"):
        garbage, replacement = load_input("w7_garbage"), load_input("w7_replacement")
        os.makedirs(path, exist_ok=True)
        contender.make_garbage(garbage, replacement, path, "part")
        del garbage, replacement
        files_before = _count_data_files(path)
        # A GC deletes blobs written long ago: let the kernel write them back first (the
        # unlink of a file whose blocks were never allocated is cheaper than a real one)
        os.sync()

        def gc_check(_: Any) -> dict[str, Any]:
            removed = files_before - _count_data_files(path)
            return {"removed": removed, "rows": contender.count_rows(path)}

        return (lambda: contender.gc(path, lite=key == "W7-lite")), gc_check
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
