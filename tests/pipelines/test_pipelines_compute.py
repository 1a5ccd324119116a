"""Per-partition compute pipeline on the local threaded scheduler: results and failure modes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import (
    CommitConflictError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidInputError,
    SchemaMismatchError,
    StoreUnavailableError,
)
from dataset_kit.store import (
    DelegatingStore,
    FaultInjectingStore,
    LocalStore,
    RetryingStore,
    Store,
)

SRC = "sales"


def sales(n_days: int = 4, n_stores: int = 3) -> pd.DataFrame:
    rows = [
        {"day": d, "store": s, "qty": d * 10 + s, "price": 1.5 * s}
        for d in range(n_days)
        for s in range(n_stores)
    ]
    return pd.DataFrame(rows)


def revenue(frame: pd.DataFrame, factor: float = 1.0) -> pd.DataFrame:
    return frame.assign(revenue=frame["qty"] * frame["price"] * factor)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    kv = LocalStore(tmp_path / "lake")
    dk.write_dataset(sales(), store=kv, dataset_uuid=SRC, partition_on=["day", "store"])
    return kv


def data_blobs(store: Store, uuid: str) -> set[str]:
    return {k for k in store.iter_keys(naming.dataset_prefix(uuid)) if k.endswith(".parquet")}


def sort(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def test_result_equals_pandas_on_the_whole_frame(store: LocalStore) -> None:
    job = dk.pipelines.map_partitions(
        revenue,
        source=SRC,
        target="rev",
        store=store,
        partition_on="day",
        func_kwargs={"factor": 2.0},
    )
    assert job.tasks == 12  # fewer partitions than MIN_NODES: a node each
    meta = job.compute()
    assert meta.version == 0 and meta.partition_keys == ("day",)
    got = dk.read_table(store=store, dataset_uuid="rev")
    want = revenue(dk.read_table(store=store, dataset_uuid=SRC), 2.0)
    pd.testing.assert_frame_equal(sort(got), sort(want[got.columns]), check_dtype=False)
    assert got["revenue"].dtype == want["revenue"].dtype
    assert dk.read_table(store=store, dataset_uuid=SRC).shape == (12, 4)  # source untouched


@pytest.mark.parametrize(("per_node", "tasks"), [(1, 12), (5, 3), (12, 1), (100, 1)])
def test_partitions_per_node_batches_calls_not_data(
    store: LocalStore, per_node: int, tasks: int
) -> None:
    """However the calls are spread over nodes, each call gets one partition and the
    committed result is the same (partitions in plan order)."""
    calls: list[int] = []
    lock = threading.Lock()

    def counted(frame: pd.DataFrame) -> pd.DataFrame:
        with lock:
            calls.append(len(frame))
        return revenue(frame, 2.0)

    job = dk.pipelines.map_partitions(
        counted,
        source=SRC,
        target=f"rev{per_node}",
        store=store,
        partition_on="day",
        partitions_per_node=per_node,
    )
    assert job.tasks == tasks
    meta = job.compute()
    assert calls == [1] * 12
    got = dk.read_table(store=store, dataset_uuid=f"rev{per_node}")
    want = revenue(dk.read_table(store=store, dataset_uuid=SRC), 2.0)
    pd.testing.assert_frame_equal(sort(got), sort(want[got.columns]), check_dtype=False)
    assert len(meta.partitions) == 12  # one blob per call, whatever the node


def test_default_nodes_take_small_partitions_up_to_node_bytes(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a node takes consecutive partitions while their stored bytes fit in
    NODE_BYTES, keeping at least MIN_NODES nodes; a bigger partition gets its own."""
    from dataset_kit.pipelines import compute

    sizes = sorted(store.stat(k).size for k in data_blobs(store, SRC))
    assert len(sizes) == 12

    def tasks(budget: int, min_nodes: int) -> int:
        monkeypatch.setattr(compute, "NODE_BYTES", budget)
        monkeypatch.setattr(compute, "MIN_NODES", min_nodes)
        job = dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store)
        return job.tasks

    assert tasks(sizes[0] - 1, 1) == 12  # every blob is over budget
    assert 3 <= tasks(sum(sizes[-3:]), 1) <= 4  # at least three blobs fit in every node
    assert tasks(sum(sizes), 1) == 1
    assert tasks(sum(sizes), 12) == 12  # MIN_NODES wins over a big budget
    assert 4 <= tasks(sum(sizes), 4) <= 6


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_partitions_per_node_must_be_a_positive_int(store: LocalStore, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="partitions_per_node"):
        dk.pipelines.map_partitions(
            revenue, source=SRC, target="x", store=store, partitions_per_node=bad
        )


