"""KVStoreAdapter specifics: capabilities, warnings, error translation, pickling."""

from __future__ import annotations

import errno
import os
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_kit.exceptions import (
    ConfigError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    StoreError,
    UnsafeCommitWarning,
    UnsupportedOperationError,
)
from dataset_kit.store import Capability, KVStoreAdapter, open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from minimalkv._hstores import HDictStore, HFilesystemStore


class MinimalKV:
    """The smallest duck-typed key-value store: no open, no copy."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes:
        return self.data[key]

    def put(self, key: str, value: bytes) -> str:
        if not isinstance(value, bytes):
            raise TypeError("bytes only")
        self.data[key] = value
        return key

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]


class FlakyFilesystemKV(MinimalKV):
    """Mimics the directory-pruning races of simplekv/minimalkv filesystem stores."""

    def __init__(self) -> None:
        super().__init__()
        self.put_failures = 1

    def put(self, key: str, value: bytes) -> str:
        if self.put_failures:
            self.put_failures -= 1
            raise FileNotFoundError(errno.ENOENT, "directory pruned by a concurrent delete")
        return super().put(key, value)

    def delete(self, key: str) -> None:
        super().delete(key)
        raise OSError(errno.ENOTEMPTY, "Directory not empty")


@pytest.fixture
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeCommitWarning)
        yield


# --------------------------------------------------------------------------- capabilities
def test_default_capabilities() -> None:
    store = KVStoreAdapter(HDictStore())
    assert store.capabilities == {Capability.RANGE_READ, Capability.SERVER_COPY}
    with pytest.raises(UnsupportedOperationError):
        store.put("k", b"v", if_absent=True)
    with pytest.raises(UnsupportedOperationError):
        store.put("k", b"v", if_match="x")
    with pytest.raises(UnsupportedOperationError):
        store.delete("k", if_match="x")
    with pytest.raises(UnsupportedOperationError):
        store.copy("k", "k2", if_absent=True)
    assert store.local_path("k") is None


def test_minimal_kv_has_no_optional_capabilities() -> None:
    store = KVStoreAdapter(MinimalKV())
    assert store.capabilities == frozenset()
    store.put("a/b", b"0123456789")
    assert store.get_range("a/b", 2, 3) == b"234"
    store.copy("a/b", "c")
    assert store.get("c") == b"0123456789"
    with pytest.raises(KeyNotFoundError):
        store.copy("missing", "d")


def test_network_stores_declare_concurrent_io() -> None:
    """minimalkv's Azure store (built offline: it connects lazily), also behind a
    decorator, declares CONCURRENT_IO; in-memory and filesystem stores do not."""
    from minimalkv.decorator import PrefixDecorator
    from minimalkv.net.azurestore import AzureBlockBlobStore

    from dataset_kit.testing.azurite import connection_string

    azure = AzureBlockBlobStore(
        conn_string=connection_string(1), container="cont", create_if_missing=False
    )
    assert Capability.CONCURRENT_IO in KVStoreAdapter(azure).capabilities
    assert Capability.CONCURRENT_IO in KVStoreAdapter(PrefixDecorator("p/", azure)).capabilities
    assert Capability.CONCURRENT_IO not in KVStoreAdapter(HDictStore()).capabilities
    assert Capability.CONCURRENT_IO not in open_store("hmemory://").capabilities


def test_unsafe_commits_warn_and_add_capabilities() -> None:
    with pytest.warns(UnsafeCommitWarning, match="only safe while every writer") as record:
        store = KVStoreAdapter(MinimalKV(), allow_unsafe_commits=True)
    assert len(record) == 1
    assert record[0].filename == __file__  # points at the caller
    assert store.capabilities == {Capability.ATOMIC_CREATE, Capability.COMPARE_AND_SWAP}
    assert store.options == {"allow_unsafe_commits": True}
    info = store.put("k", b"v", if_absent=True)
    with pytest.raises(KeyExistsError):
        store.put("k", b"w", if_absent=True)
    store.put("k", b"w", if_match=info.etag)
    assert store.get("k") == b"w"


def test_not_a_key_value_store() -> None:
    for obj in (object(), {"a": 1}, "hfs:///tmp", HDictStore):
        with pytest.raises(ConfigError, match="not a key-value store"):
            KVStoreAdapter(obj)


# --------------------------------------------------------------------------- errors
def test_key_error_translation() -> None:
    store = KVStoreAdapter(HDictStore())
    for call in (
        lambda: store.get("nope"),
        lambda: store.stat("nope"),
        lambda: store.get_range("nope", 0, 1),
        lambda: store.copy("nope", "x"),
    ):
        with pytest.raises(KeyNotFoundError) as info:
            call()
        assert info.value.key == "nope"
        assert isinstance(info.value, KeyError)
    store.delete("nope")  # a no-op


def test_directory_keys_are_missing_in_filesystem_stores(tmp_path: Path) -> None:
    store = KVStoreAdapter(HFilesystemStore(str(tmp_path)))
    store.put("dir/blob", b"x")
    assert not store.exists("dir")
    with pytest.raises(KeyNotFoundError):
        store.get("dir")


def test_keys_the_store_rejects_are_invalid() -> None:
    store = KVStoreAdapter(HDictStore())
    with pytest.raises(InvalidKeyError, match="illegal characters"):
        store.put("caf\u00e9", b"x")
    with pytest.raises(InvalidKeyError):
        store.get("caf\u00e9")


def test_other_errors_become_store_errors() -> None:
    class BrokenKV(MinimalKV):
        def get(self, key: str) -> bytes:
            raise OSError(errno.EIO, "disk on fire")

    store = KVStoreAdapter(BrokenKV())
    with pytest.raises(StoreError, match="disk on fire") as info:
        store.get("k")
    assert isinstance(info.value.__cause__, OSError)


def test_filesystem_races_are_absorbed() -> None:
    kv = FlakyFilesystemKV()
    store = KVStoreAdapter(kv)
    store.put("d/k", b"v")  # first attempt hits a pruned directory
    assert kv.data == {"d/k": b"v"}
    store.delete("d/k")  # the key is gone, only the pruning failed
    assert kv.data == {}


# --------------------------------------------------------------------------- stat
def test_stat_uses_content_hash_and_file_mtime(tmp_path: Path) -> None:
    store = KVStoreAdapter(HFilesystemStore(str(tmp_path)))
    info = store.put("a/b", b"content")
    assert info.etag == store.stat("a/b").etag
    assert len(info.etag) == 32
    assert info.mtime == os.stat(tmp_path / "a" / "b").st_mtime
    assert store.put("a/b", b"content").etag == info.etag  # same bytes, same etag
    memory = KVStoreAdapter(HDictStore())
    assert memory.put("k", b"x").mtime == 0.0


# --------------------------------------------------------------------------- identity
def test_urls_and_repr() -> None:
    one, two = KVStoreAdapter(HDictStore()), KVStoreAdapter(HDictStore())
    assert one.url.startswith("kv://HDictStore?instance=")
    assert one.url != two.url  # two stores, never taken for one (backups, task keys)
    secret = KVStoreAdapter(HDictStore(), url="azure://account:s3cr3t%2Fkey@container")
    assert secret.url == "azure://account:s3cr3t%2Fkey@container"
    assert "s3cr3t" not in repr(secret)
    assert "container" in repr(secret)


def test_pickle_by_url(tmp_path: Path) -> None:
    url = f"hfs://{tmp_path}#wrap:urlencode"
    store = open_store(url)
    assert isinstance(store, KVStoreAdapter)
    store.put("x/y", b"1")
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, KVStoreAdapter)
    assert clone.url == url
    assert clone.kv is not store.kv
    assert clone.get("x/y") == b"1"


def test_pickle_by_url_rebuilds_through_open_store(tmp_path: Path) -> None:
    # The url decides what comes back, even if it names a better backend.
    store = KVStoreAdapter(HFilesystemStore(str(tmp_path)), url=f"hfs://{tmp_path}")
    store.put("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone).__name__ == "LocalStore"
    assert clone.get("k") == b"v"


def test_pickle_by_object(quiet: None) -> None:
    kv = HDictStore()
    store = KVStoreAdapter(kv, allow_unsafe_commits=True)
    store.put("k", b"v")
    payload = pickle.dumps(store)
    assert b"HDictStore" in payload
    clone = pickle.loads(payload)
    assert isinstance(clone, KVStoreAdapter)
    assert isinstance(clone.kv, HDictStore)
    assert clone.kv is not kv
    assert clone.get("k") == b"v"
    assert clone.capabilities == store.capabilities


def test_unsafe_commits_through_open_store_url(tmp_path: Path) -> None:
    with pytest.warns(UnsafeCommitWarning):
        store = open_store(f"hfs://{tmp_path}#wrap:urlencode", allow_unsafe_commits=True)
    assert Capability.ATOMIC_CREATE in store.capabilities
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsafeCommitWarning)
        clone = pickle.loads(pickle.dumps(store))
    assert clone.options == {"allow_unsafe_commits": True}
