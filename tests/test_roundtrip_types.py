"""Every supported type round-trips exactly through write -> read, as payload and as key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.testing.frames import all_types_frame

PARTITION_COLUMNS = [
    "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64", "b", "s", "S", "cat",
    "d", "ts", "tsns", "tz", "I", "B", "bin",
]  # fmt: skip


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> dk.store.Store:  # type: ignore[name-defined]
    if request.param == "memory":
        return dk.open_store("memory://")
    return dk.open_store(str(tmp_path))


def test_payload_roundtrip_is_exact(store: object) -> None:
    df = all_types_frame()
    dk.write_dataset(df, store=store, dataset_uuid="payload")
    assert_frame_equal(dk.read_table(store=store, dataset_uuid="payload"), df)


def test_arrow_roundtrip_is_exact(store: object) -> None:
    table = pa.Table.from_pandas(all_types_frame(), preserve_index=False)
    dk.write_dataset(table, store=store, dataset_uuid="arrow")
    out = dk.read_table(store=store, dataset_uuid="arrow", output="arrow")
    assert out.schema.remove_metadata() == table.schema.remove_metadata()
    assert out.to_pylist() == table.to_pylist()


@pytest.mark.parametrize("column", PARTITION_COLUMNS)
def test_partition_column_roundtrip_is_exact(store: object, column: str) -> None:
    df = all_types_frame()
    df = df[df[column].notna()].reset_index(drop=True)
    dk.write_dataset(df, store=store, dataset_uuid="p", partition_on=[column])
    out = dk.read_table(store=store, dataset_uuid="p")
    assert_frame_equal(
        out.sort_values("key").reset_index(drop=True), df.sort_values("key").reset_index(drop=True)
    )
    # every value selects exactly its rows
    for value in df[column].drop_duplicates():
        if isinstance(value, float) and value == 0:
            continue  # -0.0 == 0.0
        sel = dk.read_table(store=store, dataset_uuid="p", predicates=[[(column, "==", value)]])
        assert len(sel) == int((df[column] == value).sum()), value


def test_string_dtypes_survive_append(store: object) -> None:
    first = pd.DataFrame({"s": pd.array(["a"], dtype="str"), "S": pd.array(["x"], dtype="string")})
    second = pd.DataFrame({"s": pd.array(["b"], dtype="string"), "S": pd.array(["y"], dtype="str")})
    dk.write_dataset(first, store=store, dataset_uuid="strs")
    dk.update_dataset(second, store=store, dataset_uuid="strs")
    out = dk.read_table(store=store, dataset_uuid="strs")
    assert out["s"].dtype == first["s"].dtype
    assert out["S"].dtype == first["S"].dtype
    assert out["s"].tolist() == ["a", "b"]


def test_categories_merge_across_appends(store: object) -> None:
    a = pd.DataFrame({"c": pd.Categorical(["x", "y"], categories=["y", "x"])})
    b = pd.DataFrame({"c": pd.Categorical(["z"], categories=["z"])})
    dk.write_dataset(a, store=store, dataset_uuid="cats")
    dk.update_dataset(b, store=store, dataset_uuid="cats")
    out = dk.read_table(store=store, dataset_uuid="cats")
    assert list(out["c"].cat.categories) == ["y", "x", "z"]
    assert out["c"].tolist() == ["x", "y", "z"]


def test_integer_widening_reads_old_partitions_exactly(store: object) -> None:
    dk.write_dataset(pd.DataFrame({"a": np.array([1, 2], "int8")}), store=store, dataset_uuid="w")
    dk.update_dataset(
        pd.DataFrame({"a": np.array([2**40], "int64")}), store=store, dataset_uuid="w"
    )
    out = dk.read_table(store=store, dataset_uuid="w")
    assert out["a"].dtype == np.int64
    assert out["a"].tolist() == [1, 2, 2**40]
