"""Secondary index files: their value types, float values, indexable types, pruning."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataset_kit as dk
from dataset_kit.core.schema import column_entry, plateau_schema
from dataset_kit.exceptions import InvalidInputError
from dataset_kit.io.index import (
    PARTITION_COLUMN,
    check_indexable,
    distinct_values,
    empty_index,
    index_value_type,
    load_index,
    merge_index,
)
from dataset_kit.store import MemoryStore

_LABELS = pa.list_(pa.string())


# --------------------------------------------------------------------------- value types
def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i8": np.array([1], dtype="int8"),
            "I16": pd.array([1], dtype="Int16"),
            "u32": np.array([1], dtype="uint32"),
            "f32": np.array([1.5], dtype="float32"),
            "F32": pd.array([1.5], dtype="Float32"),
            "b": [True],
            "str": ["a"],
            "string": pd.array(["a"], dtype="string"),
            "string_py": pd.array(["a"], dtype=pd.StringDtype("python")),
            "object": pd.Series(["a"], dtype=object),
            "cat": pd.Categorical(["a"]),
            "cat_int": pd.Categorical([1]),
            "bytes": [b"a"],
            "date": [dt.date(2024, 1, 1)],
            "ts": pd.to_datetime(["2024-01-01"]),
            "tz": pd.to_datetime(["2024-01-01"]).tz_localize("UTC"),
        }
    )


@pytest.mark.parametrize("arrow_only", [False, True], ids=["pandas", "arrow"])
def test_index_value_type_is_the_common_metadata_type(arrow_only: bool) -> None:
    """plateau refuses to update an index whose type differs from the column's type in
    its schema: the index type must be what _common_metadata says (by pandas dtype)."""
    schema = pa.Schema.from_pandas(_frame(), preserve_index=False)
    if arrow_only:
        schema = schema.remove_metadata()
    normalized = plateau_schema(schema, [])
    for f in schema:
        got = index_value_type(f.type, column_entry(schema, f.name))
        assert got == normalized.field(f.name).type, f.name
    if not arrow_only:
        entry = column_entry(schema, "string")
        assert index_value_type(schema.field("string").type, entry) == pa.string()
        assert index_value_type(schema.field("str").type, column_entry(schema, "str")) == (
            pa.large_string()
        )


def test_empty_and_loaded_indices_take_the_pandas_string_type() -> None:
    entry = {"name": "s", "numpy_type": "string", "pandas_type": "unicode"}
    assert empty_index("s", pa.large_string(), pandas_entry=entry).schema.field(0).type == (
        pa.string()
    )
    assert empty_index("s", pa.large_string()).schema.field(0).type == pa.large_string()
    store = MemoryStore()
    old = pa.table({"s": pa.array(["a", "b"], pa.large_string()), PARTITION_COLUMN: [["x"], ["y"]]})
    sink = pa.BufferOutputStream()
    pq.write_table(old, sink)
    store.put("ds/indices/s/old.by-dataset-index.parquet", sink.getvalue().to_pybytes())
    ref = "ds/indices/s/old.by-dataset-index.parquet"
    loaded = load_index(store, "ds", "s", ref, pa.large_string(), pandas_entry=entry)
    assert loaded.schema.field("s").type == pa.string()  # cast on load ...
    merged = merge_index(loaded, "s", added={"z": pa.array(["a"], pa.large_string())})
    assert merged.schema.field("s").type == pa.string()  # ... and on merge
    assert merged.to_pylist() == [
        {"s": "a", PARTITION_COLUMN: ["x", "z"]},
        {"s": "b", PARTITION_COLUMN: ["y"]},
    ]
    legacy = load_index(store, "ds", "s", {"a": ["x"]}, pa.large_string(), pandas_entry=entry)
    assert legacy.schema.field("s").type == pa.string()


# --------------------------------------------------------------------------- float values
@pytest.mark.parametrize("t", [pa.float16(), pa.float32(), pa.float64()])
def test_distinct_values_fold_negative_zero_and_drop_nan(t: pa.DataType) -> None:
    values = pa.array(np.array([-0.0, 0.0, np.nan, 1.0, -0.0], dtype=t.to_pandas_dtype()))
    column = pa.chunked_array([values, pa.array([None], t)])
    got = distinct_values(column, t)
    assert got.type == pa.float64()
    assert sorted(got.to_pylist()) == [0.0, 1.0]
    assert all(np.copysign(1.0, v) > 0 for v in got.to_pylist())  # +0.0, not -0.0
    only_nan = distinct_values(pa.array([np.nan, None], t), t)
    assert only_nan.type == pa.float64() and len(only_nan) == 0


def test_merge_index_heals_an_index_of_an_older_release() -> None:
    """Older releases wrote -0.0 beside 0.0 (plateau keeps one of the two: rows lost) and
    NaN entries (plateau never indexes NaN)."""
    old = pa.table(
        {
            "f": pa.array([-0.0, 0.0, 1.0, float("nan")]),
            PARTITION_COLUMN: pa.array([["a", "b"], ["a"], ["d"], ["c"]], _LABELS),
        }
    )
    merged = merge_index(old, "f", added={"e": pa.array([-0.0, 2.0])}, removed=["d"])
    assert merged.to_pylist() == [
        {"f": 0.0, PARTITION_COLUMN: ["a", "b", "e"]},
        {"f": 2.0, PARTITION_COLUMN: ["e"]},
    ]
    assert np.copysign(1.0, merged.column("f")[0].as_py()) > 0
    # a plain merge is unchanged by the normalization
    plain = merge_index(merged, "f", added={"g": pa.array([3.0])})
    assert plain.column("f").to_pylist() == [0.0, 2.0, 3.0]


def _table_with_zeros() -> pa.Table:
    f = [0.0, -0.0, float("nan"), None, 1.5, -2.0, -0.0, float("nan"), 0.0, None]
    return pa.table({"p": list(range(10)), "f": pa.array(f, pa.float64()), "k": list(range(10))})


_FLOAT_PREDICATES: list[Any] = [
    [[("f", "==", 0.0)]],
    [[("f", "==", -0.0)]],
    [[("f", "in", [-0.0])]],
    [[("f", "in", [0.0, 1.5])]],
    [[("f", "<=", 0.0)]],
    [[("f", "<", 0.0)]],
    [[("f", ">=", -0.0)]],
    [[("f", ">", -0.0)]],
    [[("f", "==", float("nan"))]],
    [[("f", "!=", 0.0)]],
    [[("f", "in", [float("nan"), 0.0])]],
    [[("f", "not in", [0.0])]],
    [[("f", "==", 1.5)], [("f", "==", -0.0)]],
]


@pytest.mark.parametrize("pred", _FLOAT_PREDICATES, ids=str)
def test_index_pruning_never_changes_float_results(pred: Any) -> None:
    """With and without a secondary index, every predicate returns the same rows (the
    index holds 0.0 for both zeros and no NaN)."""
    store = MemoryStore()
    table = _table_with_zeros()
    dk.write_dataset(table, store=store, dataset_uuid="plain", partition_on="p")
    dk.write_dataset(
        table, store=store, dataset_uuid="indexed", partition_on="p", secondary_indices="f"
    )
    expected = dk.read_table(store=store, dataset_uuid="plain", predicates=pred)
    got = dk.read_table(store=store, dataset_uuid="indexed", predicates=pred)
    assert sorted(got["k"]) == sorted(expected["k"])
    if pred in ([[("f", "==", 0.0)]], [[("f", "==", -0.0)]], [[("f", "in", [-0.0])]]):
        assert sorted(got["k"]) == [0, 1, 6, 8]


# --------------------------------------------------------------------------- indexable types
@pytest.mark.parametrize(
    "t",
    [
        pa.bool_(),
        pa.int8(),
        pa.uint64(),
        pa.float16(),
        pa.float32(),
        pa.string(),
        pa.large_string(),
        pa.binary(),
        pa.date32(),
        pa.date64(),
        pa.timestamp("us"),
        pa.timestamp("ns", tz="Europe/Berlin"),
        pa.dictionary(pa.int8(), pa.string()),
    ],
    ids=str,
)
def test_types_plateau_can_index_are_accepted(t: pa.DataType) -> None:
    check_indexable("x", t, [])


@pytest.mark.parametrize(
    "t",
    [
        pa.decimal128(5, 2),
        pa.decimal256(40, 2),
        pa.time32("s"),
        pa.time64("us"),
        pa.duration("s"),
        pa.month_day_nano_interval(),
        pa.large_binary(),
        pa.binary(4),
        pa.string_view(),
        pa.dictionary(pa.int8(), pa.decimal128(5, 2)),
    ],
    ids=str,
)
def test_types_plateau_cannot_index_are_refused(t: pa.DataType) -> None:
    with pytest.raises(InvalidInputError, match=r"column 'x' of type .*plateau") as info:
        check_indexable("x", t, [])
    assert str(t) in str(info.value)


def test_an_unindexable_type_is_refused_before_anything_is_written() -> None:
    store = MemoryStore()
    df = pd.DataFrame(
        {
            "p": [1],
            "d": pd.array([decimal.Decimal("1.5")], dtype=pd.ArrowDtype(pa.decimal128(4, 1))),
        }
    )
    with pytest.raises(InvalidInputError, match="decimal128"):
        dk.write_dataset(df, store=store, dataset_uuid="x", partition_on="p", secondary_indices="d")
    assert list(store.iter_keys("")) == []


def test_an_existing_unindexable_index_blocks_appends_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older release accepted such an index: appends are refused (plateau could not
    update the dataset anyway), partition removals still work."""
    from dataset_kit.io import write as _write

    store = MemoryStore()
    df = pd.DataFrame({"p": [1, 2], "t": pd.to_timedelta([1, 2], unit="s")})
    with monkeypatch.context() as m:
        m.setattr(_write, "check_indexable", lambda *args: None)
        dk.write_dataset(df, store=store, dataset_uuid="x", partition_on="p", secondary_indices="t")
    before = set(store.iter_keys(""))
    with pytest.raises(InvalidInputError, match=r"older release.*'t'.*duration.*overwrite"):
        dk.update_dataset(df.assign(p=3), store=store, dataset_uuid="x")
    assert set(store.iter_keys("")) == before
    meta = dk.update_dataset(store=store, dataset_uuid="x", delete_scope=[{"p": 1}])
    assert meta.num_partitions == 1
