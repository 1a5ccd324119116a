"""Dask DataFrame I/O: exact dtypes, pruning that reaches the reader, divisions, writes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import (
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidInputError,
    PartitionValueError,
)
from dataset_kit.io import read as _read
from dataset_kit.pipelines import Job
from dataset_kit.pipelines.ddf import read_dataset_as_ddf, update_from_ddf, write_ddf
from dataset_kit.store import Capability, DelegatingStore, MemoryStore, Store
from dataset_kit.testing.frames import all_types_frame


class CountingStore(DelegatingStore):
    """Count data-blob reads (no local paths: every read goes through ``get``)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, capabilities=inner.capabilities - {Capability.LOCAL_PATH})
        self.blob_reads: list[str] = []
        self._lock = threading.Lock()

    def _get(self, key: str) -> bytes:
        if key.endswith(".parquet"):
            with self._lock:
                self.blob_reads.append(key)
        return super()._get(key)


def data_blobs(store: Store, uuid: str) -> set[str]:
    return {k for k in store.iter_keys(naming.dataset_prefix(uuid)) if k.endswith(".parquet")}


def sales(n_days: int = 4, n_shops: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"day": d, "shop": s, "qty": d * 10 + s, "name": f"n{d}{s}"}
            for d in range(n_days)
            for s in range(n_shops)
        ]
    )


@pytest.fixture
def counting() -> CountingStore:
    store = CountingStore(MemoryStore())
    dk.write_dataset(sales(), store=store, dataset_uuid="sales", partition_on=["day"])
    store.blob_reads.clear()
    return store


@pytest.mark.parametrize("convert_string", [True, False])
@pytest.mark.parametrize("partition_on", [None, ["s", "cat"]])
def test_dtypes_equal_the_eager_reader(
    tmp_path: Path, convert_string: bool, partition_on: list[str] | None
) -> None:
    store = dk.open_store(str(tmp_path))
    df = all_types_frame()
    dk.write_dataset(df, store=store, dataset_uuid="t", partition_on=partition_on)
    dk.update_dataset(df.iloc[:2], store=store, dataset_uuid="t")
    eager = dk.read_table(store=store, dataset_uuid="t")
    with dask.config.set({"dataframe.convert-string": convert_string}):
        ddf = read_dataset_as_ddf(store=store, dataset_uuid="t")
        assert ddf.dtypes.equals(eager.dtypes)  # the meta
        got = ddf.compute(scheduler="sync")
    assert_frame_equal(got.reset_index(drop=True), eager)
    for name, dtype in eager.dtypes.items():  # categories included
        assert ddf._meta[name].dtype == dtype, name


def write_nulls_in_some_blobs(store: Store) -> None:
    """Arrow data (no pandas dtypes) whose int and bool columns hold nulls in one blob."""
    big = 2**53 + 1
    first = pa.table({"g": ["a"] * 3, "k": pa.array([big, 2, 3]), "b": [True, False, True]})
    second = pa.table({"g": ["b"] * 3, "k": pa.array([big + 2, None, 3]), "b": [True, None, True]})
    dk.write_dataset(first, store=store, dataset_uuid="nulls", partition_on=["g"])
    dk.update_dataset(second, store=store, dataset_uuid="nulls")


def test_meta_and_partitions_agree_when_some_blobs_hold_nulls() -> None:
    # the meta said int64/bool, the partition with nulls was float64 (rounded)/object
    store = MemoryStore()
    write_nulls_in_some_blobs(store)
    eager = dk.read_table(store=store, dataset_uuid="nulls")
    ddf = read_dataset_as_ddf(store=store, dataset_uuid="nulls")
    assert ddf._meta.dtypes.to_dict() == eager.dtypes.to_dict()
    assert eager["k"].dtype == "Int64" and eager["b"].dtype == "boolean"
    for i in range(ddf.npartitions):
        part = ddf.get_partition(i).compute(scheduler="sync")
        assert part.dtypes.to_dict() == eager.dtypes.to_dict(), i
    assert ddf["k"].compute(scheduler="sync").tolist() == [2**53 + 1, 2, 3, 2**53 + 3, pd.NA, 3]


