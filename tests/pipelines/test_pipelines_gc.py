"""Garbage collection as a dask graph: batches, dry run, slow writers, commits after planning."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import DataBlobMissingError, DatasetNotFoundError, InvalidInputError
from dataset_kit.io import commit as _commit
from dataset_kit.store import (
    Capability,
    CountingStore,
    DelegatingStore,
    FaultInjectingStore,
    LocalStore,
    Store,
)
from dataset_kit.testing.scenarios import roll_back

UUID = "gcp"


def frame(*parts: int) -> pd.DataFrame:
    return pd.DataFrame({"p": list(parts), "x": [float(p) for p in parts]})


def blobs(store: Store) -> set[str]:
    return {k for k in store.iter_keys(naming.dataset_prefix(UUID)) if k.endswith(".parquet")}


def age_all(store: LocalStore, seconds: float) -> None:
    past = time.time() - seconds
    for key in store.iter_keys(naming.dataset_prefix(UUID)):
        path = store.local_path(key)
        assert path is not None
        os.utime(path, (past, past))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "lake")


def make_orphans(store: LocalStore, n: int) -> set[str]:
    """A dataset whose first ``n`` partitions were replaced: their blobs are garbage."""
    dk.write_dataset(frame(*range(n)), store=store, dataset_uuid=UUID, partition_on="p")
    old = blobs(store)
    dk.write_dataset(frame(0), store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    age_all(store, 7200)
    return old


def test_deletes_in_parallel_batches_and_reports(store: LocalStore) -> None:
    old = make_orphans(store, 300)
    kept = blobs(store) - old
    job = dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1, batch_size=64)
    assert job.tasks == 5  # ceil(300 / 64)
    report = job.compute()
    assert report.count == 300 and set(report.keys) == old and not report.failed
    assert report.nbytes > 0 and report.versions == [1]
    assert blobs(store) == kept
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [0]


def test_default_batches_follow_the_store_kind(store: LocalStore) -> None:
    """A local store gets one delete node (threads only contend in the kernel there); a
    network store gets Azure-sized batches of 256 keys."""
    make_orphans(store, 300)
    assert dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1).tasks == 1
    network = DelegatingStore(store, capabilities=store.capabilities | {Capability.CONCURRENT_IO})
    job = dk.pipelines.garbage_collect(UUID, store=network, keep_versions=1)
    assert job.tasks == 2  # ceil(300 / 256)
    assert job.compute().count == 300 and len(blobs(store)) == 1


def test_every_version_is_kept_by_default(store: LocalStore) -> None:
    make_orphans(store, 10)
    report = dk.pipelines.garbage_collect(UUID, store=store).compute()
    assert report.count == 0
    assert len(dk.read_table(store=store, dataset_uuid=UUID, version=0)) == 10


def test_dry_run_deletes_nothing(store: LocalStore) -> None:
    old = make_orphans(store, 20)
    job = dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1, dry_run=True)
    assert job.tasks == 0
    report = job.compute()
    assert report.dry_run and set(report.keys) == old and report.count == 20
    assert old <= blobs(store)


def test_durations_as_text(store: LocalStore) -> None:
    make_orphans(store, 5)
    assert (
        dk.pipelines.garbage_collect(UUID, store=store, grace_period="3h", keep_versions=1)
        .compute()
        .count
        == 0
    )
    report = dk.pipelines.garbage_collect(
        UUID, store=store, grace_period="1h", retention="0s", keep_versions=1
    ).compute()
    assert report.count == 5
    with pytest.raises(InvalidInputError, match="grace_period"):
        dk.pipelines.garbage_collect(UUID, store=store, grace_period="soon")
    with pytest.raises(InvalidInputError, match="batch_size"):
        dk.pipelines.garbage_collect(UUID, store=store, batch_size=1000)
    with pytest.raises(DatasetNotFoundError):
        dk.pipelines.garbage_collect("missing", store=store)


class PausingStore(DelegatingStore):
    """Blocks a writer just before it creates its snapshot (i.e. before it commits)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.reached = threading.Event()
        self.release = threading.Event()

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_versions/" in key and not self.release.is_set():
            self.reached.set()
            assert self.release.wait(30)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def _slow_append(store: LocalStore, grace: float) -> tuple[set[str], Any]:
    """Run GC while an append has written its blobs but not committed yet."""
    make_orphans(store, 4)
    pausing = PausingStore(store)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            dk.update_dataset(frame(7, 8), store=pausing, dataset_uuid=UUID)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    before = blobs(store)
    thread.start()
    assert pausing.reached.wait(30)
    in_flight = blobs(store) - before
    assert len(in_flight) == 2
    report = dk.pipelines.garbage_collect(
        UUID, store=store, grace_period=grace, keep_versions=1
    ).compute()
    pausing.release.set()
    thread.join(30)
    assert not errors
    return in_flight, report


