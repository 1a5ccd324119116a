"""Lazy garbage collection and version expiry."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.core.metadata import STUB_MAX_BYTES
from dataset_kit.exceptions import (
    DataBlobMissingError,
    DatasetNotFoundError,
    InvalidInputError,
    KeyExistsError,
    MetadataFormatError,
    VersionNotFoundError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.store import BlobInfo, FaultInjectingStore, KVStoreAdapter, LocalStore, Store
from dataset_kit.testing.scenarios import roll_back

UUID = "gc"


def frame(*parts: int) -> pd.DataFrame:
    return pd.DataFrame({"p": list(parts), "x": [float(p) for p in parts], "s": ["a"] * len(parts)})


def data_keys(store: Store) -> set[str]:
    return {k for k in store.iter_keys(naming.dataset_prefix(UUID)) if k.endswith(".parquet")}


def age(store: LocalStore, seconds: float) -> None:
    """Make every blob of the dataset look ``seconds`` old."""
    past = time.time() - seconds
    for key in store.iter_keys(naming.dataset_prefix(UUID)):
        path = store.local_path(key)
        assert path is not None
        os.utime(path, (past, past))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


def test_default_gc_keeps_every_retained_version(store: LocalStore) -> None:
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.write_dataset(frame(3), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    age(store, 7200)
    report = dk.garbage_collect(store=store, dataset_uuid=UUID)
    assert report.count == 0 and report.versions == [0, 1]
    assert len(dk.read_table(store=store, dataset_uuid=UUID, version=0)) == 2


def test_gc_keeping_the_newest_version_deletes_replaced_blobs(store: LocalStore) -> None:
    dk.write_dataset(
        frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p", secondary_indices="s"
    )
    old = data_keys(store)
    dk.write_dataset(
        frame(3),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
        mode="overwrite",
        secondary_indices="s",
    )
    age(store, 7200)
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1)
    assert set(report.keys) >= old and report.count == len(report.keys)
    assert any("/indices/" in k for k in report.keys)  # the old index file too
    assert report.nbytes > 0
    assert not data_keys(store) & old
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [3]
    assert dk.read_table(store=store, dataset_uuid=UUID, predicates=[[("s", "==", "a")]])[
        "p"
    ].tolist() == [3]
    # the old version's blobs are gone: reading it fails loudly, then it is expired
    with pytest.raises(DataBlobMissingError):
        dk.read_table(store=store, dataset_uuid=UUID, version=0)
    assert dk.expire_versions(store=store, dataset_uuid=UUID, keep_versions=1) == [0]
    with pytest.raises(VersionNotFoundError):
        dk.read_table(store=store, dataset_uuid=UUID, version=0)
    assert dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0).count == 0


def test_young_blobs_of_uncommitted_writers_are_never_deleted(store: LocalStore) -> None:
    dk.write_dataset(frame(1), store=store, dataset_uuid=UUID, partition_on="p")
    age(store, 7200)
    # a writer that has written its blob but not committed yet
    in_flight = naming.data_key(UUID, "table", naming.make_label([("p", "9")], "inflight"))
    store.put(in_flight, b"not committed yet")
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1)
    assert report.count == 0 and report.too_young == 1
    assert store.exists(in_flight)
    # once older than the grace period it is garbage (an abandoned writer)
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0)
    assert report.keys == [in_flight]
    assert not store.exists(in_flight)
    assert len(dk.read_table(store=store, dataset_uuid=UUID)) == 1


def test_dry_run_deletes_nothing(store: LocalStore) -> None:
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    before = data_keys(store)
    report = dk.garbage_collect(
        store=store, dataset_uuid=UUID, grace_period=0, keep_versions=1, dry_run=True
    )
    assert report.dry_run and report.count == 1
    assert data_keys(store) == before


def test_blobs_of_unknown_age_are_kept() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import minimalkv

        store = KVStoreAdapter(
            minimalkv.get_store_from_url("hmemory://"), allow_unsafe_commits=True
        )
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0, keep_versions=1)
    assert report.count == 0 and report.too_young == 1


def test_unreadable_snapshot_aborts_before_deleting(store: LocalStore) -> None:
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.update_dataset(frame(3), store=store, dataset_uuid=UUID)
    age(store, 7200)
    store.put(naming.snapshot_key(UUID, 0), b'{"truncated')
    before = data_keys(store)
    with pytest.raises(MetadataFormatError):
        dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0)
    assert data_keys(store) == before


def test_bad_arguments_and_missing_dataset(store: LocalStore) -> None:
    with pytest.raises(DatasetNotFoundError):
        dk.garbage_collect(store=store, dataset_uuid=UUID)
    dk.write_dataset(frame(1), store=store, dataset_uuid=UUID)
    with pytest.raises(InvalidInputError):
        dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=-1)
    with pytest.raises(InvalidInputError):
        dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=0)
    with pytest.raises(InvalidInputError):
        dk.expire_versions(store=store, dataset_uuid=UUID)


def test_retention_by_age_keeps_recent_versions(store: LocalStore) -> None:
    for i in range(3):
        dk.update_dataset(frame(i), store=store, dataset_uuid=UUID, partition_on="p")
    assert dk.expire_versions(store=store, dataset_uuid=UUID, retention=3600, dry_run=True) == []
    assert dk.expire_versions(store=store, dataset_uuid=UUID, retention=0) == [0, 1]
    assert dk.open_dataset(store=store, dataset_uuid=UUID).version == 2
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID)["p"]) == [0, 1, 2]


def test_blobs_of_a_dataset_that_no_longer_exists_are_collected(tmp_path: Path) -> None:
    """E.g. a delete that died after its tombstone, or plateau removing only the pointer."""
    store = LocalStore(tmp_path)
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    store.delete(naming.pointer_key(UUID))  # the dataset is gone; its blobs are left
    with pytest.raises(DatasetNotFoundError):
        dk.read_table(store=store, dataset_uuid=UUID)
    young = dk.garbage_collect(store=store, dataset_uuid=UUID)  # default grace: all young
    assert young.count == 0 and young.too_young == 2
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0)
    assert report.count == 2 and data_keys(store) == set()
    with pytest.raises(DatasetNotFoundError):  # nothing at all under that name
        dk.garbage_collect(store=store, dataset_uuid="never-written", grace_period=0)


def test_expired_versions_leave_stubs_that_keep_their_slots(store: LocalStore) -> None:
    """An expired version's snapshot becomes a small stub: unreadable, never committable."""
    for i in range(4):
        dk.update_dataset(frame(i), store=store, dataset_uuid=UUID)
    assert dk.expire_versions(store=store, dataset_uuid=UUID, keep_versions=2) == [0, 1]

    assert _commit.snapshot_versions(store, UUID) == [0, 1, 2, 3]
    assert _commit.snapshot_versions(store, UUID, expired=False) == [2, 3]
    stub = store.get(naming.snapshot_key(UUID, 0))
    assert len(stub) <= STUB_MAX_BYTES
    with pytest.raises(VersionNotFoundError, match="expired"):
        dk.read_table(store=store, dataset_uuid=UUID, version=1)
    assert [m.version for m in _commit.iter_snapshots(store, UUID)] == [2, 3]
    # the slot stays taken: a create-only write there (a stalled writer) fails
    with pytest.raises(KeyExistsError):
        store.put(naming.snapshot_key(UUID, 1), b"{}", if_absent=True)
    # the info shown to users counts retained versions only; expiring again is a no-op
    assert dk.open_dataset(store=store, dataset_uuid=UUID)._recent_versions(10)[0] == 2
    assert dk.expire_versions(store=store, dataset_uuid=UUID, keep_versions=2) == []
    # GC never collects stubs, and the data of the retained versions is intact
    age(store, 3600)
    dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0)
    assert _commit.snapshot_versions(store, UUID) == [0, 1, 2, 3]
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID)["p"]) == [0, 1, 2, 3]