def test_nulls_written_without_nullable_dtypes_are_exact_in_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a dataset written before nullable dtypes were recorded: exact (Int64, not float64)
    # where a partition holds nulls; the computed frame equals the eager reader
    store = MemoryStore()
    with monkeypatch.context() as m:
        m.setattr("dataset_kit.io.write.with_null_dtypes", lambda table: table)
        write_nulls_in_some_blobs(store)
    ddf = read_dataset_as_ddf(store=store, dataset_uuid="nulls")
    parts = [ddf.get_partition(i).compute(scheduler="sync") for i in range(ddf.npartitions)]
    assert [str(p["k"].dtype) for p in parts] == ["int64", "Int64"]
    assert parts[1]["k"].tolist() == [2**53 + 3, pd.NA, 3]
    got = ddf.compute(scheduler="sync").reset_index(drop=True)
    assert_frame_equal(got, dk.read_table(store=store, dataset_uuid="nulls"))


@pytest.mark.parametrize("convert_string", [True, False])
def test_columns_and_categoricals_match_the_eager_reader(
    tmp_path: Path, convert_string: bool
) -> None:
    store = dk.open_store(str(tmp_path))
    dk.write_dataset(all_types_frame(), store=store, dataset_uuid="t", partition_on="b")
    kwargs: dict[str, Any] = {"columns": ["S", "s", "b", "cat"], "categoricals": ["s"]}
    eager = dk.read_table(store=store, dataset_uuid="t", **kwargs)
    with dask.config.set({"dataframe.convert-string": convert_string}):
        ddf = read_dataset_as_ddf(store=store, dataset_uuid="t", **kwargs)
        got = ddf.compute(scheduler="sync")
    assert list(ddf.columns) == ["S", "s", "b", "cat"]
    assert not ddf["s"].cat.known and ddf["cat"].cat.known
    assert got.dtypes.drop("s").equals(eager.dtypes.drop("s"))
    assert isinstance(got["s"].dtype, pd.CategoricalDtype)
    assert isinstance(eager["s"].dtype, pd.CategoricalDtype)
    assert_frame_equal(
        got.reset_index(drop=True).astype({"s": str}), eager.astype({"s": str}), check_dtype=True
    )


def test_one_partition_per_blob_or_dispatch_group(counting: CountingStore) -> None:
    dk.update_dataset(sales(2), store=counting, dataset_uuid="sales")
    assert read_dataset_as_ddf(store=counting, dataset_uuid="sales").npartitions == 6
    by_day = read_dataset_as_ddf(store=counting, dataset_uuid="sales", dispatch_by="day")
    assert by_day.npartitions == 4
    sizes = by_day.map_partitions(len).compute(scheduler="sync").tolist()
    assert sorted(sizes) == [3, 3, 6, 6]
    single = read_dataset_as_ddf(store=counting, dataset_uuid="sales", dispatch_by=[])
    assert single.npartitions == 1 and len(single.compute(scheduler="sync")) == 18
    with pytest.raises(InvalidInputError, match="dispatch_by"):
        read_dataset_as_ddf(store=counting, dataset_uuid="sales", dispatch_by="qty")


def test_predicates_prune_blobs_before_reading(counting: CountingStore) -> None:
    ddf = read_dataset_as_ddf(
        store=counting, dataset_uuid="sales", predicates=[[("day", ">=", 2), ("qty", ">", 20)]]
    )
    assert ddf.npartitions == 2  # partition pruning when planning
    assert counting.blob_reads == []  # planning reads no data
    got = ddf.compute(scheduler="sync")
    assert sorted(got["qty"]) == [21, 22, 30, 31, 32]
    assert len(counting.blob_reads) == 2


def test_secondary_index_prunes_blobs(counting: CountingStore) -> None:
    dk.build_dataset_indices(store=counting, dataset_uuid="sales", columns="name")
    ddf = read_dataset_as_ddf(
        store=counting, dataset_uuid="sales", predicates=[[("name", "==", "n21")]]
    )
    counting.blob_reads.clear()
    assert ddf.npartitions == 1
    assert ddf.compute(scheduler="sync")["qty"].tolist() == [21]
    assert len(counting.blob_reads) == 1


def test_column_projection_reaches_the_reader(
    counting: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Any] = []
    real = _read.read_blob

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["columns"])
        return real(*args, **kwargs)

    monkeypatch.setattr(_read, "read_blob", recording)
    ddf = read_dataset_as_ddf(store=counting, dataset_uuid="sales")
    assert ddf["qty"].sum().compute(scheduler="sync") == sales()["qty"].sum()
    assert asked and all(cols == ["qty"] for cols in asked)
    asked.clear()
    got = ddf[["day", "name"]].compute(scheduler="sync")
    assert list(got.columns) == ["day", "name"]
    assert all(cols == ["name"] for cols in asked)  # "day" comes from the keys


