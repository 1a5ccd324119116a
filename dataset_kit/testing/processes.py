"""Start N "spawn" processes that wait on one barrier, and collect what each reports."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_in_processes"]


def run_in_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], *, timeout: float
) -> dict[Any, str]:
    """Run ``target(*a, barrier, results)`` for each ``a`` in ``args``, one process each.

    ``target`` must be a module-level function (spawned processes import it), wait on the
    barrier before acting, and put exactly one ``(id, outcome)`` pair into ``results``.

    Raises
    ------
    AssertionError
        If not every process reported within ``timeout`` seconds.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, results)) for a in args]
    for proc in procs:
        proc.start()
    outcomes: dict[Any, str] = {}
    deadline = time.monotonic() + timeout
    try:
        for _ in procs:
            ident, outcome = results.get(timeout=max(0.1, deadline - time.monotonic()))
            outcomes[ident] = outcome
    except queue.Empty:
        raise AssertionError(f"only {len(outcomes)} of {len(procs)} processes reported") from None
    finally:
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcomes
