"""The commit protocol: snapshots, the lagging pointer, conflicts, concurrency, faults."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataset_kit as dk
from dataset_kit import exceptions as exc
from dataset_kit.api._ops import conflict_on_any_change
from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.io import commit as C
from dataset_kit.store import (
    BlobInfo,
    Capability,
    DelegatingStore,
    FaultInjectingStore,
    LocalStore,
    MemoryStore,
    Store,
)

UUID = "ds"
POINTER = naming.pointer_key(UUID)


# --------------------------------------------------------------------------- helpers
class HookStore(DelegatingStore):
    """Delegates to ``inner``; runs a one-shot action just before a matching write.

    The action is meant to act on ``inner`` directly: it plays another writer that slips
    in between this writer's planning and its commit.
    """

    def __init__(
        self,
        inner: Store,
        *,
        capabilities: frozenset[Capability] | None = None,
    ) -> None:
        super().__init__(inner, capabilities=capabilities)
        self._hooks: list[
            tuple[Callable[[str, str, dict[str, Any]], bool], Callable[[], None]]
        ] = []
        self.fired: list[str] = []

    def on(
        self, match: Callable[[str, str, dict[str, Any]], bool], action: Callable[[], None]
    ) -> None:
        self._hooks.append((match, action))

    def _fire(self, op: str, key: str, kwargs: dict[str, Any]) -> None:
        for i, (match, action) in enumerate(self._hooks):
            if match(op, key, kwargs):
                del self._hooks[i]
                self.fired.append(key)
                action()
                return

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        self._fire("put", key, {"if_absent": if_absent, "if_match": if_match})
        return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self._fire("delete", key, {"if_match": if_match})
        self.inner.delete(key, if_match=if_match)


def _snapshot_put(op: str, key: str, kwargs: dict[str, Any]) -> bool:
    return op == "put" and "/_versions/" in key and kwargs.get("if_absent", False)


def _pointer_put(op: str, key: str, kwargs: dict[str, Any]) -> bool:
    return op == "put" and key == POINTER


def _read(store: Store, **kwargs: Any) -> pd.DataFrame:
    return dk.read_table(store=store, dataset_uuid=UUID, **kwargs)


def _pointer_version(store: Store) -> int | None:
    return json.loads(store.get(POINTER)).get("dataset_kit", {}).get("version")


def _snapshot(store: Store, version: int) -> dict[str, Any]:
    return json.loads(store.get(naming.snapshot_key(UUID, version)))


def _frame(tag: int, p: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"p": [p], "tag": [tag]})


def _seed(store: Store, *, partition_on: str | None = "p", **kwargs: Any) -> None:
    dk.write_dataset(
        _frame(-1), store=store, dataset_uuid=UUID, partition_on=partition_on, **kwargs
    )


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on the memory store, a local directory and Azurite."""
    return any_store


def _check_history(store: Store) -> list[int]:
    """Versions are 0..n without gaps, each the child of the one before; the pointer is newest."""
    versions = C.snapshot_versions(store, UUID)
    assert versions == list(range(len(versions)))
    for v in versions[1:]:
        assert _snapshot(store, v)["dataset_kit"]["parent"] == v - 1
    assert _pointer_version(store) == versions[-1]
    return versions


# --------------------------------------------------------------------------- pointer
@pytest.mark.parametrize("backend", ["memory", "local"])
def test_lagging_pointer_is_probed_past_and_repaired(tmp_path: Path, backend: str) -> None:
    store = LocalStore(tmp_path) if backend == "local" else dk.open_store("memory://")
    _seed(store)
    dk.update_dataset(_frame(1), store=store, dataset_uuid=UUID)
    dk.update_dataset(_frame(2, p=5), store=store, dataset_uuid=UUID)
    newest = _read(store)
    # a writer died between its snapshot and the pointer: the pointer shows version 0
    store.put(POINTER, store.get(naming.snapshot_key(UUID, 0)))
    assert _pointer_version(store) == 0
    pd.testing.assert_frame_equal(_read(store), newest)
    assert dk.open_dataset(store=store, dataset_uuid=UUID).version == 2
    assert len(_read(store, version=1)) == 2
    # the next commit starts from the newest snapshot and brings the pointer forward
    meta = dk.update_dataset(_frame(3), store=store, dataset_uuid=UUID)
    assert meta.version == 3
    assert _pointer_version(store) == 3
    assert store.get(POINTER) == store.get(naming.snapshot_key(UUID, 3))
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2, 3]
    _check_history(store)


def test_deleted_pointer_means_no_dataset(store: Store) -> None:
    _seed(store)
    dk.update_dataset(_frame(1), store=store, dataset_uuid=UUID)
    store.delete(POINTER)  # as plateau's delete_dataset does
    with pytest.raises(exc.DatasetNotFoundError):
        _read(store)
    assert dk.list_datasets(store) == []
    meta = dk.write_dataset(_frame(7), store=store, dataset_uuid=UUID)
    assert meta.version == 2  # after the old snapshots, a fresh history
    assert meta.history_start == 2
    assert _read(store)["tag"].tolist() == [7]


