"""A store that forwards every operation to another one: the base for wrappers.

Wrappers (counting, fault injection, hooks that play a concurrent writer in tests) override
only the hooks they change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dataset_kit.store._base import BlobInfo, Capability, DeleteReport, Store, delete_many_on

__all__ = ["DelegatingStore", "read_origin"]


class DelegatingStore(Store):
    """Forward every operation to ``inner`` (same URL, capabilities and local paths).

    Parameters
    ----------
    inner
        The wrapped store.
    capabilities
        Override the declared capabilities (e.g. to test a store without CAS).

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> class Counting(DelegatingStore):
    ...     gets = 0
    ...     def _get(self, key):
    ...         self.gets += 1
    ...         return super()._get(key)
    >>> store = Counting(MemoryStore())
    >>> _ = store.put("a", b"1"); store.get("a"), store.gets
    (b'1', 1)
    """

    def __init__(self, inner: Store, *, capabilities: frozenset[Capability] | None = None) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities if capabilities is None else capabilities

    @property
    def url(self) -> str:
        """The wrapped store's URL."""
        return self.inner.url

    @property
    def options(self) -> Mapping[str, Any]:
        """The wrapped store's options."""
        return self.inner.options

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner,), self.__dict__.copy())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def local_path(self, key: str) -> str | None:
        """The wrapped store's local path for ``key`` (if it has one)."""
        if Capability.LOCAL_PATH not in self.capabilities:
            return None
        return self.inner.local_path(key)

    def close(self) -> None:
        """Close the wrapped store."""
        self.inner.close()

    def _get(self, key: str) -> bytes:
        return self.inner.get(key)

    def _reads_hooked_below(self, owner: type[DelegatingStore]) -> bool:
        """True if a subclass of ``owner`` changes ``_get`` or ``_stat`` (faults, hooks):
        then ``get_with_info`` must go through both, not the wrapped store's single read
        that ``owner`` forwards to."""
        cls = type(self)
        return cls._get is not owner._get or cls._stat is not owner._stat

    def _forwards_reads(self) -> bool:
        """True if reads reach ``inner`` unchanged (a wrapper that counts, throttles or
        retries them still forwards them; one that injects faults does not). Wrappers
        that forward reads with extra work override this with their own class."""
        return not self._reads_hooked_below(DelegatingStore)

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        if self._reads_hooked_below(DelegatingStore):
            return super()._get_with_info(key)
        return self.inner.get_with_info(key)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def _stat(self, key: str) -> BlobInfo:
        return self.inner.stat(key)

    def _exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        return self.inner.iter_keys(prefix)

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        return self.inner.iter_shallow_keys(prefix)

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        return self.inner.iter_infos(prefix)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self.inner.delete(key, if_match=if_match)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        return self.inner.copy(src, dst, if_absent=if_absent)

    def _touch(self, key: str) -> None:
        if self._writes_hooked_below(DelegatingStore):
            super()._touch(key)  # through this wrapper's own get and put
        else:
            self.inner.touch(key)

    def _writes_hooked_below(self, owner: type[DelegatingStore]) -> bool:
        """True if a subclass of ``owner`` changes ``_put`` or ``_copy`` (faults, hooks)."""
        cls = type(self)
        return cls._put is not owner._put or cls._copy is not owner._copy

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        # the wrapped store's copy (inside the service where it can), unless a subclass
        # changes writes: then through this wrapper's own put or copy
        if self._writes_hooked_below(DelegatingStore):
            return super()._copy_from(source, src, dst, source_info=source_info)
        return self.inner.copy_from(source, src, dst, source_info=source_info)

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        # a subclass that changes writes sees every new blob: it copies through them
        if self._writes_hooked_below(DelegatingStore):
            return None
        return self.inner.link_from(source, src, dst)

    def _copies_inside(self, source: Store) -> bool:
        if self._writes_hooked_below(DelegatingStore):
            return super()._copies_inside(source)
        return self.inner._copies_inside(source)

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        if self._writes_hooked_below(DelegatingStore):
            return False  # copies go through this wrapper's own put: whole blobs
        return self.inner._streams_from(source, source_info)

    def remove_empty_dirs(self, prefix: str = "") -> int:
        """The wrapped store's (a local store may have empty directories to remove)."""
        return self.inner.remove_empty_dirs(prefix)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """Delete many blobs: the wrapped store's batch delete, unless ``_delete`` is wrapped.

        A wrapper that only changes other calls keeps the backend's batching (256 blobs
        per request on Azure); one that wraps ``_delete`` (faults, hooks) sees each key.
        """
        if type(self)._delete is DelegatingStore._delete and (
            unmodified_since is None or type(self)._stat is DelegatingStore._stat
        ):
            return delete_many_on(self.inner, keys, unmodified_since, prune_dirs=prune_dirs)
        return super().delete_many(keys, unmodified_since=unmodified_since, prune_dirs=prune_dirs)


def read_origin(store: Store) -> Store:
    """The innermost store that ``store``'s reads reach unchanged.

    A backend that can copy from another store inside its service (Azure, within one
    account) asks this of the source: through wrappers that only count, throttle or retry
    reads it finds the backend; a wrapper that hooks reads (fault injection, test hooks)
    stops it, so the copy goes through that wrapper's reads instead.
    """
    while isinstance(store, DelegatingStore) and store._forwards_reads():
        store = store.inner
    return store
