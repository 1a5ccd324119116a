"""The default backend: blobs as files in a directory tree.

Key ``a/b/c`` is the file ``<root>/a/b/c``. Writes go to a hidden temporary file in the
target directory and are then renamed into place, so readers never see partial content.
Create-only writes use ``os.link`` (which fails atomically if the name exists) and
compare-and-swap runs under an exclusive ``flock`` on a hidden per-directory lock file, so
both are atomic across the processes of one machine (and across machines on a network
filesystem with working ``link`` and ``flock``).

Names whose path component starts with ``.dk-`` are reserved for these temporary and lock
files: they are never listed and cannot be used as keys.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import random
import re
import secrets
import stat as stat_mod
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dataset_kit.store._streams as _streams
from dataset_kit.exceptions import (
    ConfigError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from dataset_kit.store._base import BlobInfo, Capability, DeleteReport, Store, validate_key
from dataset_kit.store.delegate import read_origin

if sys.platform != "win32":
    import fcntl

__all__ = ["LocalStore"]

_log = logging.getLogger(__name__)

#: Path components starting with this are ours (temporary and lock files), never keys.
HIDDEN_PREFIX = ".dk-"
_TMP_PREFIX = ".dk-tmp-"
_LOCK_NAME = ".dk-lock"

# A directory that a concurrent delete prunes between our makedirs and our create is
# recreated and the create retried. Every lost race means another delete completed, so
# writers only starve under an endless stream of deletes; jittered sleeps after the first
# few attempts break lockstep between threads. The bound is a safety net.
_DIR_RETRIES = 1000
_DIR_RETRY_JITTER = 0.002  # seconds, upper bound of the random sleep

# delete_many unlinks on this many threads once it has at least _PARALLEL_UNLINK_MIN keys
_UNLINK_THREADS = 8
_PARALLEL_UNLINK_MIN = 64

_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_ERRNOS = frozenset({errno.ETIMEDOUT, errno.ESTALE})
# link(2) refusals that hold for every file of a source (another mount, a file system
# without hard links): remembered, so no more attempts from there. Any other refusal
# (EPERM for another user's file under protected_hardlinks, EMLINK, ...) is per file.
# Either way the blob is copied instead.
_NO_LINK_HERE_ERRNOS = frozenset({errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
# copies between local files: copy_file_range(2) in chunks of at most this (the kernel
# caps one call near 2 GiB); where it is refused (another file system type, an old
# kernel, Windows) reads and writes of _COPY_CHUNK bytes
_copy_file_range = getattr(os, "copy_file_range", None)
_KERNEL_COPY_MAX = 1 << 30
_COPY_CHUNK = 1 << 20
_NO_KERNEL_COPY_ERRNOS = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
)
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\\]")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO at a key must not hang

_CAPABILITIES = {
    Capability.ATOMIC_CREATE,
    Capability.RANGE_READ,
    Capability.LOCAL_PATH,
    Capability.SERVER_COPY,
}
if sys.platform != "win32":  # compare-and-swap needs flock
    _CAPABILITIES.add(Capability.COMPARE_AND_SWAP)


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _info(key: str, st: os.stat_result) -> BlobInfo:
    return BlobInfo(key=key, size=st.st_size, mtime=st.st_mtime, etag=_etag(st))


def _prefix_taken(key: str, verb: str = "write") -> StoreError:
    """The error for a key whose name is a directory of other keys."""
    return StoreError(f"cannot {verb} {key!r}: keys with the prefix {key + '/'!r} exist", key=key)


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _writer(data: bytes | memoryview) -> Callable[[int], None]:
    """A ``fill`` for :meth:`LocalStore._put_at` that writes ``data``."""
    return lambda fd: _write_all(fd, data)


def _copier(src_fd: int, size: int, src: str, dst: str) -> Callable[[int], None]:
    """A ``fill`` for :meth:`LocalStore._put_at` that copies the ``size`` bytes of the
    open file ``src_fd`` (key ``src``) for key ``dst``, inside the kernel where it can
    (``copy_file_range``: no bytes pass through this process, and memory stays flat
    whatever the file's size)."""

    def fill(fd: int) -> None:
        # explicit source offsets: a second call (on another temporary file) starts
        # over, whatever a first one did
        done = 0
        if _copy_file_range is not None:
            try:
                while done < size:
                    n = _copy_file_range(src_fd, fd, min(size - done, _KERNEL_COPY_MAX), done)
                    if not n:
                        break  # a file system that stops early: read the rest
                    done += n
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY_ERRNOS:
                    raise
        # the rest (all of it where the kernel cannot copy) by reads and writes
        while done < size and (chunk := _read_at(src_fd, min(size - done, _COPY_CHUNK), done)):
            _write_all(fd, chunk)
            done += len(chunk)
        if done < size:  # the file shrank: written into by someone else, not by a store
            raise StoreError(
                f"copy {src!r} -> {dst!r}: the source ended after {done} of its "
                f"{size} bytes (changed in place meanwhile); nothing was written",
                key=dst,
            )

    return fill


def _range_copier(source: Store, listed: BlobInfo, dst: str) -> Callable[[int], None]:
    """A ``fill`` for :meth:`LocalStore._put_at` that copies blob ``listed.key`` of
    ``source`` (``listed.size`` bytes) by ranged reads, then checks that the blob still
    has the listed etag: a blob replaced during the copy fails it (nothing written)."""

    def fill(fd: int) -> None:
        done = 0
        while done < listed.size:
            want = min(_streams.STREAMED_COPY_CHUNK, listed.size - done)
            chunk = source.get_range(listed.key, done, want)
            if not chunk:
                break
            _write_all(fd, chunk)
            done += len(chunk)
        now = _streams.changed_since(source, listed)
        if done != listed.size or now is not None:
            raise StoreError(
                f"copy {listed.key!r} -> {dst!r}: the source changed during the copy "
                f"(read {done} of {listed.size} bytes; now {now or 'as listed'}, listed "
                f"{listed}); nothing was written",
                key=dst,
            )

    return fill


def _read_at(fd: int, length: int, offset: int) -> bytes:
    """``os.pread`` (where it is missing, a seek and a read)."""
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, length)  # pragma: no cover - Windows