@pytest.mark.parametrize("cas", [True, False], ids=["cas", "no_cas"])
def test_pointer_never_moves_backwards(store: Store, cas: bool) -> None:
    _seed(store)
    caps = store.capabilities if cas else store.capabilities - {Capability.COMPARE_AND_SWAP}
    slow = HookStore(store, capabilities=caps)
    # writer A has created snapshot 1; before it publishes, writer B commits 2 and publishes
    slow.on(_pointer_put, lambda: dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID))
    meta = dk.update_dataset(_frame(1), store=slow, dataset_uuid=UUID)
    assert slow.fired == [POINTER]
    assert meta.version == 1
    assert _pointer_version(store) == 2
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2]
    _check_history(store)


def test_common_metadata_follows_schema_changes(store: Store) -> None:
    _seed(store)
    key = naming.common_metadata_key(UUID, "table")
    first = store.get(key)
    dk.update_dataset(_frame(1), store=store, dataset_uuid=UUID)
    assert store.get(key) == first
    dk.update_dataset(_frame(2).assign(extra=["x"]), store=store, dataset_uuid=UUID)
    assert store.get(key) != first


# --------------------------------------------------------------------------- conflicts
def test_commit_rebases_append_after_create_only_conflict(store: Store) -> None:
    _seed(store)
    base = C.resolve(store, UUID)
    seen: list[int | None] = []

    def build(current: DatasetMetadata | None) -> DatasetMetadata:
        assert current is not None
        seen.append(current.version)
        if len(seen) == 1:  # another writer commits between our planning and our commit
            dk.update_dataset(_frame(9, p=9), store=store, dataset_uuid=UUID)
        return current.evolve(metadata={**current.metadata, "mine": True})

    meta = C.commit(
        store, UUID, base=base, build=build, on_conflict=lambda old, new: None, operation="test"
    )
    assert seen == [0, 1]
    assert meta.version == 2
    assert meta.parent == 1
    assert meta.commit["operation"] == "test"
    final = dk.open_dataset(store=store, dataset_uuid=UUID)
    assert final.meta.metadata["mine"] is True
    assert sorted(_read(store)["tag"].tolist()) == [-1, 9]  # the other writer's data stays
    _check_history(store)


def test_commit_gives_up_after_max_attempts(store: Store) -> None:
    _seed(store)
    base = C.resolve(store, UUID)
    n = 0

    def build(current: DatasetMetadata | None) -> DatasetMetadata:
        nonlocal n
        n += 1
        dk.update_dataset(_frame(n), store=store, dataset_uuid=UUID)  # always lose the race
        assert current is not None
        return current

    with pytest.raises(exc.CommitConflictError, match="gave up after 3"):
        C.commit(
            store,
            UUID,
            base=base,
            build=build,
            on_conflict=lambda o, nw: None,
            operation="test",
            max_attempts=3,
        )
    assert n == 3
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2, 3]
    _check_history(store)


def test_update_rebases_onto_concurrent_append(store: Store) -> None:
    _seed(store, secondary_indices="tag")
    hook = HookStore(store)
    hook.on(
        _snapshot_put, lambda: dk.update_dataset(_frame(2, p=2), store=store, dataset_uuid=UUID)
    )
    meta = dk.update_dataset(_frame(1, p=1), store=hook, dataset_uuid=UUID)
    assert len(hook.fired) == 1
    assert meta.version == 2
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2]
    # the index was rebuilt on the rebased state: it knows both appends
    for tag in (1, 2):
        assert _read(store, predicates=[[("tag", "==", tag)]])["tag"].tolist() == [tag]
    _check_history(store)


def test_overwrite_conflict_leaves_dataset_unchanged(store: Store) -> None:
    _seed(store)
    hook = HookStore(store)
    hook.on(_snapshot_put, lambda: dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID))
    with pytest.raises(exc.CommitConflictError):
        dk.write_dataset(
            _frame(100), store=hook, dataset_uuid=UUID, partition_on="p", mode="overwrite"
        )
    assert sorted(_read(store)["tag"].tolist()) == [-1, 2]
    assert _check_history(store) == [0, 1]


def test_concurrent_create_gives_dataset_exists(store: Store) -> None:
    hook = HookStore(store)
    hook.on(_snapshot_put, lambda: dk.write_dataset(_frame(1), store=store, dataset_uuid=UUID))
    with pytest.raises(exc.DatasetExistsError):
        dk.write_dataset(_frame(2), store=hook, dataset_uuid=UUID)
    assert _read(store)["tag"].tolist() == [1]
    assert _check_history(store) == [0]


def test_delete_scope_conflict(store: Store) -> None:
    _seed(store)
    dk.update_dataset(_frame(1, p=1), store=store, dataset_uuid=UUID)
    before_conflict = None

    def concurrent() -> None:
        nonlocal before_conflict
        dk.update_dataset(_frame(11, p=1), store=store, dataset_uuid=UUID)
        before_conflict = _read(store)

    hook = HookStore(store)
    hook.on(_snapshot_put, concurrent)
    with pytest.raises(exc.CommitConflictError, match="delete_scope"):
        dk.update_dataset(_frame(5, p=5), store=hook, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    assert before_conflict is not None
    pd.testing.assert_frame_equal(_read(store), before_conflict)
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 11]
    assert _check_history(store) == [0, 1, 2]


