"""Reading: plan which blobs to read (partition, index and statistics pruning), then read.

Predicates are applied in stages, each exact for what it decides:

1. partition pruning: terms on partition columns are evaluated once per distinct
   partition value tuple;
2. secondary-index pruning: null-excluding terms on indexed columns select the labels of
   partitions holding a matching value;
3. row-group pruning and row filtering: the remaining terms of the conjunctions that
   survive for a partition become one Arrow expression pushed into the Parquet reader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.partition import decode_value, sortable, value_type
from dataset_kit.core.predicates import Term, any_of, conjunction_expression, parse_predicates
from dataset_kit.core.schema import (
    null_columns,
    pandas_metadata,
    with_nullable_dtypes,
    with_pandas_metadata,
)
from dataset_kit.exceptions import InvalidInputError, MetadataFormatError, SchemaMismatchError
from dataset_kit.io.index import load_index, prune_labels
from dataset_kit.io.parquet import read_blob
from dataset_kit.store import Store

__all__ = ["PartitionRead", "ReadPlan", "plan_read", "read_partitions", "to_output"]

logger = logging.getLogger(__name__)

_THREADS = min(8, (os.cpu_count() or 2) * 2)


@dataclass(frozen=True)
class PartitionRead:
    """One blob to read: where it is, its partition values and its row filter."""

    label: str
    key: str
    values: dict[str, Any]
    row_filter: pc.Expression | None


@dataclass(frozen=True)
class ReadPlan:
    """Everything needed to read a selection of a dataset, in deterministic order."""

    meta: DatasetMetadata
    schema: pa.Schema
    columns: list[str]
    parts: list[PartitionRead]


def logical_schema(meta: DatasetMetadata) -> pa.Schema:
    """The dataset's schema (an empty schema for a dataset that never saw data)."""
    if meta.schema is not None:
        return meta.schema
    if meta.partitions:
        raise MetadataFormatError(f"dataset {meta.uuid!r} has partitions but no schema")
    return pa.schema([])


def _decode_distinct(texts: pa.Array, t: pa.DataType, uuid: str) -> pa.Array:
    """Decode distinct quoted key texts into values of ``t`` (vectorized where possible)."""
    vt = value_type(t)
    if not len(texts):
        return pa.array([], vt)
    plain = not pc.any(pc.match_substring(texts, "%")).as_py()
    if plain and (
        pa.types.is_integer(vt)
        or pa.types.is_floating(vt)
        or pa.types.is_string(vt)
        or pa.types.is_large_string(vt)
        or pa.types.is_date32(vt)
    ):
        try:
            return pc.cast(texts, vt)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # fall back to the exact per-value decoder (and its error message)
    values = []
    for text in texts.to_pylist():
        try:
            values.append(decode_value(text, t))
        except (ValueError, OverflowError) as exc:
            raise MetadataFormatError(
                f"dataset {uuid!r}: partition value {text!r} is not a valid {t}: {exc}"
            ) from exc
    try:
        return pa.array(values, vt)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise MetadataFormatError(f"dataset {uuid!r}: invalid partition values: {exc}") from exc


def _position_column(keys: Sequence[str]) -> str:
    """The name of :func:`partition_table`'s position column: ``__pos``, unless a key has it."""
    name = "__pos"
    while name in keys:
        name = "_" + name
    return name


def partition_table(meta: DatasetMetadata, schema: pa.Schema) -> pa.Table:
    """One row per partition (in commit order): its typed partition values and position.

    The position column is named by :func:`_position_column` (distinct from every key).

    Labels are split and decoded with Arrow kernels; only distinct values that need
    unquoting or a special parser go through Python.

    Raises
    ------
    MetadataFormatError
        If a label does not match the partition keys or holds an invalid value.
    """
    keys = list(meta.partition_keys)
    n = len(meta.partitions)
    cols: dict[str, pa.Array] = {}
    missing = [k for k in keys if k not in schema.names]
    if missing:
        raise MetadataFormatError(
            f"dataset {meta.uuid!r}: partition columns {missing} are not in the schema"
        )
    if keys and n:
        labels = pa.array(list(meta.partitions), pa.large_string())
        split = pc.split_pattern(labels, "/")
        lengths = pc.list_value_length(split)
        wrong = pc.not_equal(lengths, len(keys) + 1)
        if pc.any(wrong).as_py():
            bad = labels.filter(wrong)[0].as_py()
            raise MetadataFormatError(
                f"dataset {meta.uuid!r}: label {bad!r} does not match partition keys {keys}"
            )
        for i, key in enumerate(keys):
            comp = pc.list_element(split, i)
            prefix = naming.quote_component(key) + "="
            text = pc.utf8_slice_codeunits(comp, len(prefix))
            wrong = pc.or_(pc.invert(pc.starts_with(comp, prefix)), pc.match_substring(text, "="))
            if pc.any(wrong).as_py():
                bad = labels.filter(wrong)[0].as_py()
                raise MetadataFormatError(
                    f"dataset {meta.uuid!r}: label {bad!r} does not match partition keys {keys}"
                )
            enc = text.dictionary_encode()
            decoded = _decode_distinct(enc.dictionary, schema.field(key).type, meta.uuid)
            cols[key] = decoded.take(enc.indices)
    cols[_position_column(keys)] = pa.array(range(n), pa.int64())
    return pa.table(cols)


