"""Unit and property tests of ``dataset_kit.core.metadata`` and ``core.schema`` rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgpack
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_kit.core.metadata import (
    BLOCK_FORMAT,
    DatasetMetadata,
    parse_json,
    parse_msgpack_zstd,
)
from dataset_kit.core.schema import (
    file_schema_metadata,
    merge_schemas,
    pandas_metadata,
    plateau_schema,
    schema_from_b64,
    schema_to_b64,
    type_family,
    with_nullable_dtypes,
)
from dataset_kit.exceptions import DatasetError, MetadataFormatError, SchemaMismatchError

UUID = "ds"


def _sample() -> DatasetMetadata:
    schema = pa.Schema.from_pandas(
        pd.DataFrame({"p": [1], "x": [1.5], "c": pd.Categorical(["a"])}), preserve_index=False
    )
    return DatasetMetadata(
        uuid=UUID,
        partitions={"p=1/aa": "ds/table/p=1/aa.parquet", "p=2/bb": "ds/table/p=2/bb.parquet"},
        partition_keys=("p",),
        indices={"x": "ds/indices/x/2024.by-dataset-index.parquet"},
        metadata={"creation_time": "2024-01-01T00:00:00+00:00", "user": {"a": [1, 2]}},
        schema=schema,
        version=7,
        parent=6,
        history_start=2,
        commit={"id": "abc", "operation": "append"},
        stats={"p=1/aa": (10, 100), "p=2/bb": (20, 200)},
        categories={"c": pa.array(["a", "b"])},
    )


def _load(data: bytes) -> DatasetMetadata:
    return DatasetMetadata.from_dict(parse_json(data, what="doc"), dataset_uuid=UUID)


# --------------------------------------------------------------------------- round trips
def test_sample_round_trip() -> None:
    meta = _sample()
    assert _load(meta.to_json()) == meta


def test_document_is_kartothek_v4() -> None:
    doc = _sample().to_dict()
    assert doc["dataset_metadata_version"] == 4
    assert doc["dataset_uuid"] == UUID
    assert doc["partition_keys"] == ["p"]
    assert doc["partitions"]["p=1/aa"] == {"files": {"table": "ds/table/p=1/aa.parquet"}}
    assert doc["indices"] == {"x": "ds/indices/x/2024.by-dataset-index.parquet"}
    assert doc["metadata"]["creation_time"]
    assert doc["dataset_kit"]["format"] == BLOCK_FORMAT
    assert doc["dataset_kit"]["version"] == 7


def test_foreign_document_without_block() -> None:
    doc = _sample().to_dict()
    del doc["dataset_kit"]
    meta = DatasetMetadata.from_dict(doc, dataset_uuid=UUID)
    assert meta.foreign
    assert meta.version is None
    assert meta.schema is None
    assert dict(meta.partitions) == dict(_sample().partitions)
    assert meta.partition_keys == ("p",)
    assert not _sample().foreign


def test_partition_keys_derived_from_labels_when_absent() -> None:
    doc = _sample().to_dict()
    del doc["partition_keys"]
    del doc["dataset_kit"]
    assert DatasetMetadata.from_dict(doc, dataset_uuid=UUID).partition_keys == ("p",)


def test_implicit_partitions_from_listing() -> None:
    doc = _sample().to_dict()
    del doc["partitions"]
    del doc["dataset_kit"]
    listing = {"p=3/cc": "ds/table/p=3/cc.parquet"}
    meta = DatasetMetadata.from_dict(doc, dataset_uuid=UUID, partitions_from_listing=listing)
    assert dict(meta.partitions) == listing
    with pytest.raises(MetadataFormatError):
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)


def test_msgpack_zstd_document() -> None:
    doc = _sample().to_dict()
    data = zstandard.ZstdCompressor().compress(msgpack.packb(doc))
    assert DatasetMetadata.from_dict(parse_msgpack_zstd(data, what="m"), dataset_uuid=UUID) == (
        _sample()
    )
    with pytest.raises(MetadataFormatError):
        parse_msgpack_zstd(b"not zstd", what="m")
    with pytest.raises(MetadataFormatError):
        parse_msgpack_zstd(data[: len(data) // 2], what="m")


_text = st.text(max_size=20)
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=15,
)


@st.composite
def _metadata(draw: st.DrawFn) -> DatasetMetadata:
    partitions = draw(st.dictionaries(_text, _text, max_size=8))
    version = draw(st.integers(0, 2**40))
    parent = draw(
        st.one_of(st.none(), st.integers(0, max(version - 1, 0)).filter(lambda p: p < version))
    )
    labels = list(partitions)
    stats = {
        lb: (draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40)))
        for lb in labels
        if draw(st.booleans())
    }
    return DatasetMetadata(
        uuid=UUID,
        partitions=partitions,
        partition_keys=tuple(draw(st.lists(_text, max_size=3))),
        table_name=draw(st.sampled_from(["table", "core", "t-1"])),
        indices=draw(st.dictionaries(_text, _text, max_size=3)),
        metadata=draw(st.dictionaries(_text, _json, max_size=4)),
        schema=draw(st.sampled_from([None, pa.schema([("a", pa.int8()), ("b", pa.string())])])),
        version=version,
        parent=parent,
        history_start=draw(st.integers(0, version)),
        commit=draw(st.dictionaries(_text, _json_scalars, max_size=3)),
        stats=stats,
        tombstone=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None)
@given(_metadata())
def test_to_dict_from_dict_round_trip(meta: DatasetMetadata) -> None:
    assert DatasetMetadata.from_dict(meta.to_dict(), dataset_uuid=UUID) == meta
    # and through the serialized bytes
    assert _load(meta.to_json()) == meta


def test_with_creation_time_keeps_existing() -> None:
    meta = _sample()
    assert meta.with_creation_time() is meta
    fresh = DatasetMetadata(uuid=UUID).with_creation_time()
    assert "creation_time" in fresh.metadata
    assert next(iter(fresh.metadata)) == "creation_time"


# --------------------------------------------------------------------------- errors
def _sample_doc() -> dict[str, Any]:
    return json.loads(_sample().to_json())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(dataset_metadata_version=5),
        lambda d: d.update(dataset_metadata_version=3),
        lambda d: d.update(dataset_metadata_version="4"),
        lambda d: d.pop("dataset_metadata_version"),
        lambda d: d.update(dataset_uuid="other"),
        lambda d: d.update(metadata=[1]),
        lambda d: d.update(partitions=[1]),
        lambda d: d.update(partitions={"a": {"files": {}}}),
        lambda d: d.update(partitions={"a": {"files": {"t1": "k1", "t2": "k2"}}}),
        lambda d: d.update(partitions={"a": {"files": {"t1": 5}}}),
        lambda d: d.update(partitions={"a": 1}),
        lambda d: d.update(partitions={"a": {"files": {"t1": "k"}}, "b": {"files": {"t2": "k"}}}),
        lambda d: d.update(partition_keys="p"),
        lambda d: d.update(partition_keys=[1]),
        lambda d: d.update(indices=[1]),
        lambda d: d.update(indices={"x": 5}),
        lambda d: d.update(dataset_kit=[1]),
        lambda d: d["dataset_kit"].update(format=BLOCK_FORMAT + 1),
        lambda d: d["dataset_kit"].update(format="1"),
        lambda d: d["dataset_kit"].pop("format"),
        lambda d: d["dataset_kit"].pop("version"),
        lambda d: d["dataset_kit"].update(version=-1),
        lambda d: d["dataset_kit"].update(version=True),
        lambda d: d["dataset_kit"].update(version="7"),
        lambda d: d["dataset_kit"].update(parent=7),
        lambda d: d["dataset_kit"].update(parent="6"),
        lambda d: d["dataset_kit"].update(history_start=-2),
        lambda d: d["dataset_kit"].update(commit=[]),
        lambda d: d["dataset_kit"].update(stats=[]),
        lambda d: d["dataset_kit"].update(stats={"p=1/aa": ["x", 1]}),
        lambda d: d["dataset_kit"].update(schema="not base64!"),
        lambda d: d["dataset_kit"].update(schema="aGVsbG8="),
        lambda d: d["dataset_kit"].update(schema=5),
        lambda d: d["dataset_kit"].update(categories={"c": "aGVsbG8="}),
        lambda d: d["dataset_kit"].update(categories=[1]),
        lambda d: d["dataset_kit"].update(categories={"c": 5}),
    ],
)
def test_invalid_documents(mutate: Any) -> None:
    doc = _sample_doc()
    mutate(doc)
    with pytest.raises(MetadataFormatError) as info:
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)
    assert isinstance(info.value, DatasetError)
    assert isinstance(info.value, ValueError)
    assert repr(UUID) in str(info.value) or "invalid" in str(info.value)


def test_newer_block_format_message() -> None:
    doc = _sample_doc()
    doc["dataset_kit"]["format"] = BLOCK_FORMAT + 1
    with pytest.raises(MetadataFormatError, match="newer"):
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)


def test_non_string_table_name_rejected() -> None:
    doc = _sample_doc()
    doc["partitions"] = {}
    doc["dataset_kit"]["table"] = 5
    with pytest.raises(MetadataFormatError):
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)


@pytest.mark.parametrize("data", [b"", b"garbage", b"{", b'{"a": }', b"\xff\xfe", b"[" * 5000])
def test_parse_json_rejects(data: bytes) -> None:
    with pytest.raises(MetadataFormatError, match="not valid JSON"):
        parse_json(data, what="doc")


@pytest.mark.parametrize("doc", [None, [], 5, "x", True])
def test_non_object_document(doc: Any) -> None:
    with pytest.raises(MetadataFormatError, match="JSON object"):
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)


def _only_metadata_format_error(data: bytes) -> None:
    try:
        _load(data)
    except MetadataFormatError:
        pass


_GOOD = _sample().to_json()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_GOOD) - 1))
def test_truncated_documents(cut: int) -> None:
    with pytest.raises(MetadataFormatError):
        _load(_GOOD[:cut])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_GOOD) - 1), st.binary(min_size=1, max_size=4))
def test_corrupted_bytes(pos: int, junk: bytes) -> None:
    _only_metadata_format_error(_GOOD[:pos] + junk + _GOOD[pos + len(junk) :])


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


_DOC = _sample_doc()
_DOC_PATHS = [p for p in _paths(_DOC) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_DOC_PATHS), _json, st.booleans())
def test_wrong_types_anywhere(path: tuple[Any, ...], value: Any, delete: bool) -> None:
    doc = copy.deepcopy(_DOC)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _only_metadata_format_error(orjson.dumps(doc))


def test_huge_and_deeply_nested_documents() -> None:
    deep = b'{"a":' * 2000 + b"1" + b"}" * 2000
    with pytest.raises(MetadataFormatError):
        _load(deep)
    doc = _sample_doc()
    nested: Any = 1
    for _ in range(200):
        nested = {"n": nested}
    doc["metadata"]["deep"] = nested
    doc["metadata"]["big"] = "x" * 5_000_000
    meta = _load(orjson.dumps(doc))
    assert len(meta.metadata["big"]) == 5_000_000
    doc["dataset_kit"]["format"] = 10**30
    _only_metadata_format_error(json.dumps(doc).encode())
    doc = _sample_doc()
    doc["partitions"] = {
        f"p={i}/x{i}": {"files": {"table": f"ds/table/p={i}/x{i}.parquet"}} for i in range(100_000)
    }
    assert _load(orjson.dumps(doc)).num_partitions == 100_000


# --------------------------------------------------------------------------- schema rules
def _s(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(fields))


DICT_STR = pa.dictionary(pa.int8(), pa.large_string())

_MERGE_OK = [
    (pa.int8(), pa.int64(), pa.int64()),
    (pa.int64(), pa.int8(), pa.int64()),
    (pa.int16(), pa.int32(), pa.int32()),
    (pa.uint8(), pa.uint32(), pa.uint32()),
    (pa.uint64(), pa.uint8(), pa.uint64()),
    (pa.float32(), pa.float64(), pa.float64()),
    (pa.float64(), pa.float32(), pa.float64()),
    (pa.string(), pa.large_string(), pa.string()),
    (pa.large_string(), pa.string(), pa.large_string()),
    (DICT_STR, pa.large_string(), DICT_STR),
    (pa.large_string(), DICT_STR, pa.large_string()),
    (pa.binary(), pa.large_binary(), pa.binary()),
    # timestamps keep the dataset's unit (io.write converts new data exactly, or refuses)
    (pa.timestamp("ms"), pa.timestamp("ns"), pa.timestamp("ms")),
    (pa.timestamp("ns"), pa.timestamp("s"), pa.timestamp("ns")),
    (pa.timestamp("s", tz="UTC"), pa.timestamp("us", tz="UTC"), pa.timestamp("s", tz="UTC")),
    (pa.list_(pa.int8()), pa.list_(pa.int64()), pa.list_(pa.int64())),
    (pa.large_list(pa.int64()), pa.list_(pa.int8()), pa.large_list(pa.int64())),
    (pa.list_(pa.timestamp("us")), pa.list_(pa.timestamp("ns")), pa.list_(pa.timestamp("us"))),
    (pa.int64(), pa.null(), pa.int64()),
    (pa.null(), pa.large_string(), pa.large_string()),
    (pa.null(), pa.null(), pa.null()),
    (pa.bool_(), pa.bool_(), pa.bool_()),
    (pa.date32(), pa.date32(), pa.date32()),
]


@pytest.mark.parametrize(("current", "incoming", "expected"), _MERGE_OK, ids=str)
def test_merge_schemas_accepts(
    current: pa.DataType, incoming: pa.DataType, expected: pa.DataType
) -> None:
    merged = merge_schemas(_s(("a", current)), _s(("a", incoming)))
    assert merged.field("a").type == expected


_MERGE_ERR = [
    (pa.int64(), pa.uint64()),
    (pa.uint8(), pa.int8()),
    (pa.int64(), pa.float64()),
    (pa.float64(), pa.int64()),
    (pa.int64(), pa.large_string()),
    (pa.large_string(), pa.int64()),
    (pa.bool_(), pa.int8()),
    (pa.binary(), pa.string()),
    (pa.timestamp("us"), pa.timestamp("us", tz="UTC")),
    (pa.timestamp("us", tz="UTC"), pa.timestamp("us")),
    (pa.timestamp("us", tz="UTC"), pa.timestamp("us", tz="Europe/Berlin")),
    (pa.date32(), pa.timestamp("us")),
    (pa.date32(), pa.date64()),
    (DICT_STR, pa.int64()),
]


@pytest.mark.parametrize(("current", "incoming"), _MERGE_ERR, ids=str)
def test_merge_schemas_rejects(current: pa.DataType, incoming: pa.DataType) -> None:
    with pytest.raises(SchemaMismatchError) as info:
        merge_schemas(_s(("col_x", current)), _s(("col_x", incoming)), dataset_uuid="dsx")
    msg = str(info.value)
    assert "'col_x'" in msg
    assert str(current) in msg
    assert str(incoming) in msg
    assert "'dsx'" in msg
    assert type_family(current) != type_family(incoming)


def test_merge_schemas_missing_column() -> None:
    with pytest.raises(SchemaMismatchError, match=r"'b' \(double\) is missing"):
        merge_schemas(_s(("a", pa.int64()), ("b", pa.float64())), _s(("a", pa.int64())))


def test_merge_schemas_adds_new_columns_nullable_at_the_end() -> None:
    cur = _s(("a", pa.int64()))
    new = pa.schema([pa.field("z", pa.int8(), nullable=False), ("a", pa.int64())])
    merged = merge_schemas(cur, new)
    assert merged.names == ["a", "z"]
    assert merged.field("z").nullable
    assert merged.field("z").type == pa.int8()


_NULLABLE_MERGES = [
    (np.array([1], "int64"), pd.array([1, None], "Int64")),
    (np.array([1], "int64"), pd.array([1, None], "Int8")),
    (pd.array([1, None], "Int8"), np.array([2**40], "int64")),
    (pd.array([1, None], "Int64"), np.array([1], "int64")),
    (np.array([1], "uint8"), pd.array([1, None], "UInt64")),
    (np.array([True]), pd.array([True, None], "boolean")),
    (pd.array([True, None], "boolean"), np.array([False])),
    (np.array([1.5]), pd.array([1.5, None], "Float64")),
    (np.array([1.5], "float32"), pd.array([1.5, None], "Float32")),
    (np.array([1], "int64"), np.array([1], "int8")),
]


@pytest.mark.parametrize(("current", "incoming"), _NULLABLE_MERGES, ids=str)
def test_merge_schemas_reads_back_as_pandas_concat(current: Any, incoming: Any) -> None:
    # a nullable dtype on either side wins: a numpy dtype would read nulls as NaN floats
    old, new = pd.DataFrame({"a": current}), pd.DataFrame({"a": incoming})
    merged = merge_schemas(
        pa.Schema.from_pandas(old, preserve_index=False),
        pa.Schema.from_pandas(new, preserve_index=False),
    )
    expected = pd.concat([old, new], ignore_index=True)["a"].dtype
    assert merged.empty_table().to_pandas()["a"].dtype == expected


def _dtypes(schema: pa.Schema) -> dict[str, str]:
    return {k: str(v) for k, v in schema.empty_table().to_pandas().dtypes.items()}


def test_with_nullable_dtypes_only_for_ints_and_bools_that_need_it() -> None:
    arrow = pa.schema(
        [("k", pa.int8()), ("u", pa.uint64()), ("b", pa.bool_()), ("x", pa.float64()),
         ("s", pa.string()), ("c", pa.dictionary(pa.int8(), pa.string()))]
    )  # fmt: skip
    out = with_nullable_dtypes(arrow, arrow.names)
    assert _dtypes(out) == {**_dtypes(arrow), "k": "Int8", "u": "UInt64", "b": "boolean"}
    assert with_nullable_dtypes(out, out.names) is out  # nothing left to do
    assert with_nullable_dtypes(arrow, ["x", "s"]) is arrow
    partial = with_nullable_dtypes(arrow, ["k"], complete=False)  # for one conversion
    assert [c["name"] for c in pandas_metadata(partial)["columns"]] == ["k"]  # type: ignore[index]
    assert _dtypes(partial) == {**_dtypes(arrow), "k": "Int8"}
    # pandas entries that cannot hold nulls (read as float64/object) take the nullable
    # dtype; object booleans read back as written
    frame = pd.DataFrame(
        {
            "i": np.array([1]),
            "o": pd.Series([1], dtype=object),
            "ob": pd.Series([True], dtype=object),
        }
    )
    pandas = pa.Schema.from_pandas(frame, preserve_index=False).set(1, pa.field("o", pa.int64()))
    pandas = pandas.set(2, pa.field("ob", pa.bool_()))
    meta = pandas_metadata(with_nullable_dtypes(pandas, ["i", "o", "ob"]))
    assert meta is not None
    assert [c["numpy_type"] for c in meta["columns"]] == ["Int64", "Int64", "object"]


def test_merge_schemas_keeps_nullable_dtypes_of_data_without_pandas_metadata() -> None:
    arrow = _s(("k", pa.int64()), ("b", pa.bool_()), ("s", pa.string()))
    with_nulls = with_nullable_dtypes(arrow, ["k", "b"])
    # onto a schema without pandas metadata (an Arrow-written dataset), either order
    assert _dtypes(merge_schemas(arrow, with_nulls)) == _dtypes(with_nulls)
    assert _dtypes(merge_schemas(with_nulls, arrow)) == _dtypes(with_nulls)
    assert _dtypes(merge_schemas(arrow, arrow)) == _dtypes(arrow)
    # a nullable Int8 column widened to int64 by Arrow data reads as Int64, not Int8
    int8 = pa.Schema.from_pandas(pd.DataFrame({"a": pd.array([1, None], "Int8")}))
    merged = merge_schemas(int8, _s(("a", pa.int64())))
    assert merged.field("a").type == pa.int64() and _dtypes(merged) == {"a": "Int64"}


def test_merge_schemas_first_write_drops_pandas_index() -> None:
    df = pd.DataFrame({"a": [1]}, index=pd.Index([5], name="idx"))
    incoming = pa.Schema.from_pandas(df)
    assert "idx" in incoming.names
    assert merge_schemas(None, incoming).names == ["a"]


def test_merge_schemas_keeps_pandas_metadata_of_new_columns() -> None:
    cur = pa.Schema.from_pandas(pd.DataFrame({"a": [1]}), preserve_index=False)
    new = pa.Schema.from_pandas(
        pd.DataFrame({"a": [1], "c": pd.Categorical(["x"])}), preserve_index=False
    )
    merged = merge_schemas(cur, new)
    meta = json.loads(merged.metadata[b"pandas"])
    assert [c["name"] for c in meta["columns"]] == ["a", "c"]
    assert meta["columns"][1]["pandas_type"] == "categorical"


def test_schema_b64_round_trip() -> None:
    schema = _sample().schema
    assert schema is not None
    assert schema_from_b64(schema_to_b64(schema)).equals(schema, check_metadata=True)
    with pytest.raises(MetadataFormatError):
        schema_from_b64("!!")


_CORRUPT_PANDAS = [
    b"\xfe\xff not json",
    b"\xff\xfe\x00",
    b"{not json",
    b"[1, 2]",
    b'"text"',
    b"null",
    b"5",
    b"[" * 100_000,
    b'{"columns": 3}',
    b'{"columns": [1]}',
    b'{"columns": [{"name": [1]}]}',
    b'{"columns": [], "index_columns": {}}',
    b'{"columns": [], "column_indexes": "x"}',
]


def _with_pandas(raw: bytes) -> pa.Schema:
    return pa.schema([("a", pa.int64())]).with_metadata({b"pandas": raw})


@pytest.mark.parametrize("raw", _CORRUPT_PANDAS, ids=lambda r: repr(r[:30]))
def test_corrupt_pandas_metadata_is_a_metadata_format_error(raw: bytes) -> None:
    schema = _with_pandas(raw)
    for call in (
        lambda: pandas_metadata(schema),
        lambda: merge_schemas(schema, schema),
        lambda: file_schema_metadata(schema, []),
        lambda: plateau_schema(schema, []),
    ):
        with pytest.raises(MetadataFormatError, match="pandas metadata"):
            call()
    with pytest.raises(MetadataFormatError, match=r"^where: .*pandas metadata"):
        schema_from_b64(schema_to_b64(schema), what="where")


@pytest.mark.parametrize("raw", _CORRUPT_PANDAS[:4], ids=lambda r: repr(r[:30]))
def test_snapshot_with_corrupt_pandas_metadata_names_the_dataset(raw: bytes) -> None:
    doc = _sample().to_dict()
    doc["dataset_kit"]["schema"] = schema_to_b64(_with_pandas(raw))
    with pytest.raises(MetadataFormatError, match=f"^metadata of dataset {UUID!r}: schema: "):
        DatasetMetadata.from_dict(doc, dataset_uuid=UUID)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{}", b'{"columns": []}', b'{"columns": [{"name": null}], "index_columns": [{}]}'],
    ids=repr,
)
def test_unusual_but_valid_pandas_metadata_is_accepted(raw: bytes) -> None:
    schema = _with_pandas(raw)
    assert schema_from_b64(schema_to_b64(schema)).equals(schema, check_metadata=True)
    assert pandas_metadata(schema) == (json.loads(raw) if raw else None)


def test_plateau_schema_normalization() -> None:
    schema = pa.Schema.from_pandas(
        pd.DataFrame(
            {
                "z": pd.array([1], dtype="int8"),
                "p": [1.5],
                "a": pd.Categorical(["x"]),
                "u": pd.array([1], dtype="uint16"),
            }
        ),
        preserve_index=False,
    )
    out = plateau_schema(schema, ["p"])
    assert out.names == ["p", "a", "u", "z"]  # partition keys first, then alphabetical
    assert out.field("z").type == pa.int64()
    assert out.field("u").type == pa.uint64()
    assert out.field("p").type == pa.float64()
    assert out.field("a").type == pa.large_string()
    assert b"pandas" in out.metadata