def test_dispatch_by_groups_partitions_into_one_call(store: LocalStore) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def per_day(frame: pd.DataFrame) -> pd.DataFrame:
        with lock:
            calls.append(len(frame))
        return frame.groupby("day", as_index=False)["qty"].sum()

    job = dk.pipelines.map_partitions(
        per_day, source=SRC, target="daily", store=store, dispatch_by="day"
    )
    assert job.tasks == 4
    job.compute()
    assert sorted(calls) == [3, 3, 3, 3]
    got = dk.read_table(store=store, dataset_uuid="daily").sort_values("day")
    assert got["qty"].tolist() == [3, 33, 63, 93]


def test_arrow_input_columns_and_predicates(store: LocalStore) -> None:
    seen: list[Any] = []

    def f(table: pa.Table) -> pa.Table:
        seen.append(type(table))
        return table

    dk.pipelines.map_partitions(
        f,
        source=SRC,
        target="sub",
        store=store,
        input="arrow",
        columns=["day", "qty"],
        predicates=[[("day", ">=", 2), ("qty", ">", 20)]],
    ).compute()
    assert set(seen) == {pa.Table}
    got = dk.read_table(store=store, dataset_uuid="sub")
    assert list(got.columns) == ["day", "qty"]
    assert sorted(got["qty"]) == [21, 22, 30, 31, 32]


def test_empty_results_write_nothing(store: LocalStore) -> None:
    def only_day_one(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["day"] == 1]

    meta = dk.pipelines.map_partitions(
        only_day_one, source=SRC, target="one", store=store, partition_on="store"
    ).compute()
    assert meta.num_partitions == 3
    assert len(data_blobs(store, "one")) == 3  # no empty files
    assert dk.read_table(store=store, dataset_uuid="one")["day"].unique().tolist() == [1]

    meta = dk.pipelines.map_partitions(
        lambda f: f.iloc[:0], source=SRC, target="none", store=store
    ).compute()
    assert meta.num_partitions == 0 and data_blobs(store, "none") == set()
    empty = dk.read_table(store=store, dataset_uuid="none")
    assert empty.empty and list(empty.columns) == ["day", "store", "qty", "price"]


def test_append_and_overwrite_modes(store: LocalStore) -> None:
    job = dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store, mode="append")
    job.compute()
    dk.pipelines.map_partitions(
        revenue, source=SRC, target="t", store=store, mode="append"
    ).compute()
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 24
    meta = dk.pipelines.map_partitions(
        revenue, source=SRC, target="t", store=store, mode="overwrite"
    ).compute()
    assert meta.version == 2 and len(dk.read_table(store=store, dataset_uuid="t")) == 12


def test_error_mode_refuses_an_existing_target(store: LocalStore) -> None:
    with pytest.raises(DatasetExistsError):
        dk.pipelines.map_partitions(revenue, source=SRC, target=SRC, store=store)


def test_target_created_during_the_run_is_not_overwritten(store: LocalStore) -> None:
    job = dk.pipelines.map_partitions(revenue, source=SRC, target="race", store=store)
    dk.write_dataset(pd.DataFrame({"other": [1]}), store=store, dataset_uuid="race")
    with pytest.raises(DatasetExistsError):
        job.compute()
    assert list(dk.read_table(store=store, dataset_uuid="race").columns) == ["other"]


def test_overwrite_conflicts_with_a_concurrent_commit(store: LocalStore) -> None:
    dk.write_dataset(pd.DataFrame({"qty": [1]}), store=store, dataset_uuid="t")
    job = dk.pipelines.map_partitions(
        revenue, source=SRC, target="t", store=store, mode="overwrite"
    )
    dk.update_dataset(pd.DataFrame({"qty": [2]}), store=store, dataset_uuid="t")
    with pytest.raises(CommitConflictError):
        job.compute()
    assert dk.read_table(store=store, dataset_uuid="t")["qty"].tolist() == [1, 2]


