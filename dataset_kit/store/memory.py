"""In-memory stores, shared by name within one process (``memory://<name>``)."""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import NamedTuple

from dataset_kit.exceptions import (
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
    PreconditionFailedError,
)
from dataset_kit.store._base import BlobInfo, Capability, Store

__all__ = ["MemoryStore"]

_NAME = re.compile(r"[A-Za-z0-9._~-]+")


class _Blob(NamedTuple):
    data: bytes
    mtime: float
    etag: str

    def info(self, key: str) -> BlobInfo:
        return BlobInfo(key=key, size=len(self.data), mtime=self.mtime, etag=self.etag)


class _Bucket:
    """The blobs of one named store, and the lock that makes each operation atomic."""

    __slots__ = ("blobs", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blobs: dict[str, _Blob] = {}


_REGISTRY: dict[str, _Bucket] = {}
_REGISTRY_LOCK = threading.Lock()
# One counter for the whole process: an etag never repeats, even after drop() + re-create.
_ETAGS = itertools.count(1)


def _bucket(name: str) -> _Bucket:
    bucket = _REGISTRY.get(name)
    if bucket is None:
        with _REGISTRY_LOCK:
            bucket = _REGISTRY.setdefault(name, _Bucket())
    return bucket


def _new_blob(data: bytes) -> _Blob:
    # Called under the bucket lock, so a key's etags increase in the order of its writes.
    return _Blob(data, time.time(), str(next(_ETAGS)))


class MemoryStore(Store):
    """A store that keeps blobs in memory, shared by name within one process.

    All ``MemoryStore`` objects with the same name (and copies made by pickling inside
    the process) see the same blobs. Every operation is atomic under one lock per name.
    Nothing is shared between processes: unpickled in another process, a store starts
    out empty there.

    Parameters
    ----------
    name
        The store's name: letters, digits and ``._~-``. ``None`` creates a new store
        with a unique name.

    Raises
    ------
    ConfigError
        If the name has other characters.

    Notes
    -----
    Etags come from a process-wide counter and never repeat; ``mtime`` is the wall clock
    time of the write. Blobs stay in memory until deleted or until :meth:`drop`.

    Examples
    --------
    >>> store = MemoryStore("doc-example")
    >>> _ = store.put("a/b.txt", b"hello")
    >>> MemoryStore("doc-example").get("a/b.txt")
    b'hello'
    >>> store.url
    'memory://doc-example'
    >>> MemoryStore.drop("doc-example")
    True
    """

    capabilities = frozenset(
        {
            Capability.ATOMIC_CREATE,
            Capability.COMPARE_AND_SWAP,
            Capability.RANGE_READ,
            Capability.SERVER_COPY,
        }
    )

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            name = f"dk-{uuid.uuid4().hex}"
        elif not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"invalid memory store name {name!r}: use letters, digits and '._~-'")
        self._name = name
        _bucket(name)

    @property
    def name(self) -> str:
        """The store's name."""
        return self._name

    @property
    def url(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self._name}"

    @classmethod
    def drop(cls, name: str) -> bool:
        """Forget the named store and free its memory.

        Stores with this name that are still in use start over empty.

        Parameters
        ----------
        name
            The store's name.

        Returns
        -------
        bool
            Whether a store with this name existed.
        """
        with _REGISTRY_LOCK:
            bucket = _REGISTRY.pop(name, None)
        if bucket is None:
            return False
        with bucket.lock:
            bucket.blobs.clear()
        return True

    # ------------------------------------------------------------------ hooks
    def _bucket(self) -> _Bucket:
        return _bucket(self._name)

    def _not_found(self, key: str) -> KeyNotFoundError:
        return KeyNotFoundError(f"key {key!r} not found in {self!r}", key=key)

    def _lookup(self, key: str) -> _Blob:
        bucket = self._bucket()
        with bucket.lock:
            blob = bucket.blobs.get(key)
        if blob is None:
            raise self._not_found(key)
        return blob

    def _get(self, key: str) -> bytes:
        return self._lookup(key).data

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        return self._lookup(key).data[start : start + length]

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        blob = self._lookup(key)  # one stored version: its bytes and its info
        return blob.data, blob.info(key)

    def _stat(self, key: str) -> BlobInfo:
        return self._lookup(key).info(key)

    def _exists(self, key: str) -> bool:
        bucket = self._bucket()
        with bucket.lock:
            return key in bucket.blobs

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        bucket = self._bucket()
        with bucket.lock:  # snapshot; never yield while holding the lock
            items = [(k, b) for k, b in bucket.blobs.items() if k.startswith(prefix)]
        for key, blob in items:
            yield blob.info(key)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        bucket = self._bucket()
        with bucket.lock:
            keys = [k for k in bucket.blobs if k.startswith(prefix)]
        yield from keys

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        payload = bytes(data)  # copy outside the lock (no copy for bytes)
        bucket = self._bucket()
        with bucket.lock:
            self._check(bucket, key, if_absent=if_absent, if_match=if_match)
            blob = bucket.blobs[key] = _new_blob(payload)
        return blob.info(key)

    def _check(self, bucket: _Bucket, key: str, *, if_absent: bool, if_match: str | None) -> None:
        """Check a write condition; the caller holds ``bucket.lock``."""
        current = bucket.blobs.get(key)
        if if_absent and current is not None:
            raise KeyExistsError(f"key {key!r} already exists", key=key)
        if if_match is not None:
            if current is None:
                raise PreconditionFailedError(
                    f"compare-and-swap on {key!r} failed: the key does not exist", key=key
                )
            if current.etag != if_match:
                raise PreconditionFailedError(
                    f"compare-and-swap on {key!r} failed: etag is {current.etag!r}, "
                    f"expected {if_match!r}",
                    key=key,
                )

    def _delete(self, key: str, *, if_match: str | None) -> None:
        bucket = self._bucket()
        with bucket.lock:
            self._check(bucket, key, if_absent=False, if_match=if_match)
            bucket.blobs.pop(key, None)

    def _touch(self, key: str) -> None:
        bucket = self._bucket()
        with bucket.lock:
            blob = bucket.blobs.get(key)
            if blob is None:
                raise self._not_found(key)
            bucket.blobs[key] = _new_blob(blob.data)  # a new mtime and etag

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        bucket = self._bucket()
        with bucket.lock:
            source = bucket.blobs.get(src)
            if source is None:
                raise self._not_found(src)
            self._check(bucket, dst, if_absent=if_absent, if_match=None)
            blob = bucket.blobs[dst] = _new_blob(source.data)  # immutable: shared, not copied
        return blob.info(dst)