def _scalar_array(value: Any, t: pa.DataType, n: int) -> pa.Array:
    """``n`` copies of a partition value (an Arrow scalar of the column's value type)."""
    scalar = value if isinstance(value, pa.Scalar) else pa.scalar(value, value_type(t))
    return pa.repeat(scalar, n)


def plan_read(
    store: Store,
    meta: DatasetMetadata,
    *,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
) -> ReadPlan:
    """Plan a read of ``meta``: validated columns and predicates, pruned blobs, in order.

    Raises
    ------
    InvalidInputError
        For unknown columns.
    PredicateError
        For invalid predicates.
    """
    schema = logical_schema(meta)
    if columns is None:
        out_cols = list(schema.names)
    else:
        if isinstance(columns, str | bytes) or not isinstance(columns, Iterable):
            raise InvalidInputError(
                f"columns must be a list of column names, got {type(columns).__name__}"
            )
        out_cols = list(columns)
        unknown = [c for c in out_cols if not isinstance(c, str) or c not in schema.names]
        if unknown:
            raise InvalidInputError(
                f"dataset {meta.uuid!r} has no columns {unknown!r}; columns: {schema.names}"
            )
    dnf = parse_predicates(predicates, schema)
    keys = list(meta.partition_keys)
    if not meta.partitions:
        return ReadPlan(meta, schema, out_cols, [])
    ptable = partition_table(meta, schema)
    labels = list(meta.partitions)
    blob_keys = list(meta.partitions.values())
    key_columns = [ptable.column(k) for k in keys]

    def values_of(i: int) -> dict[str, Any]:
        return {k: col[i] for k, col in zip(keys, key_columns, strict=True)}

    positions = _sorted_positions(ptable, keys)
    if dnf is None:
        parts = [PartitionRead(labels[i], blob_keys[i], values_of(i), None) for i in positions]
        return ReadPlan(meta, schema, out_cols, parts)
    survivors = _prune(store, meta, schema, dnf, ptable, labels, keys)
    built: dict[int, pc.Expression] = {}  # each conjunction's expression, built once

    def expression(conj: list[Term]) -> pc.Expression:
        if id(conj) not in built:
            built[id(conj)] = conjunction_expression(conj, schema)
        return built[id(conj)]

    parts = []
    for i in positions:
        conjs = survivors.get(i)
        if conjs is None:
            continue
        label, key, values = labels[i], blob_keys[i], values_of(i)
        row_filter = None
        if all(payload for payload in conjs):
            row_filter = any_of([expression(c) for c in conjs])
        parts.append(PartitionRead(label, key, values, row_filter))
    return ReadPlan(meta, schema, out_cols, parts)


def _sorted_positions(ptable: pa.Table, keys: Sequence[str]) -> list[int]:
    """Partition positions sorted by their partition values, then by position."""
    if not keys:
        return list(range(ptable.num_rows))
    # plain names (a name starting with "." would be parsed as a field path) and sortable
    # values (Arrow cannot sort float16)
    names = [f"k{i}" for i in range(len(keys) + 1)]
    columns = [sortable(ptable.column(k)) for k in keys]
    columns.append(ptable.column(_position_column(keys)))
    order = pc.sort_indices(
        pa.table(columns, names=names), sort_keys=[(n, "ascending") for n in names]
    )
    positions: list[int] = order.to_pylist()  # the position column is 0..n-1
    return positions


