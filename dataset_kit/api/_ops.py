"""The operations behind the eager and iterator APIs: plan, write blobs, commit once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.schema import column_entry, merge_schemas
from dataset_kit.exceptions import (
    CommitConflictError,
    DatasetExistsError,
    DatasetNotFoundError,
    DeleteScopeError,
    InvalidInputError,
    PredicateError,
    SchemaMismatchError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io.index import empty_index, load_index, merge_index, store_index
from dataset_kit.io.write import (
    WriteOptions,
    WrittenPartition,
    iter_tables,
    merge_categories,
    validate_write_columns,
    write_partitions,
)
from dataset_kit.store import Store

__all__ = [
    "StagedWrite",
    "commit_update",
    "commit_write",
    "delete_scope_labels",
    "stage_tables",
]

logger = logging.getLogger(__name__)


def as_list(value: str | Sequence[str] | None, name: str) -> list[str]:
    """Normalize a column-list option (a single string is one column)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name} must be a list of column names, got {value!r}")
    if len(set(value)) != len(value):
        raise InvalidInputError(f"{name} has duplicates: {list(value)!r}")
    return list(value)


class StagedWrite:
    """Blobs written for one operation, with the merged schema and categories."""

    def __init__(self) -> None:
        self.parts: list[WrittenPartition] = []
        self.schema: pa.Schema | None = None
        self.categories: dict[str, pa.Array] = {}
        self.frames = 0


def stage_tables(
    store: Store,
    dataset_uuid: str,
    data: Any,
    *,
    table_name: str,
    partition_on: list[str],
    secondary_indices: list[str],
    options: WriteOptions,
    base_schema: pa.Schema | None,
    base_categories: Mapping[str, pa.Array],
) -> StagedWrite:
    """Write every input frame's blobs (streaming: one frame in memory at a time)."""
    staged = StagedWrite()
    staged.schema = base_schema
    staged.categories = dict(base_categories)
    for table in iter_tables(data):
        validate_write_columns(
            table,
            partition_on=partition_on,
            secondary_indices=secondary_indices,
            sort_partitions_by=options.sort_partitions_by,
        )
        staged.schema = merge_schemas(staged.schema, table.schema, dataset_uuid=dataset_uuid)
        staged.categories = merge_categories(staged.categories, table, staged.schema)
        staged.parts.extend(
            write_partitions(
                store,
                dataset_uuid,
                table,
                table_name=table_name,
                partition_on=partition_on,
                secondary_indices=secondary_indices,
                options=options,
                logical_schema=staged.schema,
            )
        )
        staged.frames += 1
    return staged


def build_indices(
    store: Store,
    dataset_uuid: str,
    schema: pa.Schema,
    columns: Iterable[str],
    *,
    base: DatasetMetadata | None,
    added: Mapping[str, Mapping[str, pa.Array]],
    removed: Iterable[str],
) -> dict[str, Any]:
    """New index references: base indices merged with ``added`` minus ``removed`` labels.

    ``added`` maps column -> label -> distinct values. Unchanged indices keep their file.
    Index values have the column's type in ``_common_metadata`` (it depends on the pandas
    dtype: plateau refuses to update an index of another type).
    """
    removed = list(removed)
    result: dict[str, Any] = {}
    for col in columns:
        new_entries = added.get(col, {})
        t = schema.field(col).type
        ref = base.indices.get(col) if base is not None else None
        if ref is not None and not new_entries and not removed:
            result[col] = ref
            continue
        entry = column_entry(schema, col)
        current = (
            load_index(store, dataset_uuid, col, ref, t, pandas_entry=entry)
            if ref is not None
            else empty_index(col, t, pandas_entry=entry)
        )
        merged = merge_index(current, col, added=new_entries, removed=removed)
        result[col] = store_index(store, dataset_uuid, col, merged)
    return result


def _is_null(value: Any) -> bool:
    """None, NaN of any float type, NaT, pd.NA: what no partition value can equal."""
    import pandas as pd

    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars: not a null scalar
        return False


def check_delete_scope(delete_scope: Any) -> list[Mapping[str, Any]]:
    """The scopes of a ``delete_scope``, checked for shape alone (no dataset needed).

    Raises
    ------
    DeleteScopeError
        Unless it is None or a list of non-empty ``{column: scalar}`` dicts without nulls.
    """
    if delete_scope is None:
        return []
    if isinstance(delete_scope, Mapping | str) or not isinstance(delete_scope, Sequence):
        raise DeleteScopeError("delete_scope must be a list of {column: value} dicts")
    for scope in delete_scope:
        if not isinstance(scope, Mapping) or not scope:
            raise DeleteScopeError(f"delete_scope entry {scope!r} must be a non-empty dict")
        for col, value in scope.items():
            if not isinstance(col, str):
                raise DeleteScopeError(f"delete_scope column {col!r} must be a column name")
            if isinstance(value, list | tuple | set | frozenset | Mapping):
                raise DeleteScopeError(
                    f"delete_scope value for {col!r} must be a scalar; use one dict per value"
                )
            if _is_null(value):
                raise DeleteScopeError(
                    f"delete_scope value for {col!r} is null ({value!r}): partitions cannot "
                    "be selected by null values"
                )
    return list(delete_scope)


