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
from dataset_kit.core.schema import plateau_type
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
    "index_value_type",
    "load_index",
    "merge_index",
    "prune_labels",
    "store_index",
]

PARTITION_COLUMN = "partition"
_LABELS = pa.list_(pa.string())


def index_value_type(t: pa.DataType, pandas_entry: dict[str, Any] | None = None) -> pa.DataType:
    """The type index files store for a column of type ``t`` with pandas entry
    ``pandas_entry`` (see :func:`~dataset_kit.core.schema.column_entry`).

    It is the column's type in ``_common_metadata`` (plateau's normalization): plateau
    refuses to update an index of another type. In particular a pandas ``string`` (pd.NA)
    column has ``string`` index values, other strings ``large_string``; without an entry
    strings are ``large_string``.

    Examples
    --------
    >>> index_value_type(pa.int8()), index_value_type(pa.dictionary(pa.int8(), pa.string()))
    (DataType(int64), DataType(large_string))
    >>> index_value_type(pa.large_string(), {"numpy_type": "string", "pandas_type": "unicode"})
    DataType(string)
    """
    return plateau_type(t, pandas_entry)


def _plateau_indexable(t: pa.DataType) -> bool:
    """Whether plateau/kartothek can index values of type ``t`` (v4 index spec: bool,
    integers, floats, strings, bytes, timestamps with or without tz, dates)."""
    return (
        pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_date(t)
    )


def check_indexable(column: str, t: pa.DataType, partition_keys: Iterable[str]) -> None:
    """Raise :class:`InvalidInputError` if ``column`` cannot carry a secondary index.

    Besides nested and null columns, dataset_kit refuses every type plateau/kartothek
    cannot index (decimals, times of day, durations, intervals, ``large_binary``,
    fixed-size binary, string/binary views, extension types): plateau refuses to create
    such an index, and once one exists every plateau update of the dataset fails.

    Examples
    --------
    >>> check_indexable("x", pa.decimal128(5, 2), [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dataset_kit.exceptions.InvalidInputError: column 'x' of type decimal128(5, 2) cannot ...
    """
    if column == PARTITION_COLUMN:
        raise InvalidInputError("a column named 'partition' cannot be indexed")
    if column in partition_keys:
        raise InvalidInputError(f"column {column!r} is a partition column; it needs no index")
    v = value_type(t)
    if pa.types.is_nested(v) or pa.types.is_null(v):
        raise InvalidInputError(f"column {column!r} of type {t} cannot be indexed")
    if not _plateau_indexable(v):
        raise InvalidInputError(
            f"column {column!r} of type {t} cannot carry a secondary index: plateau/kartothek "
            f"cannot index {v} values (their index format holds bool, integers, floats, "
            "strings, binary, dates and timestamps), and every plateau update of a dataset "
            "with such an index fails"
        )


# Float index values are kept as plateau keeps them. plateau loads an index into a dict,
# where -0.0 == 0.0: two entries would overwrite each other there (rows lost), so -0.0 is
# stored as 0.0. It never indexes NaN (pandas' dropna); no term that consults an index
# matches NaN rows (NaN compares false, and a NaN predicate value means null), so
# dropping them loses nothing.


def _positive_zero(values: pa.Array) -> pa.Array:
    """Float ``values`` with ``-0.0`` replaced by ``0.0``."""
    zero = pa.scalar(0.0, values.type)
    return pc.if_else(pc.equal(values, zero), zero, values)


def _has_negative_zero(values: pa.Array) -> bool:
    zeros = values.filter(pc.equal(values, pa.scalar(0.0, values.type)))
    if not len(zeros):
        return False
    bits = pa.int64() if values.type.bit_width == 64 else pa.int32()
    if values.type.bit_width == 16:
        bits = pa.int16()
    return bool(pc.any(pc.less(zeros.view(bits), 0)).as_py())  # the sign bit


def _canonical_pairs(pairs: pa.Table, column: str) -> pa.Table:
    """Exploded (value, label) pairs of a float index: values without NaN and ``-0.0``,
    each pair once."""
    i = pairs.schema.get_field_index(column)
    values = pairs.column(i).combine_chunks()
    merge_zeros = _has_negative_zero(values)
    values = _positive_zero(values)
    pairs = pairs.set_column(i, pairs.schema.field(i), values)
    pairs = pairs.filter(pc.invert(pc.is_nan(values)))
    if merge_zeros:  # a label may be listed under both zeros (older releases)
        j = pairs.schema.get_field_index(PARTITION_COLUMN)
        pairs = pairs.group_by([i, j], use_threads=False).aggregate([])
    return pairs


def distinct_values(column: pa.ChunkedArray | pa.Array, t: pa.DataType) -> pa.Array:
    """Distinct non-null values of a column, in the index value type (as plateau keeps
    them: floats without NaN, ``-0.0`` as ``0.0``).

    Examples
    --------
    >>> distinct_values(pa.array([0.0, -0.0, float("nan"), None, 1.5]), pa.float64()).to_pylist()
    [0.0, 1.5]
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    uniq = pc.unique(column.drop_null()).cast(index_value_type(t))
    if pa.types.is_floating(uniq.type):
        uniq = _positive_zero(uniq)
        uniq = pc.unique(uniq.filter(pc.invert(pc.is_nan(uniq))))
    return uniq


def empty_index(
    column: str, t: pa.DataType, *, pandas_entry: dict[str, Any] | None = None
) -> pa.Table:
    """An index with no entries (values of :func:`index_value_type`)."""
    return pa.table(
        {
            column: pa.array([], index_value_type(t, pandas_entry)),
            PARTITION_COLUMN: pa.array([], _LABELS),
        }
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

    The result has the type of ``index`` (added values are cast to it) and one row per
    value, values sorted, each label list sorted; float values as :func:`distinct_values`
    gives them (an index written by an older release may hold ``-0.0`` beside ``0.0``,
    or NaN: they are merged, dropped).
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
    pairs = pa.concat_tables(parts)
    if pa.types.is_floating(target):  # one entry per value, as plateau sees them
        pairs = _canonical_pairs(pairs, column)
    pairs = pairs.sort_by(
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
    store: Store,
    dataset_uuid: str,
    column: str,
    ref: Any,
    column_type: pa.DataType,
    *,
    pandas_entry: dict[str, Any] | None = None,
) -> pa.Table:
    """Load an index from its key (or a legacy embedded ``{value: [labels]}`` dict).

    Values are cast to :func:`index_value_type` of ``column_type`` and ``pandas_entry``
    (files of the other string type, written by older releases or other tools, are read
    too).

    Raises
    ------
    DataBlobMissingError
        If the index file is referenced but missing.
    MetadataFormatError
        If the file does not have the index layout.
    """
    target = index_value_type(column_type, pandas_entry)
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