def test_delete_scope_rebases_when_selection_unchanged(store: Store) -> None:
    _seed(store)
    dk.update_dataset(_frame(1, p=1), store=store, dataset_uuid=UUID)
    hook = HookStore(store)
    hook.on(
        _snapshot_put, lambda: dk.update_dataset(_frame(7, p=7), store=store, dataset_uuid=UUID)
    )
    meta = dk.update_dataset(store=hook, dataset_uuid=UUID, delete_scope=[{"p": 1}])
    assert meta.version == 3
    assert sorted(_read(store)["tag"].tolist()) == [-1, 7]
    _check_history(store)


def test_build_indices_rebases_and_covers_concurrent_append(store: Store) -> None:
    dk.write_dataset(
        iter([pd.DataFrame({"k": ["a"]}), pd.DataFrame({"k": ["b"]})]),
        store=store,
        dataset_uuid=UUID,
    )
    hook = HookStore(store)
    hook.on(
        _snapshot_put,
        lambda: dk.update_dataset(pd.DataFrame({"k": ["c"]}), store=store, dataset_uuid=UUID),
    )
    meta = dk.build_dataset_indices(store=hook, dataset_uuid=UUID, columns="k")
    assert meta.version == 2
    assert meta.secondary_indices == ("k",)
    assert _read(store, predicates=[[("k", "==", "c")]])["k"].tolist() == ["c"]
    # later appends keep the index current
    dk.update_dataset(pd.DataFrame({"k": ["d"]}), store=store, dataset_uuid=UUID)
    assert _read(store, predicates=[[("k", "in", ["a", "d"])]])["k"].tolist() == ["a", "d"]


# --------------------------------------------------------------------------- delete races
_STALE_WRITERS: list[tuple[str, Callable[[Store], Any]]] = [
    ("append", lambda s: dk.update_dataset(_frame(1), store=s, dataset_uuid=UUID)),
    (
        "overwrite",
        lambda s: dk.write_dataset(_frame(1), store=s, dataset_uuid=UUID, mode="overwrite"),
    ),
    (
        "delete_scope",
        lambda s: dk.update_dataset(store=s, dataset_uuid=UUID, delete_scope=[{"p": 0}]),
    ),
    ("metadata", lambda s: dk.update_dataset(store=s, dataset_uuid=UUID, metadata={"a": 1})),
    (
        "build_indices",
        lambda s: dk.build_dataset_indices(store=s, dataset_uuid=UUID, columns="tag"),
    ),
]


@pytest.mark.parametrize(
    "writer", [w for _, w in _STALE_WRITERS], ids=[n for n, _ in _STALE_WRITERS]
)
def test_writer_on_deleted_dataset_never_resurrects_it(
    store: Store, writer: Callable[[Store], Any]
) -> None:
    _seed(store)
    dk.update_dataset(_frame(0), store=store, dataset_uuid=UUID)
    hook = HookStore(store)
    hook.on(_snapshot_put, lambda: dk.delete_dataset(store=store, dataset_uuid=UUID))
    with pytest.raises((exc.DatasetNotFoundError, exc.CommitConflictError)):
        writer(hook)
    assert len(hook.fired) == 1
    with pytest.raises(exc.DatasetNotFoundError):
        _read(store)
    assert dk.list_datasets(store) == []
    assert not store.exists(POINTER)
    versions = C.snapshot_versions(store, UUID, expired=False)
    assert versions == [2]  # only the tombstone; the older versions are stubs
    assert C.snapshot_versions(store, UUID) == [0, 1, 2]
    assert _snapshot(store, 2)["dataset_kit"]["tombstone"] is True


def test_stale_base_after_completed_delete(store: Store) -> None:
    _seed(store)
    stale = C.resolve(store, UUID)
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    with pytest.raises(exc.CommitConflictError):
        C.commit(
            store,
            UUID,
            base=stale,
            build=lambda cur: stale.meta,
            on_conflict=conflict_on_any_change("overwrite"),
            operation="overwrite",
        )
    assert dk.list_datasets(store) == []
    assert C.snapshot_versions(store, UUID, expired=False) == [1]