def check_scope_columns(
    scopes: Sequence[Mapping[str, Any]],
    *,
    keys: list[str],
    indices: Iterable[str],
    names: Iterable[str] | None,
    dataset: str,
) -> None:
    """Refuse a scope naming a column that is neither a partition column nor indexed.

    ``names`` are the dataset's columns (None for a dataset not written yet), to tell an
    unknown column from one without a secondary index.

    Raises
    ------
    DeleteScopeError
        Naming the column, what it is, and the columns that can select partitions.
    """
    indexed = sorted(indices)
    known = None if names is None else set(names)
    for scope in scopes:
        for col in scope:
            if col in keys or col in indexed:
                continue
            if known is None:
                what = "not a partition column nor an indexed column"
            elif col in known:
                what = "a column without a secondary index"
            else:
                what = "unknown column"
            raise DeleteScopeError(
                f"delete_scope on {col!r} of {dataset}: {what}; only partition columns "
                f"{keys} and indexed columns {indexed} can select partitions (refusing to "
                "guess, which in kartothek deleted everything)"
            )


def delete_scope_labels(store: Store, meta: DatasetMetadata, delete_scope: Any) -> set[str]:
    """Labels of the partitions a ``delete_scope`` selects.

    Each scope is a dict ``{column: value}`` over partition columns and indexed columns; a
    partition matches a scope if it matches every entry (for an indexed column: holds the
    value). The result is the union over scopes.

    Raises
    ------
    DeleteScopeError
        For a scope naming an unknown or non-indexed column, a value of the wrong type or
        a malformed scope.
    """
    from dataset_kit.io.read import plan_read

    scopes = check_delete_scope(delete_scope)
    if not scopes:
        return set()
    keys = list(meta.partition_keys)
    check_scope_columns(
        scopes,
        keys=keys,
        indices=meta.indices,
        names=meta.schema.names if meta.schema is not None else [],
        dataset=f"dataset {meta.uuid!r}",
    )
    dnf = [[(col, "==", value) for col, value in scope.items()] for scope in scopes]
    if not meta.partitions:
        return set()
    try:
        plan = plan_read(store, meta, columns=[], predicates=dnf)
    except PredicateError as exc:
        raise DeleteScopeError(f"invalid delete_scope: {exc}") from exc
    return {part.label for part in plan.parts}


def check_partition_keys(meta: DatasetMetadata, partition_on: list[str] | None) -> list[str]:
    """The partition keys of an update: the dataset's; a different request is an error."""
    keys = list(meta.partition_keys)
    if partition_on is not None and partition_on != keys:
        raise InvalidInputError(
            f"dataset {meta.uuid!r} is partitioned on {keys}, not {partition_on}; the "
            "partitioning of a dataset cannot change (repartition it instead)"
        )
    return keys


def check_schema_keys(schema: pa.Schema | None, keys: list[str], uuid: str) -> None:
    """Partition keys must be columns of the schema."""
    if schema is None:
        return
    missing = [k for k in keys if k not in schema.names]
    if missing:
        raise SchemaMismatchError(f"dataset {uuid!r}: partition columns {missing} missing")


def conflict_on_any_change(
    what: str,
) -> Callable[[DatasetMetadata | None, DatasetMetadata | None], None]:
    """An ``on_conflict`` that refuses to rebase (overwrite, delete, write mode=error)."""

    def on_conflict(old: DatasetMetadata | None, new: DatasetMetadata | None) -> None:
        if old is None and new is not None:
            raise DatasetExistsError(
                f"dataset {new.uuid!r} was created by another writer during this {what}"
            )
        raise CommitConflictError(
            f"another writer committed to the dataset during this {what}; nothing was "
            "changed, retry the operation"
        )

    return on_conflict


def resolve_or_none(store: Store, dataset_uuid: str) -> _commit.Resolved | None:
    """The newest state of a dataset, or None if it does not exist."""
    try:
        return _commit.resolve(store, dataset_uuid)
    except DatasetNotFoundError:
        return None


