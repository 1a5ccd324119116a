"""The store protocol: bytes under string keys, with the conditional writes a commit needs.

The store layer knows nothing about datasets. Every backend derives from :class:`Store`,
implements the ``_hook`` methods and declares what it can do in ``capabilities``; the
public methods validate keys once and translate nothing else.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from dataset_kit.exceptions import (
    InvalidKeyError,
    KeyNotFoundError,
    PreconditionFailedError,
    UnsupportedOperationError,
)

__all__ = ["BlobInfo", "Capability", "DeleteReport", "Store", "validate_key"]

# Keys are '/'-separated paths of non-empty components. Dataset keys only ever contain
# URL-quoted text, but the store accepts any printable text except what could escape a root.
_BAD_COMPONENTS = frozenset({".", ".."})
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: object) -> str:
    """Check that ``key`` is a well-formed store key and return it.

    Raises
    ------
    InvalidKeyError
        If the key is not a non-empty ``str``, starts or ends with ``/``, has an empty,
        ``.`` or ``..`` component, contains a control character or a backslash, or is
        not encodable as UTF-8 (a lone surrogate).

    Examples
    --------
    >>> validate_key("sales/table/date=2024-01-01/abc.parquet")
    'sales/table/date=2024-01-01/abc.parquet'
    >>> validate_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    dataset_kit.exceptions.InvalidKeyError: invalid key '../etc/passwd': '..' component
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"invalid key {key!r}: must be a non-empty str", key=None)
    if _CONTROL.search(key):
        raise InvalidKeyError(f"invalid key {key!r}: control character or backslash", key=key)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store can name it
        raise InvalidKeyError(f"invalid key {key!r}: not encodable as UTF-8", key=key) from None
    parts = key.split("/")
    for part in parts:
        if not part:
            raise InvalidKeyError(f"invalid key {key!r}: empty path component", key=key)
        if part in _BAD_COMPONENTS:
            raise InvalidKeyError(f"invalid key {key!r}: {part!r} component", key=key)
    return key


