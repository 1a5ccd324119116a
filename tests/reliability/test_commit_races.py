"""Deterministic replays of commit races seen in the reliability runs.

Each test stalls one writer at the decisive store call (a wrapper store runs the other
parties' actions at that moment), so the race is replayed without processes or timing.
Both were data-loss defects, fixed in ``dataset_kit/io/commit.py``:

* ``test_8_processes_x_25_appends_lose_nothing[local]`` lost one append (199 of 200 rows)
  in one of ten runs here: a second writer decides whether it may start a new history
  while the first writer's pointer appears (fixed: the pointer is checked again after
  every other check);
* ``test_gc_racing_writers_and_readers[gc+expire]``: a stalled writer re-creates the
  snapshot of a version that ``expire_versions`` deleted meanwhile (fixed: an expired
  snapshot is replaced by a stub, so its slot is never free again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.store import BlobInfo, DelegatingStore, LocalStore

pytestmark = [pytest.mark.slow]

UUID = "conc"


class _PointerAppearsAfterFirstCheck(DelegatingStore):
    """Hide the dataset's pointer until someone asks ``exists`` for it; then publish it.

    This is what another writer finishing its first commit looks like: its snapshot 0 is
    there, its pointer is written a moment later, between two of our calls.
    """

    def __init__(self, inner: LocalStore, hidden: Path) -> None:
        super().__init__(inner)
        self.hidden = hidden
        self.pointer = naming.pointer_key(UUID)
        self.checks = 0

    def _exists(self, key: str) -> bool:
        found = self.inner.exists(key)
        if key == self.pointer and not found and self.hidden.exists():
            self.checks += 1
            os.replace(self.hidden, self.hidden.parent / self.pointer)  # the pointer appears
        return found


def test_pointer_appearing_between_two_checks_does_not_restart_the_history(
    tmp_path: Path,
) -> None:
    """A writer that sees no dataset must never start a new history over another
    writer's first version.

    ``dataset_kit/io/commit.py``: ``_fresh_history_allowed`` checks
    ``store.exists(pointer)`` (False: the first writer has committed snapshot 0 but not
    yet written its pointer) and then returns ``not _pending_creation(...)``;
    ``_pending_creation`` checks ``store.exists(pointer)`` *again* and, the pointer having
    appeared meanwhile, returns False ("not a creation in progress"). So the fresh history
    is allowed: the second writer commits version 1 with ``parent=None,
    history_start=1`` and the first writer's append (version 0) is silently lost.
    """
    store = LocalStore(tmp_path)
    dk.update_dataset(pd.DataFrame({"tag": ["A"]}), store=store, dataset_uuid=UUID)
    hidden = tmp_path / "hidden-pointer"
    os.replace(tmp_path / naming.pointer_key(UUID), hidden)  # A: snapshot 0, no pointer yet
    racing = _PointerAppearsAfterFirstCheck(store, hidden)

    dk.update_dataset(pd.DataFrame({"tag": ["B"]}), store=racing, dataset_uuid=UUID)

    assert racing.checks == 1, "the interleaving was not replayed"
    history = dk.open_dataset(store=store, dataset_uuid=UUID).versions()
    tags = sorted(dk.read_table(store=store, dataset_uuid=UUID)["tag"])
    assert tags == ["A", "B"], f"lost an append: {tags}, history {history}"
    print("commit race (pointer appears between two checks): both appends kept")


class _StalledCommitter(DelegatingStore):
    """Stall this writer just before it creates snapshot ``version``; meanwhile ``meanwhile``
    runs (other writers commit, a maintenance job expires old versions)."""

    def __init__(self, inner: LocalStore, version: int, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self.key = naming.snapshot_key(UUID, version)
        self.meanwhile: Callable[[], None] | None = meanwhile

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if if_absent and key == self.key and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_expired_version_number_is_never_committed_again(tmp_path: Path) -> None:
    """An append whose snapshot key was freed by ``expire_versions`` must not "commit" there.

    ``dataset_kit/io/commit.py::commit`` decides who committed version ``v`` by the
    create-only put of ``_versions/<v>.json`` (``_create_snapshot``); ``expire_versions``
    (``dataset_kit/io/gc.py::expire_versions``) *deletes* old snapshot files, so the key
    of an expired version is free again. A writer that planned version 1 on base 0 and
    stalled while others committed 1..4 and a maintenance job expired 0 and 1, creates
    ``_versions/1.json`` successfully, is told it committed version 1, and its pointer
    compare-and-swap fails harmlessly (``_cas_pointer``: the pointer is already at 4 >= 1).
    Its rows are in no version of the current line: a silent lost append. Found by
    test_gc_racing_writers_and_readers[gc+expire] (2 writers, GC/expire loop: 1-4 appends
    "committed" twice per 10 s run), replayed here deterministically.
    """
    store = LocalStore(tmp_path)
    dk.update_dataset(pd.DataFrame({"tag": ["base"]}), store=store, dataset_uuid=UUID)

    def others_commit_and_expire() -> None:
        for i in range(4):
            dk.update_dataset(pd.DataFrame({"tag": [f"other{i}"]}), store=store, dataset_uuid=UUID)
        assert dk.expire_versions(store=store, dataset_uuid=UUID, keep_versions=3) == [0, 1]

    stalled = _StalledCommitter(store, 1, others_commit_and_expire)
    meta = dk.update_dataset(pd.DataFrame({"tag": ["slow"]}), store=stalled, dataset_uuid=UUID)

    assert stalled.meanwhile is None, "the interleaving was not replayed"
    tags = sorted(dk.read_table(store=store, dataset_uuid=UUID)["tag"])
    assert "slow" in tags, f"append told it committed version {meta.version} is lost: {tags}"
    assert meta.version == 5
    print("commit race (version number freed by expire_versions): append kept")


def test_a_write_planned_before_a_delete_is_not_told_it_committed(tmp_path: Path) -> None:
    """``delete_dataset`` used to delete the old snapshot files, freeing their version
    numbers: a writer stalled on the old state created its snapshot in a freed slot of the
    deleted dataset and was told it committed. The slots are stubs now: the late writer
    meets a taken version, reloads, finds the dataset deleted and fails with a typed
    error; nothing reappears."""
    from dataset_kit.exceptions import DatasetNotFoundError

    store = LocalStore(tmp_path)
    dk.update_dataset(pd.DataFrame({"tag": ["base"]}), store=store, dataset_uuid=UUID)

    def others_commit_and_delete() -> None:
        for i in range(3):
            dk.update_dataset(pd.DataFrame({"tag": [f"other{i}"]}), store=store, dataset_uuid=UUID)
        dk.delete_dataset(store=store, dataset_uuid=UUID)

    stalled = _StalledCommitter(store, 1, others_commit_and_delete)
    with pytest.raises(DatasetNotFoundError, match="deleted"):
        dk.update_dataset(pd.DataFrame({"tag": ["slow"]}), store=stalled, dataset_uuid=UUID)
    assert stalled.meanwhile is None, "the interleaving was not replayed"
    with pytest.raises(DatasetNotFoundError):
        dk.read_table(store=store, dataset_uuid=UUID)
    # a new dataset under the uuid starts a fresh history after the tombstone
    meta = dk.write_dataset(pd.DataFrame({"tag": ["new"]}), store=store, dataset_uuid=UUID)
    assert meta.version == 5 and meta.history_start == 5
    assert dk.read_table(store=store, dataset_uuid=UUID)["tag"].tolist() == ["new"]
    print("commit race (version number freed by delete_dataset): late write refused")


class _RecreatedDuringCleanUp(DelegatingStore):
    """Run ``meanwhile`` when ``delete_dataset`` lists the dataset after its tombstone:
    that is when another process may already create a new dataset under the uuid."""

    def __init__(self, inner: LocalStore, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self.meanwhile: Callable[[], None] | None = meanwhile

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        if self.meanwhile is not None and prefix == naming.dataset_prefix(UUID):
            run, self.meanwhile = self.meanwhile, None
            run()
        return self.inner.iter_infos(prefix)


@pytest.mark.parametrize("secondary_indices", [None, "tag"])
def test_a_dataset_recreated_while_the_old_one_is_deleted_keeps_its_blobs(
    tmp_path: Path, secondary_indices: str | None
) -> None:
    """``delete_dataset`` used to delete every blob it listed after the tombstone, so a
    new dataset created under the uuid meanwhile lost its data blobs and index files
    (its reads failed with DataBlobMissingError). Only blobs older than the tombstone
    (and those the old version referenced) are deleted now."""
    store = LocalStore(tmp_path)
    old = pd.DataFrame({"p": [1, 2, 3], "tag": ["a", "b", "c"]})
    dk.write_dataset(
        old, store=store, dataset_uuid=UUID, partition_on="p", secondary_indices=secondary_indices
    )
    dk.update_dataset(old.assign(p=4), store=store, dataset_uuid=UUID)
    old_blobs = {k for k in store.iter_keys(naming.dataset_prefix(UUID)) if "_versions" not in k}
    new = pd.DataFrame({"p": [7, 8], "tag": ["x", "y"]})

    def recreate() -> None:
        dk.write_dataset(
            new,
            store=store,
            dataset_uuid=UUID,
            partition_on="p",
            secondary_indices=secondary_indices,
        )

    racing = _RecreatedDuringCleanUp(store, recreate)
    dk.delete_dataset(store=racing, dataset_uuid=UUID)
    assert racing.meanwhile is None, "the interleaving was not replayed"
    back = dk.read_table(store=store, dataset_uuid=UUID).sort_values("p", ignore_index=True)
    pd.testing.assert_frame_equal(back[["p", "tag"]], new, check_dtype=False)
    if secondary_indices:
        hit = dk.read_table(store=store, dataset_uuid=UUID, predicates=[[("tag", "==", "y")]])
        assert hit["p"].tolist() == [8]
    left = {k for k in store.iter_keys(naming.dataset_prefix(UUID)) if "_versions" not in k}
    common = naming.common_metadata_key(UUID, naming.DEFAULT_TABLE)
    assert not (left & old_blobs - {common})
    assert common in left  # plateau's schema file of the new dataset
    report = dk.pipelines.verify(UUID, store=store, deep=True).compute()
    assert report.ok