# --------------------------------------------------------------------------- concurrency
def test_threads_append_concurrently(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _seed(store, partition_on=None)
    n_threads, n_appends = 8, 10
    barrier = threading.Barrier(n_threads)

    def work(w: int) -> list[int]:
        barrier.wait()
        versions = []
        for i in range(n_appends):
            meta = dk.update_dataset(
                pd.DataFrame({"p": [w], "tag": [w * 100 + i]}), store=store, dataset_uuid=UUID
            )
            assert meta.version is not None
            versions.append(meta.version)
        return versions

    with ThreadPoolExecutor(n_threads) as pool:
        results = list(pool.map(work, range(n_threads)))
    total = n_threads * n_appends
    # every commit got its own version; each writer's versions strictly increase
    assert sorted(v for r in results for v in r) == list(range(1, total + 1))
    for r in results:
        assert r == sorted(r)
    df = _read(store)
    expected = [-1] + [w * 100 + i for w in range(n_threads) for i in range(n_appends)]
    assert sorted(df["tag"].tolist()) == sorted(expected)
    assert _check_history(store) == list(range(total + 1))
    # every version holds exactly its predecessor plus one append
    for v in (1, 17, 40, total):
        assert len(_read(store, version=v)) == v + 1


def _process_worker(root: str, worker: int, n: int) -> None:
    store = LocalStore(root)
    for i in range(n):
        dk.update_dataset(
            pd.DataFrame({"p": [worker], "tag": [worker * 100 + i]}), store=store, dataset_uuid=UUID
        )


@pytest.mark.slow
def test_processes_append_concurrently(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _seed(store, partition_on=None)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(str(tmp_path), w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    tags = sorted(_read(store)["tag"].tolist())
    assert tags == sorted([-1] + [w * 100 + i for w in range(4) for i in range(5)])
    assert _check_history(store) == list(range(21))


# --------------------------------------------------------------------------- faults
def _tags_of_version(store: Store, version: int) -> Counter[int]:
    return Counter(_read(store, version=version)["tag"].tolist())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faulty_store_never_shows_half_commits(tmp_path: Path, seed: int) -> None:
    inner = LocalStore(tmp_path)
    _seed(inner, secondary_indices="tag")
    faulty = FaultInjectingStore(inner, fail_rate=0.2, seed=seed, fail_after_write_rate=0.05)
    outcome: dict[int, str] = {}
    for i in range(40):
        tag = i + 1
        frame = pd.DataFrame({"p": [i % 3, 7], "tag": [tag, tag]})
        try:
            dk.update_dataset(frame, store=faulty, dataset_uuid=UUID)
            outcome[tag] = "ok"
        except exc.CommitStateUnknownError:
            outcome[tag] = "unknown"
        except exc.DatasetKitError as error:
            # transient failures surface typed, never as raw OSError/ArrowError
            assert isinstance(error, exc.StoreUnavailableError), error
            outcome[tag] = "failed"
        # after every attempt the dataset reads consistently through a healthy store
        df = _read(inner)
        counts = Counter(df["tag"].tolist())
        assert counts[-1] == 1
        assert all(c == 2 for t, c in counts.items() if t != -1), counts
    final = Counter(_read(inner)["tag"].tolist())
    for tag, how in outcome.items():
        if how == "ok":
            assert final[tag] == 2, tag
        elif how == "failed":
            assert final[tag] == 0, tag
    assert "ok" in outcome.values()
    assert "failed" in outcome.values()
    # versions form one chain; each adds exactly one append to its parent
    versions = C.snapshot_versions(inner, UUID)
    assert versions == list(range(len(versions)))
    assert len(versions) - 1 == sum(1 for t in final if t != -1)
    previous = _tags_of_version(inner, 0)
    for v in versions[1:]:
        current = _tags_of_version(inner, v)
        added = current - previous
        assert sorted(added.values()) == [2]
        assert previous - current == Counter()
        previous = current
    # the index agrees with the data
    for tag in [t for t in final if t != -1][:5]:
        assert len(_read(inner, predicates=[[("tag", "==", tag)]])) == 2
    # the pointer may lag after a failed publish, but never points past the newest
    pointer = _pointer_version(inner)
    assert pointer is not None and pointer <= versions[-1]


class SnapshotFaultStore(HookStore):
    """Fails the snapshot put *after* it reached the store, ``times`` times.

    With ``check_fails`` the follow-up read of the snapshot fails too (state unknown).
    With ``before`` the put fails before it reaches the store (a timeout, say).
    """

    def __init__(
        self, inner: Store, *, times: int = 1, check_fails: bool = False, before: bool = False
    ) -> None:
        super().__init__(inner)
        self.times = times
        self.check_fails = check_fails
        self.before = before
        self.failed: list[str] = []

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if "/_versions/" in key and if_absent and len(self.failed) < self.times:
            self.failed.append(key)
            if self.before:
                raise TimeoutError(f"injected timeout before writing {key}")
            self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
            raise exc.StoreUnavailableError(f"injected failure after writing {key}", key=key)
        return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    def _get(self, key: str) -> bytes:
        if self.check_fails and key in self.failed:
            raise exc.StoreUnavailableError(f"injected failure reading {key}", key=key)
        return self.inner.get(key)


@pytest.mark.parametrize("backend", ["memory", "local"])
def test_failure_after_snapshot_write_commits_exactly_once(tmp_path: Path, backend: str) -> None:
    inner = LocalStore(tmp_path) if backend == "local" else dk.open_store("memory://")
    _seed(inner)
    faulty = SnapshotFaultStore(inner)
    meta = dk.update_dataset(_frame(1), store=faulty, dataset_uuid=UUID)
    assert faulty.failed == [naming.snapshot_key(UUID, 1)]
    assert meta.version == 1
    assert _snapshot(inner, 1)["dataset_kit"]["commit"]["id"] == meta.commit["id"]
    assert sorted(_read(inner)["tag"].tolist()) == [-1, 1]  # not lost, not duplicated
    assert _check_history(inner) == [0, 1]


def test_failure_before_snapshot_write_is_retried(store: Store) -> None:
    _seed(store)
    faulty = SnapshotFaultStore(store, times=2, before=True)
    meta = dk.update_dataset(_frame(1), store=faulty, dataset_uuid=UUID)
    assert len(faulty.failed) == 2
    assert meta.version == 1
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1]
    assert _check_history(store) == [0, 1]


def test_failure_after_write_when_another_writer_won(store: Store) -> None:
    # our put "failed" but the key holds another writer's snapshot: we rebase, not claim it
    _seed(store)

    class Racing(SnapshotFaultStore):
        def _put(
            self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
        ) -> BlobInfo:
            if "/_versions/" in key and if_absent and not self.failed:
                self.failed.append(key)
                dk.update_dataset(_frame(2), store=self.inner, dataset_uuid=UUID)
                raise exc.StoreUnavailableError("injected", key=key)
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    meta = dk.update_dataset(_frame(1), store=Racing(store), dataset_uuid=UUID)
    assert meta.version == 2
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2]
    assert _check_history(store) == [0, 1, 2]


def test_unknown_commit_state_is_reported(store: Store) -> None:
    _seed(store)
    faulty = SnapshotFaultStore(store, check_fails=True)
    with pytest.raises(exc.CommitStateUnknownError) as info:
        dk.update_dataset(_frame(1), store=faulty, dataset_uuid=UUID)
    assert isinstance(info.value, exc.CommitError)
    assert repr(UUID) in str(info.value)
    # reading tells what happened: here the snapshot was written, so the commit stands
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1]
    assert len([k for k in store.iter_keys(f"{UUID}/table/") if k.endswith(".parquet")]) == 2


