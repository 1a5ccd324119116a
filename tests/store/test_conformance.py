"""Every store backend against the shared conformance suite."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_kit.exceptions import UnsafeCommitWarning
from dataset_kit.store import (
    FaultInjectingStore,
    KVStoreAdapter,
    LocalStore,
    MemoryStore,
    Store,
    open_store,
)
from dataset_kit.testing.store_suite import StoreConformanceSuite

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import simplekv.contrib
    import simplekv.fs
    from minimalkv._hstores import HDictStore, HFilesystemStore


class SimpleKVExtendedFilesystemStore(
    simplekv.contrib.ExtendedKeyspaceMixin, simplekv.fs.FilesystemStore
):
    """simplekv's filesystem store with '/' in keys (simplekv has no H-classes)."""


@pytest.fixture
def memory_store() -> Iterator[MemoryStore]:
    store = MemoryStore()
    yield store
    MemoryStore.drop(store.name)


class TestLocalStore(StoreConformanceSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "root")


class TestLocalStoreFsync(StoreConformanceSuite):
    large_value_size = 4 * 1024 * 1024  # fsync makes the 32 MiB round trip slow

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path, fsync=True)


class TestMemoryStore(StoreConformanceSuite):
    @pytest.fixture
    def store(self, memory_store: MemoryStore) -> Store:
        return memory_store


class TestHfsUrl(StoreConformanceSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        store = open_store(f"hfs://{tmp_path}")
        assert isinstance(store, LocalStore)
        return store


class TestKVHDictStoreUnsafeCommits(StoreConformanceSuite):
    supports_raw_unicode_keys = False
    reports_mtime = False
    pickle_shares_data = False  # a pickled DictStore is a copy of the dict

    @pytest.fixture
    def store(self) -> Store:
        with pytest.warns(UnsafeCommitWarning):
            return KVStoreAdapter(HDictStore(), allow_unsafe_commits=True)


class TestKVMinimalkvFilesystem(StoreConformanceSuite):
    supports_raw_unicode_keys = False

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return KVStoreAdapter(HFilesystemStore(str(tmp_path)))


class TestKVSimplekvFilesystem(StoreConformanceSuite):
    supports_raw_unicode_keys = False

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return KVStoreAdapter(SimpleKVExtendedFilesystemStore(str(tmp_path)))


class TestFaultInjectingNoFaults(StoreConformanceSuite):
    @pytest.fixture
    def store(self, memory_store: MemoryStore) -> Store:
        return FaultInjectingStore(memory_store, fail_rate=0.0, seed=1)