def _added_index_values(staged: StagedWrite, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {c: {p.label: p.index_values[c] for p in staged.parts} for c in columns}


def union_categories(a: pa.Array, b: pa.Array) -> pa.Array:
    """Distinct values of two category arrays (``a``'s type)."""
    import pyarrow.compute as pc

    return pc.unique(pa.concat_arrays([a, b.cast(a.type)]))


def commit_write(
    kv: Store,
    uuid: str,
    staged: StagedWrite,
    *,
    base: _commit.Resolved | None,
    table_name: str,
    partition_on: list[str],
    secondary_indices: list[str],
    metadata: dict[str, Any],
) -> DatasetMetadata:
    """Commit staged blobs as the whole content of a dataset (a new one or an overwrite).

    Raises
    ------
    DatasetExistsError
        ``base`` is None and another writer created the dataset meanwhile.
    CommitConflictError
        Another writer committed to the dataset since ``base``.
    """
    added = _added_index_values(staged, secondary_indices)

    def build(_: DatasetMetadata | None) -> DatasetMetadata:
        schema = staged.schema
        indices: dict[str, Any] = {}
        if schema is not None:
            indices = build_indices(
                kv, uuid, schema, secondary_indices, base=None, added=added, removed=()
            )
        return DatasetMetadata(
            uuid=uuid,
            partitions={p.label: p.key for p in staged.parts},
            partition_keys=tuple(partition_on),
            table_name=table_name,
            indices=indices,
            metadata=metadata,
            schema=schema,
            stats={p.label: (p.rows, p.nbytes) for p in staged.parts},
            categories=staged.categories,
        )

    return _commit.commit(
        kv,
        uuid,
        base=base,
        build=build,
        on_conflict=conflict_on_any_change("write"),
        operation="write" if base is None else "overwrite",
        commit_info={"added": len(staged.parts), "rows": sum(p.rows for p in staged.parts)},
    )


def commit_update(
    kv: Store,
    uuid: str,
    staged: StagedWrite,
    *,
    base: _commit.Resolved | None,
    table_name: str,
    partition_on: list[str],
    secondary_indices: list[str],
    delete_scope: Any,
    removed: set[str],
    metadata: dict[str, Any],
    operation: str | None = None,
) -> DatasetMetadata:
    """Commit staged blobs as an append (minus the ``removed`` labels) to a dataset.

    Appends rebase onto concurrent commits; a removal whose ``delete_scope`` selection a
    concurrent commit changed fails.

    Raises
    ------
    CommitConflictError
        A concurrent commit changed the layout or the ``delete_scope`` selection.
    DatasetNotFoundError
        The dataset was deleted meanwhile.
    """
    keys, index_cols = partition_on, secondary_indices
    added = _added_index_values(staged, index_cols)

    def on_conflict(old: DatasetMetadata | None, new: DatasetMetadata | None) -> None:
        if new is None:
            raise DatasetNotFoundError(f"dataset {uuid!r} was deleted during the update")
        if (
            list(new.partition_keys) != keys
            or set(new.indices) != set(index_cols)
            or new.table_name != table_name
        ):
            raise CommitConflictError(
                f"dataset {uuid!r} was (re)written with another layout during the update; "
                "nothing was changed, retry the update"
            )
        if delete_scope is not None and delete_scope_labels(kv, new, delete_scope) != removed:
            raise CommitConflictError(
                f"dataset {uuid!r}: a concurrent commit changed the partitions selected by "
                "delete_scope; nothing was changed, retry the update"
            )

    def build(current: DatasetMetadata | None) -> DatasetMetadata:
        if current is None:
            current = DatasetMetadata(uuid=uuid, partition_keys=tuple(keys), table_name=table_name)
        schema = current.schema
        if staged.schema is not None:
            schema = merge_schemas(schema, staged.schema, dataset_uuid=uuid)
        categories = dict(current.categories)
        for col, cats in staged.categories.items():
            base_cats = categories.get(col)
            categories[col] = cats if base_cats is None else union_categories(base_cats, cats)
        partitions = {lb: k for lb, k in current.partitions.items() if lb not in removed}
        partitions.update({p.label: p.key for p in staged.parts})
        stats = {lb: st for lb, st in current.stats.items() if lb in partitions}
        stats.update({p.label: (p.rows, p.nbytes) for p in staged.parts})
        indices: dict[str, Any] = {}
        if schema is not None:
            indices = build_indices(
                kv, uuid, schema, index_cols, base=current, added=added, removed=removed
            )
        return current.evolve(
            partitions=partitions,
            indices=indices,
            schema=schema,
            stats=stats,
            categories=categories,
            metadata={**current.metadata, **metadata},
        )

    meta0 = base.meta if base is not None else None
    if operation is None:
        operation = "update" if removed else ("append" if meta0 is not None else "write")
    return _commit.commit(
        kv,
        uuid,
        base=base,
        build=build,
        on_conflict=on_conflict,
        operation=operation,
        commit_info={
            "added": len(staged.parts),
            "removed": len(removed),
            "rows": sum(p.rows for p in staged.parts),
        },
    )