def test_store_without_atomic_create_refuses_to_commit(store: Store) -> None:
    unsafe = HookStore(store, capabilities=frozenset())
    with pytest.raises(exc.UnsupportedOperationError):
        dk.write_dataset(_frame(1), store=unsafe, dataset_uuid=UUID)
    assert not store.exists(POINTER)
    assert C.snapshot_versions(store, UUID) == []


# --------------------------------------------------------------------------- foreign pointer
def _make_foreign(store: Store, *, drop_label_with: str | None = None) -> dict[str, Any]:
    """Rewrite the pointer as plateau would: the v4 document without our block."""
    doc = json.loads(store.get(POINTER))
    del doc["dataset_kit"]
    if drop_label_with is not None:
        doc["partitions"] = {
            lb: part for lb, part in doc["partitions"].items() if drop_label_with not in lb
        }
    store.put(POINTER, json.dumps(doc).encode())
    return doc


def test_foreign_pointer_is_read_as_newest_and_adopted(store: Store) -> None:
    _seed(store)
    dk.update_dataset(_frame(1, p=1), store=store, dataset_uuid=UUID)
    dk.update_dataset(_frame(2, p=2), store=store, dataset_uuid=UUID)
    # plateau removed the partition p=1 (delete_scope) and rewrote the pointer
    _make_foreign(store, drop_label_with="p=1/")
    assert C.snapshot_versions(store, UUID) == [0, 1, 2]
    ds = dk.open_dataset(store=store, dataset_uuid=UUID)
    assert ds.version is None
    assert sorted(_read(store)["tag"].tolist()) == [-1, 2]
    assert dk.list_datasets(store) == [UUID]
    # the next commit first persists the foreign state as "adopt", then its own
    meta = dk.update_dataset(_frame(3, p=3), store=store, dataset_uuid=UUID)
    assert meta.version == 4
    assert C.snapshot_versions(store, UUID) == [0, 1, 2, 3, 4]
    adopt = _snapshot(store, 3)["dataset_kit"]
    assert adopt["commit"]["operation"] == "adopt"
    assert adopt["parent"] == 2
    assert _snapshot(store, 4)["dataset_kit"]["commit"]["operation"] == "append"
    assert _snapshot(store, 4)["dataset_kit"]["parent"] == 3
    assert sorted(_read(store)["tag"].tolist()) == [-1, 2, 3]
    assert sorted(_read(store, version=3)["tag"].tolist()) == [-1, 2]
    assert sorted(_read(store, version=2)["tag"].tolist()) == [-1, 1, 2]
    assert _pointer_version(store) == 4
    ops = [v["operation"] for v in dk.open_dataset(store=store, dataset_uuid=UUID).versions()]
    assert ops == ["write", "append", "append", "adopt", "append"]


def test_foreign_pointer_adoption_race(store: Store) -> None:
    _seed(store)
    _make_foreign(store)
    hook = HookStore(store)
    # another dataset_kit writer adopts (and appends) first
    hook.on(_snapshot_put, lambda: dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID))
    meta = dk.update_dataset(_frame(1), store=hook, dataset_uuid=UUID)
    versions = _check_history(store)
    assert meta.version == versions[-1]
    ops = [_snapshot(store, v)["dataset_kit"]["commit"]["operation"] for v in versions]
    assert ops.count("adopt") == 1
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2]


def test_foreign_dataset_without_snapshots(store: Store) -> None:
    _seed(store)
    doc = _make_foreign(store)
    store.delete(naming.snapshot_key(UUID, 0))  # as if plateau had written it all
    assert _read(store)["tag"].tolist() == [-1]
    with pytest.raises(exc.VersionNotFoundError):
        _read(store, version=0)
    meta = dk.update_dataset(_frame(1), store=store, dataset_uuid=UUID)
    assert meta.version == 1
    assert _snapshot(store, 0)["dataset_kit"]["commit"]["operation"] == "adopt"
    assert set(_snapshot(store, 0)["partitions"]) == set(doc["partitions"])
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1]


