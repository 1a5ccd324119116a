"""Retries of transient store failures, with jittered exponential backoff.

Only operations that are safe to repeat are retried: reads, listings, deletes without a
condition, and unconditional puts (blobs are immutable and freshly named, so writing one
twice writes the same bytes). Conditional writes (create-only, compare-and-swap) are
*not* retried blindly: after a failure their outcome is unknown, and repeating them could
turn "my write happened" into "someone else's write won". The commit protocol resolves
those itself (it reads the snapshot back and compares commit ids).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TypeVar

from dataset_kit.exceptions import StoreUnavailableError
from dataset_kit.store._base import BlobInfo, Capability, DeleteReport, Store, delete_many_on
from dataset_kit.store.delegate import DelegatingStore

__all__ = ["RetryingStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingStore(DelegatingStore):
    """Retry :class:`StoreUnavailableError` of idempotent operations on ``inner``.

    Parameters
    ----------
    inner
        The store whose transient failures to absorb.
    attempts
        Tries per operation (the first one included).
    base_delay, max_delay
        Backoff: a random sleep up to ``base_delay * 2**try``, capped at ``max_delay``.
    deadline
        Give up (re-raise) once an operation has been retried for this many seconds.

    Examples
    --------
    >>> from dataset_kit.store import FaultInjectingStore, MemoryStore
    >>> flaky = FaultInjectingStore(MemoryStore(), fail_rate=0.5, seed=1)
    >>> store = RetryingStore(flaky, attempts=30, base_delay=0)
    >>> _ = store.put("k", b"v"); store.get("k")
    b'v'
    """

    def __init__(
        self,
        inner: Store,
        *,
        attempts: int = 6,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        deadline: float = 60.0,
        capabilities: frozenset[Capability] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        super().__init__(inner, capabilities=capabilities)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.deadline = deadline

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild,
            (self.inner, self.attempts, self.base_delay, self.max_delay, self.deadline),
        )

    def _retry(self, op: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        for attempt in range(self.attempts):
            try:
                return fn()
            except StoreUnavailableError as exc:
                last = attempt + 1 >= self.attempts
                if last or time.monotonic() - start > self.deadline:
                    raise
                delay = min(self.max_delay, self.base_delay * 2**attempt)
                logger.debug("%s failed (%s); retry %d in <= %.3fs", op, exc, attempt + 1, delay)
                time.sleep(random.uniform(0, delay))
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, key: str) -> bytes:
        return self._retry("get", lambda: self.inner.get(key))

    def _forwards_reads(self) -> bool:
        return not self._reads_hooked_below(RetryingStore)

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        if self._reads_hooked_below(RetryingStore):
            return Store._get_with_info(self, key)
        return self._retry("get", lambda: self.inner.get_with_info(key))

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        return self._retry("get_range", lambda: self.inner.get_range(key, start, length))

    def _stat(self, key: str) -> BlobInfo:
        return self._retry("stat", lambda: self.inner.stat(key))

    def _exists(self, key: str) -> bool:
        return self._retry("exists", lambda: self.inner.exists(key))

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        return iter(self._retry("list", lambda: list(self.inner.iter_keys(prefix))))

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        return iter(self._retry("list", lambda: list(self.inner.iter_shallow_keys(prefix))))

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        return iter(self._retry("list", lambda: list(self.inner.iter_infos(prefix))))

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if if_absent or if_match is not None:  # outcome-sensitive: the caller decides
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
        return self._retry("put", lambda: self.inner.put(key, data))

    def _delete(self, key: str, *, if_match: str | None) -> None:
        if if_match is not None:
            self.inner.delete(key, if_match=if_match)
            return
        self._retry("delete", lambda: self.inner.delete(key))

    def _touch(self, key: str) -> None:
        self._retry("touch", lambda: self.inner.touch(key))

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        if if_absent:
            return self.inner.copy(src, dst, if_absent=True)
        return self._retry("copy", lambda: self.inner.copy(src, dst))

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        return self._retry(
            "copy", lambda: self.inner.copy_from(source, src, dst, source_info=source_info)
        )

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        if self._writes_hooked_below(RetryingStore):
            return None
        return self._retry("link", lambda: self.inner.link_from(source, src, dst))

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
        """The wrapped store's batch delete; keys that failed are retried one by one."""
        first = delete_many_on(self.inner, keys, unmodified_since, prune_dirs=prune_dirs)
        if not first.failed:
            return first
        report = replace(first, failed={})  # the failed keys are retried below

        def one(key: str) -> DeleteReport:
            # a batch of one: the same age check and directory rule as the batch
            part = delete_many_on(self.inner, [key], unmodified_since, prune_dirs=prune_dirs)
            if part.failed:
                raise part.failed[key]
            return part

        for key in first.failed:
            try:
                report.merge(self._retry("delete", functools.partial(one, key)))
            except Exception as exc:  # reported per key, never raised
                report.failed[key] = exc
        return report


def _rebuild(
    inner: Store, attempts: int, base_delay: float, max_delay: float, deadline: float
) -> RetryingStore:
    return RetryingStore(
        inner, attempts=attempts, base_delay=base_delay, max_delay=max_delay, deadline=deadline
    )
