"""Reading a blob as a file: for copies and checks that must not hold a big blob whole."""

from __future__ import annotations

import io
from typing import Any

from dataset_kit.store._base import BlobInfo, Store

__all__ = [
    "STREAMED_COPY_BYTES",
    "STREAMED_COPY_CHUNK",
    "STREAMED_COPY_HOLD",
    "RangeReader",
    "changed_since",
]

#: A blob bigger than this, copied between stores through this process, travels in
#: ranged reads of :data:`STREAMED_COPY_CHUNK` bytes instead of one read of the whole.
STREAMED_COPY_BYTES = 64 * 2**20
STREAMED_COPY_CHUNK = 8 * 2**20
#: What a streamed copy holds in memory at most: a chunk, or the Azure SDK's blocks in
#: flight (4 MiB, 4 at a time).
STREAMED_COPY_HOLD = 16 * 2**20


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over ``store.get_range`` of one blob of ``size`` bytes.

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> store = MemoryStore()
    >>> _ = store.put("k", b"0123456789")
    >>> f = RangeReader(store, "k", 10)
    >>> f.seek(4), f.read(3), f.read()
    (4, b'456', b'789')
    """

    def __init__(self, store: Store, key: str, size: int) -> None:
        super().__init__()
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.get_range(self._key, self._pos, n)
        memoryview(buffer).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)


def changed_since(source: Store, listed: BlobInfo) -> BlobInfo | None:
    """The blob's info now if it differs from ``listed`` (another size, or another etag
    where the listing had one), else None: a streamed copy read it piece by piece, so it
    asks after the last piece.

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> store = MemoryStore()
    >>> listed = store.put("k", b"one")
    >>> changed_since(store, listed) is None
    True
    >>> _ = store.put("k", b"two")
    >>> changed_since(store, listed).size
    3
    """
    now = source.stat(listed.key)
    if now.size != listed.size or (listed.etag and now.etag != listed.etag):
        return now
    return None
