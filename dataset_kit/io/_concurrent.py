"""Run many small store calls at once where the store waits on the network.

On a store with ``Capability.CONCURRENT_IO`` (Azure, network key-value stores) each call
mostly waits for a round trip, so a few threads hide the latency; on a local filesystem
or in memory the calls are CPU and kernel work, where many threads only contend. (A
local file system's journal can still make two threads worth it: callers that know so
pass ``threads=``.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from dataset_kit.store import Capability, Store

__all__ = ["IO_THREADS", "ByteBudget", "io_map"]

T = TypeVar("T")
R = TypeVar("R")

#: Threads for one batch of calls: a dask node runs on one thread (the threaded scheduler
#: runs one node per CPU, so without them 2 requests at a time were in flight on a 2-CPU
#: machine).
IO_THREADS = 16


def io_map(
    func: Callable[[T], R], items: Sequence[T], *stores: Store, threads: int | None = None
) -> Iterator[R]:
    """``map(func, items)``, on up to :data:`IO_THREADS` threads if a store does
    concurrent I/O, else sequentially (``threads``: on that many threads whatever the
    stores); results in order either way, and the first exception (in item order) is
    raised when its result is reached.

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> list(io_map(lambda x: x * 2, [1, 2, 3], MemoryStore()))
    [2, 4, 6]
    """
    if threads is None:
        concurrent = any(Capability.CONCURRENT_IO in s.capabilities for s in stores)
        threads = IO_THREADS if concurrent else 1
    if len(items) > 1 and threads > 1:
        with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="dk-io") as pool:
            yield from pool.map(func, items)
    else:
        yield from map(func, items)


class ByteBudget:
    """Let the threads that share it hold at most ``limit`` bytes at once.

    :meth:`hold` waits until its bytes fit; a request above ``limit`` waits until
    nothing else is held and then runs alone. ``peak`` is the most ever held.

    Examples
    --------
    >>> budget = ByteBudget(100)
    >>> with budget.hold(60):
    ...     budget.held
    60
    >>> with budget.hold(500):  # more than the limit: alone, counted as the limit
    ...     budget.held
    100
    >>> budget.held, budget.peak
    (0, 100)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` (at most ``limit``) while the block runs."""
        n = min(nbytes, self.limit)
        if n <= 0:
            yield
            return
        with self._cond:
            self._cond.wait_for(lambda: self.held + n <= self.limit)
            self.held += n
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._cond:
                self.held -= n
                self._cond.notify_all()
