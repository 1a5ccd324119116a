"""Run many small store calls at once where the store waits on the network.

On a store with ``Capability.CONCURRENT_IO`` (Azure, network key-value stores) each call
mostly waits for a round trip, so a few threads hide the latency; on a local filesystem
or in memory the calls are CPU and kernel work, where many threads only contend. (A
local file system's journal can still make two threads worth it: callers that know so
pass ``threads=``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from dataset_kit.store import Capability, Store

__all__ = ["IO_THREADS", "io_map"]

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