def test_a_slow_writer_interleaved_with_gc_loses_nothing(store: LocalStore) -> None:
    in_flight, report = _slow_append(store, grace=600)
    assert report.count == 4  # the old orphans went
    assert report.too_young >= 2 and not in_flight & set(report.keys)
    assert in_flight <= blobs(store)
    got = dk.read_table(store=store, dataset_uuid=UUID)
    assert sorted(got["p"]) == [0, 7, 8]


def test_control_without_grace_period_the_writer_would_lose_its_blobs(store: LocalStore) -> None:
    """Shows the interleaving test can fail: the grace period is what protects writers."""
    in_flight, report = _slow_append(store, grace=0)
    assert in_flight <= set(report.keys)
    with pytest.raises(DataBlobMissingError):
        dk.read_table(store=store, dataset_uuid=UUID)


def test_blobs_referenced_by_a_commit_after_planning_are_spared(store: LocalStore) -> None:
    old = make_orphans(store, 3)
    job = dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1)
    # between planning and deletion, a commit references the old blobs again (a rollback)
    roll_back(store, UUID, 0)
    report = job.compute()
    assert report.spared == 3 and report.count == 0
    assert old <= blobs(store)
    assert sorted(dk.read_table(store=store, dataset_uuid=UUID)["p"]) == [0, 1, 2]


def test_failed_deletes_are_reported_not_raised(store: LocalStore) -> None:
    old = make_orphans(store, 10)
    flaky = FaultInjectingStore(store, fail_rate=1.0, operations=frozenset({"delete"}))
    report = dk.pipelines.garbage_collect(UUID, store=flaky, keep_versions=1).compute()
    assert set(report.failed) == old and report.count == 0
    assert old <= blobs(store)
    report = dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1).compute()
    assert report.count == 10


def test_storage_concurrency_is_accepted(store: LocalStore) -> None:
    make_orphans(store, 40)
    report = dk.pipelines.garbage_collect(
        UUID, store=store, keep_versions=1, batch_size=8, storage_concurrency=1
    ).compute()
    assert report.count == 40


def test_without_a_scan_deletes_released_blobs_in_batches_then_expires(store: LocalStore) -> None:
    old = make_orphans(store, 300)
    counted = CountingStore(store)
    job = dk.pipelines.garbage_collect(
        UUID, store=counted, keep_versions=1, scan=False, expire=True, batch_size=64
    )
    assert counted.counts["list"] == 1  # planning listed the snapshots, not the blobs
    assert job.tasks == 5
    report = job.compute()
    assert set(report.keys) == old and report.count == 300 and report.expired == [0]
    assert not report.scanned and report.nbytes == sum(report.sizes.values()) > 0
    assert _commit.snapshot_versions(store, UUID, expired=False) == [1]
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [0]
    again = dk.pipelines.garbage_collect(UUID, store=store, keep_versions=1, scan=False).compute()
    assert again.count == 0


def test_without_a_scan_a_failed_batch_expires_nothing(store: LocalStore) -> None:
    old = make_orphans(store, 20)
    flaky = FaultInjectingStore(store, fail_rate=1.0, operations=frozenset({"delete"}))
    report = dk.pipelines.garbage_collect(
        UUID, store=flaky, keep_versions=1, scan=False, expire=True, batch_size=8
    ).compute()
    assert set(report.failed) == old and report.expired == []
    assert _commit.snapshot_versions(store, UUID, expired=False) == [0, 1]
    report = dk.pipelines.garbage_collect(
        UUID, store=store, keep_versions=1, scan=False, expire=True
    ).compute()
    assert report.count == 20 and report.expired == [0]


def test_without_a_scan_needs_a_retention_rule(store: LocalStore) -> None:
    make_orphans(store, 2)
    with pytest.raises(InvalidInputError, match="keep_versions and/or retention"):
        dk.pipelines.garbage_collect(UUID, store=store, scan=False)


@pytest.mark.parametrize("concurrency", [None, 2])
def test_prune_dirs_through_the_pipeline(store: LocalStore, concurrency: int | None) -> None:
    """The option reaches the local store through the throttling wrapper: without it
    the emptied directories stay, with it they go."""
    make_orphans(store, 30)
    table = Path(store.root, UUID, "table")

    def dirs() -> list[str]:
        return sorted(d.name for d in table.iterdir() if d.is_dir())

    job = dk.pipelines.garbage_collect(
        UUID, store=store, keep_versions=1, storage_concurrency=concurrency
    )
    assert job.compute().count == 30
    assert len(dirs()) == 30  # p=0 holds the new blob; p=1..29 are empty
    assert dk.read_table(store=store, dataset_uuid=UUID)["p"].tolist() == [0]
    pruned = dk.pipelines.garbage_collect(
        UUID, store=store, keep_versions=1, storage_concurrency=concurrency, prune_dirs=True
    ).compute()
    assert pruned.count == 0 and dirs() == ["p=0"]
