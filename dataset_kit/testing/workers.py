"""Process entry points for concurrency tests (importable by "spawn" child processes)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dataset_kit.store import Store
from dataset_kit.testing.processes import run_in_processes

__all__ = ["append_in_processes"]


def _append_worker(
    store: Store, dataset_uuid: str, worker: int, appends: int, barrier: Any, results: Any
) -> None:
    import dataset_kit as dk

    try:
        barrier.wait(timeout=60)
        for i in range(appends):
            frame = pd.DataFrame({"worker": [worker], "seq": [i], "tag": [f"{worker}-{i}"]})
            dk.update_dataset(frame, store=store, dataset_uuid=dataset_uuid)
        results.put((worker, "ok"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((worker, f"error: {type(exc).__name__}: {exc}"))


def append_in_processes(
    store: Store, dataset_uuid: str, *, processes: int = 4, appends: int = 5, timeout: float = 240
) -> dict[int, str]:
    """Append ``appends`` one-row frames from each of ``processes`` spawned processes at once.

    The store travels by pickling, so it must be shared across processes. Returns
    worker -> ``"ok"`` or the error text; raises AssertionError if a process never reports.
    """
    return run_in_processes(
        _append_worker,
        [(store, dataset_uuid, w, appends) for w in range(processes)],
        timeout=timeout,
    )
