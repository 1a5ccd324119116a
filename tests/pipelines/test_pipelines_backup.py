"""Backup, restore and verify: incremental, resumable, never a torn dataset at the target."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import (
    CommitConflictError,
    CopyIncompleteError,
    DataBlobMissingError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidInputError,
    VersionNotFoundError,
)
from dataset_kit.store import (
    BlobInfo,
    Capability,
    DelegatingStore,
    FaultInjectingStore,
    LocalStore,
    Store,
)
from dataset_kit.testing.recording import ThreadRecordingStore

UUID = "sales"


def frame(*parts: int) -> pd.DataFrame:
    return pd.DataFrame({"p": list(parts), "x": [float(p) * 1.5 for p in parts]})


@pytest.fixture
def live(tmp_path: Path) -> LocalStore:
    kv = LocalStore(tmp_path / "live")
    dk.write_dataset(
        frame(*range(20)), store=kv, dataset_uuid=UUID, partition_on="p", secondary_indices=None
    )
    dk.update_dataset(frame(20, 21), store=kv, dataset_uuid=UUID)
    return kv


@pytest.fixture
def vault(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "vault")


def table(store: Store, uuid: str = UUID, version: int | None = None) -> pd.DataFrame:
    df = dk.read_table(store=store, dataset_uuid=uuid, version=version)
    return df.sort_values("p").reset_index(drop=True)


def test_backup_copies_every_version_and_reads_back(live: LocalStore, vault: LocalStore) -> None:
    report = dk.pipelines.backup(UUID, source=live, target=vault, batch_size=7).compute()
    assert report.versions == [0, 1] and report.version == 1
    assert report.copied == 22 and report.skipped == 0 and report.copied_bytes > 0
    pd.testing.assert_frame_equal(table(vault), table(live))
    pd.testing.assert_frame_equal(table(vault, version=0), table(live, version=0))
    assert dk.pipelines.verify(UUID, store=vault, versions="all", deep=True).compute().ok


def test_default_copy_nodes_follow_the_store_kind(live: LocalStore, vault: LocalStore) -> None:
    """Between local stores small blobs are copied by one node (per-file work spreads
    over two threads at most there); a network store on either side gets 64 blobs per
    node."""
    assert dk.pipelines.backup(UUID, source=live, target=vault).tasks == 1
    network = DelegatingStore(vault, capabilities=vault.capabilities | {Capability.CONCURRENT_IO})
    assert dk.pipelines.backup(UUID, source=live, target=network, batch_size=None).tasks == 1
    job = dk.pipelines.backup(UUID, source=live, target=network, batch_size=5)
    assert job.tasks == 5  # ceil(22 / 5)
    assert job.compute().copied == 22
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_copies_into_a_local_filesystem_add_a_thread_when_the_first_waits(
    live: LocalStore, vault: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node copies its first blobs on its own thread, timing them: puts that wait (on
    a file system's journal; here a sleep) send the rest to two threads. A memory store,
    pure CPU under the GIL, copies on the node's own thread."""
    from dataset_kit.io import backup as io_backup

    monkeypatch.setattr(io_backup, "LOCAL_COPY_PROBE", 4)
    local = ThreadRecordingStore(vault, put_delay=0.02)  # overlapping puts: both threads work
    dk.pipelines.backup(UUID, source=live, target=local).compute(scheduler="sync")
    assert threading.current_thread().name in local.threads
    assert len(local.threads) == 3 and sum(t.startswith("dk-io") for t in local.threads) == 2
    pd.testing.assert_frame_equal(table(vault), table(live))
    memory = ThreadRecordingStore(dk.open_store("memory://"))
    dk.pipelines.backup(UUID, source=live, target=memory).compute(scheduler="sync")
    assert memory.threads == {threading.current_thread().name}