def test_every_real_snapshot_is_larger_than_a_stub(store: LocalStore) -> None:
    """Listings tell stubs apart by size: the smallest real snapshots are bigger."""
    dk.write_dataset(pd.DataFrame({"p": []}, dtype="int64"), store=store, dataset_uuid="e")
    dk.write_dataset(frame(1), store=store, dataset_uuid="t")
    dk.delete_dataset(store=store, dataset_uuid="t")
    found = {i.key: i.size for i in store.iter_infos("") if "/_versions/" in i.key}
    real = [found[naming.snapshot_key("e", 0)], found[naming.snapshot_key("t", 1)]]
    assert min(real) > STUB_MAX_BYTES  # the smallest kinds: empty dataset, tombstone
    assert found[naming.snapshot_key("t", 0)] <= STUB_MAX_BYTES  # deleted: a stub


# --------------------------------------------------------------- without a scan (lite)


class ListingSpy(LocalStore):
    """A local store that records the prefix of every listing."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[str] = []

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        self.listed.append(prefix)
        return super()._iter_infos(prefix)


def history(store: Store) -> None:
    """v0: p=1,2 (indexed); v1: append p=3; v2: replace p=1; v3: overwrite with p=4."""
    dk.write_dataset(
        frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p", secondary_indices="s"
    )
    dk.update_dataset(frame(3), store=store, dataset_uuid=UUID)
    dk.update_dataset(frame(1), store=store, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    dk.write_dataset(
        frame(4),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
        secondary_indices="s",
        mode="overwrite",
    )


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_collecting_without_a_scan_finds_what_a_scan_finds(tmp_path: Path, keep: int) -> None:
    """With no orphans, the blobs released by the versions outside the rules are exactly
    the unreferenced ones a listing finds, sizes included; only snapshots are listed."""
    store = ListingSpy(tmp_path)
    history(store)
    age(store, 7200)
    scanned = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=keep, dry_run=True)
    assert naming.dataset_prefix(UUID) in store.listed  # the spy sees the scan's listing
    store.listed.clear()
    lite = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=keep, scan=False, dry_run=True
    )
    assert store.listed == [naming.snapshot_prefix(UUID)]
    assert lite.keys == scanned.keys and lite.nbytes == scanned.nbytes
    assert lite.versions == scanned.versions == list(range(4 - keep, 4))
    assert not lite.scanned and scanned.scanned and lite.too_young == 0
    assert any("/indices/" in k for k in lite.keys)  # replaced index files too
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=keep, scan=False)
    assert report.count == len(scanned.keys) and not report.failed
    for version in range(4 - keep, 4):  # every retained version reads completely
        dk.read_table(store=store, dataset_uuid=UUID, version=version)
    after = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=keep, dry_run=True)
    assert after.count == 0


def test_collecting_without_a_scan_ignores_orphans_and_keeps_young_blobs(
    store: LocalStore,
) -> None:
    """Uncommitted or abandoned writers' blobs are only found by a scan; released blobs
    younger than the grace period are kept by the store as it deletes (the plan, made
    without a listing, knows no ages), and their versions are not expired."""
    history(store)
    planned = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=1, scan=False, dry_run=True
    ).keys
    young = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=1, scan=False, expire=True
    )
    assert young.count == 0 and young.too_young == len(planned) > 0 and young.expired == []
    assert young.nbytes == 0 and set(planned) <= set(store.iter_keys(naming.dataset_prefix(UUID)))
    age(store, 7200)
    orphan = naming.data_key(UUID, "table", naming.make_label([("p", "9")], "abandoned"))
    store.put(orphan, b"a writer died before its commit")
    lite = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1, scan=False)
    assert lite.keys == planned and store.exists(orphan)
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID)["p"]) == [4]
    age(store, 7200)
    scanned = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1)
    assert scanned.keys == [orphan]


def test_expire_after_collecting_without_a_scan(store: LocalStore) -> None:
    history(store)
    age(store, 7200)
    report = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=2, scan=False, expire=True, dry_run=True
    )
    assert report.expired == [0, 1] and report.count > 0
    assert _commit.snapshot_versions(store, UUID, expired=False) == [0, 1, 2, 3]
    report = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=2, scan=False, expire=True
    )
    assert report.expired == [0, 1]
    assert _commit.snapshot_versions(store, UUID, expired=False) == [2, 3]
    with pytest.raises(VersionNotFoundError):
        dk.read_table(store=store, dataset_uuid=UUID, version=1)
    # the expired versions are not read again: the next run has nothing to do
    again = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=2, scan=False, expire=True
    )
    assert again.count == 0 and again.expired == []
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID, version=2)["p"]) == [1, 2, 3]
    # the scanning GC agrees that nothing unreferenced is left
    age(store, 7200)
    assert dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=2).count == 0


def test_a_failed_delete_expires_nothing_and_a_rerun_finishes(store: LocalStore) -> None:
    """Blobs first, stubs after: a version stays readable as a list of references until
    every blob it released is gone, so an interrupted run is simply repeated."""
    history(store)
    age(store, 7200)
    flaky = FaultInjectingStore(store, fail_rate=1.0, operations=frozenset({"delete"}))
    report = dk.garbage_collect(
        store=flaky, dataset_uuid=UUID, keep_versions=1, scan=False, expire=True
    )
    assert report.failed and report.count == 0 and report.expired == []
    assert _commit.snapshot_versions(store, UUID, expired=False) == [0, 1, 2, 3]
    report = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=1, scan=False, expire=True
    )
    assert not report.failed and report.count > 0 and report.expired == [0, 1, 2]
    age(store, 7200)
    assert dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1).count == 0


def test_scanning_collection_can_expire_too(store: LocalStore) -> None:
    history(store)
    age(store, 7200)
    report = dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1, expire=True)
    assert report.scanned and report.expired == [0, 1, 2] and report.count > 0
    assert [v["version"] for v in dk.open_dataset(store=store, dataset_uuid=UUID).versions()] == [3]


def test_collecting_without_a_scan_rejects_bad_input(store: LocalStore) -> None:
    with pytest.raises(DatasetNotFoundError):
        dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1, scan=False)
    history(store)
    with pytest.raises(InvalidInputError, match="keep_versions and/or retention"):
        dk.garbage_collect(store=store, dataset_uuid=UUID, scan=False)
    with pytest.raises(InvalidInputError, match="keep_versions and/or retention"):
        dk.garbage_collect(store=store, dataset_uuid=UUID, expire=True)
    store.put(naming.snapshot_key(UUID, 0), b'{"truncated')
    before = data_keys(store)
    with pytest.raises(MetadataFormatError):
        dk.garbage_collect(store=store, dataset_uuid=UUID, keep_versions=1, scan=False)
    assert data_keys(store) == before


def test_retention_by_age_without_a_scan(store: LocalStore) -> None:
    history(store)
    assert (
        dk.garbage_collect(
            store=store, dataset_uuid=UUID, retention="1h", scan=False, dry_run=True
        ).keys
        == []
    )
    report = dk.garbage_collect(
        store=store, dataset_uuid=UUID, retention=0, grace_period=0, scan=False
    )
    assert report.versions == [3] and report.count > 0


def test_blobs_without_statistics_are_looked_up(store: LocalStore) -> None:
    """Index files carry no size in the snapshot: they are stat-ed, and left out of the
    report once gone (a second run without expiring does not count them again)."""
    history(store)
    first = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=1, grace_period=0, scan=False
    )
    index_keys = [k for k in first.keys if "/indices/" in k]
    assert index_keys and all(first.sizes[k] > 0 for k in index_keys)
    second = dk.garbage_collect(
        store=store, dataset_uuid=UUID, keep_versions=1, scan=False, dry_run=True
    )
    assert not any("/indices/" in k for k in second.keys)


def test_a_commit_after_planning_spares_what_it_references(store: LocalStore) -> None:
    """The eager collector checks for versions committed since planning, like the
    pipeline's delete nodes (here: a rollback that references the old blobs again)."""
    from dataset_kit.io import gc as _gc

    history(store)
    v0 = _commit.load_version(store, UUID, 0)
    plan = _gc.plan_garbage(store, UUID, keep_versions=1, scan=False)
    assert set(v0.partitions.values()) <= set(plan.keys)
    roll_back(store, UUID, 0)
    plan.dry_run = False
    outcome = _gc.delete_planned(store, UUID, plan.keys, planned=plan.planned, grace_period=0)
    report = _gc.finish(store, plan, [outcome])
    assert report.spared == len(v0.partitions)
    assert report.nbytes == plan.nbytes - sum(plan.sizes[k] for k in v0.partitions.values())
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID)["p"]) == [1, 2]


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "no-scan"])
def test_a_planned_key_written_again_is_kept(store: LocalStore, scan: bool) -> None:
    """A backup or restore may write a planned blob again (same key, fresh content)
    between planning and deleting: the store checks the grace period as it deletes."""
    from dataset_kit.io import gc as _gc

    history(store)
    age(store, 7200)
    plan = _gc.plan_garbage(store, UUID, keep_versions=1, scan=scan, expire=True)
    again = plan.keys[0]
    store.put(again, store.get(again))  # e.g. a restore copying it back, not yet committed
    plan.dry_run = False
    outcome = _gc.delete_planned(store, UUID, plan.keys, planned=plan.planned, grace_period=60)
    report = _gc.finish(store, plan, [outcome])
    assert outcome.young == [again] and store.exists(again)
    assert report.keys == plan.keys[1:] and report.too_young == 1 and not report.failed
    assert report.expired == []  # a planned blob is left: the versions stay for a rerun
    assert _commit.snapshot_versions(store, UUID, expired=False) == [0, 1, 2, 3]


