"""Kill a writer at every step: run an operation in a child process that SIGKILLs itself
right after its n-th mutating store call, for n = 0, 1, 2, ... until it completes.

:class:`CrashingStore` counts ``put``/``delete``/``copy``/``delete_many`` calls and kills
its own process (``SIGKILL``: no cleanup, no ``finally``, no flush) after the chosen one.
:func:`crash_points` runs the operation with every crash point in forked children (the
parent has imported everything already, so a child costs milliseconds) and yields after
each one so the caller can check the store, e.g. that the dataset opens at the old or
the new version and that a garbage collection leaves exactly the referenced blobs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from dataset_kit.store import BlobInfo, DelegatingStore, DeleteReport, Store, delete_many_on

__all__ = ["CrashingStore", "crash_points"]


class CrashingStore(DelegatingStore):
    """SIGKILL this process right after the ``crash_after``-th mutating call (1-based).

    ``crash_after=None`` never crashes; :attr:`calls` counts the mutating calls made.
    """

    def __init__(self, inner: Store, crash_after: int | None) -> None:
        super().__init__(inner)
        self.crash_after = crash_after
        self.calls = 0

    def _step(self) -> None:
        self.calls += 1
        if self.crash_after is not None and self.calls >= self.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        info = self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
        self._step()
        return info

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self.inner.delete(key, if_match=if_match)
        self._step()

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        info = self.inner.copy(src, dst, if_absent=if_absent)
        self._step()
        return info

    def delete_many(
        self, keys: Any, *, unmodified_since: float | None = None, prune_dirs: bool = True
    ) -> DeleteReport:
        """Delete one key at a time, so that a crash can fall between any two (each
        through the wrapped store's ``delete_many``, so ``prune_dirs`` holds)."""
        report = DeleteReport()
        for key in keys:
            part = delete_many_on(self.inner, [key], unmodified_since, prune_dirs=prune_dirs)
            if part.failed:
                raise next(iter(part.failed.values()))
            report.merge(part)
            if part.deleted:
                self._step()
        return report


def _child(operation: Callable[[Store], Any], store: Store, crash_after: int | None) -> None:
    crashing = CrashingStore(store, crash_after)
    try:
        operation(crashing)
    except BaseException:  # a failure is not a crash: report it distinctly
        os._exit(3)
    os._exit(0)


def crash_points(
    operation: Callable[[Store], Any],
    make_store: Callable[[], Store],
    *,
    max_points: int = 500,
) -> Iterator[tuple[int, Store, bool]]:
    """For n = 1, 2, ...: a fresh store, the operation killed after its n-th mutating call.

    Yields ``(n, store, completed)``: ``completed`` is True for the first n at which the
    operation finished before the crash (the last point). ``make_store`` must return a
    store in the same initial state every time (e.g. a copy of a prepared directory).

    Raises
    ------
    AssertionError
        If a child fails with an exception (not a crash) or hangs, or more than
        ``max_points`` points are needed.
    """
    ctx = multiprocessing.get_context("fork")
    for n in range(1, max_points + 1):
        store = make_store()
        proc = ctx.Process(target=_child, args=(operation, store, n))
        proc.start()
        proc.join(120)
        if proc.exitcode is None:
            proc.kill()
            raise AssertionError(f"crash point {n}: the child hung")
        if proc.exitcode == -signal.SIGKILL:
            yield n, store, False
            continue
        if proc.exitcode != 0:
            raise AssertionError(f"crash point {n}: the operation failed (exit {proc.exitcode})")
        yield n, store, True
        return
    raise AssertionError(f"the operation still had mutating calls after {max_points} points")
