"""Store wrappers that record how calls ran: when (across processes) and on which threads.

:class:`IntervalRecordingStore` measures how many store requests ran at once in a
pipeline on a cluster: every ``put`` appends ``(start, end)`` wall-clock times to a file
of its own in ``log_dir`` (one file per call: no locking across processes), and
:func:`max_overlap` computes the most calls in flight at any instant.
:class:`ThreadRecordingStore` records which threads of one process made the calls.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dataset_kit.store import BlobInfo, Capability, DelegatingStore, Store

__all__ = ["IntervalRecordingStore", "ThreadRecordingStore", "max_overlap", "read_intervals"]


class IntervalRecordingStore(DelegatingStore):
    """Record the wall-clock interval of every ``put``; optionally make each one slow.

    Parameters
    ----------
    inner
        The store doing the work.
    log_dir
        Directory for the interval files (shared by every process, e.g. a tmp dir).
    delay
        Seconds each ``put`` sleeps inside its interval, so that overlaps are visible.
    """

    def __init__(self, inner: Store, log_dir: str | os.PathLike[str], delay: float = 0.0) -> None:
        super().__init__(inner)
        self.log_dir = str(log_dir)
        self.delay = delay

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner, self.log_dir, self.delay))

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        start = time.time()
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
        finally:
            end = time.time()
            name = f"{os.getpid()}-{uuid.uuid4().hex}"
            # written aside, then renamed: a process killed mid-write (the reliability
            # tests kill workers) leaves no half-written interval for readers to trip on
            partial = Path(self.log_dir, name + ".partial")
            partial.write_text(f"{start!r} {end!r}")
            os.replace(partial, Path(self.log_dir, name + ".interval"))


class ThreadRecordingStore(DelegatingStore):
    """Record the names of the threads that put data blobs (``.parquet`` keys) and that
    stat blobs, to test how callers spread their calls over threads.

    Parameters
    ----------
    inner
        The store doing the work.
    network
        Declare the store a network store (``Capability.CONCURRENT_IO``), as callers
        fan calls out over threads only there.
    put_delay
        Seconds each data-blob put sleeps: calls then overlap for certain, so a pool
        that may use N threads does use them (without it, a loaded machine can let one
        thread finish every quick call before the pool starts the next thread).

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> store = ThreadRecordingStore(MemoryStore())
    >>> _ = store.put("t/a.parquet", b"x")
    >>> store.threads == {threading.current_thread().name}
    True
    """

    def __init__(self, inner: Store, *, network: bool = False, put_delay: float = 0.0) -> None:
        caps = inner.capabilities | {Capability.CONCURRENT_IO} if network else None
        super().__init__(inner, capabilities=caps)
        self.threads: set[str] = set()
        self.stats: set[str] = set()
        self.put_delay = put_delay

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if key.endswith(".parquet"):
            self.threads.add(threading.current_thread().name)
            if self.put_delay:
                time.sleep(self.put_delay)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    def _stat(self, key: str) -> BlobInfo:
        self.stats.add(threading.current_thread().name)
        return super()._stat(key)


def read_intervals(log_dir: str | os.PathLike[str]) -> list[tuple[float, float, int]]:
    """Every recorded ``(start, end, pid)``."""
    out = []
    for path in Path(log_dir).glob("*.interval"):
        start, end = (float(x) for x in path.read_text().split())
        out.append((start, end, int(path.name.split("-", 1)[0])))
    return out


def max_overlap(intervals: list[tuple[float, float, int]]) -> int:
    """The most intervals open at any instant.

    Examples
    --------
    >>> max_overlap([(0, 2, 1), (1, 3, 1), (2.5, 4, 2), (5, 6, 2)])
    2
    """
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
