"""Secondary indices in kartothek's file format, held as Arrow tables.

An index file ``<uuid>/indices/<col>/<ts>.by-dataset-index.parquet`` has two columns: the
indexed column (one row per distinct non-null value) and ``partition`` (the labels of the
partitions holding that value). Index files are immutable: every commit that changes an
index writes a new file, and the snapshot references it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_kit.core import naming
from dataset_kit.core.partition import value_type
from dataset_kit.core.predicates import Term, term_expression
from dataset_kit.exceptions import (
    DataBlobMissingError,
    InvalidInputError,
    KeyExistsError,
    KeyNotFoundError,
    MetadataFormatError,
    StoreUnavailableError,
)
from dataset_kit.store import Store

__all__ = [
    "PARTITION_COLUMN",
    "check_indexable",
    "distinct_values",
    "empty_index",
    "load_index",
    "merge_index",
    "prune_labels",
    "store_index",
]

PARTITION_COLUMN = "partition"
_LABELS = pa.list_(pa.string())


def index_value_type(t: pa.DataType) -> pa.DataType:
    """The type index files store for a column of type ``t`` (plateau's normalization)."""
    t = value_type(t)
    if pa.types.is_signed_integer(t):
        return pa.int64()
    if pa.types.is_unsigned_integer(t):
        return pa.uint64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.large_string()
    return t


def check_indexable(column: str, t: pa.DataType, partition_keys: Iterable[str]) -> None:
    """Raise :class:`InvalidInputError` if ``column`` cannot carry a secondary index."""
    if column == PARTITION_COLUMN:
        raise InvalidInputError("a column named 'partition' cannot be indexed")
    if column in partition_keys:
        raise InvalidInputError(f"column {column!r} is a partition column; it needs no index")
    v = value_type(t)
    if pa.types.is_nested(v) or pa.types.is_null(v):
        raise InvalidInputError(f"column {column!r} of type {t} cannot be indexed")


def distinct_values(column: pa.ChunkedArray | pa.Array, t: pa.DataType) -> pa.Array:
    """Distinct non-null values of a column, in the index value type."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    uniq = pc.unique(column.drop_null())
    return uniq.cast(index_value_type(t))


def empty_index(column: str, t: pa.DataType) -> pa.Table:
    """An index with no entries."""
    return pa.table(
        {column: pa.array([], index_value_type(t)), PARTITION_COLUMN: pa.array([], _LABELS)}
    )


def _explode(index: pa.Table, column: str) -> pa.Table:
    lists = index.column(PARTITION_COLUMN).combine_chunks()
    parents = pc.list_parent_indices(lists)
    return pa.table(
        {
            column: index.column(column).combine_chunks().take(parents),
            PARTITION_COLUMN: pc.list_flatten(lists).cast(pa.string()),
        }
    )


def merge_index(
    index: pa.Table,
    column: str,
    *,
    added: Mapping[str, pa.Array],
    removed: Iterable[str] = (),
) -> pa.Table:
    """Add ``label -> distinct values`` entries and drop removed labels.

    The result has one row per value, values sorted, each label list sorted.
    """
    pairs = _explode(index, column)
    removed = set(removed)
    if removed:
        keep = pc.invert(pc.is_in(pairs.column(PARTITION_COLUMN), pa.array(sorted(removed))))
        pairs = pairs.filter(keep)
    target = pairs.schema.field(column).type
    parts = [pairs]
    for label, values in added.items():
        if len(values):
            parts.append(
                pa.table(
                    {
                        column: values.cast(target),
                        PARTITION_COLUMN: pa.array([label] * len(values), pa.string()),
                    }
                )
            )
    # field expressions and positions, never plain names: pyarrow parses a string name
    # starting with "." as a nested field path
    pairs = pa.concat_tables(parts).sort_by(
        [(pc.field(column), "ascending"), (pc.field(PARTITION_COLUMN), "ascending")]
    )
    grouped = pairs.group_by([pairs.schema.get_field_index(column)], use_threads=False).aggregate(
        [(PARTITION_COLUMN, "list")]
    )
    return pa.table(
        {
            column: grouped.column(column),
            PARTITION_COLUMN: grouped.column(f"{PARTITION_COLUMN}_list").cast(_LABELS),
        }
    )


def _index_key(dataset_uuid: str, column: str, timestamp_iso: str) -> str:
    """:func:`naming.index_key`, with a leading "." of the column quoted as ``%2E``.

    A column named "." or ".." would otherwise be a path component stores refuse (and
    ".dk-..." is reserved by the local store). Index keys are opaque references held by
    the snapshot, so no reader needs to decode the column back from the key.
    """
    key = naming.index_key(dataset_uuid, column, timestamp_iso)
    if not column.startswith("."):
        return key
    head = naming.index_prefix(dataset_uuid)
    return f"{head}%2E{key[len(head) + 1 :]}"


def store_index(store: Store, dataset_uuid: str, column: str, index: pa.Table) -> str:
    """Write an index file under a fresh timestamped key; return the key."""
    sink = pa.BufferOutputStream()
    pq.write_table(index, sink, row_group_size=10_000, compression="snappy")
    data = sink.getvalue().to_pybytes()
    now = _dt.datetime.now(_dt.UTC)
    failures = 0
    while True:
        key = _index_key(dataset_uuid, column, now.isoformat())
        try:
            store.put(key, data, if_absent=True)  # never overwrite another writer's index
            return key
        except KeyExistsError:
            pass
        except StoreUnavailableError:
            # the outcome is unknown: if our bytes are there, the write happened
            failures += 1
            try:
                if store.get(key) == data:
                    return key
            except KeyNotFoundError:
                if failures < 10:
                    continue  # nothing written: try the same key again
            if failures >= 10:
                raise
        now += _dt.timedelta(microseconds=1)


def load_index(
    store: Store, dataset_uuid: str, column: str, ref: Any, column_type: pa.DataType
) -> pa.Table:
    """Load an index from its key (or a legacy embedded ``{value: [labels]}`` dict).

    Raises
    ------
    DataBlobMissingError
        If the index file is referenced but missing.
    MetadataFormatError
        If the file does not have the index layout.
    """
    target = index_value_type(column_type)
    if isinstance(ref, dict):
        values = pa.array(list(ref.keys())).cast(target)
        labels = pa.array([list(v) for v in ref.values()], _LABELS)
        return pa.table({column: values, PARTITION_COLUMN: labels})
    try:
        raw = store.get(ref)
    except KeyNotFoundError as exc:
        raise DataBlobMissingError(
            f"dataset {dataset_uuid!r}: index file {ref!r} for column {column!r} is missing"
        ) from exc
    try:
        table = pq.read_table(pa.BufferReader(raw))
        values = table.column(column)
        labels = table.column(PARTITION_COLUMN)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        values = values.cast(target)
        labels = labels.cast(_LABELS)
    except (KeyError, pa.ArrowException, OSError) as exc:
        raise MetadataFormatError(
            f"dataset {dataset_uuid!r}: index file {ref!r} is not a valid index: {exc}"
        ) from exc
    return pa.table({column: values, PARTITION_COLUMN: labels})


def prune_labels(index: pa.Table, terms: list[Term]) -> set[str]:
    """Labels of partitions that hold a value satisfying every term (null-excluding terms)."""
    table = index
    schema = table.schema
    for term in terms:
        table = table.filter(term_expression(term, schema))
    flat = pc.list_flatten(table.column(PARTITION_COLUMN))
    return set(pc.unique(flat).to_pylist())
