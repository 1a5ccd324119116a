"""Process entry points for concurrency tests (importable by "spawn" child processes)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dataset_kit.store import Store
from dataset_kit.testing.processes import run_in_processes

__all__ = ["append_in_processes", "mixed_frame", "mixed_in_processes"]


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


def mixed_frame(worker: int, step: int, part: int) -> pd.DataFrame:
    """The one-row frame of a mixed operation: partition ``part``, a unique tag."""
    return pd.DataFrame({"p": [part], "tag": [f"{worker}-{step}"]})


def _mixed_worker(
    store: Store, dataset_uuid: str, worker: int, steps: int, barrier: Any, results: Any
) -> None:
    """Random appends, overwrites and partition deletes; report what committed where."""
    import json
    import random

    import dataset_kit as dk
    from dataset_kit.exceptions import CommitConflictError

    rng = random.Random(worker)
    done: list[dict[str, Any]] = []
    try:
        barrier.wait(timeout=60)
        for step in range(steps):
            kind = rng.choice(["append", "append", "overwrite", "delete"])
            part = rng.randrange(4)
            op = {"id": f"{worker}-{step}", "kind": kind, "p": part, "version": None}
            try:
                if kind == "append":
                    meta = dk.update_dataset(
                        mixed_frame(worker, step, part),
                        store=store,
                        dataset_uuid=dataset_uuid,
                        metadata={"op": op["id"]},
                    )
                elif kind == "overwrite":
                    meta = dk.write_dataset(
                        mixed_frame(worker, step, part),
                        store=store,
                        dataset_uuid=dataset_uuid,
                        partition_on="p",
                        mode="overwrite",
                        metadata={"op": op["id"]},
                    )
                else:
                    meta = dk.update_dataset(
                        store=store,
                        dataset_uuid=dataset_uuid,
                        delete_scope=[{"p": part}],
                        metadata={"op": op["id"]},
                    )
                op["version"] = meta.version
            except CommitConflictError:
                op["version"] = "conflict"
            done.append(op)
        results.put((worker, json.dumps(done)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((worker, f"error: {type(exc).__name__}: {exc}"))


def mixed_in_processes(
    store: Store, dataset_uuid: str, *, processes: int, steps: int, timeout: float = 600
) -> dict[int, str]:
    """Run :func:`_mixed_worker` in ``processes`` spawned processes at once."""
    return run_in_processes(
        _mixed_worker,
        [(store, dataset_uuid, w, steps) for w in range(processes)],
        timeout=timeout,
    )