def _prune(
    store: Store,
    meta: DatasetMetadata,
    schema: pa.Schema,
    dnf: list[list[Term]],
    ptable: pa.Table,
    labels: list[str],
    keys: Sequence[str],
) -> dict[int, list[list[Term]]]:
    """Position -> the payload terms of each conjunction that may hold for that partition."""
    label_pos = {label: i for i, label in enumerate(labels)}
    indices: dict[str, pa.Table] = {}
    survivors: dict[int, list[list[Term]]] = {}
    pschema = ptable.schema
    for conj in dnf:
        part_terms = [t for t in conj if t.column in keys]
        payload = [t for t in conj if t.column not in keys]
        if part_terms:
            sel = ptable.filter(conjunction_expression(part_terms, pschema))
            pos = set(sel.column(_position_column(keys)).to_pylist())
        else:
            pos = set(range(len(labels)))
        by_col: dict[str, list[Term]] = {}
        for t in payload:
            if t.column in meta.indices and t.excludes_nulls:
                by_col.setdefault(t.column, []).append(t)
        for col, terms in by_col.items():
            if not pos:
                break
            if col not in indices:
                indices[col] = load_index(
                    store, meta.uuid, col, meta.indices[col], schema.field(col).type
                )
            hits = prune_labels(indices[col], terms)
            pos &= {label_pos[lb] for lb in hits if lb in label_pos}
        for p in pos:
            survivors.setdefault(p, []).append(payload)
    return survivors


def _categories_array(
    values: pa.Array, categories: pa.Array, *, ordered: bool = False
) -> pa.DictionaryArray:
    n = len(categories)
    index_type = pa.int8() if n < 128 else pa.int16() if n < 32768 else pa.int32()
    idx = pc.index_in(values, value_set=categories).cast(index_type)
    return pa.DictionaryArray.from_arrays(idx, categories, ordered=ordered)


def _encoded(plain: pa.ChunkedArray | pa.Array, ordered: bool) -> pa.ChunkedArray | pa.Array:
    """``plain`` dictionary-encoded with the categories it holds (``ordered`` kept)."""
    encoded = plain.dictionary_encode()
    if not ordered:
        return encoded
    if isinstance(encoded, pa.ChunkedArray):
        t = encoded.type
        chunks = [_as_ordered(c) for c in encoded.chunks]
        return pa.chunked_array(chunks, pa.dictionary(t.index_type, t.value_type, ordered=True))
    return _as_ordered(encoded)


def _as_ordered(encoded: pa.DictionaryArray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(encoded.indices, encoded.dictionary, ordered=True)


def _conform_column(
    name: str, t: pa.DataType, col: pa.ChunkedArray | pa.Array, categories: pa.Array | None
) -> pa.ChunkedArray | pa.Array:
    """``col`` (as read from a blob, or partition values) in the dataset's type ``t``.

    Categorical columns get the dataset's categories and keep its ``ordered`` flag.
    """
    if pa.types.is_dictionary(t):
        plain = col.cast(t.value_type) if pa.types.is_dictionary(col.type) else col
        if plain.type != t.value_type:
            plain = plain.cast(t.value_type)
        if categories is None:
            return _encoded(plain, t.ordered)
        if isinstance(plain, pa.ChunkedArray):
            empty = pa.array([], t.value_type)
            return pa.chunked_array(
                [_categories_array(c, categories, ordered=t.ordered) for c in plain.chunks],
                type=_categories_array(empty, categories, ordered=t.ordered).type,
            )
        return _categories_array(plain, categories, ordered=t.ordered)
    if col.type != t:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return col.cast(t)
    return col


def read_partition(
    store: Store, plan: ReadPlan, part: PartitionRead, *, use_threads: bool = False
) -> pa.Table:
    """Read one blob of a plan as a table of the plan's columns, in logical types."""
    schema = plan.schema
    keys = set(plan.meta.partition_keys)
    file_cols = [c for c in plan.columns if c not in keys]
    payload_fields = [schema.field(c) for c in schema.names if c not in keys]
    table = read_blob(
        store,
        part.key,
        columns=file_cols,
        row_filter=part.row_filter,
        dataset_uuid=plan.meta.uuid,
        payload_fields=payload_fields,
        use_threads=use_threads,
    )
    n = table.num_rows
    arrays = []
    fields = []
    for name in plan.columns:
        f = schema.field(name)
        if name in keys:
            arr = _scalar_array(part.values[name], f.type, n)
            arrays.append(_conform(plan, part, f, arr))
        elif name in table.column_names:
            arrays.append(_conform(plan, part, f, table.column(name)))
        else:  # column added by a later schema evolution
            arrays.append(pa.nulls(n, f.type))
        fields.append(f.with_type(arrays[-1].type))
    if not arrays:  # no columns asked for: keep the row count
        return pa.table([pa.nulls(n)], names=["_"]).select([])
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _conform(
    plan: ReadPlan, part: PartitionRead, f: pa.Field, col: pa.ChunkedArray | pa.Array
) -> pa.ChunkedArray | pa.Array:
    """:func:`_conform_column`, with a typed error for values the dataset type cannot hold.

    Raises
    ------
    SchemaMismatchError
        If the blob holds values that do not fit the dataset's type (e.g. a timestamp
        out of the range of a finer unit the dataset was widened to by an older release).
    """
    try:
        return _conform_column(f.name, f.type, col, plan.meta.categories.get(f.name))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SchemaMismatchError(
            f"dataset {plan.meta.uuid!r}: column {f.name!r} of partition {part.label!r} holds "
            f"{col.type} values that do not fit the dataset type {f.type}: {exc}"
        ) from exc


def read_partitions(
    store: Store, plan: ReadPlan, parts: Sequence[PartitionRead] | None = None
) -> list[pa.Table]:
    """Read blobs in parallel, results in plan order."""
    todo = plan.parts if parts is None else list(parts)
    if len(todo) <= 1:  # one blob: let the Parquet reader decode its columns in parallel
        return [read_partition(store, plan, p, use_threads=True) for p in todo]
    with ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="dk-read") as pool:
        return list(pool.map(lambda p: read_partition(store, plan, p), todo))


