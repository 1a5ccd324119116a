"""Every supported type round-trips exactly through write -> read, as payload and as key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.testing.frames import all_types_frame
from dataset_kit.testing.predicates import pandas_mask

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


def test_nullable_dtypes_survive_append_onto_numpy_dtypes(store: object) -> None:
    # nulls appended to int64/bool columns once read back as float64 (2**53 + 1 rounded)
    # and object; a nullable dtype on either side now wins, as in pd.concat
    first = pd.DataFrame(
        {
            "i": np.array([2**53 + 1], "int64"),
            "b": np.array([True]),
            "n": pd.array([None], dtype="Int8"),
        }
    )
    second = pd.DataFrame(
        {
            "i": pd.array([2**53 + 3, None], dtype="Int64"),
            "b": pd.array([None, False], dtype="boolean"),
            "n": np.array([2**40, 5], "int64"),
        }
    )
    dk.write_dataset(first, store=store, dataset_uuid="nullable")
    dk.update_dataset(second, store=store, dataset_uuid="nullable")
    out = dk.read_table(store=store, dataset_uuid="nullable")
    assert_frame_equal(out, pd.concat([first, second], ignore_index=True))
    assert out["i"].dtype == "Int64" and out["i"].tolist()[:2] == [2**53 + 1, 2**53 + 3]
    sel = dk.read_table(store=store, dataset_uuid="nullable", predicates=[[("i", "==", None)]])
    assert sel["b"].dtype == "boolean" and sel["b"].tolist() == [False]


def _ordered(values: list[str]) -> pd.Categorical:
    return pd.Categorical(values, categories=["lo", "mid", "hi"], ordered=True)


def test_ordered_categoricals_round_trip(store: object) -> None:
    df = pd.DataFrame({"c": _ordered(["hi", "lo", "mid"]), "p": _ordered(["lo", "hi", "hi"])})
    df["x"] = [1, 2, 3]
    dk.write_dataset(df, store=store, dataset_uuid="ord", partition_on="p")
    out = dk.read_table(store=store, dataset_uuid="ord")
    assert_frame_equal(out.sort_values("x", ignore_index=True), df[out.columns])
    assert out["c"].max() == "hi" and out["p"].min() == "lo"
    arrow = dk.read_table(store=store, dataset_uuid="ord", output="arrow")
    assert arrow.schema.field("c").type.ordered and arrow.schema.field("p").type.ordered
    frames = dk.read_dataset_as_dataframes(store=store, dataset_uuid="ord")
    assert all(f["c"].dtype == df["c"].dtype and f["p"].dtype == df["p"].dtype for f in frames)


def test_float16_round_trips_as_payload_and_partition_column(store: object) -> None:
    h = np.array([1.5, 2.0, 0.1, -0.0, 65504.0], "float16")
    df = pd.DataFrame({"p": h, "h": h[::-1].copy(), "x": range(5)})
    dk.write_dataset(df, store=store, dataset_uuid="h", partition_on="p", secondary_indices="h")
    out = dk.read_table(store=store, dataset_uuid="h")
    expected = df.sort_values(["p", "x"], ignore_index=True)
    assert_frame_equal(out, expected)
    for column in ("p", "h"):
        for op, value in [(">", 1.6), ("==", 0.1), ("==", np.float16(0.1)), ("in", [0.0, 2])]:
            sel = dk.read_table(store=store, dataset_uuid="h", predicates=[[(column, op, value)]])
            ref = df[pandas_mask(df, [[(column, op, value)]]).to_numpy()]
            assert sorted(sel["x"]) == sorted(ref["x"]), (column, op, value)
    groups = dk.read_dataset_as_dataframes(store=store, dataset_uuid="h", dispatch_by=["p"])
    assert [g["p"].iloc[0] for g in groups] == sorted(h)