def test_append_rebases_onto_a_concurrent_append(store: LocalStore) -> None:
    dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store).compute()
    job = dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store, mode="append")
    dk.update_dataset(revenue(sales(1, 1)), store=store, dataset_uuid="t")
    meta = job.compute()
    assert meta.version == 2
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 12 + 1 + 12


def test_source_version_is_pinned_when_the_job_is_built(store: LocalStore) -> None:
    job = dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store)
    dk.update_dataset(sales(9, 1), store=store, dataset_uuid=SRC)
    job.compute()
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 12


def test_a_failing_function_commits_nothing(store: LocalStore) -> None:
    def boom(frame: pd.DataFrame) -> pd.DataFrame:
        if (frame["day"] == 3).any():
            raise ZeroDivisionError("bad partition")
        return frame

    with pytest.raises(ZeroDivisionError, match="bad partition"):
        dk.pipelines.map_partitions(boom, source=SRC, target="t", store=store).compute()
    with pytest.raises(DatasetNotFoundError):
        dk.read_table(store=store, dataset_uuid="t")
    # what finished nodes wrote is garbage, invisible; the target can be written afresh
    dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store).compute()
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 12


@pytest.mark.parametrize(
    ("func", "error", "match"),
    [
        (lambda f: None, InvalidInputError, "returned None"),
        (lambda f: 42, InvalidInputError, "expected a pandas DataFrame"),
        (lambda f: f.drop(columns="store"), InvalidInputError, "partition_on"),
    ],
)
def test_bad_function_results_are_typed_errors(
    store: LocalStore, func: Any, error: type[Exception], match: str
) -> None:
    dk.write_dataset(pd.DataFrame({"store": [1], "qty": [0]}), store=store, dataset_uuid="t")
    job = dk.pipelines.map_partitions(
        func, source=SRC, target="t", store=store, mode="overwrite", partition_on="store"
    )
    with pytest.raises(error, match=match):
        job.compute()
    assert dk.read_table(store=store, dataset_uuid="t")["qty"].tolist() == [0]


def test_nodes_with_incompatible_schemas_fail_at_commit(store: LocalStore) -> None:
    def inconsistent(frame: pd.DataFrame) -> pd.DataFrame:
        value: Any = "text" if frame["day"].iloc[0] == 0 else 1.5
        return pd.DataFrame({"v": [value]})

    with pytest.raises(SchemaMismatchError):
        dk.pipelines.map_partitions(inconsistent, source=SRC, target="t", store=store).compute()
    assert "t" not in dk.list_datasets(store)


def test_invalid_options_fail_when_the_job_is_built(store: LocalStore) -> None:
    with pytest.raises(InvalidInputError):
        dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store, mode="merge")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store, dispatch_by="qty")
    with pytest.raises(InvalidInputError):
        dk.pipelines.map_partitions("nope", source=SRC, target="t", store=store)  # type: ignore[arg-type]
    with pytest.raises(DatasetNotFoundError):
        dk.pipelines.map_partitions(revenue, source="missing", target="t", store=store)


def test_task_keys_are_deterministic(store: LocalStore) -> None:
    def build() -> str:
        return dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=store).key

    first = build()
    assert build() == first
    dk.update_dataset(sales(1, 1), store=store, dataset_uuid=SRC)
    assert build() != first  # a new source version is a new job


def test_transient_store_faults_give_the_fault_free_result(store: LocalStore) -> None:
    flaky = RetryingStore(
        FaultInjectingStore(store, fail_rate=0.2, seed=7, operations=frozenset({"get", "put"})),
        attempts=30,
        base_delay=0.0,
    )
    dk.pipelines.map_partitions(revenue, source=SRC, target="t", store=flaky).compute()
    dk.pipelines.map_partitions(revenue, source=SRC, target="clean", store=store).compute()
    pd.testing.assert_frame_equal(
        sort(dk.read_table(store=store, dataset_uuid="t")),
        sort(dk.read_table(store=store, dataset_uuid="clean")),
    )