def empty_table(plan: ReadPlan) -> pa.Table:
    """A zero-row table of the plan's columns."""
    fields = [plan.schema.field(c) for c in plan.columns]
    return pa.schema(fields).empty_table()


def concat(plan: ReadPlan, tables: list[pa.Table]) -> pa.Table:
    """Concatenate partition tables (or an empty table of the right schema)."""
    if not tables:
        return empty_table(plan)
    if not plan.columns:  # zero-column tables: concat_tables would drop the row count
        return pa.table([pa.nulls(sum(t.num_rows for t in tables))], names=["_"]).select([])
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:
        return pa.concat_tables(tables, promote_options="permissive")


def to_output(plan: ReadPlan, table: pa.Table, output: str, *, nullable: bool = False) -> Any:
    """Return the table as Arrow or as pandas with the dataset's exact dtypes.

    The dtypes come from the dataset's pandas metadata (the plan's schema), never from
    the blobs read: a whole table, one partition and a dask partition convert alike.
    An integer or boolean column that holds nulls here although the dataset names no
    nullable dtype for it (data written before datasets recorded one) converts to its
    nullable dtype (``Int64``, ``boolean``), never to float64, which rounds integers
    above 2**53. ``nullable=True`` converts every integer and boolean column so, with or
    without nulls (for frames that must agree whatever rows they hold, and be exact).
    """
    if not table.num_columns:  # replacing metadata would drop the row count
        if output == "arrow":
            return table
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    meta = pandas_metadata(plan.schema)
    if meta is not None:
        wanted = set(plan.columns)
        meta = dict(meta)
        meta["columns"] = [c for c in meta.get("columns", []) if c.get("name") in wanted]
        meta["index_columns"] = []
        meta["column_indexes"] = []
    schema = with_pandas_metadata(table.schema, meta)
    upgrade = table.column_names if nullable else null_columns(table)
    schema = with_nullable_dtypes(schema, upgrade, complete=False)
    table = table.replace_schema_metadata(schema.metadata)
    if output == "arrow":
        return table
    return table.to_pandas()


def iter_groups(plan: ReadPlan, dispatch_by: Sequence[str] | None) -> Iterator[list[PartitionRead]]:
    """Partitions grouped by the values of ``dispatch_by`` (None: one group per blob)."""
    if dispatch_by is None:
        for p in plan.parts:
            yield [p]
        return
    keys = list(plan.meta.partition_keys)
    bad = [c for c in dispatch_by if c not in keys]
    if bad:
        raise InvalidInputError(f"dispatch_by columns {bad!r} are not partition columns {keys!r}")
    groups: dict[tuple[Any, ...], list[PartitionRead]] = {}
    for p in plan.parts:
        groups.setdefault(tuple(p.values[c] for c in dispatch_by), []).append(p)
    yield from groups.values()