def test_overwrite_of_foreign_dataset(store: Store) -> None:
    _seed(store)
    _make_foreign(store)
    meta = dk.write_dataset(_frame(5), store=store, dataset_uuid=UUID, mode="overwrite")
    assert meta.version == 2
    assert _snapshot(store, 1)["dataset_kit"]["commit"]["operation"] == "adopt"
    assert _read(store)["tag"].tolist() == [5]
    assert _read(store, version=1)["tag"].tolist() == [-1]


def _nullable(tag: int, p: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "p": [p, p],
            "f": pd.array([tag / 2, None], dtype="Float32"),
            "i": pd.array([tag, 1], dtype="Int8"),
            "x": [1.5, 2.5],
        }
    )


def _as_plateau_wrote_it(store: Store) -> None:
    """The pointer and ``_common_metadata`` alone (the latter says float64/int64 for the
    nullable columns, as plateau's does), no snapshot: plateau wrote it all."""
    _make_foreign(store)
    store.delete(naming.snapshot_key(UUID, 0))
    cm = pq.read_schema(pa.BufferReader(store.get(naming.common_metadata_key(UUID, "table"))))
    numpy_types = {
        c["name"]: c["numpy_type"] for c in json.loads(cm.metadata[b"pandas"])["columns"]
    }
    assert numpy_types == {"p": "int64", "f": "float64", "i": "int64", "x": "float64"}


def test_foreign_pointer_takes_nullable_dtypes_from_one_data_file() -> None:
    """One footer read on open (a stat and one ranged read), none once adopted."""
    from dataset_kit.store import CountingStore

    store = CountingStore(MemoryStore())
    dk.write_dataset(_nullable(1), store=store, dataset_uuid=UUID, partition_on="p")
    dk.update_dataset(_nullable(2, p=1), store=store, dataset_uuid=UUID)
    _make_foreign(store)
    with store.measure() as before:  # the pointer holds only our blobs: no footer read
        C.resolve(store, UUID)
    assert before["get_range"] == 0 and before["stat"] == 0
    store.delete(naming.snapshot_key(UUID, 1))
    store.delete(naming.snapshot_key(UUID, 0))
    with store.measure() as calls:
        meta = C.resolve(store, UUID).meta
    # the pointer, _common_metadata, the snapshot listing; then the newest blob's footer
    assert {k: n for k, n in calls.items() if k != "bytes_read"} == {
        "get": 2,
        "list": 1,
        "stat": 1,
        "get_range": 1,
    }
    frame = _read(store)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "p": "int64",  # partition columns come from _common_metadata, as in plateau
        "f": "Float64",
        "i": "Int64",
        "x": "float64",
    }
    assert meta.schema is not None and meta.schema.field("f").type == pa.float64()
    dk.update_dataset(_nullable(3, p=2), store=store, dataset_uuid=UUID)  # adopts the dtypes
    with store.measure() as after:
        frame = _read(store)
    assert after["get_range"] == 0 and after["stat"] == 0
    assert frame["f"].dtype == "Float64" and frame["f"].isna().sum() == 3


def test_foreign_pointer_keeps_our_nullable_dtypes_for_our_blobs(tmp_path: Path) -> None:
    """plateau appended numpy data to ours: its file says float64, our snapshot Float64 (as
    plateau's own read, pd.concat, makes it); a local store reads the footer directly."""
    store = LocalStore(tmp_path)
    dk.write_dataset(_nullable(1), store=store, dataset_uuid=UUID, partition_on="p")
    numpy_only = pd.DataFrame({"p": [5], "f": [0.5], "i": [3], "x": [0.0]})
    dk.update_dataset(numpy_only, store=store, dataset_uuid=UUID)
    numpy_key = next(k for k in C.resolve(store, UUID).meta.partitions.values() if "p=5/" in k)
    store.delete(naming.snapshot_key(UUID, 1))  # p=5 is "theirs" now, with numpy dtypes
    _make_foreign(store)
    assert numpy_key in C.resolve(store, UUID).meta.partitions.values()
    frame = _read(store)
    assert frame["f"].dtype == "Float64" and frame["i"].dtype == "Int64"


def test_foreign_pointer_with_an_unreadable_sample_keeps_common_metadata_dtypes() -> None:
    store = MemoryStore()
    dk.write_dataset(_nullable(1), store=store, dataset_uuid=UUID, partition_on="p")
    _as_plateau_wrote_it(store)
    (key,) = C.resolve(store, UUID).meta.partitions.values()
    store.put(key, b"not parquet")
    ds = dk.open_dataset(store=store, dataset_uuid=UUID)  # opening does not fail ...
    assert pd.api.types.is_float_dtype(ds.schema.empty_table().to_pandas()["f"])
    # ... its read does (a bare ArrowInvalid today: read_blob does not wrap corrupt blobs)
    with pytest.raises((exc.DatasetKitError, pa.ArrowInvalid)):
        _read(store)
    store.delete(key)
    assert dk.open_dataset(store=store, dataset_uuid=UUID).num_partitions == 1


