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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.partition import decode_value
from dataset_kit.core.predicates import Term, conjunction_expression, parse_predicates
from dataset_kit.core.schema import pandas_metadata, with_pandas_metadata
from dataset_kit.exceptions import InvalidInputError, MetadataFormatError
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


class _LabelDecoder:
    """Decode partition labels with a cache of distinct ``(column, text)`` values."""

    def __init__(self, meta: DatasetMetadata, schema: pa.Schema) -> None:
        self.meta = meta
        self.types = {k: schema.field(k).type for k in meta.partition_keys if k in schema.names}
        self.cache: dict[tuple[str, str], Any] = {}

    def __call__(self, label: str) -> dict[str, Any]:
        try:
            pairs, _ = naming.decode_label(label)
        except ValueError as exc:
            raise MetadataFormatError(f"dataset {self.meta.uuid!r}: {exc}") from exc
        values: dict[str, Any] = {}
        for col, text in pairs:
            hit = self.cache.get((col, text), _MISSING)
            if hit is _MISSING:
                t = self.types.get(col)
                if t is None:
                    raise MetadataFormatError(
                        f"dataset {self.meta.uuid!r}: label {label!r} names column {col!r} "
                        f"which is not a partition column {list(self.meta.partition_keys)}"
                    )
                try:
                    hit = decode_value(text, t)
                except ValueError as exc:
                    raise MetadataFormatError(
                        f"dataset {self.meta.uuid!r}: label {label!r}: value {text!r} is not "
                        f"a valid {t}: {exc}"
                    ) from exc
                self.cache[(col, text)] = hit
            values[col] = hit
        if list(values) != list(self.meta.partition_keys):
            raise MetadataFormatError(
                f"dataset {self.meta.uuid!r}: label {label!r} does not match partition keys "
                f"{list(self.meta.partition_keys)}"
            )
        return values


_MISSING = object()


def _scalar_array(value: Any, t: pa.DataType, n: int) -> pa.Array:
    from dataset_kit.core.partition import value_type

    vt = value_type(t)
    if isinstance(value, pd.Timestamp):
        value = value.as_unit(vt.unit) if vt.unit in ("s", "ms", "us", "ns") else value
    scalar = pa.scalar(value, vt)
    arr = pa.repeat(scalar, n)
    return arr


def _partition_table(
    parts: list[tuple[str, str, dict[str, Any]]], schema: pa.Schema, keys: Sequence[str]
) -> pa.Table:
    from dataset_kit.core.partition import value_type

    cols: dict[str, pa.Array] = {}
    for k in keys:
        t = value_type(schema.field(k).type)
        cols[k] = pa.array([p[2][k] for p in parts], t)
    cols["__pos"] = pa.array(range(len(parts)), pa.int64())
    return pa.table(cols)


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
        if isinstance(columns, str):
            raise InvalidInputError("columns must be a list of column names, not a string")
        out_cols = list(columns)
        unknown = [c for c in out_cols if c not in schema.names]
        if unknown:
            raise InvalidInputError(
                f"dataset {meta.uuid!r} has no columns {unknown!r}; columns: {schema.names}"
            )
    dnf = parse_predicates(predicates, schema)
    decode = _LabelDecoder(meta, schema)
    raw = [(label, key, decode(label)) for label, key in meta.partitions.items()]
    keys = [k for k in meta.partition_keys if k in schema.names]
    if not raw:
        return ReadPlan(meta, schema, out_cols, [])
    ptable = _partition_table(raw, schema, keys)
    if keys:
        order = ptable.sort_by([(k, "ascending") for k in keys] + [("__pos", "ascending")])
        positions = order.column("__pos").to_pylist()
    else:
        positions = list(range(len(raw)))
    if dnf is None:
        parts = [PartitionRead(raw[i][0], raw[i][1], raw[i][2], None) for i in positions]
        return ReadPlan(meta, schema, out_cols, parts)
    survivors = _prune(store, meta, schema, dnf, ptable, raw, keys)
    parts = []
    for i in positions:
        conjs = survivors.get(i)
        if conjs is None:
            continue
        label, key, values = raw[i]
        row_filter = None
        if all(payload for payload in conjs):
            exprs = [conjunction_expression(c, schema) for c in conjs]
            row_filter = exprs[0]
            for e in exprs[1:]:
                row_filter = row_filter | e
        parts.append(PartitionRead(label, key, values, row_filter))
    return ReadPlan(meta, schema, out_cols, parts)