def test_empty_selection_gives_an_empty_frame_with_dtypes(counting: CountingStore) -> None:
    ddf = read_dataset_as_ddf(store=counting, dataset_uuid="sales", predicates=[[("day", ">", 9)]])
    got = ddf.compute(scheduler="sync")
    assert got.empty
    assert got.dtypes.equals(dk.read_table(store=counting, dataset_uuid="sales").dtypes)


def test_divisions_on_a_partition_column(counting: CountingStore) -> None:
    dk.update_dataset(sales(2), store=counting, dataset_uuid="sales")
    ddf = read_dataset_as_ddf(store=counting, dataset_uuid="sales", divisions_by="day")
    assert ddf.known_divisions and ddf.divisions == (0, 1, 2, 3, 3)
    assert ddf.index.name == "day" and "day" not in ddf.columns
    assert sorted(ddf.loc[1]["qty"].compute(scheduler="sync")) == [10, 10, 11, 11, 12, 12]
    sub = read_dataset_as_ddf(
        store=counting, dataset_uuid="sales", divisions_by="day", columns=["qty"]
    )
    assert list(sub.columns) == ["qty"] and sub.npartitions == 4


@pytest.mark.parametrize("local", [True, False])
def test_divisions_from_parquet_statistics(tmp_path: Path, local: bool) -> None:
    store: Store = dk.open_store(str(tmp_path)) if local else MemoryStore()
    t0 = pd.Timestamp("2024-01-01")
    for i in (2, 0, 1):  # committed out of order
        frame = pd.DataFrame(
            {
                "ts": pd.date_range(t0 + pd.Timedelta(days=i), periods=5, freq="h")[::-1],
                "x": np.arange(5) + 10 * i,
            }
        )
        dk.update_dataset(frame, store=store, dataset_uuid="ts")
    ddf = read_dataset_as_ddf(store=store, dataset_uuid="ts", divisions_by="ts")
    assert ddf.known_divisions
    assert ddf.divisions[0] == t0 and ddf.divisions[-1] == t0 + pd.Timedelta(days=2, hours=4)
    got = ddf.compute(scheduler="sync")
    assert got.index.is_monotonic_increasing
    assert got["x"].tolist() == [4, 3, 2, 1, 0, 14, 13, 12, 11, 10, 24, 23, 22, 21, 20]
    day1 = ddf.loc[t0 + pd.Timedelta(days=1) : t0 + pd.Timedelta(days=1, hours=23)]
    assert day1.npartitions == 1 and sorted(day1["x"].compute(scheduler="sync")) == [
        10,
        11,
        12,
        13,
        14,
    ]


def test_divisions_on_a_column_not_selected(counting: CountingStore) -> None:
    ddf = read_dataset_as_ddf(store=counting, dataset_uuid="sales", columns=[], divisions_by="day")
    assert list(ddf.columns) == [] and ddf.divisions == (0, 1, 2, 3, 3)
    assert len(ddf) == 12


def test_divisions_refuse_overlapping_ranges(counting: CountingStore) -> None:
    with pytest.raises(InvalidInputError, match="not sorted across partitions"):
        read_dataset_as_ddf(store=counting, dataset_uuid="sales", divisions_by="shop")
    with pytest.raises(InvalidInputError, match="unknown column"):
        read_dataset_as_ddf(store=counting, dataset_uuid="sales", divisions_by="nope")
    cats = pd.DataFrame({"c": pd.Categorical(["a", "b"])})
    dk.write_dataset(cats, store=counting, dataset_uuid="cats")
    with pytest.raises(InvalidInputError, match="known divisions need"):
        read_dataset_as_ddf(store=counting, dataset_uuid="cats", divisions_by="c")


# ----------------------------------------------------------------------------- writing


def frame_ddf(df: pd.DataFrame, npartitions: int) -> Any:
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(df, npartitions=npartitions, sort=False)


