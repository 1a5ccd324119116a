"""Schema helpers for datasets other tools wrote: nullable dtypes from data-file hints."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from dataset_kit.core.schema import (
    may_take_nullable,
    pandas_metadata,
    plateau_schema,
    with_nullable_from,
)


def _numpy_types(schema: pa.Schema) -> dict[str, str]:
    meta = pandas_metadata(schema)
    assert meta is not None
    return {c["name"]: c["numpy_type"] for c in meta["columns"]}


def _schema(df: pd.DataFrame) -> pa.Schema:
    return pa.Schema.from_pandas(df, preserve_index=False)


def _plateau_view() -> tuple[pa.Schema, pa.Schema]:
    """(_common_metadata as plateau writes it, the schema of one of its data files)."""
    df = pd.DataFrame(
        {
            "p": [1],
            "F32": pd.array([0.5], dtype="Float32"),
            "U8": pd.array([1], dtype="UInt8"),
            "B": pd.array([True], dtype="boolean"),
            "f": [0.5],
            "s": ["x"],
        }
    )
    data_file = _schema(df.drop(columns="p"))
    return plateau_schema(_schema(df), ["p"]), data_file


def test_hints_give_the_nullable_dtype_of_the_schemas_type() -> None:
    cm, data_file = _plateau_view()
    assert _numpy_types(cm)["F32"] == "float64" and _numpy_types(cm)["U8"] == "uint64"
    merged = with_nullable_from(cm, [data_file])
    assert merged.types == cm.types and merged.names == cm.names
    assert _numpy_types(merged) == {
        "p": "int64",
        "F32": "Float64",  # as plateau's read: Float32 files + float64 _common_metadata
        "U8": "UInt64",
        "B": "boolean",
        "f": "float64",
        "s": "str",
    }
    df = merged.empty_table().to_pandas()
    assert str(df["F32"].dtype) == "Float64" and str(df["U8"].dtype) == "UInt64"


def test_hints_without_news_return_the_schema_itself() -> None:
    cm, _ = _plateau_view()
    assert with_nullable_from(cm, []) is cm
    numpy_file = _schema(pd.DataFrame({"F32": [0.5], "U8": [1]}))
    assert with_nullable_from(cm, [numpy_file]) is cm
    broken = numpy_file.with_metadata({b"pandas": b"{not json"})
    assert with_nullable_from(cm, [broken]) is cm  # a corrupt hint decides nothing


def test_hints_for_a_schema_without_pandas_metadata() -> None:
    bare = pa.schema([("x", pa.float64()), ("n", pa.int64())])
    hint = _schema(pd.DataFrame({"x": pd.array([0.5], dtype="Float64")}))
    merged = with_nullable_from(bare, [hint])
    assert _numpy_types(merged) == {"x": "Float64", "n": "int64"}


def test_may_take_nullable() -> None:
    cm, data_file = _plateau_view()
    assert may_take_nullable(cm)
    assert may_take_nullable(cm, skip=["p"])
    assert not may_take_nullable(with_nullable_from(cm, [data_file]), skip=["p", "f"])
    assert not may_take_nullable(_schema(pd.DataFrame({"s": ["x"], "d": pd.to_datetime([0])})))
    assert may_take_nullable(pa.schema([("b", pa.bool_())]))