def test_delete_of_foreign_dataset(store: Store) -> None:
    _seed(store)
    _make_foreign(store)
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    assert dk.list_datasets(store) == []
    versions = C.snapshot_versions(store, UUID, expired=False)
    assert len(versions) == 1
    assert _snapshot(store, versions[0])["dataset_kit"]["tombstone"] is True
    meta = dk.write_dataset(_frame(6), store=store, dataset_uuid=UUID)
    assert meta.version == versions[0] + 1
    assert _read(store)["tag"].tolist() == [6]


@pytest.mark.parametrize(
    "cas",
    [
        True,
        pytest.param(False),
    ],
    ids=["cas", "no_cas"],
)
def test_delete_between_snapshot_and_pointer_does_not_resurrect(store: Store, cas: bool) -> None:
    _seed(store)
    caps = store.capabilities if cas else store.capabilities - {Capability.COMPARE_AND_SWAP}
    slow = HookStore(store, capabilities=caps)
    # writer A created snapshot 1; a complete delete_dataset runs before A publishes
    slow.on(_pointer_put, lambda: dk.delete_dataset(store=store, dataset_uuid=UUID))
    try:
        dk.update_dataset(_frame(1), store=slow, dataset_uuid=UUID)
    except exc.DatasetNotFoundError:
        pass
    assert slow.fired == [POINTER]
    with pytest.raises(exc.DatasetNotFoundError):
        _read(store)
    assert dk.list_datasets(store) == []
    assert not store.exists(POINTER)


def test_concurrent_update_creating_the_dataset_rebases(store: Store) -> None:
    hook = HookStore(store)
    hook.on(
        _snapshot_put,
        lambda: dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID, partition_on="p"),
    )
    meta = dk.update_dataset(_frame(1), store=hook, dataset_uuid=UUID, partition_on="p")
    assert meta.version == 1
    assert sorted(_read(store)["tag"].tolist()) == [1, 2]


def test_msgpack_pointer_is_read_and_replaced(store: Store) -> None:
    import msgpack
    import zstandard

    _seed(store)
    dk.update_dataset(_frame(1), store=store, dataset_uuid=UUID)
    doc = json.loads(store.get(POINTER))
    msgpack_key = naming.pointer_msgpack_key(UUID)
    store.put(msgpack_key, zstandard.ZstdCompressor().compress(msgpack.packb(doc)))
    store.delete(POINTER)
    assert dk.list_datasets(store) == [UUID]
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1]
    meta = dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID)
    assert meta.version == 2
    assert not store.exists(msgpack_key)
    assert _pointer_version(store) == 2
    assert sorted(_read(store)["tag"].tolist()) == [-1, 1, 2]
    store.put(msgpack_key, b"corrupt")
    store.delete(POINTER)
    with pytest.raises(exc.MetadataFormatError):
        _read(store)


def test_appender_waits_for_a_slow_creator_and_builds_on_it(store: Store) -> None:
    """The creator's snapshot exists, its pointer not yet: a second writer must neither
    fail ("deleted during the update") nor start a history that drops the first."""
    slow = HookStore(store)
    at_pointer, release = threading.Event(), threading.Event()

    def hold() -> None:
        at_pointer.set()
        assert release.wait(30)

    slow.on(lambda op, key, kw: op == "put" and key == POINTER, hold)
    creator = threading.Thread(
        target=lambda: dk.update_dataset(_frame(1), store=slow, dataset_uuid=UUID)
    )
    creator.start()
    assert at_pointer.wait(30)
    threading.Timer(0.3, release.set).start()
    meta = dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID)
    creator.join(30)
    assert meta.version == 1 and meta.history_start == 0
    assert sorted(_read(store)["tag"]) == [1, 2]


def test_first_version_left_without_pointer_by_a_dead_creator_is_kept(store: Store) -> None:
    class NoPointer(DelegatingStore):
        def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
            if key == POINTER:
                raise exc.StoreUnavailableError("connection reset", key=key)
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    with pytest.raises(exc.CommitStateUnknownError):
        dk.update_dataset(_frame(1), store=NoPointer(store), dataset_uuid=UUID)
    # the next writer publishes the committed version instead of dropping it
    meta = dk.update_dataset(_frame(2), store=store, dataset_uuid=UUID)
    assert meta.version == 1
    assert sorted(_read(store)["tag"]) == [1, 2]


def test_single_version_dataset_deleted_by_plateau_stays_deleted(store: Store) -> None:
    dk.write_dataset(_frame(1), store=store, dataset_uuid=UUID)
    for key in list(store.iter_keys(UUID)):  # plateau: pointer and blobs, not our snapshots
        if "/_versions/" not in key:
            store.delete(key)
    meta = dk.write_dataset(_frame(7), store=store, dataset_uuid=UUID)
    assert meta.version == 1 and meta.history_start == 1
    assert _read(store)["tag"].tolist() == [7]


def test_dataset_created_between_lookup_and_commit_is_built_on_not_replaced(
    store: Store,
) -> None:
    """Found by 8 processes appending through Azurite: a writer that saw no dataset, then
    found another writer's published first version when choosing its own version number,
    started a new history over it and one append was lost."""

    class Interleave(DelegatingStore):
        fired = False

        def _iter_infos(self, prefix: str) -> Any:
            if "/_versions/" in prefix and not self.fired:
                self.fired = True  # the other writer creates and publishes the dataset now
                dk.update_dataset(_frame(1), store=self.inner, dataset_uuid=UUID)
            return super()._iter_infos(prefix)

    racing = Interleave(store)
    meta = dk.update_dataset(_frame(2), store=racing, dataset_uuid=UUID)
    assert racing.fired
    assert meta.version == 1 and meta.history_start == 0
    assert sorted(_read(store)["tag"]) == [1, 2]


