"""Adapter that makes a simplekv or minimalkv ``KeyValueStore`` a :class:`Store`.

Existing kartothek/plateau set-ups keep working through it. These stores have neither
conditional writes nor modification times, so the adapter declares no
``ATOMIC_CREATE``/``COMPARE_AND_SWAP`` unless explicitly told to emulate them for writers
inside one process (``allow_unsafe_commits=True``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from dataset_kit.exceptions import (
    ConfigError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    PreconditionFailedError,
    StoreError,
    UnsafeCommitWarning,
)
from dataset_kit.store._base import BlobInfo, Capability, Store, validate_key

__all__ = ["KVStoreAdapter"]

_log = logging.getLogger(__name__)

# Conditional writes of every adapter in the process serialize on one of these stripes,
# chosen by key: adapters rebuilt from the same URL (or wrapping the same object) thus
# exclude each other without a registry of store identities.
_LOCK_STRIPES = tuple(threading.Lock() for _ in range(64))

# Set while a pickled adapter is rebuilt: the warning was already shown where the store
# was first created, repeating it in every dask task would only be noise.
_QUIET_UNSAFE_WARNING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dataset_kit_quiet_unsafe_warning", default=False
)

_USERINFO = re.compile(r"(?<=://)[^/@?#]*@")

_REQUIRED_METHODS = ("get", "put", "delete", "__contains__")


@contextlib.contextmanager
def _quiet_unsafe_warning() -> Iterator[None]:
    """Do not emit :class:`UnsafeCommitWarning` for adapters built in this context."""
    token = _QUIET_UNSAFE_WARNING.set(True)
    try:
        yield
    finally:
        _QUIET_UNSAFE_WARNING.reset(token)


def _is_key_value_store(obj: object) -> bool:
    """Whether ``obj`` looks like a simplekv/minimalkv ``KeyValueStore`` instance.

    Duck-typed: callable ``get``, ``put``, ``delete``, ``__contains__`` and ``keys`` or
    ``iter_keys``; classes themselves and :class:`Store` instances do not count.
    """
    if isinstance(obj, (type, Store, str, bytes, os.PathLike)):
        return False
    if not all(callable(getattr(obj, name, None)) for name in _REQUIRED_METHODS):
        return False
    return callable(getattr(obj, "iter_keys", None)) or callable(getattr(obj, "keys", None))


#: Class-name fragments of key-value stores that talk to a server over the network.
_NETWORK_STORES = ("azure", "s3", "boto", "gcs", "google", "redis", "mongo")


def _is_network_store(kv: object) -> bool:
    """Whether ``kv`` (or the store a minimalkv decorator wraps) is a network store."""
    for _ in range(8):  # decorators nest a few levels at most
        name = type(kv).__name__.lower()
        if any(fragment in name for fragment in _NETWORK_STORES):
            return True
        inner = getattr(kv, "_dstore", None)
        if inner is None:
            return False
        kv = inner
    return False


def _content_etag(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _redact(url: str) -> str:
    """Hide credentials in the user-info part of a URL."""
    return _USERINFO.sub("***@", url)


def _lock_for(key: str) -> threading.Lock:
    return _LOCK_STRIPES[hash(key) % len(_LOCK_STRIPES)]


class KVStoreAdapter(Store):
    """A :class:`Store` over a simplekv or minimalkv ``KeyValueStore``.

    Parameters
    ----------
    kv
        The key-value store (duck-typed: ``get``, ``put``, ``delete``, ``__contains__``,
        ``keys`` or ``iter_keys``; ``open`` and ``copy`` are used when present). Keys
        with ``/`` need the extended-keyspace ("H") variants, e.g. ``hfs://``.
    url
        The URL the store was opened from, if any: the adapter then pickles by URL and is
        rebuilt with :func:`~dataset_kit.store.open_store`. Without it the adapter
        pickles the wrapped store object itself.
    allow_unsafe_commits
        Emulate ``put(if_absent=True)`` and ``if_match`` with a check-then-write under a
        lock *of this process*, and declare ``ATOMIC_CREATE`` and ``COMPARE_AND_SWAP``.
        This is only safe while every writer of the store runs in this one process;
        writers elsewhere can silently overwrite each other. Emits
        :class:`~dataset_kit.exceptions.UnsafeCommitWarning`.

    Raises
    ------
    ConfigError
        If ``kv`` lacks the methods of a key-value store.

    Notes
    -----
    * ``RANGE_READ`` is declared if the store has ``open`` (seek + read),
      ``SERVER_COPY`` if it has ``copy`` and ``CONCURRENT_IO`` for network stores
      (Azure, S3, Google Cloud Storage, Redis, MongoDB: recognised by class name).
    * The stores keep no version tags: the etag is a blake2b hash of the content, so
      :meth:`stat` and :meth:`iter_infos` read whole blobs, and compare-and-swap compares
      contents (a blob rewritten with equal bytes keeps its etag).
    * ``mtime`` is the file's modification time for filesystem stores and ``0.0``
      otherwise (the interface has none): retention rules based on age see such blobs
      as arbitrarily old.
    * Plain filesystem stores write in place, so a reader may see a partially written
      blob; :func:`~dataset_kit.store.open_store` turns them into a
      :class:`~dataset_kit.store.LocalStore` instead.
    """

    def __init__(
        self, kv: Any, *, url: str | None = None, allow_unsafe_commits: bool = False
    ) -> None:
        if not _is_key_value_store(kv):
            raise ConfigError(
                f"{type(kv).__name__} is not a key-value store: it needs get, put, delete, "
                "__contains__ and keys or iter_keys"
            )
        self._kv = kv
        self._url = url
        # An adapter without a URL is known by its object: two such adapters are two
        # stores (a backup between them must not read the target for the source, nor
        # may their task keys coincide); a pickled copy keeps the token.
        self._instance = uuid.uuid4().hex[:16]
        self._unsafe = bool(allow_unsafe_commits)
        caps: set[Capability] = set()
        if callable(getattr(kv, "open", None)):
            caps.add(Capability.RANGE_READ)
        if callable(getattr(kv, "copy", None)):
            caps.add(Capability.SERVER_COPY)
        if _is_network_store(kv):
            caps.add(Capability.CONCURRENT_IO)
        if self._unsafe:
            caps |= {Capability.ATOMIC_CREATE, Capability.COMPARE_AND_SWAP}
            if not _QUIET_UNSAFE_WARNING.get():
                warnings.warn(
                    f"{self!r}: create-only and compare-and-swap writes are emulated with "
                    "a check-then-write under a lock of this process. Commits are only "
                    "safe while every writer of this store runs in this process; writers "
                    "in other processes or machines can overwrite each other's commits.",
                    UnsafeCommitWarning,
                    stacklevel=2,
                )
        self.capabilities = frozenset(caps)

    # ------------------------------------------------------------------ identity
    @property
    def kv(self) -> Any:
        """The wrapped key-value store."""
        return self._kv

    @property
    def url(self) -> str:
        """The URL given at construction, else ``kv://<class name>?instance=<token>``: not
        openable, and unique to this adapter and its pickled copies."""
        if self._url is not None:
            return self._url
        return f"kv://{type(self._kv).__name__}?instance={self._instance}"

    @property
    def options(self) -> Mapping[str, Any]:
        """``{"allow_unsafe_commits": True}`` if set, else empty."""
        return {"allow_unsafe_commits": True} if self._unsafe else {}

    def __reduce__(self) -> tuple[Any, ...]:
        if self._url is not None:
            return super().__reduce__()  # by URL: open_store(url, **options)
        return (_rebuild_adapter, (self._kv, self._unsafe, self._instance))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redact(self.url)!r})"

    # ------------------------------------------------------------------ helpers
    def _not_found(self, key: str) -> KeyNotFoundError:
        return KeyNotFoundError(f"key {key!r} not found in {self!r}", key=key)

    @contextlib.contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        """Translate the wrapped store's exceptions for an operation on ``key``."""
        try:
            yield
        except StoreError:
            raise
        except (KeyError, IsADirectoryError, NotADirectoryError):
            # KeyError is the interface's "missing"; filesystem stores raise the others
            # for a key that is a directory of other keys.
            raise self._not_found(key) from None
        except ValueError as exc:  # the store's own key check ("illegal characters")
            raise InvalidKeyError(f"invalid key {key!r} for {self!r}: {exc}", key=key) from exc
        except OSError as exc:
            raise StoreError(f"{op} {key!r} failed in {self!r}: {exc}", key=key) from exc

    def _filename(self, key: str) -> str | None:
        """The file of ``key`` for simplekv/minimalkv filesystem stores, else None."""
        # Looked up on the class: decorators (minimalkv's URLEncodeKeysDecorator...)
        # forward attributes to the store they wrap, but their keys map differently.
        build = getattr(type(self._kv), "_build_filename", None)
        if not callable(build) or not isinstance(getattr(self._kv, "root", None), str):
            return None
        try:
            name = build(self._kv, key)
        except Exception:  # best effort: a private API of the wrapped store
            return None
        return name if isinstance(name, str) else None

    def _mtime(self, key: str) -> float:
        filename = self._filename(key)
        if filename is not None:
            with contextlib.suppress(OSError):
                return os.stat(filename).st_mtime
        return 0.0

    def _read(self, key: str) -> bytes:
        with self._errors("get", key):
            data = self._kv.get(key)
        return data if isinstance(data, bytes) else bytes(data)

    def _write(self, key: str, payload: bytes) -> None:
        with self._errors("put", key):
            try:
                self._kv.put(key, payload)
            except FileNotFoundError:
                # Filesystem stores prune empty directories on delete without a lock:
                # a concurrent delete can remove the directory this put just created.
                _log.debug("retrying put of %r after a concurrent directory removal", key)
                self._kv.put(key, payload)

    def _info(self, key: str, data: bytes) -> BlobInfo:
        return BlobInfo(key=key, size=len(data), mtime=self._mtime(key), etag=_content_etag(data))

    # ------------------------------------------------------------------ reads
    def _get(self, key: str) -> bytes:
        return self._read(key)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        if Capability.RANGE_READ not in self.capabilities:
            return self._read(key)[start : start + length]
        with self._errors("get_range", key):
            f = self._kv.open(key)
            try:
                try:
                    f.seek(start)
                except (OSError, ValueError, AttributeError):  # not seekable
                    return self._read(key)[start : start + length]
                chunks: list[bytes] = []
                remaining = length
                while remaining > 0:
                    chunk = f.read(remaining)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
                return b"".join(chunks)
            finally:
                f.close()

    def _stat(self, key: str) -> BlobInfo:
        return self._info(key, self._read(key))

    def _exists(self, key: str) -> bool:
        with self._errors("exists", key):
            present = bool(key in self._kv)
        if present:
            filename = self._filename(key)
            if filename is not None:  # `in` is os.path.exists: true for directories too
                return os.path.isfile(filename)
        return present

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        iter_keys = getattr(self._kv, "iter_keys", None)
        with self._errors("list", prefix):
            keys = iter_keys(prefix) if callable(iter_keys) else self._kv.keys(prefix)
        for key in keys:
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            try:
                validate_key(key)
            except InvalidKeyError:
                continue  # not reachable through this interface
            yield key

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        for key in self._iter_keys(prefix):
            try:
                yield self._stat(key)
            except KeyNotFoundError:
                continue  # deleted while we listed

    # ------------------------------------------------------------------ writes
    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        payload = bytes(data)
        if if_absent:
            with _lock_for(key):
                if self._exists(key):
                    raise KeyExistsError(f"key {key!r} already exists", key=key)
                self._write(key, payload)
        elif if_match is not None:
            with _lock_for(key):
                self._check_etag(key, if_match)
                self._write(key, payload)
        else:
            self._write(key, payload)
        return self._info(key, payload)

    def _check_etag(self, key: str, expected: str) -> None:
        try:
            current = _content_etag(self._read(key))
        except KeyNotFoundError:
            raise PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: the key does not exist", key=key
            ) from None
        if current != expected:
            raise PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: etag is {current!r}, expected {expected!r}",
                key=key,
            )

    def _delete(self, key: str, *, if_match: str | None) -> None:
        if if_match is None:
            self._remove(key)
            return
        with _lock_for(key):
            self._check_etag(key, if_match)
            self._remove(key)

    def _remove(self, key: str) -> None:
        try:
            with self._errors("delete", key):
                self._kv.delete(key)
        except KeyNotFoundError:
            return  # deleting a missing key is a no-op
        except StoreError as exc:
            # Filesystem stores unlink, then prune parent directories without a lock and
            # fail if another writer refilled one meanwhile: the key itself is gone.
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.ENOTEMPTY:
                if not self._exists(key):
                    return
            raise

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        if Capability.SERVER_COPY not in self.capabilities:
            return super()._copy(src, dst, if_absent=if_absent)
        if if_absent:
            with _lock_for(dst):
                if self._exists(dst):
                    raise KeyExistsError(f"key {dst!r} already exists", key=dst)
                self._server_copy(src, dst)
        else:
            self._server_copy(src, dst)
        return self._stat(dst)

    def _server_copy(self, src: str, dst: str) -> None:
        with self._errors("copy", src):  # a KeyError means the source is missing
            self._kv.copy(src, dst)


def _rebuild_adapter(kv: Any, allow_unsafe_commits: bool, instance: str) -> KVStoreAdapter:
    with _quiet_unsafe_warning():
        adapter = KVStoreAdapter(kv, allow_unsafe_commits=allow_unsafe_commits)
    adapter._instance = instance
    return adapter
