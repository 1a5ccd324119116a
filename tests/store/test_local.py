"""LocalStore specifics: the file layout, root confinement, atomicity, options."""

from __future__ import annotations

import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

from dataset_kit.exceptions import (
    ConfigError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    StoreError,
)
from dataset_kit.store import LocalStore, open_store
from dataset_kit.testing.store_suite import race_create_only_in_processes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- layout
def test_key_is_a_file_under_root(store: LocalStore, root: Path) -> None:
    store.put("a/b/c.bin", b"data")
    assert (root / "a" / "b" / "c.bin").read_bytes() == b"data"
    assert store.local_path("a/b/c.bin") == str(root / "a" / "b" / "c.bin")
    assert _all_files(root) == ["a/b/c.bin"]


def test_files_written_outside_the_store_are_listed(store: LocalStore, root: Path) -> None:
    (root / "x").mkdir()
    (root / "x" / "external.parquet").write_bytes(b"12345")
    assert list(store.iter_keys()) == ["x/external.parquet"]
    assert store.stat("x/external.parquet").size == 5


def test_new_files_follow_the_umask(store: LocalStore, root: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    store.put("perm", b"x")
    store.copy("perm", "perm-copy")
    store.put("perm-excl", b"x", if_absent=True)
    for name in ("perm", "perm-copy", "perm-excl"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o666 & ~umask


def test_root_is_created_or_required(tmp_path: Path) -> None:
    LocalStore(tmp_path / "new" / "nested")
    assert (tmp_path / "new" / "nested").is_dir()
    with pytest.raises(ConfigError, match="does not exist"):
        LocalStore(tmp_path / "missing", create=False)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError):
        LocalStore(tmp_path / "file")


def test_relative_root_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStore("rel")
    assert store.root == str(tmp_path / "rel")
    monkeypatch.chdir("/")
    store.put("k", b"v")
    assert (tmp_path / "rel" / "k").read_bytes() == b"v"


# --------------------------------------------------------------------------- confinement
def test_symlinked_directory_escaping_root_is_rejected(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "link").symlink_to(outside, target_is_directory=True)
    for call in (
        lambda: store.get("link/secret"),
        lambda: store.stat("link/secret"),
        lambda: store.exists("link/secret"),
        lambda: store.put("link/new", b"x"),
        lambda: store.delete("link/secret"),
        lambda: store.copy("link/secret", "stolen"),
        lambda: store.local_path("link/secret"),
    ):
        with pytest.raises(InvalidKeyError, match="outside the store root"):
            call()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert list(store.iter_keys()) == []
    assert list(store.iter_keys("link/")) == []


def test_symlinked_file_escaping_root_is_rejected(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (root / "leak").symlink_to(secret)
    with pytest.raises(InvalidKeyError):
        store.get("leak")
    assert list(store.iter_keys()) == []
    assert list(store.iter_infos()) == []


def test_symlinks_inside_root_are_followed(store: LocalStore, root: Path) -> None:
    store.put("real/blob", b"content")
    (root / "alias").symlink_to(root / "real" / "blob")
    assert store.get("alias") == b"content"
    assert sorted(store.iter_keys()) == ["alias", "real/blob"]


def test_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "via-link").symlink_to(tmp_path / "target", target_is_directory=True)
    store = LocalStore(tmp_path / "via-link")
    store.put("a/b", b"x")
    assert (tmp_path / "target" / "a" / "b").read_bytes() == b"x"
    assert list(store.iter_keys()) == ["a/b"]


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../x", "..", "/etc/passwd", "a//b", ".dk-tmp-1234", "a/.dk-lock", ".dk-x/y"],
)
def test_crafted_keys_are_rejected(store: LocalStore, root: Path, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.get(key)
    assert _all_files(root) == []


def test_overlong_key_is_invalid(store: LocalStore) -> None:
    with pytest.raises(InvalidKeyError, match="too long"):
        store.put("x" * 1000, b"x")
    with pytest.raises(InvalidKeyError):
        store.get("x" * 1000)


# --------------------------------------------------------------------------- hidden files
def test_temporary_and_lock_files_are_invisible(store: LocalStore, root: Path) -> None:
    info = store.put("d/blob", b"v1")
    store.put("d/blob", b"v2", if_match=info.etag)  # leaves d/.dk-lock behind
    assert (root / "d" / ".dk-lock").exists()
    # leftovers of a crashed writer
    (root / "d" / ".dk-tmp-0123456789abcdef").write_bytes(b"partial")
    (root / ".dk-tmp-fedcba9876543210").write_bytes(b"partial")
    (root / ".dk-somedir").mkdir()
    (root / ".dk-somedir" / "x").write_bytes(b"x")
    assert list(store.iter_keys()) == ["d/blob"]
    assert list(store.iter_keys("d/.dk")) == []
    assert [i.key for i in store.iter_infos()] == ["d/blob"]


def test_failed_put_leaves_no_temporary_file(
    store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("d/old", b"old")

    def broken_replace(src: str, dst: str, **kwargs: object) -> None:
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="injected") as info:
        store.put("d/new", b"new")
    assert info.value.key == "d/new"
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert sorted(os.listdir(root / "d")) == ["old"]
    assert list(store.iter_keys()) == ["d/old"]


def test_failed_create_only_leaves_no_temporary_file(store: LocalStore, root: Path) -> None:
    store.put("k", b"first")
    with pytest.raises(KeyExistsError):
        store.put("k", b"second", if_absent=True)
    assert sorted(os.listdir(root)) == ["k"]


# --------------------------------------------------------------------------- writes
def test_put_replaces_the_inode(store: LocalStore, root: Path) -> None:
    store.put("k", b"one")
    with open(root / "k", "rb") as reader:  # an open reader keeps the old content
        store.put("k", b"two")
        assert reader.read() == b"one"
    assert store.get("k") == b"two"


def test_etag_changes_even_for_identical_rewrites(store: LocalStore) -> None:
    etags = {store.put("same", b"identical bytes").etag for _ in range(200)}
    assert len(etags) == 200


def test_copy_is_a_real_copy_not_a_hardlink(store: LocalStore, root: Path) -> None:
    store.put("src", b"original")
    store.copy("src", "dst")
    assert (root / "src").stat().st_ino != (root / "dst").stat().st_ino
    assert (root / "src").stat().st_nlink == 1
    with open(root / "dst", "r+b") as f:  # a user mutating a blob in place
        f.write(b"MUTATED!")
    assert store.get("src") == b"original"


def test_copy_from_another_local_store_copies_the_file_in_the_kernel(
    store: LocalStore, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy between local stores is one file copied to another, not a get and a put:
    memory stays flat whatever the blob's size, and nothing is read through ``get``."""
    import tracemalloc

    other = LocalStore(tmp_path / "other")
    payload = os.urandom(1 << 20) * 24  # 24 MiB
    other.put("part=1/blob", payload)
    reads: list[str] = []
    monkeypatch.setattr(other, "_get", lambda key: reads.append(key) or b"")
    tracemalloc.start()
    try:
        info = store.copy_from(other, "part=1/blob", "copy/blob")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reads == []
    assert peak < 2 << 20, f"the copy allocated {peak} bytes"
    assert info == store.stat("copy/blob") and info.size == len(payload)
    assert store.get("copy/blob") == payload
    assert _all_files(root) == ["copy/blob"]  # no temporary file left
    assert (root / "copy/blob").stat().st_ino != (tmp_path / "other/part=1/blob").stat().st_ino
    # within one store, create-only too
    assert store.copy("copy/blob", "again", if_absent=True).size == len(payload)
    with pytest.raises(KeyExistsError):
        store.copy("copy/blob", "again", if_absent=True)


@pytest.mark.parametrize(
    "kernel",
    ["refuses", "stops early", "absent"],
)
def test_copy_from_without_a_kernel_copy_reads_and_writes(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """Where copy_file_range is refused (another file system type, an old kernel),
    stops early, or does not exist (Windows), the rest is copied by reads and writes."""
    import errno

    import dataset_kit.store.local as local

    other = LocalStore(tmp_path / "other")
    payload = os.urandom(3 * local._COPY_CHUNK + 123)
    other.put("blob", payload)
    real = os.copy_file_range
    calls: list[int] = []

    def refusing(src: int, dst: int, count: int, offset: int) -> int:
        calls.append(count)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def stopping(src: int, dst: int, count: int, offset: int) -> int:
        calls.append(count)  # 1,000 bytes, then "done"
        return real(src, dst, 1000, offset) if len(calls) == 1 else 0

    fake = {"refuses": refusing, "stops early": stopping, "absent": None}[kernel]
    monkeypatch.setattr(local, "_copy_file_range", fake)
    info = store.copy_from(other, "blob", "dir/blob")
    assert info.size == len(payload) and store.get("dir/blob") == payload
    assert len(calls) == {"refuses": 1, "stops early": 2, "absent": 0}[kernel]
    assert _all_files(Path(store.root)) == ["dir/blob"]
    # a copier starts over when called again (a put retried on another temporary file)
    src_fd = os.open(tmp_path / "other" / "blob", os.O_RDONLY)
    try:
        fill = local._copier(src_fd, len(payload), "blob", "again")
        for name in ("first", "second"):
            calls.clear()
            with open(tmp_path / name, "wb") as out:
                fill(out.fileno())
            assert (tmp_path / name).read_bytes() == payload
    finally:
        os.close(src_fd)


def test_copy_from_a_source_that_shrinks_meanwhile_writes_nothing(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file truncated in place during the copy (not by a store: stores replace files)
    fails the copy with StoreError; no partial blob appears at the target."""
    import dataset_kit.store.local as local

    other = LocalStore(tmp_path / "other")
    other.put("blob", b"x" * 10_000)
    real = os.copy_file_range

    def truncating(src: int, dst: int, count: int, offset: int) -> int:
        os.truncate(tmp_path / "other" / "blob", 100)
        return real(src, dst, count, offset)

    monkeypatch.setattr(local, "_copy_file_range", truncating)
    with pytest.raises(StoreError, match="ended after 100 of its 10000 bytes") as err:
        store.copy_from(other, "blob", "dir/blob")
    assert not isinstance(err.value, KeyNotFoundError)
    assert not store.exists("dir/blob")
    assert _all_files(Path(store.root)) == []


def test_copy_from_what_is_no_blob_at_the_source(store: LocalStore, tmp_path: Path) -> None:
    """A missing key, a directory (a prefix of other keys) and a FIFO (opened without
    hanging) are not found; a symlink out of the source's root is refused."""
    other = LocalStore(tmp_path / "other")
    other.put("dir/blob", b"data")
    os.mkfifo(tmp_path / "other" / "fifo")
    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "other" / "leak").symlink_to(tmp_path / "secret")
    for key in ("missing", "dir", "fifo", "dir/blob/below"):
        with pytest.raises(KeyNotFoundError) as err:
            store.copy_from(other, key, "copy")
        assert err.value.key == key
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        store.copy_from(other, "leak", "copy")
    assert _all_files(Path(store.root)) == []


def test_copy_from_reads_through_wrappers_that_hook_reads(
    store: LocalStore, tmp_path: Path
) -> None:
    """Through a wrapper that only counts reads the file is copied directly (no ``get``
    counted); a fault-injecting wrapper's failures still apply to the copy."""
    from dataset_kit.exceptions import StoreUnavailableError
    from dataset_kit.store import CountingStore, FaultInjectingStore

    other = LocalStore(tmp_path / "other")
    other.put("blob", b"payload")
    counted = CountingStore(other)
    assert store.copy_from(counted, "blob", "a").size == 7
    assert counted.counts.get("get", 0) == 0
    assert store._copies_inside(counted)
    faulty = FaultInjectingStore(other, fail_rate=1.0, seed=1, operations=frozenset({"get"}))
    assert not store._copies_inside(faulty)
    with pytest.raises(StoreUnavailableError):
        store.copy_from(faulty, "blob", "b")
    assert sorted(store.iter_keys()) == ["a"]


def test_copy_from_a_big_blob_of_another_store_streams_ranged_reads(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed blob above STREAMED_COPY_BYTES of a non-local store is written from
    ranged reads (never read whole); one replaced or shortened during the copy fails it
    with nothing written."""
    import dataset_kit.store._streams as streams
    from dataset_kit.store import CountingStore, MemoryStore

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 1000)
    monkeypatch.setattr(streams, "STREAMED_COPY_CHUNK", 4096)
    memory = MemoryStore()
    payload = os.urandom(10_000)
    listed = memory.put("big", payload)
    source = CountingStore(memory)
    info = store.copy_from(source, "big", "dir/big", source_info=listed)
    assert info.size == 10_000 and store.get("dir/big") == payload
    assert source.counts["get"] == 0 and source.counts["get_range"] == 3  # 4096 * 2 + 1808
    # unlisted (no size known), or small: one read, as before
    source.reset()
    store.copy_from(source, "big", "dir/unlisted")
    assert source.counts["get"] == 1 and source.counts["get_range"] == 0

    class Replacing(CountingStore):
        def _get_range(self, key: str, start: int, length: int) -> bytes:
            data = super()._get_range(key, start, length)
            memory.put(key, payload[::-1])  # replaced meanwhile (same size)
            return data

    with pytest.raises(StoreError, match="changed during the copy"):
        store.copy_from(Replacing(memory), "big", "dir/replaced", source_info=memory.stat("big"))
    memory.put("big", payload)
    listed = memory.stat("big")
    memory.put("big", payload[:5000])  # shortened after the listing
    with pytest.raises(StoreError, match="changed during the copy"):
        store.copy_from(memory, "big", "dir/short", source_info=listed)
    assert sorted(store.iter_keys()) == ["dir/big", "dir/unlisted"]
    assert _all_files(Path(store.root)) == ["dir/big", "dir/unlisted"]  # no temporary file


def test_which_copies_into_a_local_store_stream(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed blobs above the threshold of a store with ranged reads; never a local
    store's (the kernel copies those) or a blob of unknown size."""
    import dataset_kit.store._streams as streams
    from dataset_kit.store import BlobInfo, CountingStore, FaultInjectingStore, MemoryStore

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    big, small = BlobInfo("k", 101, 0.0, "e"), BlobInfo("k", 100, 0.0, "e")
    memory = MemoryStore()
    assert store._streams_from(memory, big) and store._streams_from(CountingStore(memory), big)
    assert not store._streams_from(memory, small) and not store._streams_from(memory, None)
    assert not store._streams_from(LocalStore(tmp_path / "other"), big)
    # a wrapper that hooks this store's writes copies through its own put: whole blobs
    hooked = FaultInjectingStore(store)
    assert not hooked._streams_from(memory, big)


def test_link_from_hard_links_across_stores_of_one_file_system(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    other = LocalStore(tmp_path / "other")
    other.put("part/blob", b"payload")
    info = store.link_from(other, "part/blob", "copy/blob")
    assert info is not None and info.size == 7
    assert (root / "copy/blob").stat().st_ino == (tmp_path / "other/part/blob").stat().st_ino
    assert (root / "copy/blob").stat().st_nlink == 2
    assert _all_files(root) == ["copy/blob"]  # no temporary file left
    assert store.stat("copy/blob") == info
    again = store.link_from(other, "part/blob", "copy/blob")  # onto a link of the same file
    assert again is not None and _all_files(root) == ["copy/blob"]
    other.delete("part/blob")
    assert store.get("copy/blob") == b"payload"


def test_link_from_a_symlink_escaping_the_source_root_is_refused(
    store: LocalStore, tmp_path: Path
) -> None:
    other = LocalStore(tmp_path / "other")
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (tmp_path / "other" / "leak").symlink_to(secret)
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        store.link_from(other, "leak", "stolen")
    assert not store.exists("stolen")


def test_link_from_falls_back_when_the_kernel_refuses(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXDEV (another mount of the same device) is remembered: no more attempts from that
    store; EPERM (e.g. another user's file under protected_hardlinks) is per file."""
    import errno

    import dataset_kit.store.local as local

    other = LocalStore(tmp_path / "other")
    other.put("a", b"1")
    other.put("b", b"2")
    calls: list[str] = []
    refusal = [errno.EPERM]

    def refuse(src: str, dst: str, **kwargs: object) -> None:
        calls.append(src)
        raise OSError(refusal[0], os.strerror(refusal[0]))

    monkeypatch.setattr(local.os, "link", refuse)
    assert store.link_from(other, "a", "a") is None
    assert store.link_from(other, "b", "b") is None
    assert len(calls) == 2  # EPERM: tried each time
    refusal[0] = errno.EINVAL  # any other refusal: copy this one, try the next
    assert store.link_from(other, "a", "a") is None
    assert store.link_from(other, "b", "b") is None
    assert len(calls) == 4
    refusal[0] = errno.EXDEV
    assert store.link_from(other, "a", "a") is None
    assert store.link_from(other, "b", "b") is None
    assert len(calls) == 5  # EXDEV: once
    assert _all_files(Path(store.root)) == []  # nothing written, no temp


def test_link_from_never_links_through_a_symlink_at_the_key(
    store: LocalStore, tmp_path: Path
) -> None:
    """A symlinked source key (inside the root, or dangling) is not linked: a swap of
    the key for a symlink after its check must not link a file from elsewhere. The
    caller copies it through the reads' checks; a key under a file is not found."""
    other = LocalStore(tmp_path / "other")
    other.put("real", b"data")
    (tmp_path / "other" / "alias").symlink_to(tmp_path / "other" / "real")
    (tmp_path / "other" / "dangling").symlink_to(tmp_path / "other" / "nowhere")
    assert store.link_from(other, "alias", "alias") is None
    assert store.link_from(other, "dangling", "dangling") is None
    with pytest.raises(KeyNotFoundError):
        store.link_from(other, "real/below", "below")
    assert _all_files(Path(store.root)) == []


def test_link_from_with_fsync_and_a_missing_source(store: LocalStore, tmp_path: Path) -> None:
    synced = LocalStore(tmp_path / "synced", fsync=True)
    store.put("k", b"data")
    info = synced.link_from(store, "k", "dir/k")
    assert info is not None and synced.get("dir/k") == b"data"
    with pytest.raises(KeyNotFoundError):
        synced.link_from(store, "missing/k", "dir/m")
    assert sorted(synced.iter_keys()) == ["dir/k"]


def test_key_and_prefix_cannot_share_a_name(store: LocalStore) -> None:
    store.put("a/b", b"x")
    with pytest.raises(StoreError) as info:
        store.put("a", b"y")
    assert not isinstance(info.value, KeyNotFoundError)
    with pytest.raises(StoreError):
        store.put("a", b"y", if_absent=True)
    store.put("f", b"file")
    with pytest.raises(StoreError, match="parent"):
        store.put("f/child", b"x")
    assert store.get("a/b") == b"x"
    assert store.get("f") == b"file"


def test_delete_prunes_empty_directories_but_never_root(store: LocalStore, root: Path) -> None:
    store.put("a/b/c/d", b"x")
    store.put("a/keep", b"y")
    store.delete("a/b/c/d")
    assert not (root / "a" / "b").exists()
    assert (root / "a" / "keep").exists()
    store.delete("a/keep")
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_concurrent_puts_and_deletes_in_one_directory(store: LocalStore, root: Path) -> None:
    """Deletes prune the directory that other threads are writing into."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(150):
                key = f"deep/shared/dir/t{i}"
                store.put(key, b"x")
                store.delete(key)
                store.put(f"deep/shared/dir/c{i}", b"y", if_absent=True)
                store.delete(f"deep/shared/dir/c{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert list(store.iter_keys()) == []
    assert not (root / "deep").exists()


def test_delete_many_of_many_keys_unlinks_on_threads_and_prunes(
    store: LocalStore, root: Path
) -> None:
    """Past a few dozen keys the unlinks run on threads: the report is the same as a
    sequential one (missing keys count as deleted, bad ones fail per key), emptied
    directories are pruned and directories that still hold a blob are kept."""
    keys = [f"t/p={i}/blob.parquet" for i in range(150)]
    for key in keys:
        store.put(key, b"x")
    store.put("t/p=7/kept.parquet", b"y")
    victims = [*keys, "t/p=999/missing.parquet", "../escape", "t/.dk-tmp-x"]
    report = store.delete_many(iter(victims))
    assert sorted(report.deleted) == sorted([*keys, "t/p=999/missing.parquet"])
    assert report.absent == ["t/p=999/missing.parquet"]
    assert sorted(report.failed) == ["../escape", "t/.dk-tmp-x"]
    assert all(isinstance(e, InvalidKeyError) for e in report.failed.values())
    assert list(store.iter_keys()) == ["t/p=7/kept.parquet"]
    assert sorted(os.listdir(root / "t")) == ["p=7"]


def test_delete_many_can_leave_the_emptied_directories(store: LocalStore, root: Path) -> None:
    """``prune_dirs=False`` (what garbage collection passes) skips the ``rmdir``s; a
    later write into such a directory just uses it, and listings ignore it."""
    keys = [f"t/p={i}/blob.parquet" for i in range(100)]
    for key in keys:
        store.put(key, b"x")
    report = store.delete_many(keys, prune_dirs=False)
    assert sorted(report.deleted) == sorted(keys) and not report.failed
    assert len(os.listdir(root / "t")) == 100
    assert list(store.iter_keys()) == [] and list(store.iter_infos("t/")) == []
    store.put("t/p=3/again.parquet", b"y")
    assert list(store.iter_keys()) == ["t/p=3/again.parquet"]
    small = store.delete_many(["t/p=3/again.parquet"], prune_dirs=False)  # one thread
    assert small.deleted == ["t/p=3/again.parquet"] and (root / "t" / "p=3").is_dir()


def test_delete_many_never_unlinks_through_a_symlinked_directory(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    """Among many sibling directories (verified with one listing of their parent), one
    that is a symlink out of the root still fails its key; one inside works."""
    keys = [f"ds/t/p={i}/blob" for i in range(100)]
    for key in keys:
        store.put(key, b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "blob").write_bytes(b"secret")
    os.unlink(root / "ds" / "t" / "p=5" / "blob")
    os.rmdir(root / "ds" / "t" / "p=5")
    (root / "ds" / "t" / "p=5").symlink_to(outside, target_is_directory=True)
    os.unlink(root / "ds" / "t" / "p=6" / "blob")
    os.rmdir(root / "ds" / "t" / "p=6")
    (root / "ds" / "t" / "p=6").symlink_to(root / "ds" / "t" / "p=7", target_is_directory=True)
    fresh = LocalStore(root)  # nothing verified yet
    report = fresh.delete_many(keys, prune_dirs=False)
    assert list(report.failed) == ["ds/t/p=5/blob"]
    assert isinstance(report.failed["ds/t/p=5/blob"], InvalidKeyError)
    assert (outside / "blob").read_bytes() == b"secret"
    assert len(report.deleted) == 99 and list(fresh.iter_keys("ds/")) == []


def test_remove_empty_dirs(store: LocalStore, root: Path) -> None:
    """Empty directories below the prefix go, deepest first, with their emptied
    parents; a directory with a blob, a writer's temporary file, a lock file or a
    symlink stays; the root and what lies outside the prefix never go."""
    for key in ("ds/t/p=1/a", "ds/t/p=2/q=1/b", "ds/t/p=3/c", "ds/t/p=4/d", "dsx/t/p=1/e"):
        store.put(key, b"x")
    store.put("other/k", b"x")
    store.delete_many(
        ["ds/t/p=1/a", "ds/t/p=2/q=1/b", "ds/t/p=3/c", "ds/t/p=4/d", "dsx/t/p=1/e"],
        prune_dirs=False,
    )
    (root / "ds" / "t" / "p=3" / ".dk-tmp-writer").write_bytes(b"")  # a write in progress
    os.makedirs(root / "ds" / "t" / "p=5" / "deep" / "er")
    os.symlink(root / "other", root / "ds" / "t" / "p=4" / "link")
    assert store.remove_empty_dirs("ds/") == 6  # p=1, q=1, p=2, er, deep, p=5
    assert sorted(os.listdir(root / "ds" / "t")) == ["p=3", "p=4"]
    assert (root / "dsx" / "t" / "p=1").is_dir()  # "dsx/" does not start with "ds/"
    assert store.remove_empty_dirs("ds/") == 0
    assert store.remove_empty_dirs("dsx") == 3  # a plain prefix: dsx/t/p=1, dsx/t, dsx
    assert not (root / "dsx").exists()
    for bad in ("../", "ds/../", ".dk-lock/", "nothing/here/"):
        assert store.remove_empty_dirs(bad) == 0
    os.unlink(root / "ds" / "t" / "p=3" / ".dk-tmp-writer")
    os.unlink(root / "ds" / "t" / "p=4" / "link")
    assert store.remove_empty_dirs() == 4  # p=3, p=4, t, ds; never the root
    assert sorted(os.listdir(root)) == ["other"]
    store.delete("other/k")
    assert store.remove_empty_dirs() == 0 and root.is_dir()


def test_create_only_across_processes(store: LocalStore) -> None:
    outcomes = race_create_only_in_processes(store, "ds/_metadata/00000000000000000001.json", 4)
    assert sorted(outcomes.values()) == ["exists", "exists", "exists", "won"], outcomes
    (winner,) = [payload for payload, outcome in outcomes.items() if outcome == "won"]
    assert store.get("ds/_metadata/00000000000000000001.json") == winner
    assert list(store.iter_keys()) == ["ds/_metadata/00000000000000000001.json"]


# --------------------------------------------------------------------------- identity
def test_url_and_options(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=True)
    assert store.url == f"file://{tmp_path}"
    assert store.options == {"fsync": True}
    assert LocalStore(tmp_path).options == {}
    assert repr(store) == f"LocalStore('file://{tmp_path}')"


def test_fsync_option_round_trips_through_url_and_pickle(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}?fsync=true")
    assert isinstance(store, LocalStore)
    assert store.options == {"fsync": True}
    assert store.url == f"file://{tmp_path}"  # the query is not part of the url
    store.put("k", b"durable")
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, LocalStore)
    assert clone.options == {"fsync": True}
    assert clone.get("k") == b"durable"
    again = open_store(store.url, **store.options)
    assert again.options == {"fsync": True}
    assert open_store(f"file://{tmp_path}?fsync=0").options == {}


def test_url_of_unusual_root_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "with space#hash?query%pct"
    store = LocalStore(root)
    assert " " not in store.url
    assert "#" not in store.url
    reopened = open_store(store.url)
    assert isinstance(reopened, LocalStore)
    assert reopened.root == str(root)


def test_a_removed_directory_is_verified_again(
    store: LocalStore, root: Path, tmp_path: Path
) -> None:
    """A directory the store removed and someone recreated as a symlink out of the root
    is not trusted from the store's cache of verified directories."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    for prune in ("delete_many", "remove_empty_dirs"):
        store.put("ds/t/p=5/blob", b"x")
        assert store.exists("ds/t/p=5/blob")  # the directory is verified (and cached)
        if prune == "delete_many":
            store.delete_many(["ds/t/p=5/blob"])
        else:
            store.delete_many(["ds/t/p=5/blob"], prune_dirs=False)
            assert store.remove_empty_dirs("ds/") == 3
        assert not (root / "ds").exists()
        (root / "ds" / "t").mkdir(parents=True)
        (root / "ds" / "t" / "p=5").symlink_to(outside, target_is_directory=True)
        report = store.delete_many(["ds/t/p=5/secret"])
        assert isinstance(report.failed["ds/t/p=5/secret"], InvalidKeyError)
        with pytest.raises(InvalidKeyError):
            store.get("ds/t/p=5/secret")
        assert (outside / "secret").read_bytes() == b"secret"
        os.unlink(root / "ds" / "t" / "p=5")
        os.rmdir(root / "ds" / "t")
        os.rmdir(root / "ds")


def test_remove_empty_dirs_of_a_very_deep_tree(store: LocalStore, root: Path) -> None:
    """Deeper than Python's recursion limit (the walk keeps its own stack)."""
    path = str(root / "ds")
    os.mkdir(path)
    for _ in range(1500):  # os.makedirs itself recurses per level
        path = os.path.join(path, "d")
        os.mkdir(path)
    store.put("ds/keep", b"x")
    assert store.remove_empty_dirs("ds/") == 1500
    assert sorted(os.listdir(root / "ds")) == ["keep"]


@pytest.mark.parametrize("wrapper", ["faults", "crash", "retry"])
def test_wrappers_leave_emptied_directories_when_asked(
    store: LocalStore, root: Path, wrapper: str
) -> None:
    """``prune_dirs=False`` holds through the wrappers that delete key by key too."""
    from dataset_kit.store import FaultInjectingStore, RetryingStore
    from dataset_kit.testing.crash import CrashingStore

    wrapped = {
        "faults": lambda: FaultInjectingStore(store, fail_rate=0.0),
        "crash": lambda: CrashingStore(store, None),
        "retry": lambda: RetryingStore(store),
    }[wrapper]()
    keys = [f"w/p={i}/blob" for i in range(100)]
    for key in keys:
        store.put(key, b"x")
    report = wrapped.delete_many([*keys, "w/p=200/missing"], prune_dirs=False)
    assert sorted(report.deleted) == sorted([*keys, "w/p=200/missing"])
    assert report.absent == ["w/p=200/missing"] and not report.failed
    assert len(os.listdir(root / "w")) == 100 and list(store.iter_keys()) == []
    assert wrapped.remove_empty_dirs("w/") == 101