def test_resolve_reads_the_pointer_in_one_request() -> None:
    """Bytes and etag of the pointer come from one read (one round trip on Azure, where
    a stat and a get were two), and the etag is exactly that version's: a commit swaps
    against it."""
    from dataset_kit.store import CountingStore, MemoryStore

    store = CountingStore(MemoryStore())
    dk.write_dataset(pd.DataFrame({"p": [1, 2]}), store=store, dataset_uuid="d", partition_on="p")
    with store.measure() as calls:
        resolved = C.resolve(store, "d")
    pointer = naming.pointer_key("d")
    assert calls["get"] == 1 and calls["stat"] == 0
    assert resolved.pointer_etag == store.stat(pointer).etag
    dk.update_dataset(pd.DataFrame({"p": [3]}), store=store, dataset_uuid="d")
    assert C.resolve(store, "d").meta.version == 1


class _SnapshotWritesFail(DelegatingStore):
    """Every snapshot write fails before it reaches the store (``times`` of them)."""

    def __init__(self, inner: Store, times: int) -> None:
        super().__init__(inner)
        self.times, self.failed = times, 0

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_versions/" in key and self.failed < self.times:
            self.failed += 1
            raise exc.StoreUnavailableError("503 ServerBusy", key=key)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_a_store_that_keeps_failing_fails_the_commit_with_its_error() -> None:
    """Not a lost race: after a few failed snapshot writes in a row the commit gives up
    with the store's error (it used to retry for the whole commit deadline, then blame
    "too many concurrent writers"), and the dataset stays at its version."""
    store = MemoryStore()
    dk.write_dataset(pd.DataFrame({"x": [1]}), store=store, dataset_uuid="d")
    failing = _SnapshotWritesFail(store, times=1000)
    with pytest.raises(exc.StoreUnavailableError, match="the commit failed") as info:
        dk.update_dataset(pd.DataFrame({"x": [2]}), store=failing, dataset_uuid="d")
    assert "still at version 0" in str(info.value)
    assert failing.failed == C.MAX_STORE_FAILURES
    assert dk.read_table(store=store, dataset_uuid="d")["x"].tolist() == [1]
    # fewer failures than that in a row: the commit goes through
    flaky = _SnapshotWritesFail(store, times=C.MAX_STORE_FAILURES - 1)
    assert dk.update_dataset(pd.DataFrame({"x": [3]}), store=flaky, dataset_uuid="d").version == 1


def test_every_commit_records_its_history() -> None:
    """A history starts with the first commit's id and is inherited by every later
    commit; a dataset deleted and created again starts another."""
    store = MemoryStore()
    first = dk.write_dataset(pd.DataFrame({"x": [1]}), store=store, dataset_uuid="h")
    assert C.history_id(first) == first.commit["id"]
    second = dk.update_dataset(pd.DataFrame({"x": [2]}), store=store, dataset_uuid="h")
    third = dk.write_dataset(
        pd.DataFrame({"x": [3]}), store=store, dataset_uuid="h", mode="overwrite"
    )
    assert C.history_id(second) == C.history_id(third) == C.history_id(first)
    dk.delete_dataset(store=store, dataset_uuid="h")
    again = dk.write_dataset(pd.DataFrame({"x": [4]}), store=store, dataset_uuid="h")
    assert C.history_id(again) not in (None, C.history_id(first))
    legacy = DatasetMetadata(uuid="h", version=0, commit={"id": "abc"})
    assert C.history_id(legacy) is None  # written before histories were recorded


def test_a_creation_whose_pointer_came_too_late_is_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writer A creates version 0 of a new dataset and stalls before its pointer for
    longer than PENDING_CREATION_SECONDS; writer B then takes the pointer-less snapshot
    for a deleted dataset's leftover and creates the dataset anew. A must not be told
    it succeeded (both were, and A's rows were in no version of the dataset)."""
    monkeypatch.setattr(C, "PENDING_CREATION_SECONDS", 0.3)
    store = MemoryStore()
    b_done = threading.Event()

    class SlowPointer(DelegatingStore):
        def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
            if key == naming.pointer_key("late"):
                b_done.wait(30)
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            dk.write_dataset(
                pd.DataFrame({"x": [1]}), store=SlowPointer(store), dataset_uuid="late"
            )
        except BaseException as error:
            errors.append(error)

    a = threading.Thread(target=writer_a)
    a.start()
    deadline = time.monotonic() + 10
    while not store.exists(naming.snapshot_key("late", 0)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # A's snapshot is older than PENDING_CREATION_SECONDS now
    b = dk.write_dataset(pd.DataFrame({"x": [100]}), store=store, dataset_uuid="late")
    b_done.set()
    a.join(30)
    assert b.version == 1 and b.history_start == 1
    assert len(errors) == 1 and isinstance(errors[0], exc.CommitConflictError)
    assert "created the dataset anew" in str(errors[0])
    assert dk.read_table(store=store, dataset_uuid="late")["x"].tolist() == [100]
