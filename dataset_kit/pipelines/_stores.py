"""Stores as they are used inside pipeline tasks: throttled around each I/O call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dataset_kit.exceptions import KeyNotFoundError
from dataset_kit.store import BlobInfo, DelegatingStore, DeleteReport, Store, delete_many_on
from dataset_kit.store.delegate import read_origin
from dataset_kit.throttle import Throttle, throttled

__all__ = ["ThrottledStore", "renew_reused", "with_throttle"]


class ThrottledStore(DelegatingStore):
    """Hold a :class:`~dataset_kit.throttle.Throttle` around every blob transfer.

    Only the I/O call is inside the throttle (Parquet encoding and user code are not), so
    the limit bounds concurrent requests to the store, not the pipeline's parallelism.
    Pickles as the inner store's spec plus the throttle's name and limit.

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> store = ThrottledStore(MemoryStore(), Throttle("doc-storage", 2))
    >>> _ = store.put("k", b"v"); store.get("k")
    b'v'
    """

    def __init__(self, inner: Store, throttle: Throttle) -> None:
        super().__init__(inner)
        self.throttle = throttle

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner, self.throttle))

    def _get(self, key: str) -> bytes:
        with self.throttle:
            return self.inner.get(key)

    def _forwards_reads(self) -> bool:
        return not self._reads_hooked_below(ThrottledStore)

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        if self._reads_hooked_below(ThrottledStore):
            return Store._get_with_info(self, key)
        with self.throttle:
            return self.inner.get_with_info(key)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        with self.throttle:
            return self.inner.get_range(key, start, length)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        with self.throttle:
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        with self.throttle:
            self.inner.delete(key, if_match=if_match)

    def _touch(self, key: str) -> None:
        with self.throttle:
            self.inner.touch(key)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        with self.throttle:
            return self.inner.copy(src, dst, if_absent=if_absent)

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        if self.inner._streams_from(source, source_info):
            # a big blob streamed while it is written here: one lease around the copy,
            # its reads through the source's origin (a lease they took inside this one,
            # of a shared throttle, could wait for it)
            with self.throttle:
                return self.inner.copy_from(read_origin(source), src, dst, source_info=source_info)
        if not self.inner._copies_inside(source):
            # a read of the source (through its own throttle) and a put here, each
            # holding a lease in turn: one lease around both could deadlock
            return Store._copy_from(self, source, src, dst, source_info=source_info)
        with self.throttle:
            return self.inner.copy_from(source, src, dst, source_info=source_info)

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        if self._writes_hooked_below(ThrottledStore):
            return None
        with self.throttle:  # a link reads nothing of the source through its wrappers
            return self.inner.link_from(source, src, dst)

    def _copies_inside(self, source: Store) -> bool:
        return self.inner._copies_inside(source)

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        return self.inner._streams_from(source, source_info)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """The inner store's batch delete, 256 keys (one Azure batch request) at a time,
        each holding one lease: never more requests in flight than leases (the inner
        store alone would send several batches at once)."""
        report = DeleteReport()
        chunk: list[str] = []

        def flush() -> None:
            with throttled(self.throttle):
                part = delete_many_on(self.inner, chunk, unmodified_since, prune_dirs=prune_dirs)
            report.merge(part)
            chunk.clear()

        for key in keys:
            chunk.append(key)
            if len(chunk) == DELETE_CHUNK:
                flush()
        if chunk:
            flush()
        return report


#: Keys per throttled ``delete_many`` call: one request of the Azure Blob Batch API.
DELETE_CHUNK = 256


def with_throttle(store: Store, throttle: Throttle | None) -> Store:
    """``store`` throttled by ``throttle`` (unchanged when None)."""
    return store if throttle is None else ThrottledStore(store, throttle)


def renew_reused(store: Store, keys: Sequence[str]) -> list[str]:
    """Touch the blobs a resumed job reuses; return those that are gone.

    Written by an earlier run, perhaps hours ago, and unreferenced until this run
    commits, they are garbage to a GC by then; touched (:meth:`Store.touch`), they are
    young again, and a GC checks the age as it deletes. So the grace period protects
    them until the commit, as it protects a writer's fresh blobs.
    """
    missing = []
    for key in keys:
        try:
            store.touch(key)
        except KeyNotFoundError:
            missing.append(key)
    return missing
