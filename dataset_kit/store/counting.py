"""A store wrapper that counts the calls made through it: what an operation costs.

On Azure each counted call is one request, except listings (one request per page of up
to 5,000 blobs) and batch deletes (one request per 256 blobs), which are counted
separately (``list``/``list_pages`` and ``delete_many``/``delete_many_keys``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from dataset_kit.store._base import BlobInfo, DeleteReport, Store, delete_many_on
from dataset_kit.store.delegate import DelegatingStore

__all__ = ["CountingStore"]


class CountingStore(DelegatingStore):
    """Count every store call by kind (thread-safe), passing it on unchanged.

    Kinds: ``get``, ``get_range``, ``stat``, ``exists``, ``list`` (each listing started),
    ``put``, ``put_if_absent``, ``put_if_match``, ``delete``, ``delete_many`` (calls) and
    ``delete_many_keys`` (keys in them), ``touch``, ``copy``, ``copy_from`` (a copy from another
    store: one request to the service, or a read there and a put here), ``link_from`` (a
    hard link, on local stores); ``bytes_read``
    and ``bytes_written`` count payload bytes.

    Parameters
    ----------
    inner
        The store to count the calls of.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> from dataset_kit.store import CountingStore, MemoryStore
    >>> store = CountingStore(MemoryStore())
    >>> _ = dk.write_dataset(pd.DataFrame({"x": [1, 2]}), store=store, dataset_uuid="d")
    >>> store.counts["put_if_absent"]  # the snapshot and the new dataset's pointer
    2
    >>> with store.measure() as calls:
    ...     _ = dk.read_table(store=store, dataset_uuid="d")
    >>> dict(sorted((k, v) for k, v in calls.items() if k != "bytes_read"))
    {'exists': 1, 'get': 2}

    (The pointer with its etag, the probe for a newer snapshot, the data blob.)
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner,))  # counts stay with the process that made them

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n

    def requests(self) -> int:
        """Calls counted so far, all kinds (payload byte counts and keys left out)."""
        with self._lock:
            return sum(v for k, v in self.counts.items() if _is_request(k))

    def reset(self) -> Counter[str]:
        """Return the counts so far and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def measure(self) -> _Measure:
        """A context manager giving the counts of the calls made inside it."""
        return _Measure(self)

    def _get(self, key: str) -> bytes:
        data = super()._get(key)
        self._count("get")
        self._count("bytes_read", len(data))
        return data

    def _forwards_reads(self) -> bool:
        return not self._reads_hooked_below(CountingStore)

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        if self._reads_hooked_below(CountingStore):
            return Store._get_with_info(self, key)
        data, info = self.inner.get_with_info(key)  # one read: counted as a get
        self._count("get")
        self._count("bytes_read", len(data))
        return data, info

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        data = super()._get_range(key, start, length)
        self._count("get_range")
        self._count("bytes_read", len(data))
        return data

    def _stat(self, key: str) -> BlobInfo:
        self._count("stat")
        return super()._stat(key)

    def _exists(self, key: str) -> bool:
        self._count("exists")
        return super()._exists(key)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        self._count("list")
        return super()._iter_keys(prefix)

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        self._count("list")
        return super()._iter_shallow_keys(prefix)

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        self._count("list")
        return super()._iter_infos(prefix)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        kind = "put_if_absent" if if_absent else "put_if_match" if if_match else "put"
        self._count(kind)
        self._count("bytes_written", len(data))
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self._count("delete")
        super()._delete(key, if_match=if_match)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """Count the call and its keys, then use the wrapped store's batch delete."""
        keys = list(keys)
        self._count("delete_many")
        self._count("delete_many_keys", len(keys))
        return delete_many_on(self.inner, keys, unmodified_since, prune_dirs=prune_dirs)

    def _touch(self, key: str) -> None:
        self._count("touch")
        self.inner.touch(key)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        self._count("copy")
        return super()._copy(src, dst, if_absent=if_absent)

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        self._count("copy_from")
        return self.inner.copy_from(source, src, dst, source_info=source_info)

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        if self._writes_hooked_below(CountingStore):
            return None
        info = self.inner.link_from(source, src, dst)
        if info is not None:  # nothing linked: the caller copies, which is counted then
            self._count("link_from")
        return info

    def _copies_inside(self, source: Store) -> bool:
        return self.inner._copies_inside(source)

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        return self.inner._streams_from(source, source_info)


def _is_request(kind: str) -> bool:
    return not kind.startswith("bytes_") and not kind.endswith("_keys")


class _Measure:
    def __init__(self, store: CountingStore) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()

    def __enter__(self) -> Counter[str]:
        with self.store._lock:
            self._start = Counter(self.store.counts)
        return self.counts

    def __exit__(self, *exc: object) -> None:
        with self.store._lock:
            now = Counter(self.store.counts)
        now.subtract(self._start)
        self.counts.update({k: v for k, v in now.items() if v})