def test_write_ddf_round_trip(tmp_path: Path) -> None:
    store = dk.open_store(str(tmp_path))
    df = all_types_frame()
    df["p"] = [1, 2, 1, 2]
    job = write_ddf(frame_ddf(df, 2), store=store, dataset_uuid="w", partition_on="p")
    assert isinstance(job, Job) and job.tasks == 2
    assert not dk.list_datasets(store)  # lazy: nothing before compute
    meta = job.compute()
    assert meta.version == 0 and meta.partition_keys == ("p",)
    assert len(data_blobs(store, "w")) == 4  # one per (dask partition, p value)
    got = dk.read_table(store=store, dataset_uuid="w")
    want = df[got.columns]
    assert_frame_equal(
        got.sort_values("key").reset_index(drop=True),
        want.sort_values("key").reset_index(drop=True),
    )
    # the same job built twice has the same (deterministic) keys
    ddf = frame_ddf(df, 2)
    a = write_ddf(ddf, store=store, dataset_uuid="w2", partition_on="p")
    b = write_ddf(ddf, store=store, dataset_uuid="w2", partition_on="p")
    assert a.key == b.key


def test_write_ddf_of_a_dataset_read_as_ddf(counting: CountingStore) -> None:
    ddf = read_dataset_as_ddf(store=counting, dataset_uuid="sales")
    ddf = ddf[ddf["qty"] % 2 == 0].assign(double=ddf["qty"] * 2)
    write_ddf(ddf, store=counting, dataset_uuid="even", partition_on="shop").compute(
        scheduler="sync"
    )
    got = dk.read_table(store=counting, dataset_uuid="even")
    assert sorted(got["double"]) == sorted(2 * q for q in sales()["qty"] if q % 2 == 0)
    assert got["name"].dtype == dk.read_table(store=counting, dataset_uuid="sales")["name"].dtype


def test_a_failing_partition_commits_nothing(tmp_path: Path) -> None:
    store = dk.open_store(str(tmp_path))
    df = pd.DataFrame({"p": [1.0, 2.0, np.nan, 4.0], "x": range(4)})
    job = write_ddf(frame_ddf(df, 4), store=store, dataset_uuid="f", partition_on="p")
    with pytest.raises(PartitionValueError):
        job.compute(scheduler="sync")
    assert "f" not in dk.list_datasets(store)
    with pytest.raises(DatasetNotFoundError):
        dk.read_table(store=store, dataset_uuid="f")
    # an overwrite that fails leaves the old version as it was
    dk.write_dataset(pd.DataFrame({"p": [9.0], "x": [9]}), store=store, dataset_uuid="f")
    job = write_ddf(
        frame_ddf(df, 4), store=store, dataset_uuid="f", partition_on="p", mode="overwrite"
    )
    with pytest.raises(PartitionValueError):
        job.compute()
    assert dk.read_table(store=store, dataset_uuid="f")["x"].tolist() == [9]
    assert dk.open_dataset(store=store, dataset_uuid="f").version == 0


def test_update_from_ddf_appends_and_deletes_in_one_commit(counting: CountingStore) -> None:
    new = sales(6).query("day >= 4")
    meta = update_from_ddf(
        frame_ddf(new, 2), store=counting, dataset_uuid="sales", delete_scope=[{"day": 0}]
    ).compute()
    assert meta.version == 1
    got = dk.read_table(store=counting, dataset_uuid="sales")
    assert sorted(got["day"].unique()) == [1, 2, 3, 4, 5]
    # creates a missing dataset
    update_from_ddf(frame_ddf(new, 1), store=counting, dataset_uuid="fresh").compute()
    assert len(dk.read_table(store=counting, dataset_uuid="fresh")) == len(new)


def test_write_errors_are_raised_when_building(counting: CountingStore) -> None:
    ddf = frame_ddf(sales(), 2)
    with pytest.raises(DatasetExistsError):
        write_ddf(ddf, store=counting, dataset_uuid="sales")
    with pytest.raises(InvalidInputError, match="unknown columns"):
        write_ddf(ddf, store=counting, dataset_uuid="x", partition_on="nope")
    with pytest.raises(InvalidInputError, match="mode"):
        write_ddf(ddf, store=counting, dataset_uuid="x", mode="append")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="dask DataFrame"):
        write_ddf(sales(), store=counting, dataset_uuid="x")
    with pytest.raises(InvalidInputError, match="partitioned on"):
        update_from_ddf(ddf, store=counting, dataset_uuid="sales", partition_on="shop")