def test_a_permanent_store_failure_leaves_the_target_unchanged(store: LocalStore) -> None:
    dk.write_dataset(pd.DataFrame({"qty": [1]}), store=store, dataset_uuid="t")
    broken = FaultInjectingStore(store, fail_rate=1.0, operations=frozenset({"put"}))
    job = dk.pipelines.map_partitions(
        revenue, source=SRC, target="t", store=store, target_store=broken, mode="overwrite"
    )
    with pytest.raises(StoreUnavailableError):
        job.compute()
    assert dk.read_table(store=store, dataset_uuid="t")["qty"].tolist() == [1]


class _Concurrency(DelegatingStore):
    """Records the most concurrent puts/gets (threaded scheduler: no pickling)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def _io(self, fn: Any) -> Any:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.005)
            return fn()
        finally:
            with self.lock:
                self.active -= 1

    def _get(self, key: str) -> bytes:
        return self._io(lambda: super(_Concurrency, self)._get(key))  # type: ignore[no-any-return]

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        return self._io(
            lambda: super(_Concurrency, self)._put(
                key, data, if_absent=if_absent, if_match=if_match
            )
        )


def test_storage_concurrency_bounds_concurrent_requests(store: LocalStore) -> None:
    import dask

    counted = _Concurrency(store)
    with dask.config.set(num_workers=8):  # the machine has 2 cores: make the pool wider
        dk.pipelines.map_partitions(
            revenue,
            source=SRC,
            target="free",
            store=counted,
            partition_on=["day", "store"],
            partitions_per_node=1,  # tiny partitions would otherwise share one node
        ).compute()
        unthrottled = counted.peak
        counted.peak = 0
        dk.pipelines.map_partitions(
            revenue,
            source=SRC,
            target="t",
            store=counted,
            partition_on=["day", "store"],
            storage_concurrency=2,
            partitions_per_node=1,
        ).compute()
    assert counted.peak <= 2 < unthrottled
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 12


def test_target_in_another_store(store: LocalStore, tmp_path: Path) -> None:
    other = LocalStore(tmp_path / "other")
    dk.pipelines.map_partitions(
        revenue, source=SRC, target="t", store=store, target_store=other
    ).compute()
    assert dk.list_datasets(other) == ["t"] and "t" not in dk.list_datasets(store)


@pytest.mark.parametrize("recorded", [True, False], ids=["nullable-recorded", "written-before"])
def test_identity_copy_of_int_columns_with_nulls_in_some_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: bool
) -> None:
    # every call got the blob's own dtype (int64 here, float64 there): the outputs' schemas
    # disagreed (SchemaMismatchError int64 vs double) and 2**53 + 1 was rounded
    kv = LocalStore(tmp_path / "nulls")
    big = 2**53 + 1
    first = pa.table({"g": ["a"] * 3, "k": pa.array([big, 2, 3], pa.int64())})
    second = pa.table({"g": ["b"] * 3, "k": pa.array([big + 2, None, 3], pa.int64())})
    with monkeypatch.context() as m:
        if not recorded:  # a dataset written before nullable dtypes were recorded
            m.setattr("dataset_kit.io.write.with_null_dtypes", lambda table: table)
        dk.write_dataset(first, store=kv, dataset_uuid="src", partition_on=["g"])
        dk.update_dataset(second, store=kv, dataset_uuid="src")
    seen: list[str] = []

    def identity(frame: pd.DataFrame) -> pd.DataFrame:
        seen.append(str(frame["k"].dtype))
        return frame

    dk.pipelines.map_partitions(
        identity, source="src", target="copy", store=kv, partition_on=["g"]
    ).compute(scheduler="sync")
    assert sorted(seen) == (["Int64", "Int64"] if recorded else ["Int64", "int64"])
    copy = dk.read_table(store=kv, dataset_uuid="copy")
    assert copy["k"].dtype == "Int64" and copy["k"].tolist() == [big, 2, 3, big + 2, pd.NA, 3]
    pd.testing.assert_frame_equal(copy, dk.read_table(store=kv, dataset_uuid="src"))