def _translate_oserror(exc: OSError, op: str, key: str) -> StoreError:
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidKeyError(f"invalid key {key!r}: name too long for the filesystem", key=key)
    if exc.errno in _TRANSIENT_ERRNOS:
        return StoreUnavailableError(f"{op} {key!r} failed: {exc}", key=key)
    return StoreError(f"{op} {key!r} failed: {exc}", key=key)


@contextlib.contextmanager
def _oserrors(op: str, key: str) -> Iterator[None]:
    """Turn OSErrors that escape an operation into :class:`StoreError`."""
    try:
        yield
    except StoreError:  # ours, including KeyExistsError (an OSError too)
        raise
    except OSError as exc:
        raise _translate_oserror(exc, op, key) from exc


class LocalStore(Store):
    """Blobs as files under a root directory; the default backend.

    Parameters
    ----------
    root
        The directory holding the blobs. Relative paths are resolved against the current
        working directory when the store is created.
    fsync
        Flush each written file and its directory to disk before a write returns
        (slower; protects against power loss, not needed against process crashes).
    create
        Create ``root`` if it does not exist; if False, a missing root is an error.

    Raises
    ------
    ConfigError
        If ``root`` is missing and ``create`` is False, or is not a directory.

    Notes
    -----
    * ``put`` writes a hidden temporary file next to the target and renames it into place:
      readers see the old or the new content, never a mix.
    * ``put(if_absent=True)`` hard-links the temporary file to the key, which fails
      atomically if the key exists (the filesystem must support hard links).
    * ``put(if_match=...)`` and ``delete(if_match=...)`` compare and replace under an
      exclusive ``flock`` on ``<dir>/.dk-lock``; plain puts and deletes take no lock.
    * The etag combines modification time (set by the store with nanosecond precision),
      size and inode, so it changes whenever a blob is replaced.
    * A key and a key prefix cannot share a name: ``a`` and ``a/b`` cannot both exist.
    * Keys never escape the root: a key whose real path (after symlinks) leaves the root
      is rejected with :class:`InvalidKeyError`. Listing skips symlinks that leave the
      root and does not descend into symlinked directories.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = LocalStore(tmp.name)
    >>> store.put("table/part-0.parquet", b"PAR1").size
    4
    >>> store.get("table/part-0.parquet")
    b'PAR1'
    >>> sorted(store.iter_keys("table/"))
    ['table/part-0.parquet']
    >>> store.url == "file://" + tmp.name
    True
    >>> tmp.cleanup()
    """

    capabilities = frozenset(_CAPABILITIES)

    def __init__(
        self, root: str | os.PathLike[str], *, fsync: bool = False, create: bool = True
    ) -> None:
        path = os.path.abspath(os.fspath(root))
        if create:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create store root {path!r}: {exc}") from exc
        if not os.path.isdir(path):
            what = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ConfigError(f"store root {path!r} {what}")
        self._root = path
        real = os.path.realpath(path)
        self._real_root = real
        self._real_root_slash = real if real.endswith(os.sep) else real + os.sep
        self._safe_dirs: set[str] = set()
        self._fsync = bool(fsync)
        self._links_to: dict[str, bool] = {}  # source real root -> can link from there

    # ------------------------------------------------------------------ identity
    @property
    def root(self) -> str:
        """The absolute root directory."""
        return self._root

    @property
    def url(self) -> str:
        """``file://`` plus the absolute, percent-encoded root path."""
        return pathlib.PurePath(self._root).as_uri()

    @property
    def options(self) -> Mapping[str, Any]:
        """``{"fsync": True}`` if set, else empty."""
        return {"fsync": True} if self._fsync else {}

    def local_path(self, key: str) -> str:
        """Return the path of the file that holds (or would hold) ``key``.

        Parameters
        ----------
        key
            The key.

        Returns
        -------
        str
            The path, whether or not the blob exists. Treat the file as read-only.

        Raises
        ------
        InvalidKeyError
            If the key is malformed or would escape the root.
        """
        return self._path(validate_key(key))

    # ------------------------------------------------------------------ paths
    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root_slash)

    def _path(self, key: str, *, follow: bool = True) -> str:
        """The file path of ``key``, checked to stay inside the root.

        ``follow=False``: the caller never follows a symlink at the key itself (unlink,
        rename onto it), so it need not be checked; its directories always are.
        """
        path = self._join(key)
        # Resolving every component costs an lstat each (0.1 ms per call, most of a small
        # put): directories already verified to lie inside the root are remembered. Only
        # a directory swapped for a symlink by someone with write access to the root
        # after its first use would go unnoticed.
        parent = os.path.dirname(path)
        if parent not in self._safe_dirs:
            self._check_dirs(parent, key)
        if follow and os.path.islink(path) and not self._inside(os.path.realpath(path)):
            raise self._escapes(key)
        return path

    def _join(self, key: str) -> str:
        """The file path of a valid ``key``, unchecked (hidden components refused)."""
        parts = key.split("/")
        for part in parts:
            if part.startswith(HIDDEN_PREFIX):
                raise InvalidKeyError(
                    f"invalid key {key!r}: components starting with {HIDDEN_PREFIX!r} are "
                    "reserved for LocalStore's temporary and lock files",
                    key=key,
                )
        return os.path.join(self._root, *parts)

    def _check_dirs(self, directory: str, key: str) -> None:
        """Verify the directories from the nearest verified ancestor down to ``directory``.

        Missing directories are fine (they will be created as real directories); an
        existing symlink must resolve inside the root.
        """
        pending = []
        anc = directory
        while anc not in self._safe_dirs and anc != self._root:
            pending.append(anc)
            anc = os.path.dirname(anc)
        if anc == self._root and not self._inside(os.path.realpath(anc)):
            raise self._escapes(key)  # pragma: no cover - the root itself was swapped
        missing = False
        for d in reversed(pending):
            if missing:
                continue  # below a missing directory nothing can exist yet
            try:
                mode = os.lstat(d).st_mode
            except FileNotFoundError:
                missing = True
                continue
            except NotADirectoryError:
                return  # a file on the way: the operation itself reports it
            if stat_mod.S_ISLNK(mode):
                if not self._inside(os.path.realpath(d)):
                    raise self._escapes(key)
            elif not stat_mod.S_ISDIR(mode):
                return
            self._remember_dir(d)

    def _remember_dir(self, directory: str) -> None:
        """Mark ``directory`` as verified to lie inside the root (bounded memory)."""
        if len(self._safe_dirs) > 100_000:
            self._safe_dirs.clear()
        self._safe_dirs.add(directory)

    def _escapes(self, key: str) -> InvalidKeyError:
        return InvalidKeyError(
            f"invalid key {key!r}: resolves outside the store root {self._root!r} "
            "(through a symlink)",
            key=key,
        )

    # ------------------------------------------------------------------ reads
    def _get(self, key: str) -> bytes:
        path = self._path(key)
        with _oserrors("get", key):
            try:
                with open(path, "rb") as f:
                    return f.read()
            except _MISSING:
                raise self._not_found(key) from None

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        # fstat of the open file: the info of exactly these bytes (writes replace files
        # by rename, so an open file never changes)
        path = self._path(key)
        with _oserrors("get", key):
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if not stat_mod.S_ISREG(st.st_mode):
                        raise self._not_found(key)
                    return f.read(), _info(key, st)
            except _MISSING:
                raise self._not_found(key) from None

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        with _oserrors("get_range", key):
            try:
                with open(path, "rb") as f:
                    if length == 0:
                        return b""
                    f.seek(start)
                    return f.read(length)
            except _MISSING:
                raise self._not_found(key) from None

    def _stat(self, key: str) -> BlobInfo:
        path = self._path(key)
        with _oserrors("stat", key):
            try:
                st = os.stat(path)
            except _MISSING:
                raise self._not_found(key) from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise self._not_found(key)
        return _info(key, st)

    def _not_found(self, key: str) -> KeyNotFoundError:
        return KeyNotFoundError(f"key {key!r} not found in {self!r}", key=key)

    def _touch(self, key: str) -> None:
        path = self._path(key)
        with _oserrors("touch", key):
            try:
                if not stat_mod.S_ISREG(os.stat(path).st_mode):
                    raise self._not_found(key)
                os.utime(path)
            except _MISSING:
                raise self._not_found(key) from None

    # ------------------------------------------------------------------ listing
    def _walk(
        self, prefix: str, *, recursive: bool = True
    ) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Yield ``(key, entry)`` for candidate files whose key starts with ``prefix``.

        With ``recursive=False`` only the directory that holds the prefix is listed.
        """
        top = self._prefix_dir(prefix)
        if top is None:
            return
        stack = [top]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)  # do not hold a directory handle across yields
            except (FileNotFoundError, NotADirectoryError):
                continue  # vanished (or replaced) while we walked
            except OSError as exc:
                raise _translate_oserror(exc, "list", rel or prefix) from exc
            for entry in entries:
                name = entry.name
                if name.startswith(HIDDEN_PREFIX) or _BAD_NAME.search(name):
                    continue
                key = rel + name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        sub = key + "/"
                        if recursive and (sub.startswith(prefix) or prefix.startswith(sub)):
                            # a real directory below a verified one: the keys in it need
                            # no lstat of their directories (a GC deletes them next)
                            self._remember_dir(entry.path)
                            stack.append((entry.path, sub))
                        continue
                    if not key.startswith(prefix):
                        continue
                    if entry.is_symlink():
                        if not self._inside(os.path.realpath(entry.path)):
                            continue
                        if not entry.is_file():
                            continue
                    elif not entry.is_file(follow_symlinks=False):
                        continue
                except OSError:
                    continue  # vanished
                yield key, entry

    def _prefix_dir(self, prefix: str) -> tuple[str, str] | None:
        """The directory holding every key that starts with ``prefix``, and its key
        prefix (``""`` for the root); None if no valid key inside the root can."""
        dir_part = prefix.rpartition("/")[0]
        if not dir_part:
            return self._root, ""
        parts = dir_part.split("/")
        if any(
            not p or p in (".", "..") or p.startswith(HIDDEN_PREFIX) or _BAD_NAME.search(p)
            for p in parts
        ):
            return None
        start = os.path.join(self._root, *parts)
        if not self._inside(os.path.realpath(start)):
            return None
        return start, dir_part + "/"

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        for key, _entry in self._walk(prefix):
            yield key

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        dir_part, _, _ = prefix.rpartition("/")
        for key, entry in self._walk(prefix, recursive=False):
            if "/" not in key[len(dir_part) + 1 if dir_part else 0 :] and entry.is_file():
                yield key

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        for key, entry in self._walk(prefix):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _translate_oserror(exc, "stat", key) from exc
            if stat_mod.S_ISREG(st.st_mode):
                yield _info(key, st)

    # ------------------------------------------------------------------ write helpers
    def _create_temp(self, directory: str, key: str) -> tuple[str, int]:
        """Create an empty hidden temporary file in ``directory`` (made if missing)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY
        for attempt in range(_DIR_RETRIES):
            if attempt >= 3:
                time.sleep(random.random() * _DIR_RETRY_JITTER)
            os.close(self._open_dir(directory, key))  # make sure it exists
            tmp = os.path.join(directory, _TMP_PREFIX + secrets.token_hex(8))
            try:
                return tmp, os.open(tmp, flags, 0o666)
            except FileNotFoundError:
                continue  # a concurrent delete pruned the directory meanwhile
        raise StoreError(f"cannot write {key!r}: its directory keeps vanishing", key=key)

    def _file_on_the_way(self, directory: str) -> bool:
        """Whether a component of ``directory`` below the root is not a directory."""
        while directory.startswith(self._root) and directory != self._root:
            try:
                mode = os.lstat(directory).st_mode
            except FileNotFoundError:
                directory = os.path.dirname(directory)
                continue
            return not stat_mod.S_ISDIR(mode) and not stat_mod.S_ISLNK(mode)
        return False

    def _finish_temp(self, fd: int) -> os.stat_result:
        """Stamp a fine-grained mtime (so etags differ), fsync if asked, and stat."""
        now = time.time_ns()
        os.utime(fd, ns=(now, now))
        if self._fsync:
            os.fsync(fd)
        return os.fstat(fd)

    def _write_temp(
        self, directory: str, key: str, data: bytes | memoryview
    ) -> tuple[str, os.stat_result]:
        tmp, fd = self._create_temp(directory, key)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
                f.flush()
                st = self._finish_temp(fd)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return tmp, st

    def _open_dir(self, directory: str, key: str) -> int:
        """Open (creating it if missing) the directory of a key; return its descriptor."""
        flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
        if directory not in self._safe_dirs:
            # not seen yet, so most likely a new partition directory: create it first
            # (saves the failing open; an existing one answers EEXIST just as cheaply)
            try:
                os.mkdir(directory)
                self._remember_dir(directory)  # a real directory, ours
            except OSError:
                pass  # exists, or a parent is missing: handled below
        for attempt in range(_DIR_RETRIES):
            if attempt >= 3:
                time.sleep(random.random() * _DIR_RETRY_JITTER)
            try:
                return os.open(directory, flags)
            except NotADirectoryError as exc:
                raise StoreError(
                    f"cannot write {key!r}: a parent of it is an existing key", key=key
                ) from exc
            except FileNotFoundError:
                try:
                    os.mkdir(directory)  # the common case: a new partition directory
                    continue
                except FileExistsError:
                    continue  # created concurrently
                except FileNotFoundError:
                    pass  # a parent is missing too
                except NotADirectoryError as exc:
                    raise StoreError(
                        f"cannot write {key!r}: a parent of it is an existing key", key=key
                    ) from exc
                try:
                    os.makedirs(directory, exist_ok=True)
                except (FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
                    if self._file_on_the_way(directory):
                        raise StoreError(
                            f"cannot write {key!r}: a parent of it is an existing key",
                            key=key,
                        ) from exc
        raise StoreError(f"cannot write {key!r}: its directory keeps vanishing", key=key)

    def _put_at(
        self, path: str, key: str, fill: Callable[[int], None], *, if_absent: bool
    ) -> BlobInfo:
        """Write a temporary file and rename (or link) it, relative to the directory fd.

        ``fill`` writes the content into the temporary file's descriptor. Working
        relative to an open directory descriptor avoids resolving the full path again
        for every step: in a directory of 20,000 partitions that is 5x faster.
        """
        directory, name = os.path.split(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY
        for _attempt in range(_DIR_RETRIES):
            dfd = self._open_dir(directory, key)
            try:
                tmp = _TMP_PREFIX + secrets.token_hex(8)
                try:
                    fd = os.open(tmp, flags, 0o666, dir_fd=dfd)
                except FileNotFoundError:
                    continue  # the directory was pruned by a concurrent delete: retry
                placed = False
                try:
                    try:
                        fill(fd)
                        st = self._finish_temp(fd)
                    finally:
                        os.close(fd)
                    if if_absent:
                        try:
                            os.link(
                                tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False
                            )
                        except FileExistsError:
                            if os.path.isdir(path):
                                raise _prefix_taken(key, "create") from None
                            raise KeyExistsError(f"key {key!r} already exists", key=key) from None
                    else:
                        try:
                            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                            placed = True
                        except IsADirectoryError:
                            raise _prefix_taken(key) from None
                finally:
                    if not placed:
                        with contextlib.suppress(OSError):
                            os.unlink(tmp, dir_fd=dfd)
                if self._fsync and sys.platform != "win32":
                    os.fsync(dfd)
            finally:
                os.close(dfd)
            _log.debug("put %r (%d bytes) in %s", key, st.st_size, self._root)
            return _info(key, st)
        raise StoreError(f"cannot write {key!r}: its directory keeps vanishing", key=key)

    def _fsync_dir(self, directory: str) -> None:
        if not self._fsync or sys.platform == "win32":
            return
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, directory: str, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``directory`` (for compare-and-swap)."""
        lock_path = os.path.join(directory, _LOCK_NAME)
        try:
            # Read-only is enough for flock and works for other users of a shared tree.
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | _O_CLOEXEC, 0o666)
        except _MISSING:
            # The directory is gone, so is the key.
            raise PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: the key does not exist", key=key
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _check_etag(self, path: str, key: str, expected: str) -> None:
        try:
            st = os.stat(path)
        except _MISSING:
            st = None
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            raise PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: the key does not exist", key=key
            )
        current = _etag(st)
        if current != expected:
            raise PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: etag is {current!r}, expected {expected!r}",
                key=key,
            )

    def _swap_in(
        self, tmp: str, path: str, key: str, st: os.stat_result, if_match: str
    ) -> BlobInfo:
        """Move a finished temporary file to ``path`` if the key still has etag
        ``if_match`` (compare-and-swap, under the directory's lock)."""
        directory = os.path.dirname(path)
        try:
            with self._locked(directory, key):
                self._check_etag(path, key, if_match)
                os.replace(tmp, path)
        except IsADirectoryError:
            raise _prefix_taken(key) from None
        finally:
            _unlink_quiet(tmp)  # after a failure the temporary name is still there
        self._fsync_dir(directory)
        return _info(key, st)

    # ------------------------------------------------------------------ writes
    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        # a plain put renames (or links) onto the key: a symlink there is replaced, never
        # followed, so only its directories need checking
        path = self._path(key, follow=if_match is not None)
        if if_match is None:
            with _oserrors("put", key):
                return self._put_at(path, key, _writer(data), if_absent=if_absent)
        with _oserrors("put", key):
            self._check_etag(path, key, if_match)  # fail fast, before writing anything
            tmp, st = self._write_temp(os.path.dirname(path), key, data)
            info = self._swap_in(tmp, path, key, st, if_match)
        _log.debug("put %r (%d bytes) in %s", key, info.size, self._root)
        return info

    def _can_link(self, origin: LocalStore) -> bool:
        """Whether files of ``origin`` may be hard-linked here (one file system)."""
        known = self._links_to.get(origin._real_root)
        if known is None:
            try:
                same = os.stat(origin._real_root).st_dev == os.stat(self._real_root).st_dev
            except OSError:
                same = False
            known = self._links_to[origin._real_root] = same
        return known

    def _link_from(self, source: Store, src: str, dst: str) -> BlobInfo | None:
        origin = read_origin(source)
        if not isinstance(origin, LocalStore) or not self._can_link(origin):
            return None
        src_path = origin._path(src)
        # like a plain put: the link is renamed onto the key, never followed
        dst_path = self._path(dst, follow=False)
        directory, name = os.path.split(dst_path)
        with _oserrors("link", dst):
            for _attempt in range(_DIR_RETRIES):
                dfd = self._open_dir(directory, dst)
                try:
                    tmp = _TMP_PREFIX + secrets.token_hex(8)
                    at: dict[str, Any] = {"dir_fd": dfd, "follow_symlinks": False}
                    try:
                        # never through a symlink at the key: it was checked above, but
                        # could be swapped since; a symlinked key is copied (read checks)
                        os.link(src_path, tmp, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        if not os.path.exists(src_path):
                            raise origin._not_found(src) from None
                        continue  # this directory was pruned by a concurrent delete: retry
                    except (NotADirectoryError, IsADirectoryError):
                        raise origin._not_found(src) from None
                    except OSError as exc:  # EXDEV, EPERM, EMLINK, ENOSYS, ...: copy instead
                        if exc.errno in _NO_LINK_HERE_ERRNOS:
                            self._links_to[origin._real_root] = False
                        _log.info("cannot hard-link %r from %r (%s): copying", dst, origin, exc)
                        return None
                    try:
                        # by name, no descriptor: 2 of the 8 calls a link takes otherwise
                        if not stat_mod.S_ISREG(os.stat(tmp, **at).st_mode):
                            return None  # a symlink (or other) at the key: copy it instead
                        now = time.time_ns()  # the grace period of a GC must protect it
                        try:
                            os.utime(tmp, ns=(now, now), **at)
                        except PermissionError as exc:  # another user's file: copy it
                            _log.info("cannot stamp a link of %r (%s): copying", dst, exc)
                            return None
                        if self._fsync:
                            fd = os.open(tmp, os.O_RDONLY | _O_CLOEXEC | _O_BINARY, dir_fd=dfd)
                            try:
                                os.fsync(fd)
                            finally:
                                os.close(fd)
                        st = os.stat(tmp, **at)
                        try:
                            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                        except IsADirectoryError:
                            raise _prefix_taken(dst) from None
                    finally:
                        # also after the rename: a rename onto another link of the same
                        # file does nothing and leaves the temporary name in place
                        with contextlib.suppress(OSError):
                            os.unlink(tmp, dir_fd=dfd)
                    if self._fsync and sys.platform != "win32":
                        os.fsync(dfd)
                finally:
                    os.close(dfd)
                _log.debug("linked %r (%d bytes) in %s", dst, st.st_size, self._root)
                return _info(dst, st)
        raise StoreError(f"cannot write {dst!r}: its directory keeps vanishing", key=dst)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        return self._copy_file(self, src, dst, if_absent=if_absent)

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        # from another local store's files (through wrappers that only count, throttle
        # or retry its reads): a kernel copy of the file, as within this store
        origin = read_origin(source)
        if isinstance(origin, LocalStore):
            return self._copy_file(origin, src, dst, if_absent=False)
        if source_info is not None and self._streams_from(source, source_info):
            # a big blob of another store (Azure): ranged reads straight into the file,
            # so memory holds one chunk, not the blob
            path = self._path(dst, follow=False)
            fill = _range_copier(source, source_info, dst)
            with _oserrors("copy", dst):
                return self._put_at(path, dst, fill, if_absent=False)
        return super()._copy_from(source, src, dst, source_info=source_info)

    def _copies_inside(self, source: Store) -> bool:
        return isinstance(read_origin(source), LocalStore) or super()._copies_inside(source)

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        return (
            source_info is not None
            and source_info.size > _streams.STREAMED_COPY_BYTES
            and Capability.RANGE_READ in source.capabilities
            and not self._copies_inside(source)
        )

    def _copy_file(self, origin: LocalStore, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        """Copy ``src`` of ``origin`` (maybe this store) to ``dst``, file to file."""
        src_path = origin._path(src)
        # like a plain put: the copy is renamed (or linked) onto the key, never followed
        dst_path = self._path(dst, follow=False)
        with _oserrors("copy", dst):
            try:
                fd = os.open(src_path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY | _O_NONBLOCK)
            except _MISSING:
                raise origin._not_found(src) from None
            try:
                # stores never change an open file (writes replace files by rename)
                st = os.fstat(fd)
                if not stat_mod.S_ISREG(st.st_mode):
                    raise origin._not_found(src)
                fill = _copier(fd, st.st_size, src, dst)
                return self._put_at(dst_path, dst, fill, if_absent=if_absent)
            finally:
                os.close(fd)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        with _oserrors("delete", key):
            if if_match is None:
                try:
                    os.unlink(path)
                except _MISSING:
                    return
            else:
                self._check_etag(path, key, if_match)  # fail fast without the lock
                with self._locked(directory, key):
                    self._check_etag(path, key, if_match)
                    os.unlink(path)
            self._fsync_dir(directory)
        self._prune(directory)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """Delete many blobs (unlinks on a few threads), then prune the emptied directories.

        ``unlink`` in different directories runs in parallel in the kernel: 2,000 blobs in
        their own partition directories took 0.13 s on one thread and 0.05 s on eight
        here. The directories are pruned afterwards, once each, deepest first: ``rmdir``
        of siblings serializes on their parent's lock (60-75 us each here, more than the
        unlink of the blob in it), so threads do not help there. (Pruning after each key
        would also try the shared parents once per key.) ``prune_dirs=False`` leaves the
        emptied directories in place: garbage collection does, unless asked to prune
        (a writer that writes into the partition again then needs no ``mkdir``).

        With ``unmodified_since`` each file's modification time is checked (``lstat``)
        right before its unlink: a file renamed into place between the two (microseconds)
        would still go. Writers here never reuse a key, only backups and restores write
        one again, and garbage collection checks for their commits just before deleting.
        """
        report = DeleteReport()
        # Paths are checked here, not in the unlink threads: there they contend for the
        # GIL with the unlinks (measured 30% slower). The key itself is never followed
        # (unlink removes a symlink, not its target); its directories are checked.
        staged: list[tuple[str, str]] = []
        for key in keys:
            try:
                staged.append((key, self._join(validate_key(key))))
            except Exception as exc:  # reported per key, like Store.delete_many
                report.failed[key] = exc
        if len(staged) >= _PARALLEL_UNLINK_MIN:
            self._verify_siblings({os.path.dirname(path) for _, path in staged})
        todo: list[tuple[str, str]] = []
        for key, path in staged:
            parent = os.path.dirname(path)
            if parent not in self._safe_dirs:
                try:
                    self._check_dirs(parent, key)
                except Exception as exc:
                    report.failed[key] = exc
                    continue
            todo.append((key, path))
        kept: list[str] = []

        def unlink(chunk: list[tuple[str, str]]) -> list[tuple[str, str | None, Exception | None]]:
            """Per key: (key, its directory if a file was removed, error)."""
            done: list[tuple[str, str | None, Exception | None]] = []
            for key, path in chunk:
                try:
                    with _oserrors("delete", key):
                        try:
                            if (
                                unmodified_since is not None
                                and os.lstat(path).st_mtime >= unmodified_since
                            ):
                                kept.append(key)  # list.append is atomic
                                continue
                            os.unlink(path)
                        except _MISSING:
                            done.append((key, None, None))  # already gone: deleted
                            continue
                except Exception as exc:
                    done.append((key, None, exc))
                else:
                    done.append((key, os.path.dirname(path), None))
            return done

        if len(todo) < _PARALLEL_UNLINK_MIN:
            results = unlink(todo)
        else:
            chunks = [todo[i::_UNLINK_THREADS] for i in range(_UNLINK_THREADS)]
            with ThreadPoolExecutor(_UNLINK_THREADS, thread_name_prefix="dk-unlink") as pool:
                results = [r for part in pool.map(unlink, chunks) for r in part]
        report.kept = kept
        dirs: set[str] = set()
        for key, directory, error in results:
            if error is not None:
                report.failed[key] = error
                continue
            report.deleted.append(key)
            if directory is None:
                report.absent.append(key)
            else:
                dirs.add(directory)
        for directory in dirs:
            self._fsync_dir(directory)
        if not prune_dirs:
            return report
        # leaves first (one rmdir each), then the parents of the removed ones
        removed = [d for d in dirs if self._rmdir(d)]
        parents = {os.path.dirname(d) for d in removed}
        busy: set[str] = set()
        for directory in sorted(parents, key=lambda d: d.count(os.sep), reverse=True):
            self._prune(directory, busy)
        return report

    def _verify_siblings(self, directories: set[str]) -> None:
        """Verify many directories with one ``scandir`` of each parent that holds many of
        them, instead of an ``lstat`` each (the 2,000 partition directories of a table
        are one listing). Those left unverified get the per-key check."""
        by_parent: dict[str, set[str]] = {}
        for directory in directories:
            if directory not in self._safe_dirs:
                by_parent.setdefault(os.path.dirname(directory), set()).add(directory)
        for parent, children in by_parent.items():
            if len(children) < _PARALLEL_UNLINK_MIN or not parent.startswith(self._root):
                continue
            try:
                self._check_dirs(parent, parent)
                with os.scandir(parent) as it:
                    real = {e.path for e in it if e.is_dir(follow_symlinks=False)}
            except (OSError, InvalidKeyError):
                continue
            if parent not in self._safe_dirs:
                continue  # missing or not a real directory: nothing to learn here
            for directory in children & real:
                self._remember_dir(directory)

    def remove_empty_dirs(self, prefix: str = "") -> int:
        """Remove the empty directories below ``prefix`` (never the root); return how many.

        A directory holding only empty directories goes too; one holding anything else
        (a blob, a writer's temporary file, a lock file, a symlink) stays. One
        ``scandir`` per directory, one ``rmdir`` per empty one.

        Examples
        --------
        >>> import tempfile
        >>> store = LocalStore(tempfile.mkdtemp())
        >>> _ = store.put("ds/t/p=1/a", b"1"); _ = store.put("ds/t/p=2/b", b"2")
        >>> store.delete_many(["ds/t/p=1/a"], prune_dirs=False).deleted
        ['ds/t/p=1/a']
        >>> store.remove_empty_dirs("ds/"), sorted(os.listdir(os.path.join(store.root, "ds/t")))
        (1, ['p=2'])
        """
        top = self._prefix_dir(prefix)
        if top is None:
            return 0
        start, rel = top
        removed = 0

        def listing(directory: str, rel: str) -> list[os.DirEntry[str]] | None:
            try:
                with os.scandir(directory) as it:
                    return list(it)
            except (FileNotFoundError, NotADirectoryError):
                return None  # vanished, or not a directory: nothing of ours to remove
            except OSError as exc:
                raise _translate_oserror(exc, "list", rel or prefix) from exc

        first = listing(start, rel)
        if first is None:
            return 0
        # post-order with an explicit stack (trees deeper than the recursion limit are
        # fine); a frame is [path, its key prefix, its remaining entries, empty so far]
        stack: list[list[Any]] = [[start, rel, iter(first), True]]
        start_empty = False
        while stack:
            frame = stack[-1]
            for entry in frame[2]:
                sub = frame[1] + entry.name + "/"
                if (
                    not entry.name.startswith(HIDDEN_PREFIX)
                    and entry.is_dir(follow_symlinks=False)
                    and sub.startswith(prefix)
                ):
                    below = listing(entry.path, sub)
                    if below is not None:
                        stack.append([entry.path, sub, iter(below), True])
                        break  # descend; this frame's loop resumes after it
                frame[3] = False
            else:
                stack.pop()
                if not stack:
                    start_empty = frame[3]
                    break
                if frame[3] and self._rmdir(frame[0]):
                    removed += 1
                else:
                    stack[-1][3] = False  # not empty (or a writer put something there)
        if start_empty and rel.startswith(prefix) and self._rmdir(start):
            removed += 1
        return removed

    def _rmdir(self, directory: str) -> bool:
        """Remove ``directory`` if it is empty and not the root; True if it was removed."""
        root_slash = self._root if self._root.endswith(os.sep) else self._root + os.sep
        if not directory.startswith(root_slash):
            return False
        try:
            os.rmdir(directory)
        except OSError:
            return False
        # a directory created again under this name is verified again (it could now be
        # a symlink out of the root)
        self._safe_dirs.discard(directory)
        return True

    def _prune(self, directory: str, busy: set[str] | None = None) -> None:
        """Remove now-empty directories from ``directory`` up to (never including) root."""
        root_slash = self._root if self._root.endswith(os.sep) else self._root + os.sep
        while directory.startswith(root_slash):
            if busy is not None and directory in busy:
                return
            if not self._rmdir(directory):
                if busy is not None:  # not empty: neither are its parents
                    while directory.startswith(root_slash) and directory not in busy:
                        busy.add(directory)
                        directory = os.path.dirname(directory)
                return  # not empty (or gone, or not ours): stop
            directory = os.path.dirname(directory)