def partition_dirs(store: LocalStore) -> list[str]:
    table = Path(store.root, UUID, "table")
    return sorted(d.name for d in table.iterdir() if d.is_dir())


@pytest.mark.parametrize("scan", [True, False])
def test_emptied_partition_directories_stay_unless_pruning_is_asked(
    store: LocalStore, scan: bool
) -> None:
    """As in deltalake, a collection leaves the directories it empties
    (an rmdir costs more than the unlink); ``prune_dirs=True`` removes them, and a
    scanning run also those an earlier run left."""
    dk.write_dataset(frame(1, 2, 3), store=store, dataset_uuid=UUID, partition_on="p")
    dk.write_dataset(
        frame(3, 4), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite"
    )
    age(store, 7200)
    options = {"grace_period": 0, "keep_versions": 1, "scan": scan, "expire": True}
    first = dk.garbage_collect(store=store, dataset_uuid=UUID, **options)
    assert first.count == 3
    assert partition_dirs(store) == ["p=1", "p=2", "p=3", "p=4"]  # p=1, p=2 are empty
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [3, 4]
    dk.write_dataset(frame(4), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    age(store, 7200)
    second = dk.garbage_collect(store=store, dataset_uuid=UUID, prune_dirs=True, **options)
    assert second.count == 2  # the p=3 and p=4 blobs of the version before
    # the run removes what it emptied (p=3); a scanning run also what the first left
    assert partition_dirs(store) == (["p=4"] if scan else ["p=1", "p=2", "p=4"])
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [4]


def test_pruning_in_a_dry_run_removes_nothing(store: LocalStore) -> None:
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.write_dataset(frame(2), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    age(store, 7200)
    dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0, keep_versions=1)
    dry = dk.garbage_collect(
        store=store, dataset_uuid=UUID, grace_period=0, prune_dirs=True, dry_run=True
    )
    assert dry.count == 0 and partition_dirs(store) == ["p=1", "p=2"]


def test_delete_dataset_removes_its_directories(store: LocalStore) -> None:
    """Only the snapshots stay (the numbering of a dataset written again continues)."""
    dk.write_dataset(frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p")
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    assert os.listdir(Path(store.root, UUID)) == ["_versions"]


def test_blobs_already_gone_are_not_counted_again(store: LocalStore) -> None:
    """Collecting without a scan and without expiring plans the same released blobs on
    the next run; the report says they were already gone instead of deleting them again
    (count and bytes only cover what this run deleted)."""
    dk.write_dataset(frame(1, 2, 3), store=store, dataset_uuid=UUID, partition_on="p")
    dk.write_dataset(frame(4), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    age(store, 7200)
    options = {"grace_period": 0, "keep_versions": 1, "scan": False}
    first = dk.garbage_collect(store=store, dataset_uuid=UUID, **options)
    assert first.count == 3 and first.nbytes > 0 and first.absent == 0
    again = dk.garbage_collect(store=store, dataset_uuid=UUID, **options)
    assert again.count == 0 and again.nbytes == 0 and again.keys == []
    assert again.absent == 3 and not again.failed
    piped = dk.pipelines.garbage_collect(UUID, store=store, storage_concurrency=1, **options)
    report = piped.compute()
    assert report.count == 0 and report.absent == 3


def test_delete_dataset_also_removes_directories_a_gc_left(store: LocalStore) -> None:
    dk.write_dataset(frame(1, 2, 3), store=store, dataset_uuid=UUID, partition_on="p")
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    age(store, 7200)
    assert dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0, keep_versions=1).count
    assert "p=1" in partition_dirs(store)  # left empty by the GC
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    assert os.listdir(Path(store.root, UUID)) == ["_versions"]