def test_local_copies_that_keep_the_cpu_busy_stay_on_one_thread(
    live: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first copies spent their wall time on the CPU (GIL-bound work, where a
    second thread only contends), the rest stay on the node's thread; the thread's CPU
    clock is made to follow the wall clock, as it does for such copies."""
    import types

    from dataset_kit.io import backup as io_backup

    clock = types.SimpleNamespace(perf_counter=time.perf_counter, thread_time=time.perf_counter)
    monkeypatch.setattr(io_backup, "time", clock)
    monkeypatch.setattr(io_backup, "LOCAL_COPY_PROBE", 4)
    local = ThreadRecordingStore(LocalStore(tmp_path / "v"), put_delay=0.02)
    assert dk.pipelines.backup(UUID, source=live, target=local).compute(scheduler="sync").copied
    assert local.threads == {threading.current_thread().name}


def test_big_local_copies_run_on_two_threads_from_the_start(
    live: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs big enough on average (a kernel copy that runs outside the GIL) need no
    probe: two threads from the first blob."""
    from dataset_kit.io import backup as io_backup

    monkeypatch.setattr(io_backup, "LOCAL_COPY_PROBE", 10_000)  # no probe would decide
    monkeypatch.setattr(io_backup, "LOCAL_PARALLEL_COPY_BYTES", 1)
    local = ThreadRecordingStore(LocalStore(tmp_path / "v"), put_delay=0.02)
    dk.pipelines.backup(UUID, source=live, target=local).compute(scheduler="sync")
    assert len(local.threads) == 2 and all(t.startswith("dk-io") for t in local.threads)


class _BytesInPut(DelegatingStore):
    """A network store whose data-blob puts take 20 ms; records the most bytes that
    were inside puts at once (bytes a copy through this process holds)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, capabilities=inner.capabilities | {Capability.CONCURRENT_IO})
        self.lock = threading.Lock()
        self.now = self.most = self.most_calls = self.calls = 0

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if not key.endswith(".parquet"):
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)
        with self.lock:
            self.now += len(data)
            self.calls += 1
            self.most = max(self.most, self.now)
            self.most_calls = max(self.most_calls, self.calls)
        try:
            time.sleep(0.02)
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)
        finally:
            with self.lock:
                self.now -= len(data)
                self.calls -= 1


@pytest.mark.parametrize("check", ["size", "checksum"])
def test_copies_through_this_process_hold_a_bounded_number_of_bytes(
    live: LocalStore, vault: LocalStore, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    """16 threads per node on a network store, but the blobs in flight never exceed the
    node's memory budget (COPY_MEMORY_BYTES); a blob above the budget runs alone."""
    from dataset_kit.io import backup as io_backup

    sizes = [info.size for info in live.iter_infos(UUID) if info.key.endswith(".parquet")]
    limit = 3 * max(sizes)
    monkeypatch.setattr(io_backup, "COPY_MEMORY_BYTES", limit)
    network = _BytesInPut(vault)
    report = dk.pipelines.backup(
        UUID, source=live, target=network, batch_size=22, check=check
    ).compute(scheduler="sync")
    assert report.copied == 22
    assert 1 < network.most_calls and network.most <= limit
    pd.testing.assert_frame_equal(table(vault), table(live))

    monkeypatch.setattr(io_backup, "COPY_MEMORY_BYTES", 1)  # every blob is bigger
    alone = _BytesInPut(LocalStore(Path(vault.root).parent / "alone"))
    report = dk.pipelines.backup(UUID, source=live, target=alone, batch_size=22).compute(
        scheduler="sync"
    )
    assert report.copied == 22 and alone.most_calls == 1


def test_a_streamed_copy_is_charged_what_it_holds(
    vault: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory budget charges a copy its blob, a streamed one a chunk's worth, and a
    copy made by the kernel or the service nothing."""
    import dataset_kit.store._streams as streams
    from dataset_kit.io import backup as io_backup
    from dataset_kit.store import MemoryStore

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    memory = MemoryStore()
    big = BlobInfo("k", 10 * streams.STREAMED_COPY_HOLD, 0.0, "e")
    assert io_backup._copy_holds(memory, vault, big, big.size, True) == streams.STREAMED_COPY_HOLD
    assert io_backup._copy_holds(memory, vault, None, 50, True) == 50
    assert io_backup._copy_holds(memory, MemoryStore(), big, big.size, True) == big.size
    assert io_backup._copy_holds(vault, vault, big, big.size, False) == 0


def test_network_stores_copy_and_verify_on_many_threads_per_node(
    live: LocalStore, vault: LocalStore
) -> None:
    """A dask node runs on one thread; on a network store it fans its blobs out over
    threads, or the threaded scheduler would keep only one request per CPU in flight."""
    network = ThreadRecordingStore(vault, network=True, put_delay=0.01)
    report = dk.pipelines.backup(UUID, source=live, target=network, batch_size=22).compute(
        scheduler="sync"
    )
    assert report.copied == 22
    assert len(network.threads) > 1 and all(t.startswith("dk-io") for t in network.threads)
    pd.testing.assert_frame_equal(table(vault), table(live))
    verify = dk.pipelines.verify(UUID, store=network, versions="all").compute(scheduler="sync")
    assert verify.ok and verify.checked == 22
    assert len(network.stats) > 1


class _SlowSnapshots(DelegatingStore):
    """A network store whose snapshot reads take 20 ms; records how many overlapped."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, capabilities=inner.capabilities | {Capability.CONCURRENT_IO})
        self.lock = threading.Lock()
        self.open = self.most = self.reads = 0

    def _get(self, key: str) -> bytes:
        if "/_versions/" not in key:
            return super()._get(key)
        with self.lock:
            self.open += 1
            self.reads += 1
            self.most = max(self.most, self.open)
        try:
            time.sleep(0.02)
            return super()._get(key)
        finally:
            with self.lock:
                self.open -= 1


def test_snapshots_of_a_long_history_are_read_concurrently_on_network_stores() -> None:
    """A first backup of a dataset with 40 versions reads every snapshot: on a network
    store those reads overlap instead of costing 40 sequential round trips. The next,
    incremental backup reads only the newest version both sides hold (to check it is the
    same commit), not the history again; time travel works on the backup."""
    live = _SlowSnapshots(dk.open_store("memory://"))
    vault = _SlowSnapshots(dk.open_store("memory://"))
    for i in range(40):
        dk.update_dataset(frame(i), store=live, dataset_uuid=UUID)
    dk.pipelines.backup(UUID, source=live, target=vault).compute(scheduler="sync")
    assert live.reads >= 39 and live.most > 4
    dk.update_dataset(frame(40), store=live, dataset_uuid=UUID)
    for store in (live, vault):
        store.most = store.reads = 0
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute(scheduler="sync")
    assert (report.copied, report.version, len(report.versions)) == (1, 40, 41)
    assert (live.reads, vault.reads) == (1, 1)  # version 39, on both sides
    pd.testing.assert_frame_equal(table(vault), table(live))
    pd.testing.assert_frame_equal(table(vault, version=17), table(live, version=17))
    assert dk.pipelines.verify(UUID, store=vault, versions="all").compute().ok


class _RequestLog(DelegatingStore):
    """Records every request as ``(operation, key or prefix)``."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, capabilities=inner.capabilities)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _log(self, op: str, key: str) -> None:
        with self.lock:
            self.requests.append((op, key))

    def _get(self, key: str) -> bytes:
        self._log("get", key)
        return super()._get(key)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        self._log("get_range", key)
        return super()._get_range(key, start, length)

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        self._log("get_with_info", key)  # one request: bytes and etag together
        return self.inner.get_with_info(key)

    def _stat(self, key: str) -> BlobInfo:
        self._log("stat", key)
        return super()._stat(key)

    def _exists(self, key: str) -> bool:
        self._log("exists", key)
        return super()._exists(key)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        self._log("list", prefix)
        return super()._iter_keys(prefix)

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        self._log("list", prefix)
        return super()._iter_infos(prefix)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        self._log("put", key)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self._log("delete", key)
        super()._delete(key, if_match=if_match)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        self._log("copy", src)
        return super()._copy(src, dst, if_absent=if_absent)

    def keys(self) -> list[tuple[str, str]]:
        """The requests with data blob names replaced by ``<blob>``, sorted."""
        return sorted((op, "<blob>" if k.endswith(".parquet") else k) for op, k in self.requests)


def test_an_incremental_backup_makes_no_redundant_requests(
    live: LocalStore, vault: LocalStore
) -> None:
    """Each request is a round trip on Azure, so an incremental backup makes only these:
    the source's pointer, listing of snapshots and schema file, and the newest snapshot
    both sides hold (compared by commit id), and a stat of the new blob (the others'
    sizes are recorded in the snapshot and found at the target: the source's blobs are
    not listed); the target's listing, pointer (bytes and etag in one read), that
    snapshot and schema file; then the new blob, snapshot and pointer. Older
    snapshots are not read, the commit trusts the plan (create-only writes), an
    unchanged schema file is not written again, and nothing is listed after the commit
    when the skipped blobs belong to the target's newest version."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    source, target = _RequestLog(live), _RequestLog(vault)
    report = dk.pipelines.backup(UUID, source=source, target=target).compute(scheduler="sync")
    assert (report.copied, report.version, report.repaired) == (1, 2, 0)
    pointer = naming.pointer_key(UUID)
    schema = naming.common_metadata_key(UUID, "table")
    v0, v1, v2 = (naming.snapshot_key(UUID, v) for v in range(3))
    prefix = naming.dataset_prefix(UUID)
    del v0  # held by both sides and older than v1: never read
    versions = naming.snapshot_prefix(UUID)
    source_wants = [("get", pointer), ("list", versions), ("get", v1), ("get", schema)]
    source_wants += [("stat", "<blob>"), ("get", "<blob>")]
    target_wants = [("list", prefix), ("get_with_info", pointer), ("get", v1)]
    target_wants += [("get", schema), ("put", "<blob>"), ("put", v2), ("put", pointer)]
    assert source.keys() == sorted(source_wants)
    assert target.keys() == sorted(target_wants)
    assert vault.get(schema) == live.get(schema)
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_a_backup_planned_earlier_never_moves_the_pointer_backwards(
    live: LocalStore, vault: LocalStore
) -> None:
    """Two backups planned at different source versions, computed newest first: the
    older one's pointer swap fails against the etag it planned with, it looks again,
    sees a newer version and leaves it; the target reads as the newer backup."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.update_dataset(frame(97), store=live, dataset_uuid=UUID)
    older = dk.pipelines.backup(UUID, source=live, target=vault)
    dk.update_dataset(frame(98), store=live, dataset_uuid=UUID)
    newer = dk.pipelines.backup(UUID, source=live, target=vault)
    assert newer.compute().version == 3
    report = older.compute()
    assert (report.version, report.copied) == (2, 1)  # as planned (the same bytes again)
    assert dk.open_dataset(store=vault, dataset_uuid=UUID).version == 3
    pd.testing.assert_frame_equal(table(vault), table(live))
    pd.testing.assert_frame_equal(table(vault, version=2), table(live, version=2))


def test_a_first_backup_lists_the_target_once(live: LocalStore, vault: LocalStore) -> None:
    """Nothing was skipped, so nothing can have vanished: no listing after the commit."""
    target = _RequestLog(vault)
    report = dk.pipelines.backup(UUID, source=live, target=target).compute(scheduler="sync")
    assert (report.copied, report.skipped, report.repaired) == (22, 0, 0)
    assert [r for r in target.requests if r[0] == "list"] == [("list", UUID + "/")]


def test_a_backup_with_nothing_new_copies_nothing_and_writes_nothing(
    live: LocalStore, vault: LocalStore
) -> None:
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    target = _RequestLog(vault)
    report = dk.pipelines.backup(UUID, source=live, target=target).compute(scheduler="sync")
    assert (report.copied, report.version, report.versions) == (0, 1, [0, 1])
    assert [r for r in target.requests if r[0] in ("put", "delete", "copy")] == []


def test_an_all_versions_backup_fills_in_what_a_latest_only_backup_left_out(
    live: LocalStore, vault: LocalStore
) -> None:
    """The target holds only the newest version; a backup of every version reads and
    writes the older ones it lacks, and time travel works on the backup afterwards."""
    dk.pipelines.backup(UUID, source=live, target=vault, versions="latest").compute()
    with pytest.raises(VersionNotFoundError):
        table(vault, version=0)
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert (report.version, report.versions) == (1, [0, 1])
    pd.testing.assert_frame_equal(table(vault, version=0), table(live, version=0))
    pd.testing.assert_frame_equal(table(vault), table(live))
    assert dk.pipelines.verify(UUID, store=vault, versions="all").compute().ok


def test_a_changed_schema_file_is_copied_once_before_the_pointer(
    live: LocalStore, vault: LocalStore
) -> None:
    """An append that adds a column rewrites ``_common_metadata`` at the source; the next
    backup writes it once at the target, and plateau-style readers see the new column."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    schema = naming.common_metadata_key(UUID, "table")
    before = vault.get(schema)
    wider = frame(50).assign(note=pd.array(["new"], dtype="string"))
    dk.update_dataset(wider, store=live, dataset_uuid=UUID)
    assert live.get(schema) != before
    target = _RequestLog(vault)
    dk.pipelines.backup(UUID, source=live, target=target).compute(scheduler="sync")
    assert target.requests.count(("put", schema)) == 1
    assert vault.get(schema) == live.get(schema)
    pd.testing.assert_frame_equal(table(vault), table(live))


class _KilledAtCommit(DelegatingStore):
    """Dies (like a killed process) when the first snapshot is written."""

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_versions/" in key:
            raise KeyboardInterrupt("killed")
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_a_skipped_blob_deleted_at_the_target_before_the_commit_is_copied_again(
    live: LocalStore, vault: LocalStore
) -> None:
    """Blobs left at the target by a killed run are skipped by the next one; a garbage
    collection at the target may delete them (they are unreferenced there) before that
    run commits. The run notices after its commit and copies them again."""
    with pytest.raises(KeyboardInterrupt):
        dk.pipelines.backup(UUID, source=live, target=_KilledAtCommit(vault)).compute(
            scheduler="sync"
        )
    orphans = [k for k in vault.iter_keys(UUID + "/") if k.endswith(".parquet")]
    assert len(orphans) == 22
    job = dk.pipelines.backup(UUID, source=live, target=vault)  # planned: all 22 present
    gc = dk.garbage_collect(store=vault, dataset_uuid=UUID, grace_period=0)
    assert gc.count == 22
    report = job.compute(scheduler="sync")
    assert (report.copied, report.skipped, report.repaired) == (0, 22, 22)
    pd.testing.assert_frame_equal(table(vault), table(live))
    assert dk.pipelines.verify(UUID, store=vault, versions="all").compute().ok


def test_local_copy_nodes_are_cut_by_bytes() -> None:
    from dataset_kit.io.backup import BlobCopy
    from dataset_kit.pipelines.backup import LOCAL_COPY_NODE_BYTES, _copy_batches

    big, small = LOCAL_COPY_NODE_BYTES // 2, 1000
    blobs = [BlobCopy(f"s{i}", f"d{i}", size) for i, size in enumerate([big, big, small, big, 1])]
    nodes = _copy_batches(blobs, None, concurrent=False)
    assert [[b.src for b in n] for n in nodes] == [["s0", "s1"], ["s2", "s3", "s4"]]
    huge = [BlobCopy("h", "h", 3 * LOCAL_COPY_NODE_BYTES), BlobCopy("t", "t", 1)]
    assert [len(n) for n in _copy_batches(huge, None, concurrent=False)] == [1, 1]
    assert [len(n) for n in _copy_batches(blobs, None, concurrent=True)] == [5]
    assert [len(n) for n in _copy_batches(blobs, 2, concurrent=False)] == [2, 2, 1]
    assert _copy_batches([], None, concurrent=False) == []


def test_second_backup_after_a_small_append_copies_only_new_blobs(
    live: LocalStore, vault: LocalStore
) -> None:
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert (report.copied, report.skipped) == (1, 22)
    assert report.version == 2
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_versions_expired_at_the_target_stay_expired_on_the_next_backup(
    live: LocalStore, vault: LocalStore
) -> None:
    """The backup's own retention (expiring old versions there) does not break later runs."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert dk.expire_versions(store=vault, dataset_uuid=UUID, keep_versions=1) == [0]
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert report.version == 2
    pd.testing.assert_frame_equal(table(vault), table(live))
    with pytest.raises(VersionNotFoundError, match="expired"):
        table(vault, version=0)
    assert dk.pipelines.verify(UUID, store=vault, versions="all").compute().ok


def test_latest_only_and_another_uuid_in_the_same_store(live: LocalStore) -> None:
    report = dk.pipelines.backup(
        UUID, source=live, target=live, target_uuid="sales_copy", versions="latest"
    ).compute()
    assert report.versions == [1]
    pd.testing.assert_frame_equal(table(live, "sales_copy"), table(live))
    keys = list(live.iter_keys(naming.dataset_prefix("sales_copy")))
    assert keys and all(k.startswith("sales_copy/") for k in keys)
    with pytest.raises(dk.exceptions.VersionNotFoundError):
        dk.read_table(store=live, dataset_uuid="sales_copy", version=0)


def test_backup_between_two_key_value_stores_without_urls(live: LocalStore) -> None:
    """Two adapters of plain key-value stores are two stores: the backup reads the
    source, not the target (both were once called ``kv://HDictStore``, taken for one)."""
    import warnings

    from minimalkv._hstores import HDictStore

    from dataset_kit.store import KVStoreAdapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dk.exceptions.UnsafeCommitWarning)
        one = KVStoreAdapter(HDictStore(), allow_unsafe_commits=True)
        two = KVStoreAdapter(HDictStore(), allow_unsafe_commits=True)
    dk.pipelines.backup(UUID, source=live, target=one).compute()
    report = dk.pipelines.backup(UUID, source=one, target=two).compute()  # same uuid
    assert report.copied == len(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions)
    pd.testing.assert_frame_equal(table(two), table(live))


def test_backup_onto_itself_is_refused(live: LocalStore) -> None:
    with pytest.raises(InvalidInputError, match="same dataset"):
        dk.pipelines.backup(UUID, source=live, target=live)


def test_target_holding_another_dataset_is_refused(live: LocalStore, vault: LocalStore) -> None:
    dk.write_dataset(frame(1), store=vault, dataset_uuid=UUID)
    with pytest.raises(DatasetExistsError):
        dk.pipelines.backup(UUID, source=live, target=vault)
    assert table(vault)["p"].tolist() == [1]


class KillAfter(DelegatingStore):
    """Dies (like a killed process) after ``n`` successful copies into the target."""

    def __init__(self, inner: Store, n: int) -> None:
        super().__init__(inner)
        self.left = n

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if key.endswith(".parquet"):
            if self.left <= 0:
                raise KeyboardInterrupt("killed")
            self.left -= 1
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_a_backup_killed_halfway_is_invisible_and_resumes(
    live: LocalStore, vault: LocalStore
) -> None:
    with pytest.raises(KeyboardInterrupt):
        dk.pipelines.backup(UUID, source=live, target=KillAfter(vault, 10), batch_size=4).compute(
            scheduler="sync"
        )
    assert dk.list_datasets(vault) == []
    with pytest.raises(DatasetNotFoundError):
        dk.read_table(store=vault, dataset_uuid=UUID)
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert report.skipped == 10 and report.copied == 12
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_copy_failures_leave_the_target_unchanged(live: LocalStore, vault: LocalStore) -> None:
    flaky = FaultInjectingStore(vault, fail_rate=0.3, seed=3, operations=frozenset({"put"}))
    with pytest.raises(CopyIncompleteError) as info:
        dk.pipelines.backup(UUID, source=live, target=flaky).compute()
    assert info.value.failed and dk.list_datasets(vault) == []
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert report.copied + report.skipped == 22
    pd.testing.assert_frame_equal(table(vault), table(live))


@pytest.mark.parametrize("read", ["whole", "in chunks"])
def test_checksum_check_catches_a_corrupting_copy(
    live: LocalStore, vault: LocalStore, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """Read whole, or (blobs above WHOLE_BLOB_BYTES) in ranged chunks of bounded size:
    a copy that differs in its last byte fails; an intact one passes."""
    from dataset_kit.io import backup as io_backup
    from dataset_kit.store import CountingStore

    if read == "in chunks":
        monkeypatch.setattr(io_backup, "WHOLE_BLOB_BYTES", 100)
        monkeypatch.setattr(io_backup, "DIGEST_CHUNK_BYTES", 500)

    class Corrupting(DelegatingStore):
        def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
            if key.endswith(".parquet"):
                data = bytes(data)[:-1] + b"\0"  # same size, different bytes
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    with pytest.raises(CopyIncompleteError, match="checksum"):
        dk.pipelines.backup(UUID, source=live, target=Corrupting(vault), check="checksum").compute()
    assert dk.list_datasets(vault) == []
    # the bad copies are gone: the next run, which skips blobs the target holds at their
    # size, would otherwise commit them (and the backup would not read)
    assert [k for k in vault.iter_keys() if k.endswith(".parquet")] == []

    source = CountingStore(live)
    report = dk.pipelines.backup(UUID, source=source, target=vault, check="checksum").compute()
    assert report.copied == 22
    if read == "in chunks":  # every data blob (over 500 bytes) in chunks of at most 500
        assert source.counts["get_range"] >= 2 * 22
        assert source.counts["get"] < 22  # the metadata's reads only
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_a_checksum_backup_compares_the_blobs_the_target_already_holds(
    live: LocalStore, vault: LocalStore, tmp_path: Path
) -> None:
    """With check="checksum" a blob the target holds at its size is compared by content
    too: one damaged in place at the target (same size) is copied again. A "size"
    backup trusts sizes and skips it."""
    import shutil

    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    keys = list(dk.open_dataset(store=vault, dataset_uuid=UUID).meta.partitions.values())
    path = vault.local_path(keys[3])
    assert path is not None
    with open(path, "r+b") as fh:  # bit rot: same size, other bytes
        fh.seek(4)
        fh.write(b"\xff" * 8)
    shutil.copytree(vault.root, tmp_path / "vault2")
    vault2 = LocalStore(tmp_path / "vault2")
    dk.update_dataset(frame(30), store=live, dataset_uuid=UUID)
    damaged = vault.stat(keys[3]).size

    report = dk.pipelines.backup(UUID, source=live, target=vault2).compute()
    assert (report.copied, report.skipped) == (1, 22)  # the new blob only: sizes match
    report = dk.pipelines.backup(UUID, source=live, target=vault, check="checksum").compute()
    assert (report.copied, report.skipped) == (2, 21)  # the new blob and the damaged one
    assert report.skipped_bytes == sum(vault.stat(k).size for k in keys) - damaged
    pd.testing.assert_frame_equal(table(vault), table(live))
    assert dk.pipelines.verify(UUID, store=vault, deep=True).compute().ok
    assert not dk.pipelines.verify(UUID, store=vault2, deep=True).compute().ok
    # only a checksum run's plan lists the held blobs (a size run needs no such list)
    from dataset_kit.io import backup as io_backup

    assert io_backup.plan_copy(live, vault, UUID).held == []
    assert len(io_backup.plan_copy(live, vault, UUID, list_held=True).held) == 23


@pytest.mark.parametrize("check", ["size", "checksum"])
def test_a_checksum_restore_compares_the_blobs_the_live_dataset_holds(
    live: LocalStore, vault: LocalStore, check: str
) -> None:
    """Restoring into a live dataset skips the blobs it holds at their size; with
    check="checksum" one damaged in place there is restored from the backup too."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    want = table(live)
    keys = list(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions.values())
    path = live.local_path(keys[5])
    assert path is not None
    with open(path, "r+b") as fh:  # bit rot in the live dataset: same size
        fh.seek(4)
        fh.write(b"\xff" * 8)
    report = dk.pipelines.restore(UUID, source=vault, target=live, check=check).compute()
    healthy = dk.pipelines.verify(UUID, store=live, deep=True).compute().ok
    if check == "size":
        assert (report.copied, report.skipped) == (0, 22) and not healthy
    else:
        assert (report.copied, report.skipped) == (1, 21) and healthy
        pd.testing.assert_frame_equal(table(live), want)


def test_missing_source_blob_is_reported_before_copying(
    live: LocalStore, vault: LocalStore
) -> None:
    key = next(iter(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions.values()))
    live.delete(key)
    with pytest.raises(DataBlobMissingError):
        dk.pipelines.backup(UUID, source=live, target=vault)
    report = dk.pipelines.verify(UUID, store=live).compute()
    assert not report.ok and report.missing == [key]


def test_an_incremental_backup_reports_a_missing_new_blob_before_copying(
    live: LocalStore, vault: LocalStore
) -> None:
    """Without the source's listing, the new blob's stat finds it missing."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    before = sorted(vault.iter_keys())
    meta = dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    live.delete(next(k for k in meta.partitions.values() if "p=99/" in k))
    with pytest.raises(DataBlobMissingError):
        dk.pipelines.backup(UUID, source=live, target=vault)
    assert sorted(vault.iter_keys()) == before


def test_a_backup_refuses_to_copy_a_blob_damaged_at_the_source(
    live: LocalStore, vault: LocalStore
) -> None:
    """A blob truncated at the source (its size differs from the one its snapshot
    records) is never copied silently, with either check, first or incremental."""
    from dataset_kit.exceptions import DataBlobCorruptError

    meta = dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    new = next(k for k in meta.partitions.values() if "p=99/" in k)
    good = live.get(new)
    path = live.local_path(new)
    with open(path, "r+b") as fh:
        fh.truncate(len(good) // 2)
    for check in ("size", "checksum"):
        with pytest.raises(DataBlobCorruptError, match="another size at the source"):
            dk.pipelines.backup(UUID, source=live, target=vault, check=check)
    assert list(vault.iter_keys()) == []
    live.put(new, good)  # repaired: the first backup goes through, then damage again
    dk.pipelines.backup(UUID, source=live, target=vault, versions="latest").compute()
    dk.update_dataset(frame(100), store=live, dataset_uuid=UUID)
    newer = next(k for k in live.iter_keys(UUID + "/") if "p=100/" in k)
    with open(live.local_path(newer), "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(DataBlobCorruptError):
        dk.pipelines.backup(UUID, source=live, target=vault, versions="latest")


def test_an_incremental_backup_copies_a_blob_damaged_at_the_target_again(
    live: LocalStore, vault: LocalStore
) -> None:
    """A blob the target holds at another size than the snapshot records is copied."""
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    damaged = next(iter(dk.open_dataset(store=vault, dataset_uuid=UUID).meta.partitions.values()))
    path = vault.local_path(damaged)
    with open(path, "r+b") as fh:
        fh.truncate(10)
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert (report.copied, report.skipped) == (2, 21)
    assert os.path.getsize(path) == os.path.getsize(live.local_path(damaged))
    assert dk.pipelines.verify(UUID, store=vault, versions="all", deep=True).compute().ok


def test_an_incremental_latest_only_backup_does_not_list_the_source(
    live: LocalStore, vault: LocalStore
) -> None:
    dk.pipelines.backup(UUID, source=live, target=vault, versions="latest").compute()
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    source = _RequestLog(live)
    report = dk.pipelines.backup(UUID, source=source, target=vault, versions="latest").compute(
        scheduler="sync"
    )
    assert (report.copied, report.skipped) == (1, 22)
    assert ("list", naming.dataset_prefix(UUID)) not in source.requests
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_an_incremental_backup_lists_the_source_when_many_blobs_are_new(
    live: LocalStore, vault: LocalStore
) -> None:
    """Past MAX_STATS_INSTEAD_OF_LISTING new blobs, one listing beats that many stats."""
    from dataset_kit.io.backup import MAX_STATS_INSTEAD_OF_LISTING

    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    many = MAX_STATS_INSTEAD_OF_LISTING + 1
    dk.update_dataset(frame(*range(100, 100 + many)), store=live, dataset_uuid=UUID)
    source = _RequestLog(live)
    report = dk.pipelines.backup(UUID, source=source, target=vault).compute(scheduler="sync")
    assert (report.copied, report.skipped) == (many, 22)
    assert ("list", naming.dataset_prefix(UUID)) in source.requests
    assert not any(op == "stat" for op, _ in source.requests)
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_an_incremental_backup_of_an_indexed_dataset(tmp_path: Path) -> None:
    """Index files have no recorded size: the source is listed, the new index copied."""
    live, vault = LocalStore(tmp_path / "live"), LocalStore(tmp_path / "vault")
    df = pd.DataFrame({"p": [1, 2], "c": ["a", "b"]})
    dk.write_dataset(df, store=live, dataset_uuid=UUID, partition_on="p", secondary_indices="c")
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    update = pd.DataFrame({"p": [3], "c": ["z"]})
    dk.update_dataset(update, store=live, dataset_uuid=UUID, secondary_indices="c")
    source = _RequestLog(live)
    report = dk.pipelines.backup(UUID, source=source, target=vault).compute(scheduler="sync")
    assert report.copied == 2  # the new data blob and the new index file
    assert ("list", naming.dataset_prefix(UUID)) in source.requests
    got = dk.read_table(store=vault, dataset_uuid=UUID, predicates=[[("c", "==", "z")]])
    assert got["p"].tolist() == [3]
    assert dk.pipelines.verify(UUID, store=vault, versions="all", deep=True).compute().ok


def test_verify_finds_corrupt_and_truncated_blobs(live: LocalStore) -> None:
    keys = list(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions.values())
    path = live.local_path(keys[0])
    assert path is not None
    with open(path, "r+b") as fh:  # same size, garbage content: only a deep check sees it
        fh.write(b"\0" * 16)
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\0" * 8)
    path2 = live.local_path(keys[1])
    assert path2 is not None
    with open(path2, "r+b") as fh:
        fh.truncate(10)
    shallow = dk.pipelines.verify(UUID, store=live, batch_size=5).compute()
    assert list(shallow.corrupt) == [keys[1]] and shallow.checked == 22
    deep = dk.pipelines.verify(UUID, store=live, deep=True).compute()
    assert set(deep.corrupt) == {keys[0], keys[1]} and not deep.ok


def test_deep_verify_decodes_the_data_not_only_the_footer(live: LocalStore) -> None:
    """Garbage between an intact header and an intact footer (the blob's data pages) is
    found by decoding: the footer alone would parse, with the recorded row count."""
    import pyarrow.parquet as pq

    keys = list(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions.values())
    path = live.local_path(keys[0])
    assert path is not None
    data = Path(path).read_bytes()
    footer_len = int.from_bytes(data[-8:-4], "little")
    body = len(data) - 8 - footer_len
    with open(path, "r+b") as fh:
        fh.seek(4)
        fh.write(b"\xff" * (body - 4))
    assert pq.read_metadata(path).num_rows == 1  # the footer still parses
    report = dk.pipelines.verify(UUID, store=live, deep=True).compute()
    assert list(report.corrupt) == [keys[0]] and "unreadable Parquet" in report.corrupt[keys[0]]
    assert report.checked == 22 and not report.missing


def test_deep_verify_decodes_big_blobs_from_ranged_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob above WHOLE_BLOB_BYTES is decoded from ranged reads, a row group at a
    time (never read whole), and garbage in its data pages is still found."""
    from dataset_kit.io import backup as io_backup
    from dataset_kit.store import CountingStore

    store = LocalStore(tmp_path / "big")
    rows = pd.DataFrame({"p": 1, "x": [float(i) for i in range(20_000)]})
    dk.write_dataset(rows, store=store, dataset_uuid=UUID, partition_on="p", row_group_size=5_000)
    (key,) = dk.open_dataset(store=store, dataset_uuid=UUID).meta.partitions.values()
    size = store.stat(key).size
    monkeypatch.setattr(io_backup, "WHOLE_BLOB_BYTES", size - 1)
    shallow, deep = CountingStore(store), CountingStore(store)
    assert dk.pipelines.verify(UUID, store=shallow).compute(scheduler="sync").ok
    report = dk.pipelines.verify(UUID, store=deep, deep=True).compute(scheduler="sync")
    assert report.ok and report.checked == 1
    assert deep.counts["get"] == shallow.counts["get"]  # the metadata only: no whole blob
    assert shallow.counts["get_range"] == 0 and deep.counts["get_range"] >= 4  # 4 row groups
    assert 0 < deep.counts["bytes_read"] - shallow.counts["bytes_read"] <= 2 * size

    path = store.local_path(key)
    assert path is not None
    with open(path, "r+b") as fh:  # garbage in the second row group's pages
        fh.seek(size // 3)
        fh.write(b"\xff" * 2_000)
    report = dk.pipelines.verify(UUID, store=deep, deep=True).compute(scheduler="sync")
    assert list(report.corrupt) == [key] and "unreadable Parquet" in report.corrupt[key]


def test_restore_into_a_lost_dataset_recreates_its_history(
    live: LocalStore, vault: LocalStore, tmp_path: Path
) -> None:
    want_now, want_v0 = table(live), table(live, version=0)
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.delete_dataset(store=live, dataset_uuid=UUID)
    restored = LocalStore(tmp_path / "fresh")
    report = dk.pipelines.restore(UUID, source=vault, target=restored).compute()
    assert report.versions == [0, 1]
    pd.testing.assert_frame_equal(table(restored), want_now)
    pd.testing.assert_frame_equal(table(restored, version=0), want_v0)


def test_restore_into_a_live_dataset_is_a_new_version(live: LocalStore, vault: LocalStore) -> None:
    good = table(live)
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.write_dataset(frame(0), store=live, dataset_uuid=UUID, mode="overwrite")  # the accident
    report = dk.pipelines.restore(UUID, source=vault, target=live).compute()
    assert report.version == 3 and report.copied == 0  # every blob was still there
    pd.testing.assert_frame_equal(table(live), good)
    assert table(live, version=2)["p"].tolist() == [0]  # the accident stays in the history
    # an older backed-up version can be restored too
    report = dk.pipelines.restore(UUID, source=vault, target=live, version=0).compute()
    assert len(table(live)) == 20
    # a deleted dataset restored in place starts a fresh history with the backup's state
    dk.delete_dataset(store=live, dataset_uuid=UUID)
    report = dk.pipelines.restore(UUID, source=vault, target=live).compute()
    pd.testing.assert_frame_equal(table(live), good)


class _GcAtCommit(DelegatingStore):
    """Runs ``collect`` once, when the restore creates its snapshot (``after=False``) or
    right after it moved the pointer (``after=True``)."""

    def __init__(self, inner: Store, collect: Any, *, after: bool) -> None:
        super().__init__(inner)
        self.collect, self.after, self.collected = collect, after, -1

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        snapshot = "/_versions/" in key and if_absent
        if self.collected < 0 and snapshot and not self.after:
            self.collected = self.collect()
        info = super()._put(key, data, if_absent=if_absent, if_match=if_match)
        if self.collected < 0 and key == naming.pointer_key(UUID) and self.after:
            self.collected = self.collect()
        return info


def _accident_after_backup(live: LocalStore, vault: LocalStore) -> pd.DataFrame:
    """Back up, overwrite by accident, let an hour pass: the backed-up blobs are old
    garbage at ``live`` now, and a restore skips them (the target holds them)."""
    good = table(live)
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    dk.write_dataset(frame(0), store=live, dataset_uuid=UUID, mode="overwrite")
    past = time.time() - 7200
    for key in live.iter_keys(UUID + "/"):
        path = live.local_path(key)
        assert path is not None
        os.utime(path, (past, past))
    return good


def _restored(live: LocalStore, vault: LocalStore, target: Store, good: pd.DataFrame) -> None:
    report = dk.pipelines.restore(UUID, source=vault, target=target).compute(scheduler="sync")
    assert report.skipped == 22 and report.repaired == 22
    pd.testing.assert_frame_equal(table(live), good)
    assert dk.pipelines.verify(UUID, store=live).compute().ok


def test_restore_copies_again_what_a_gc_deleted_before_its_commit(
    live: LocalStore, vault: LocalStore
) -> None:
    good = _accident_after_backup(live, vault)
    job = dk.pipelines.restore(UUID, source=vault, target=live)  # planned: all 22 present
    assert dk.garbage_collect(store=live, dataset_uuid=UUID, keep_versions=1).count == 22
    report = job.compute(scheduler="sync")
    assert report.skipped == 22 and report.repaired == 22
    pd.testing.assert_frame_equal(table(live), good)


def test_restore_copies_again_what_a_gc_deletes_at_its_commit(
    live: LocalStore, vault: LocalStore
) -> None:
    """A whole GC (another process's, default grace period) between the restore's check
    and its snapshot: the restore looks again after its commit."""
    good = _accident_after_backup(live, vault)
    target = _GcAtCommit(
        live,
        lambda: dk.garbage_collect(store=live, dataset_uuid=UUID, keep_versions=1).count,
        after=False,
    )
    _restored(live, vault, target, good)
    assert target.collected == 22


def test_restore_copies_again_what_a_gc_planned_earlier_deletes_after_its_commit(
    live: LocalStore, vault: LocalStore
) -> None:
    """A GC whose check for new versions came before the restore's commit, and whose
    deletes land after it."""
    from dataset_kit.io import gc as _gc

    good = _accident_after_backup(live, vault)
    plan = _gc.plan_garbage(live, UUID, keep_versions=1)

    def deletes_after_its_check() -> int:
        return len(live.delete_many(plan.keys).deleted)

    target = _GcAtCommit(live, deletes_after_its_check, after=True)
    _restored(live, vault, target, good)
    assert target.collected == 22


def test_restore_conflicts_with_a_concurrent_commit(live: LocalStore, vault: LocalStore) -> None:
    dk.pipelines.backup(UUID, source=live, target=vault).compute()
    job = dk.pipelines.restore(UUID, source=vault, target=live, version=0)
    dk.update_dataset(frame(50), store=live, dataset_uuid=UUID)
    with pytest.raises(CommitConflictError):
        job.compute()
    assert 50 in table(live)["p"].tolist()


def test_backup_with_transient_faults_and_retries(live: LocalStore, vault: LocalStore) -> None:
    from dataset_kit.store import RetryingStore

    flaky = RetryingStore(
        FaultInjectingStore(vault, fail_rate=0.2, seed=11), attempts=30, base_delay=0.0
    )
    report = dk.pipelines.backup(UUID, source=live, target=flaky, storage_concurrency=2).compute()
    assert report.version == 1
    pd.testing.assert_frame_equal(table(vault), table(live))
    assert dk.pipelines.verify(UUID, store=vault, versions="all").compute().ok


def test_versions_broken_by_gc_are_left_out_and_reported(
    live: LocalStore, vault: LocalStore, tmp_path: Path
) -> None:
    dk.write_dataset(frame(1, 2), store=live, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    dk.pipelines.garbage_collect(UUID, store=live, grace_period=0, keep_versions=1).compute()
    report = dk.pipelines.backup(UUID, source=live, target=vault).compute()
    assert report.versions == [2] and report.incomplete_versions == [0, 1]
    pd.testing.assert_frame_equal(table(vault), table(live))
    # the newest version is never left out: a missing blob there is an error
    key = next(iter(dk.open_dataset(store=live, dataset_uuid=UUID).meta.partitions.values()))
    live.delete(key)
    with pytest.raises(DataBlobMissingError):
        dk.pipelines.backup(UUID, source=live, target=LocalStore(tmp_path / "v2"))


def test_backup_refuses_another_dataset_whose_versions_do_not_overlap() -> None:
    """The source expired its first versions; the target holds an unrelated dataset of
    the same name at exactly those version numbers. No version is common to compare,
    but the histories differ: refused, and the target is unchanged."""
    from dataset_kit.store import MemoryStore

    source, target = MemoryStore(), MemoryStore()
    for i in range(4):
        dk.update_dataset(frame(i), store=source, dataset_uuid=UUID)
    dk.expire_versions(store=source, dataset_uuid=UUID, keep_versions=2)
    dk.write_dataset(frame(1000, 1001), store=target, dataset_uuid=UUID)
    dk.update_dataset(frame(1002), store=target, dataset_uuid=UUID)
    with pytest.raises(DatasetExistsError, match="another history"):
        dk.pipelines.backup(UUID, source=source, target=target).compute()
    assert table(target)["p"].tolist() == [1000, 1001, 1002]
    # the same dataset continues: its backup holds 0-1, the source moved on to 2-3
    vault = MemoryStore()
    fresh = MemoryStore()
    for i in range(2):
        dk.update_dataset(frame(i), store=fresh, dataset_uuid=UUID)
    dk.pipelines.backup(UUID, source=fresh, target=vault).compute()
    for i in range(2, 4):
        dk.update_dataset(frame(i), store=fresh, dataset_uuid=UUID)
    dk.expire_versions(store=fresh, dataset_uuid=UUID, keep_versions=2)
    report = dk.pipelines.backup(UUID, source=fresh, target=vault).compute()
    assert report.versions == [2, 3] and table(vault)["p"].tolist() == [0, 1, 2, 3]
    assert [v["version"] for v in dk.open_dataset(store=vault, dataset_uuid=UUID).versions()] == [
        0,
        1,
        2,
        3,
    ]


# ---------------------------------------------------------------------- link=True


def _data_keys(store: Store, uuid: str = UUID) -> list[str]:
    return sorted(k for k in store.iter_keys(uuid + "/") if k.endswith(".parquet"))


def _inode(store: LocalStore, key: str) -> int:
    return os.stat(store.local_path(key)).st_ino


def _backdate(store: LocalStore, seconds: float = 2 * 86400) -> None:
    past = time.time() - seconds
    for key in store.iter_keys(UUID + "/"):
        os.utime(store.local_path(key), (past, past))


def test_a_linked_backup_shares_the_files_and_outlives_the_source(
    live: LocalStore, vault: LocalStore
) -> None:
    """Hard links: the backup holds the very files (same inodes); overwriting, garbage
    collecting and deleting the source leave it whole, and a linked restore brings it
    back."""
    good = table(live)
    report = dk.pipelines.backup(UUID, source=live, target=vault, link=True).compute()
    assert (report.copied, report.linked, report.skipped) == (22, 22, 0)
    keys = _data_keys(live)
    assert _data_keys(vault) == keys
    assert all(_inode(live, k) == _inode(vault, k) for k in keys)
    # metadata is written anew, never linked
    pointer = naming.pointer_key(UUID)
    assert _inode(live, pointer) != _inode(vault, pointer)
    dk.write_dataset(frame(0), store=live, dataset_uuid=UUID, mode="overwrite")
    gc = dk.garbage_collect(store=live, dataset_uuid=UUID, grace_period=0, keep_versions=1)
    assert gc.count == 22
    pd.testing.assert_frame_equal(table(vault), good)
    dk.delete_dataset(store=live, dataset_uuid=UUID)
    assert dk.pipelines.verify(UUID, store=vault, versions="all", deep=True).compute().ok
    restored = dk.pipelines.restore(UUID, source=vault, target=live, link=True).compute()
    assert restored.linked == restored.copied == 22
    pd.testing.assert_frame_equal(table(live), good)


def test_an_incremental_linked_backup_links_only_the_new_blob(
    live: LocalStore, vault: LocalStore
) -> None:
    dk.pipelines.backup(UUID, source=live, target=vault, link=True).compute()
    dk.update_dataset(frame(99), store=live, dataset_uuid=UUID)
    report = dk.pipelines.backup(UUID, source=live, target=vault, link=True).compute()
    assert (report.copied, report.linked, report.skipped) == (1, 1, 22)
    pd.testing.assert_frame_equal(table(vault), table(live))


def test_linked_blobs_are_young_for_a_gc_between_linking_and_the_commit(
    live: LocalStore, vault: LocalStore
) -> None:
    """A link would carry the source file's old modification time, and a GC at the
    target (default grace period) would then delete the new, not yet referenced blob
    before the backup commits. Linking makes the file young, so that GC keeps it."""
    from dask.callbacks import Callback

    dk.pipelines.backup(UUID, source=live, target=vault, link=True).compute()
    dk.update_dataset(frame(98, 99), store=live, dataset_uuid=UUID)
    _backdate(live)
    reports: list[Any] = []

    def before_commit(key: Any, *_: Any) -> None:
        if "commit" in str(key) and not reports:
            reports.append(dk.garbage_collect(store=vault, dataset_uuid=UUID))

    with Callback(pretask=before_commit):
        report = dk.pipelines.backup(UUID, source=live, target=vault, link=True).compute(
            scheduler="sync"
        )
    assert report.linked == 2 and report.repaired == 0
    (gc,) = reports
    assert gc.count == 0 and gc.too_young == 2  # the two new links, unreferenced yet
    pd.testing.assert_frame_equal(table(vault), table(live))
    # the shared file is young for the source too (documented): a GC there waits longer
    new = [k for k in _data_keys(live) if time.time() - live.stat(k).mtime < 600]
    assert len(new) == 2


def test_link_falls_back_to_copies_where_it_cannot_link(live: LocalStore, tmp_path: Path) -> None:
    """Another file system (tmpfs /dev/shm), a memory store, a store wrapper that hooks
    writes: copies, as without link=True, and the same dataset."""
    good = table(live)
    memory = dk.open_store("memory://link-fallback")
    report = dk.pipelines.backup(UUID, source=live, target=memory, link=True).compute()
    assert (report.copied, report.linked) == (22, 0)
    pd.testing.assert_frame_equal(table(memory), good)
    faulty = FaultInjectingStore(LocalStore(tmp_path / "faulty"), seed=1)
    report = dk.pipelines.backup(UUID, source=live, target=faulty, link=True).compute()
    assert (report.copied, report.linked) == (22, 0)
    pd.testing.assert_frame_equal(table(faulty), good)
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        return  # no second file system on this machine (the rest is tested above)
    with tempfile.TemporaryDirectory(dir=shm) as other:
        report = dk.pipelines.backup(
            UUID, source=live, target=LocalStore(other), link=True
        ).compute()
        assert (report.copied, report.linked) == (22, 0)
        pd.testing.assert_frame_equal(table(LocalStore(other)), good)


def test_a_linked_backup_through_throttles_and_retries(live: LocalStore, vault: LocalStore) -> None:
    """The wrappers a pipeline puts around stores (a throttle, retries) forward links."""
    from dataset_kit.store import RetryingStore

    report = dk.pipelines.backup(
        UUID, source=live, target=RetryingStore(vault), link=True, storage_concurrency=2
    ).compute()
    assert report.linked == 22
    pd.testing.assert_frame_equal(table(vault), table(live))