class Capability(enum.Enum):
    """What a backend can do beyond plain get/put/delete/list."""

    ATOMIC_CREATE = "atomic_create"
    """``put(if_absent=True)`` is atomic across processes and machines."""
    COMPARE_AND_SWAP = "compare_and_swap"
    """``put(if_match=etag)`` / ``delete(if_match=etag)`` are atomic."""
    SERVER_COPY = "server_copy"
    """``copy`` runs inside the store without moving bytes through the client."""
    RANGE_READ = "range_read"
    """``get_range`` reads a byte range without fetching the whole blob."""
    LOCAL_PATH = "local_path"
    """``local_path`` returns a filesystem path that readers may open directly."""
    CONCURRENT_IO = "concurrent_io"
    """Calls mostly wait on the network (a remote object store): many small calls overlap
    when issued from several threads. Without it a call's cost is CPU or kernel work that
    many threads do not spread. On a local filesystem it depends on the file system's
    state: 1,000 small puts into sibling directories took 0.10 s on one thread and 0.16 s
    on two while the journal kept up, but 0.32-0.59 s on one and 0.21 s on two when it did
    not; so callers use at most a couple of threads there (backup copies: two), and
    ``delete_many`` (unlinks wait on the journal) eight."""


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows about one blob.

    Attributes
    ----------
    key
        The blob's key.
    size
        Size in bytes.
    mtime
        Last modification, seconds since the epoch (UTC).
    etag
        Opaque version tag; changes whenever the content is replaced.
    """

    key: str
    size: int
    mtime: float
    etag: str


@dataclass
class DeleteReport:
    """Outcome of :meth:`Store.delete_many`.

    Attributes
    ----------
    deleted
        Keys that were deleted (or were already absent).
    failed
        Keys that could not be deleted, with the error for each.
    kept
        With ``unmodified_since``: keys left because they were modified at or after that
        time, or because their age is unknown.
    absent
        Keys among ``deleted`` that were already gone, where the store can tell at no
        extra cost (the local filesystem; Azure batch deletes). Elsewhere it stays empty.
    """

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def merge(self, part: DeleteReport) -> None:
        """Add the outcome of another call (a batch, a key) to this report."""
        self.deleted.extend(part.deleted)
        self.failed.update(part.failed)
        self.kept.extend(part.kept)
        self.absent.extend(part.absent)


def delete_many_on(
    store: Store,
    keys: Iterable[str],
    unmodified_since: float | None,
    *,
    prune_dirs: bool = True,
) -> DeleteReport:
    """``store.delete_many(keys, unmodified_since=..., prune_dirs=...)``, passing each
    option only when it differs from the default: a store subclass written before the
    options existed still works for plain deletes."""
    options: dict[str, Any] = {}
    if unmodified_since is not None:
        options["unmodified_since"] = unmodified_since
    if not prune_dirs:
        options["prune_dirs"] = False
    return store.delete_many(keys, **options)


class Store(abc.ABC):
    """A blob store: bytes under ``/``-separated string keys.

    Implementations are thread-safe and pickle by ``(url, options)`` so that they can
    travel into dask tasks and be rebuilt in another process (``open_store(url,
    **options)``), never as live clients.

    Subclasses implement the ``_get``/``_put``/... hooks; the public methods validate
    keys and conditional-write arguments once.
    """

    #: What this backend can do; callers branch on it instead of sniffing types.
    capabilities: frozenset[Capability] = frozenset()

    # ------------------------------------------------------------------ identity
    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A URL that :func:`dataset_kit.store.open_store` turns back into this store."""

    @property
    def options(self) -> Mapping[str, Any]:
        """Keyword options that, with :attr:`url`, rebuild this store (no live clients)."""
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        from dataset_kit.store._factory import _rebuild_store

        return (_rebuild_store, (self.url, dict(self.options)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> bytes:
        """Return the blob's bytes.

        Raises
        ------
        KeyNotFoundError
            If the key does not exist.
        """
        return self._get(validate_key(key))

    def get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        """Return the blob's bytes and its :class:`BlobInfo` (size, mtime, etag).

        Where the backend can, both come from one read (one request on Azure, one open
        file locally), so the etag is exactly that of the returned bytes: the one to
        swap against (``put(if_match=...)``). Elsewhere the info is read first, so its
        etag may be older than the bytes but never newer: a swap against it can fail,
        never overwrite a change the caller did not see.

        Raises
        ------
        KeyNotFoundError
            If the key does not exist.

        Examples
        --------
        >>> from dataset_kit.store import MemoryStore
        >>> store = MemoryStore()
        >>> written = store.put("k", b"v1")
        >>> data, info = store.get_with_info("k")
        >>> data, info.etag == written.etag
        (b'v1', True)
        """
        return self._get_with_info(validate_key(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return up to ``length`` bytes starting at offset ``start``.

        Raises
        ------
        KeyNotFoundError
            If the key does not exist.
        """
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        return self._get_range(validate_key(key), start, length)

    def stat(self, key: str) -> BlobInfo:
        """Return size, mtime and etag of a blob.

        Raises
        ------
        KeyNotFoundError
            If the key does not exist.
        """
        return self._stat(validate_key(key))

    def exists(self, key: str) -> bool:
        """Whether the key exists."""
        return self._exists(validate_key(key))

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield every key that starts with ``prefix`` (plain string prefix, any order)."""
        return self._iter_keys(prefix)

    def iter_infos(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Yield :class:`BlobInfo` for every key that starts with ``prefix`` (any order)."""
        return self._iter_infos(prefix)

    def iter_shallow_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix`` and have no ``/`` after it.

        Lists one "directory" level only (``iter_shallow_keys("")`` gives the top-level
        keys, e.g. every dataset pointer) without walking the whole store where the
        backend can avoid it.
        """
        return self._iter_shallow_keys(prefix)

    def local_path(self, key: str) -> str | None:
        """A filesystem path holding the blob, for stores with ``LOCAL_PATH``; else None."""
        return None

    # ------------------------------------------------------------------ writes
    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
    ) -> BlobInfo:
        """Store ``data`` under ``key`` and return the new blob's info.

        Parameters
        ----------
        key
            The key.
        data
            The bytes.
        if_absent
            Create-only: fail with :class:`KeyExistsError` if the key exists. Needs
            ``Capability.ATOMIC_CREATE``.
        if_match
            Compare-and-swap: replace only if the current etag equals this one, else
            :class:`PreconditionFailedError` (also when the key is absent). Needs
            ``Capability.COMPARE_AND_SWAP``.

        Raises
        ------
        KeyExistsError, PreconditionFailedError, UnsupportedOperationError
        TypeError
            If ``data`` is not ``bytes``, ``bytearray`` or ``memoryview``.
        """
        validate_key(key)
        if if_absent and if_match is not None:
            raise ValueError("if_absent and if_match are mutually exclusive")
        if if_absent and Capability.ATOMIC_CREATE not in self.capabilities:
            raise UnsupportedOperationError(
                f"{self!r} cannot do atomic create-only writes", key=key
            )
        if if_match is not None and Capability.COMPARE_AND_SWAP not in self.capabilities:
            raise UnsupportedOperationError(f"{self!r} cannot do compare-and-swap", key=key)
        return self._put(key, _as_bytes_like(data), if_absent=if_absent, if_match=if_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete a blob; deleting a missing key is not an error (unless ``if_match``).

        Raises
        ------
        PreconditionFailedError
            With ``if_match``, if the etag differs or the key is missing.
        """
        validate_key(key)
        if if_match is not None and Capability.COMPARE_AND_SWAP not in self.capabilities:
            raise UnsupportedOperationError(f"{self!r} cannot do compare-and-swap", key=key)
        self._delete(key, if_match=if_match)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """Delete many blobs (missing ones count as deleted); never raises per key.

        Parameters
        ----------
        keys
            The blobs to delete.
        unmodified_since
            Delete only blobs last modified before this time (seconds since the epoch);
            newer ones, and those of unknown age (a modification time of 0), are left
            and listed in :attr:`DeleteReport.kept`. Garbage collection passes "now
            minus the grace period", so a blob written again under an old key after
            planning is never deleted. Where the backend can, the condition and the
            delete are one request (Azure: ``If-Unmodified-Since``); otherwise the blob
            is deleted only if its etag is still the one whose age was checked
            (compare-and-swap stores), or right after the check.
        prune_dirs
            Stores with real directories (the local filesystem) remove the directories
            this deletion empties (the default). ``False`` lets them leave those behind,
            which saves a serialized ``rmdir`` per directory; garbage collection passes
            it unless asked to prune. Stores without directories ignore it.
        """
        report = DeleteReport()
        for key in keys:
            try:
                if unmodified_since is None:
                    self.delete(key)
                elif not self._delete_if_old(key, unmodified_since):
                    report.kept.append(key)
                    continue
            except Exception as exc:  # reported per key, never raised
                report.failed[key] = exc
            else:
                report.deleted.append(key)
        return report

    def _delete_if_old(self, key: str, unmodified_since: float) -> bool:
        """Delete ``key`` if it was last modified before ``unmodified_since``.

        Returns False if it was kept (newer, or of unknown age); True if it was deleted
        or is absent.
        """
        try:
            info = self.stat(key)
        except KeyNotFoundError:
            return True
        if info.mtime <= 0 or info.mtime >= unmodified_since:
            return False
        if Capability.COMPARE_AND_SWAP not in self.capabilities:
            self.delete(key)
            return True
        try:
            self.delete(key, if_match=info.etag)
        except PreconditionFailedError:  # replaced since the stat (or deleted meanwhile)
            return not self.exists(key)
        return True

    def copy(self, src: str, dst: str, *, if_absent: bool = False) -> BlobInfo:
        """Copy ``src`` to ``dst`` (server-side with ``SERVER_COPY``) and return dst's info.

        Raises
        ------
        KeyNotFoundError
            If ``src`` does not exist.
        KeyExistsError
            With ``if_absent``, if ``dst`` exists.
        UnsupportedOperationError
            With ``if_absent``, if the store lacks ``Capability.ATOMIC_CREATE``.
        """
        validate_key(src)
        validate_key(dst)
        if if_absent and Capability.ATOMIC_CREATE not in self.capabilities:
            raise UnsupportedOperationError(
                f"{self!r} cannot do atomic create-only writes", key=dst
            )
        return self._copy(src, dst, if_absent=if_absent)

    def copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None = None
    ) -> BlobInfo:
        """Copy blob ``src`` of ``source`` to ``dst`` in this store; return dst's info.

        The copy is made inside the storage service where the two stores allow it: within
        one store with ``SERVER_COPY``, between two Azure containers (or prefixes) of
        one storage account, and between two local filesystem stores (a file copied to
        another by the kernel, in constant memory). Otherwise the bytes pass through
        this process.

        Parameters
        ----------
        source
            The store holding ``src``; may be this store.
        src, dst
            Source and target keys.
        source_info
            ``src``'s info from a listing, if the caller has it. A copy made inside the
            service is then conditional on its etag, so it copies exactly the blob that
            was listed, with the listed size, and needs no request to read the source's
            properties first.

        Raises
        ------
        KeyNotFoundError
            If ``src`` does not exist.
        PreconditionFailedError
            If ``src`` no longer has the etag of ``source_info`` (service-side copies).

        Examples
        --------
        >>> from dataset_kit.store import MemoryStore
        >>> a, b = MemoryStore(), MemoryStore()
        >>> _ = a.put("k", b"bytes")
        >>> b.copy_from(a, "k", "copy/k").size, b.get("copy/k")
        (5, b'bytes')
        """
        validate_key(src)
        validate_key(dst)
        return self._copy_from(source, src, dst, source_info=source_info)

    def link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        """Hard-link blob ``src`` of ``source`` as ``dst`` here, if both share a filesystem.

        Only local filesystem stores can; others (and a local store whose ``source`` lies
        on another filesystem, or which cannot hard-link) return None, and the caller
        copies instead (:meth:`copy_from`). The two keys then name one file: it is never
        changed in place (writes replace files by rename), so deleting or overwriting
        either key leaves the other intact. Its modification time becomes now, for both
        keys, so that garbage collection treats the new key as young (the grace period
        protects it until a commit references it).

        Returns
        -------
        BlobInfo or None
            ``dst``'s info, or None if nothing was linked.

        Raises
        ------
        KeyNotFoundError
            If ``src`` does not exist (only stores that try to link say so; the others
            return None).

        Examples
        --------
        >>> import tempfile
        >>> from dataset_kit.store import LocalStore, MemoryStore
        >>> tmp = tempfile.TemporaryDirectory()
        >>> live, vault = LocalStore(tmp.name + "/live"), LocalStore(tmp.name + "/vault")
        >>> _ = live.put("k", b"bytes")
        >>> vault.link_from(live, "k", "copy/k").size, vault.get("copy/k")
        (5, b'bytes')
        >>> MemoryStore().link_from(live, "k", "k") is None
        True
        >>> tmp.cleanup()
        """
        validate_key(src)
        validate_key(dst)
        return self._link_from(source, src, dst)

    def remove_empty_dirs(self, prefix: str = "") -> int:
        """Remove the empty directories below ``prefix`` (never the store's root).

        Only stores with real directories (the local filesystem) have any; a flat
        namespace returns 0. A directory that holds nothing but empty directories goes
        too. Garbage collection calls it when asked to prune (``prune_dirs=True``), for
        the directories that earlier runs left empty. A writer that finds its directory
        gone creates it again.

        Returns
        -------
        int
            How many directories were removed.
        """
        return 0

    def touch(self, key: str) -> None:
        """Renew ``key``'s modification time, content unchanged (one request on Azure).

        A blob written long ago that a commit is about to reference again (a finished
        chunk that a resumed job reuses) is touched first: garbage collection then
        treats it as young, and checks that as it deletes, so the grace period protects
        it until the commit.

        Raises
        ------
        KeyNotFoundError
            If ``key`` does not exist.

        Examples
        --------
        >>> import time
        >>> from dataset_kit.store import MemoryStore
        >>> store = MemoryStore()
        >>> first = store.put("k", b"data")
        >>> time.sleep(0.01)
        >>> store.touch("k")
        >>> store.stat("k").mtime > first.mtime, store.get("k")
        (True, b'data')
        """
        validate_key(key)
        self._touch(key)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections (the store can be used again afterwards)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _get(self, key: str) -> bytes: ...

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        return self._get(key)[start : start + length]

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        # Backends that read both at once override this; the info first, then the bytes
        # (an etag older than the bytes makes a later swap fail, never succeed wrongly).
        info = self._stat(key)
        return self._get(key), info

    @abc.abstractmethod
    def _stat(self, key: str) -> BlobInfo: ...

    @abc.abstractmethod
    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]: ...

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        # Backends that can list names without a per-blob stat override this.
        for info in self._iter_infos(prefix):
            yield info.key

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        n = len(prefix)
        return (k for k in self._iter_keys(prefix) if "/" not in k[n:])

    def _exists(self, key: str) -> bool:
        try:
            self._stat(key)
        except KeyNotFoundError:
            return False
        return True

    @abc.abstractmethod
    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo: ...

    @abc.abstractmethod
    def _delete(self, key: str, *, if_match: str | None) -> None: ...

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        return self.put(dst, self.get(src), if_absent=if_absent)

    def _touch(self, key: str) -> None:
        # Rewrite the same bytes: right on any backend. Those with a cheaper way (a file's
        # utime, a metadata request) override this.
        data, info = self.get_with_info(key)
        if Capability.COMPARE_AND_SWAP not in self.capabilities:
            self.put(key, data)
            return
        try:
            self.put(key, data, if_match=info.etag)
        except PreconditionFailedError:  # written again meanwhile (that renewed it too)
            self.stat(key)  # or deleted: KeyNotFoundError

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        # Backends that can copy from another store inside the service override this
        # and _copies_inside.
        if Store._copies_inside(self, source):
            return self.copy(src, dst)
        return self.put(dst, source.get(src))

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        # Stores with hard links (the local filesystem) override this.
        return None

    def _copies_inside(self, source: Store) -> bool:
        """True if :meth:`copy_from` ``source`` makes no call on ``source`` (the copy is
        one operation of this store). Wrappers that hold a resource around a call (a
        throttle's lease) ask it: around a copy that reads ``source`` through its own
        wrappers, holding it could deadlock."""
        return source is self or source.url == self.url  # wrappers keep their store's URL

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        """True if :meth:`copy_from` ``source`` of the blob ``source_info`` streams it
        through this process (a chunk or a few blocks at a time) instead of holding it
        whole. Callers size their memory budget by it; a throttle holds one lease
        around such a copy (its reads then go to the source's origin)."""
        return False


def _as_bytes_like(data: object) -> bytes | memoryview:
    """Normalize the ``data`` argument of :meth:`Store.put` to bytes or a flat byte view.

    ``len()`` of the result is its size in bytes, whatever the format and shape of a
    ``memoryview`` passed in (``len(memoryview(array("d", [1.0])))`` is 1, not 8).
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)
    if isinstance(data, memoryview):
        if data.format == "B" and data.ndim == 1 and data.c_contiguous:
            return data
        return data.cast("B") if data.c_contiguous else memoryview(data.tobytes())
    raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