def _prune(
    store: Store,
    meta: DatasetMetadata,
    schema: pa.Schema,
    dnf: list[list[Term]],
    ptable: pa.Table,
    raw: list[tuple[str, str, dict[str, Any]]],
    keys: Sequence[str],
) -> dict[int, list[list[Term]]]:
    """Position -> the payload terms of each conjunction that may hold for that partition."""
    label_pos = {r[0]: i for i, r in enumerate(raw)}
    indices: dict[str, pa.Table] = {}
    survivors: dict[int, list[list[Term]]] = {}
    pschema = ptable.schema
    for conj in dnf:
        part_terms = [t for t in conj if t.column in keys]
        payload = [t for t in conj if t.column not in keys]
        if part_terms:
            sel = ptable.filter(conjunction_expression(part_terms, pschema))
            pos = set(sel.column("__pos").to_pylist())
        else:
            pos = set(range(len(raw)))
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
            labels = prune_labels(indices[col], terms)
            pos &= {label_pos[lb] for lb in labels if lb in label_pos}
        for p in pos:
            survivors.setdefault(p, []).append(payload)
    return survivors


def _categories_array(values: pa.Array, categories: pa.Array) -> pa.DictionaryArray:
    n = len(categories)
    index_type = pa.int8() if n < 128 else pa.int16() if n < 32768 else pa.int32()
    idx = pc.index_in(values, value_set=categories).cast(index_type)
    return pa.DictionaryArray.from_arrays(idx, categories)


def _conform_column(
    name: str, t: pa.DataType, col: pa.ChunkedArray | pa.Array, categories: pa.Array | None
) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(t):
        plain = col.cast(t.value_type) if pa.types.is_dictionary(col.type) else col
        if plain.type != t.value_type:
            plain = plain.cast(t.value_type)
        if categories is None:
            return plain.dictionary_encode()
        if isinstance(plain, pa.ChunkedArray):
            return pa.chunked_array(
                [_categories_array(c, categories) for c in plain.chunks],
                type=_categories_array(pa.array([], t.value_type), categories).type,
            )
        return _categories_array(plain, categories)
    if col.type != t:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return col.cast(t)
    return col


def read_partition(store: Store, plan: ReadPlan, part: PartitionRead) -> pa.Table:
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
    )
    n = table.num_rows
    arrays = []
    fields = []
    for name in plan.columns:
        f = schema.field(name)
        cats = plan.meta.categories.get(name)
        if name in keys:
            arr = _scalar_array(part.values[name], f.type, n)
            arrays.append(_conform_column(name, f.type, arr, cats))
        elif name in table.column_names:
            arrays.append(_conform_column(name, f.type, table.column(name), cats))
        else:  # column added by a later schema evolution
            arrays.append(pa.nulls(n, f.type))
        fields.append(f.with_type(arrays[-1].type))
    if not arrays:  # no columns asked for: keep the row count
        return pa.table([pa.nulls(n)], names=["_"]).select([])
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_partitions(
    store: Store, plan: ReadPlan, parts: Sequence[PartitionRead] | None = None
) -> list[pa.Table]:
    """Read blobs in parallel, results in plan order."""
    todo = plan.parts if parts is None else list(parts)
    if len(todo) <= 1:
        return [read_partition(store, plan, p) for p in todo]
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


def to_output(plan: ReadPlan, table: pa.Table, output: str) -> Any:
    """Return the table as Arrow or as pandas with the dataset's exact dtypes."""
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
    table = table.replace_schema_metadata(with_pandas_metadata(table.schema, meta).metadata)
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
