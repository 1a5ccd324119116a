"""The synchronous API: write, update, read, index, delete and list datasets."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import orjson
import pyarrow as pa

from dataset_kit.api._ops import (
    StagedWrite,
    as_list,
    build_indices,
    check_delete_scope,
    check_partition_keys,
    check_scope_columns,
    commit_update,
    commit_write,
    delete_scope_labels,
    resolve_or_none,
    stage_tables,
)
from dataset_kit.core import naming
from dataset_kit.core.duration import Duration, parse_duration, required_duration
from dataset_kit.core.metadata import STUB_MAX_BYTES, DatasetMetadata
from dataset_kit.exceptions import (
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidInputError,
    KeyNotFoundError,
    MetadataFormatError,
    StoreError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io import gc as _gc
from dataset_kit.io import read as _read
from dataset_kit.io.index import check_indexable, distinct_values
from dataset_kit.io.parquet import read_blob
from dataset_kit.io.write import WriteOptions
from dataset_kit.store import Store, open_store

__all__ = [
    "build_dataset_indices",
    "delete_dataset",
    "expire_versions",
    "garbage_collect",
    "list_datasets",
    "read_dataset_as_dataframes",
    "read_table",
    "update_dataset",
    "write_dataset",
]

logger = logging.getLogger(__name__)

StoreInput = Store | str | Any
Output = Literal["pandas", "arrow"]


def _options(compression: str, row_group_size: int | None, sort_partitions_by: Any) -> WriteOptions:
    return WriteOptions(
        compression=compression,
        row_group_size=row_group_size,
        sort_partitions_by=tuple(as_list(sort_partitions_by, "sort_partitions_by")),
    )


def _user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The user metadata, checked to be a JSON object before any blob is written."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        orjson.dumps(metadata)  # the snapshot's encoder: str keys, JSON values only
    except TypeError as exc:
        raise InvalidInputError(
            f"metadata must be JSON: string keys and str/int/float/bool/None/list/dict "
            f"values ({exc})"
        ) from None
    return dict(metadata)


def write_dataset(
    data: Any,
    *,
    store: StoreInput,
    dataset_uuid: str,
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    mode: Literal["error", "overwrite"] = "error",
    metadata: Mapping[str, Any] | None = None,
    table_name: str = naming.DEFAULT_TABLE,
    compression: str = "snappy",
    row_group_size: int | None = None,
    sort_partitions_by: str | Sequence[str] | None = None,
) -> DatasetMetadata:
    """Write a dataset from a DataFrame, an Arrow table, or an iterable of them.

    All blobs are written first; one commit makes them visible as a new version.

    Parameters
    ----------
    data
        A pandas DataFrame, a pyarrow Table/RecordBatch, or an iterable of them (written
        one at a time: memory stays bounded by one frame).
    store
        A :class:`~dataset_kit.store.Store`, a URL or path, or a simplekv/minimalkv store.
    dataset_uuid
        Name of the dataset (``[A-Za-z0-9_+-]+``).
    partition_on
        Columns whose values split the data into partitions (hive-style keys).
    secondary_indices
        Columns to build secondary (inverted) indices on, for predicate pruning.
    mode
        ``"error"``: fail if the dataset exists; ``"overwrite"``: replace its content with
        a new version (old blobs stay until garbage collection; old versions stay readable).
    metadata
        User metadata stored with the dataset.
    table_name
        Table name in the key layout (kartothek's ``table``).
    compression
        Parquet codec: ``snappy`` (default, as kartothek; the fastest to write and read
        here), ``zstd`` (about 17% smaller files), ``lz4``, ``gzip``, ``brotli``, ``none``.
    row_group_size
        Rows per Parquet row group (None: pyarrow's default).
    sort_partitions_by
        Sort each file by these columns so row-group statistics prune well.

    Returns
    -------
    DatasetMetadata
        The committed version.

    Raises
    ------
    DatasetExistsError
        ``mode="error"`` and the dataset exists (or was created concurrently).
    CommitConflictError
        ``mode="overwrite"`` and another writer committed meanwhile.
    InvalidInputError, PartitionValueError, SchemaMismatchError
        Bad input; nothing is committed.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"day": ["2024-01-01", "2024-01-02"], "sales": [1.5, 2.5]})
    >>> meta = dk.write_dataset(df, store=store, dataset_uuid="sales", partition_on=["day"])
    >>> meta.version, meta.num_partitions
    (0, 2)
    """
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    table_name = naming.validate_table(table_name)
    if mode not in ("error", "overwrite"):
        raise InvalidInputError(f"mode must be 'error' or 'overwrite', got {mode!r}")
    keys = as_list(partition_on, "partition_on")
    index_cols = as_list(secondary_indices, "secondary_indices")
    options = _options(compression, row_group_size, sort_partitions_by)
    user_meta = _user_metadata(metadata)
    _commit.require_atomic(kv)  # before any blob is written
    base = resolve_or_none(kv, uuid)
    if base is not None and mode == "error":
        raise DatasetExistsError(f"dataset {uuid!r} already exists (pass mode='overwrite')")
    staged = stage_tables(
        kv,
        uuid,
        data,
        table_name=table_name,
        partition_on=keys,
        secondary_indices=index_cols,
        options=options,
        base_schema=None,
        base_categories={},
    )
    if staged.frames == 0:
        raise InvalidInputError("no data given: pass a DataFrame, a Table or a non-empty iterable")
    return commit_write(
        kv,
        uuid,
        staged,
        base=base,
        table_name=table_name,
        partition_on=keys,
        secondary_indices=index_cols,
        metadata=user_meta,
    )


def update_dataset(
    data: Any = None,
    *,
    store: StoreInput,
    dataset_uuid: str,
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    sort_partitions_by: str | Sequence[str] | None = None,
) -> DatasetMetadata:
    """Append data to a dataset and/or remove partitions, as one new version.

    Appends rebase onto concurrent commits (nothing is lost); a ``delete_scope`` whose
    selection was changed by a concurrent writer fails with :class:`CommitConflictError`.
    Every existing secondary index is kept up to date. A missing dataset is created.

    Parameters
    ----------
    data
        Frames to append (as for :func:`write_dataset`), or None.
    store, dataset_uuid
        The dataset.
    delete_scope
        A list of ``{column: value}`` dicts over partition columns and indexed columns:
        partitions matching any dict are removed in the same commit.
    partition_on
        Must equal the dataset's partition columns if given.
    secondary_indices
        Must be among the dataset's indexed columns (use :func:`build_dataset_indices` to
        add one).
    metadata
        Merged into the user metadata.
    compression, row_group_size, sort_partitions_by
        As for :func:`write_dataset`.

    Returns
    -------
    DatasetMetadata
        The committed version.

    Raises
    ------
    DeleteScopeError
        A scope names an unknown or non-indexed column.
    SchemaMismatchError
        The new data does not fit the dataset schema.
    CommitConflictError
        A concurrent commit changed what ``delete_scope`` selects.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"p": [1], "x": [1.0]}), store=store,
    ...                      dataset_uuid="ds", partition_on="p")
    >>> meta = dk.update_dataset(pd.DataFrame({"p": [2], "x": [2.0]}), store=store,
    ...                          dataset_uuid="ds", delete_scope=[{"p": 1}])
    >>> dk.read_table(store=store, dataset_uuid="ds")
       p    x
    0  2  2.0
    """
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    _commit.require_atomic(kv)  # before any blob is written
    base = resolve_or_none(kv, uuid)
    meta0 = base.meta if base is not None else None
    requested_keys = None if partition_on is None else as_list(partition_on, "partition_on")
    requested = as_list(secondary_indices, "secondary_indices")
    if meta0 is None:
        if data is None:
            raise DatasetNotFoundError(f"dataset {uuid!r} does not exist")
        keys, index_cols, table_name = requested_keys or [], requested, naming.DEFAULT_TABLE
    else:
        keys = check_partition_keys(meta0, requested_keys)
        unknown = [c for c in requested if c not in meta0.indices]
        if unknown:
            raise InvalidInputError(
                f"dataset {uuid!r} has no secondary index on {unknown}; build it first with "
                "build_dataset_indices"
            )
        index_cols, table_name = list(meta0.indices), meta0.table_name
        if data is not None:
            _check_existing_indices(meta0)
    options = _options(compression, row_group_size, sort_partitions_by)
    user_meta = _user_metadata(metadata)
    if meta0 is not None:
        removed0 = delete_scope_labels(kv, meta0, delete_scope)
    else:  # a new dataset: nothing to delete, but the scope must make sense all the same
        removed0 = set()
        check_scope_columns(
            check_delete_scope(delete_scope),
            keys=keys,
            indices=index_cols,
            names=None,
            dataset=f"the new dataset {uuid!r}",
        )
    staged = StagedWrite()
    if data is not None:
        staged = stage_tables(
            kv,
            uuid,
            data,
            table_name=table_name,
            partition_on=keys,
            secondary_indices=index_cols,
            options=options,
            base_schema=meta0.schema if meta0 is not None else None,
            base_categories=meta0.categories if meta0 is not None else {},
        )
        if meta0 is None and staged.frames == 0:
            raise InvalidInputError("no data given: pass a DataFrame, a Table or frames")
    if (
        meta0 is not None
        and not staged.parts
        and not removed0
        and not user_meta
        and (staged.frames == 0 or staged.schema == meta0.schema)
    ):
        logger.info("dataset %s: nothing to update", uuid)
        return meta0
    return commit_update(
        kv,
        uuid,
        staged,
        base=base,
        table_name=table_name,
        partition_on=keys,
        secondary_indices=index_cols,
        delete_scope=delete_scope,
        removed=removed0,
        metadata=user_meta,
    )


def _check_existing_indices(meta: DatasetMetadata) -> None:
    """Refuse to append to a dataset whose secondary index plateau cannot hold (one
    written by an older release), with the way out, before anything is written.

    Raises
    ------
    InvalidInputError
        Naming the column, its type and the fix.
    """
    schema = _read.logical_schema(meta)
    for col in meta.indices:
        if col not in schema.names:
            continue
        try:
            check_indexable(col, schema.field(col).type, meta.partition_keys)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"dataset {meta.uuid!r} has a secondary index that an older release "
                f"accepted but plateau/kartothek cannot update: {exc}. Rewrite the dataset "
                "without it: write_dataset(read_table(...), mode='overwrite', "
                "secondary_indices=[the other columns])"
            ) from None


def _plan(
    store: StoreInput,
    dataset_uuid: str,
    columns: Sequence[str] | None,
    predicates: Any,
    version: int | None,
) -> tuple[Store, _read.ReadPlan]:
    kv = open_store(store)
    meta = _commit.load_version(kv, dataset_uuid, version)
    return kv, _read.plan_read(kv, meta, columns=columns, predicates=predicates)


def _finish(
    plan: _read.ReadPlan, table: pa.Table, output: Output, categoricals: Sequence[str] | None
) -> Any:
    if output not in ("pandas", "arrow"):
        raise InvalidInputError(f"output must be 'pandas' or 'arrow', got {output!r}")
    for col in as_list(categoricals, "categoricals"):
        if col not in table.column_names:
            raise InvalidInputError(f"categoricals names column {col!r} that is not read")
        idx = table.column_names.index(col)
        if not pa.types.is_dictionary(table.schema.field(idx).type):
            table = table.set_column(idx, col, table.column(idx).dictionary_encode())
    return _read.to_output(plan, table, output)


def read_table(
    *,
    store: StoreInput,
    dataset_uuid: str,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
    version: int | None = None,
    output: Output = "pandas",
    categoricals: Sequence[str] | None = None,
) -> Any:
    """Read a dataset (or a selection of it) as one pandas DataFrame or Arrow table.

    Parameters
    ----------
    store, dataset_uuid
        The dataset.
    columns
        Columns to return, in this order (None: all, in the dataset's order).
    predicates
        DNF filter ``[[(col, op, value), ...], ...]`` with ``== != < <= > >= in not in``;
        pruned by partition values, secondary indices and row-group statistics, then
        applied to rows exactly (pandas null semantics).
    version
        A retained version to read (None: the newest).
    output
        ``"pandas"`` (default) or ``"arrow"``.
    categoricals
        Columns to return as categoricals.

    Returns
    -------
    pandas.DataFrame or pyarrow.Table
        Rows in deterministic order: partitions sorted by partition values, then in
        commit order.

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError, PredicateError, InvalidInputError,
    MetadataFormatError, DataBlobMissingError

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"p": [1, 1, 2], "x": [1.0, 2.0, 3.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="t", partition_on="p")
    >>> dk.read_table(store=store, dataset_uuid="t", predicates=[[("x", ">", 1.5)]])
       p    x
    0  1  2.0
    1  2  3.0
    """
    kv, plan = _plan(store, dataset_uuid, columns, predicates, version)
    table = _read.concat(plan, _read.read_partitions(kv, plan))
    return _finish(plan, table, output, categoricals)


def read_dataset_as_dataframes(
    *,
    store: StoreInput,
    dataset_uuid: str,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
    version: int | None = None,
    dispatch_by: str | Sequence[str] | None = None,
    output: Output = "pandas",
    categoricals: Sequence[str] | None = None,
) -> list[Any]:
    """Read a dataset as a list of frames: one per partition, or per ``dispatch_by`` group.

    ``dispatch_by=[]`` gives one frame with everything. Frames left empty by the
    predicates are omitted. See :func:`read_table` for the other parameters.

    Raises
    ------
    InvalidInputError
        If ``dispatch_by`` names a column that is not a partition column.
    """
    kv, plan = _plan(store, dataset_uuid, columns, predicates, version)
    groups = list(
        _read.iter_groups(
            plan, None if dispatch_by is None else as_list(dispatch_by, "dispatch_by")
        )
    )
    tables = _read.read_partitions(kv, plan)
    by_label = {p.label: t for p, t in zip(plan.parts, tables, strict=True)}
    out = []
    for group in groups:
        table = _read.concat(plan, [by_label[p.label] for p in group])
        if table.num_rows:
            out.append(_finish(plan, table, output, categoricals))
    return out


def _old_history_references(
    kv: Store, uuid: str, tomb_version: int, snapshots: Mapping[str, int | None]
) -> set[str]:
    """Blobs referenced by the readable snapshots older than the tombstone."""

    def refs_of(version: int) -> list[str]:
        try:
            return list(_gc.references(_commit.read_snapshot(kv, uuid, version)))
        except (KeyNotFoundError, MetadataFormatError):
            return []  # a stub, or unreadable: its blobs are garbage for garbage_collect

    versions = sorted(v for v in snapshots.values() if v is not None and v < tomb_version)
    if not versions:
        return set()
    with ThreadPoolExecutor(min(8, len(versions)), thread_name_prefix="dk-delete") as pool:
        return {key for refs in pool.map(refs_of, versions) for key in refs}


def _delete_common_metadata(kv: Store, uuid: str, tomb_version: int, key: str) -> None:
    """Delete the old ``_common_metadata`` unless a new dataset under the uuid wrote it.

    A new history writes its first snapshot, then ``_common_metadata``, then its pointer.
    If that snapshot appears while we delete, the file is written again from the newest
    snapshot, so plateau can read the new dataset.
    """
    fresh = naming.snapshot_key(uuid, tomb_version + 1)
    if kv.exists(fresh):
        return  # theirs
    kv.delete(key)
    if not kv.exists(fresh):
        return
    try:
        newest = _commit.read_snapshot(kv, uuid, max(_commit.snapshot_versions(kv, uuid)))
        if newest.schema is not None and not newest.tombstone:
            _commit.write_common_metadata_file(kv, newest)
    except (StoreError, MetadataFormatError) as exc:  # only plateau reads it
        logger.warning("dataset %s: _common_metadata not rewritten: %s", uuid, exc)


def delete_dataset(*, store: StoreInput, dataset_uuid: str) -> None:
    """Delete a dataset: it stops existing at once, then its blobs are removed.

    A tombstone version is committed first, so writers working on the old state fail
    instead of resurrecting it; then the pointer goes (the dataset no longer exists for
    any reader, plateau included), then the blobs of the deleted history (those its
    snapshots reference, and any other older than the tombstone: a dataset created under
    the uuid meanwhile keeps its younger blobs). Older snapshots
    are replaced by small stubs rather than deleted, so their version numbers are never
    committed again by a writer that planned on them.

    A dataset whose metadata cannot be read (a corrupt pointer or snapshot) is deleted
    too: its tombstone takes the next free version, and its blobs are those its readable
    snapshots reference plus those older than the tombstone (on a store without
    modification times, only the referenced ones).

    Raises
    ------
    DatasetNotFoundError
        If the dataset does not exist.
    """
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    base: _commit.Resolved | None
    try:
        base = _commit.resolve(kv, uuid)
    except MetadataFormatError as error:
        logger.warning("dataset %s: deleting it although its metadata is unreadable", uuid)
        base = None
        tomb = _commit.bury_unreadable(kv, uuid, reason=str(error))
    else:
        meta = base.meta
        tomb = _commit.commit(
            kv,
            uuid,
            base=base,
            build=lambda cur: DatasetMetadata(
                uuid=uuid, table_name=meta.table_name, tombstone=True
            ),
            on_conflict=lambda old, new: None,
            operation="delete",
        )
    kv.delete(naming.pointer_key(uuid))
    kv.delete(naming.pointer_msgpack_key(uuid))
    assert tomb.version is not None
    keep = naming.snapshot_key(uuid, tomb.version)
    # From now on the uuid is free: a new dataset may be created under it while we clean
    # up, and its blobs must survive. Ours are older than the tombstone (a write planned
    # on the old state cannot commit past it), theirs younger: compare modification
    # times on the store's own clock (the tombstone's), never the client's.
    try:
        tomb_mtime = kv.stat(keep).mtime
    except StoreError:
        tomb_mtime = 0.0
    infos = [i for i in kv.iter_infos(naming.dataset_prefix(uuid)) if i.key != keep]
    snapshots = {i.key: naming.parse_snapshot_key(uuid, i.key) for i in infos}
    # what the deleted history referenced is certainly ours, whatever its age (a store
    # with coarse or no modification times cannot tell the last commit's blobs apart)
    old_refs = set(_gc.references(base.meta)) if base is not None else set()
    old_refs.update(_old_history_references(kv, uuid, tomb.version, snapshots))
    # unreadable: the table's name is unknown, so its schema file goes by age like a blob
    common = naming.common_metadata_key(uuid, base.meta.table_name) if base is not None else None
    young = [
        i.key
        for i in infos
        if snapshots[i.key] is None
        and i.key not in old_refs
        and i.key != common
        and not 0 < i.mtime < tomb_mtime
    ]
    spare = set(young)
    already = {i.key for i in infos if i.size <= STUB_MAX_BYTES}  # stubs stay as they are
    # old snapshots become stubs, never free slots: a writer that planned on one of them
    # and commits late must meet a taken version (and learn that the dataset is gone),
    # not create a snapshot nobody will ever read and be told it committed
    versions = [
        v for k, v in snapshots.items() if v is not None and v < tomb.version and k not in already
    ]
    _commit.expire(kv, uuid, versions)
    report = kv.delete_many(
        k for k in snapshots if snapshots[k] is None and k not in spare and k != common
    )
    if common is not None and common in snapshots:
        _delete_common_metadata(kv, uuid, tomb.version, common)
    kv.remove_empty_dirs(naming.dataset_prefix(uuid))  # also those a GC left empty
    if report.failed:
        logger.warning(
            "dataset %s: %d blobs could not be deleted (garbage now)", uuid, len(report.failed)
        )
    logger.info("dataset %s: deleted (%d blobs)", uuid, len(report.deleted))


def build_dataset_indices(
    *, store: StoreInput, dataset_uuid: str, columns: str | Sequence[str]
) -> DatasetMetadata:
    """Build (or rebuild) secondary indices on ``columns`` and commit them.

    Raises
    ------
    InvalidInputError
        For unknown, partition or non-indexable columns.
    """
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    cols = as_list(columns, "columns")
    if not cols:
        raise InvalidInputError("build_dataset_indices needs the columns to index")
    base = _commit.resolve(kv, uuid)
    cache: dict[str, dict[str, pa.Array]] = {}

    def compute(meta: DatasetMetadata) -> dict[str, dict[str, pa.Array]]:
        schema = _read.logical_schema(meta)
        for col in cols:
            if col not in schema.names:
                raise InvalidInputError(f"dataset {uuid!r} has no column {col!r}")
            check_indexable(col, schema.field(col).type, meta.partition_keys)
        for label, key in meta.partitions.items():
            if label in cache:
                continue
            table = read_blob(kv, key, columns=cols, row_filter=None, dataset_uuid=uuid)
            cache[label] = {
                c: distinct_values(table.column(c), schema.field(c).type)
                if c in table.column_names
                else pa.array([], schema.field(c).type)
                for c in cols
            }
        return {c: {lb: cache[lb][c] for lb in meta.partitions} for c in cols}

    compute(base.meta)

    def build(current: DatasetMetadata | None) -> DatasetMetadata:
        assert current is not None
        added = compute(current)
        schema = _read.logical_schema(current)
        fresh = build_indices(kv, uuid, schema, cols, base=None, added=added, removed=())
        return current.evolve(indices={**current.indices, **fresh})

    def on_conflict(old: DatasetMetadata | None, new: DatasetMetadata | None) -> None:
        if new is None:
            raise DatasetNotFoundError(f"dataset {uuid!r} was deleted meanwhile")

    return _commit.commit(
        kv,
        uuid,
        base=base,
        build=build,
        on_conflict=on_conflict,
        operation="build_indices",
        commit_info={"columns": cols},
    )


def garbage_collect(
    *,
    store: StoreInput,
    dataset_uuid: str,
    grace_period: Duration = _gc.DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: Duration | None = None,
    scan: bool = True,
    expire: bool = False,
    dry_run: bool = False,
    prune_dirs: bool = False,
) -> _gc.GarbageReport:
    """Delete the blobs of a dataset that no retained version references.

    Updates only change metadata; replaced partitions, old index files and the blobs of
    failed writers stay until this runs. Only blobs older than ``grace_period`` seconds
    are deleted, so writers that have not committed yet keep their blobs (a writer must
    commit within the grace period); retained versions stay fully readable.

    Parameters
    ----------
    store, dataset_uuid
        The dataset.
    grace_period
        Minimum age of a blob to delete: seconds, a ``timedelta`` or text such as
        ``"30min"`` (default one hour).
    keep_versions, retention
        Which versions' blobs to keep: the newest ``keep_versions`` and/or those
        committed less than ``retention`` seconds ago (the newest always). Neither: every
        version (the default). Blobs of other versions are deleted; expire those versions
        (``expire=True``, or :func:`expire_versions`): readers of them would miss blobs.
    scan
        List the dataset's blobs (the default): also finds the orphans of writers that
        died before committing and the blobs of versions expired earlier. ``False``: the
        candidates come from the metadata alone, the blobs that versions outside the
        rules reference and no retained version does (deltalake's "lite" vacuum); no
        listing, so the cost follows the versions leaving the window, not the dataset's
        size. Needs ``keep_versions`` and/or ``retention``. Either way the store checks
        ``grace_period`` again as it deletes each blob.
    expire
        Once every planned blob is deleted, expire the versions outside the rules (as
        :func:`expire_versions`), so that a later ``scan=False`` run skips them; if any
        was left (failed, or too young), nothing is expired and the next run retries.
    dry_run
        Report what would be deleted without deleting anything.
    prune_dirs
        On a local filesystem, also remove the partition directories the deletes empty
        and, in a scanning run, every empty directory below the dataset. Off by
        default, as in deltalake's vacuum: an empty directory holds no data and a
        later write into that partition reuses it, while each ``rmdir`` costs about
        60-75 us here, serialized per parent directory (more than deleting the blob in
        it). :func:`delete_dataset` always removes the dataset's directories.

    Returns
    -------
    GarbageReport
        Keys, count and bytes deleted (or to delete), blobs kept for being too young,
        the versions expired.

    Raises
    ------
    DatasetNotFoundError
        If the dataset does not exist (a scanning run collects a deleted dataset's
        leftover blobs instead).
    InvalidInputError
        ``scan=False`` or ``expire=True`` without ``keep_versions``/``retention``.
    MetadataFormatError
        If a snapshot is unreadable (then nothing is deleted).

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"p": [1, 2], "x": [1.0, 2.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="g", partition_on="p")
    >>> _ = dk.update_dataset(store=store, dataset_uuid="g", delete_scope=[{"p": 1}])
    >>> dk.garbage_collect(store=store, dataset_uuid="g", grace_period=0).count
    0
    >>> report = dk.garbage_collect(store=store, dataset_uuid="g", keep_versions=1,
    ...                             grace_period=0, scan=False, expire=True)
    >>> history = dk.open_dataset(store=store, dataset_uuid="g").versions()
    >>> report.count, report.expired, [v["version"] for v in history]
    (1, [0], [1])
    """
    grace = required_duration(grace_period, name="grace_period")
    return _gc.collect_garbage(
        open_store(store),
        dataset_uuid,
        grace_period=grace,
        keep_versions=keep_versions,
        retention=parse_duration(retention, name="retention"),
        scan=scan,
        expire=expire,
        dry_run=dry_run,
        prune_dirs=prune_dirs,
    )


def expire_versions(
    *,
    store: StoreInput,
    dataset_uuid: str,
    keep_versions: int | None = None,
    retention: Duration | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Forget old versions: replace their snapshots by stubs (the newest always stays).

    Their blobs stay until a scanning :func:`garbage_collect`. To delete them from the
    metadata alone, collect with ``scan=False, expire=True`` instead: once expired, a
    version's references are gone.

    Parameters
    ----------
    store, dataset_uuid
        The dataset.
    keep_versions
        Keep the newest ``keep_versions`` versions.
    retention
        Keep versions committed less than ``retention`` seconds ago.
    dry_run
        Only report which versions would expire.

    Returns
    -------
    list of int
        The expired versions.

    Raises
    ------
    InvalidInputError
        If neither rule is given.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> for i in range(3):
    ...     _ = dk.update_dataset(pd.DataFrame({"x": [i]}), store=store, dataset_uuid="e")
    >>> dk.expire_versions(store=store, dataset_uuid="e", keep_versions=1)
    [0, 1]
    """
    return _gc.expire_versions(
        open_store(store),
        naming.validate_uuid(dataset_uuid),
        keep_versions=keep_versions,
        retention=parse_duration(retention, name="retention"),
        dry_run=dry_run,
    )


def list_datasets(store: StoreInput) -> list[str]:
    """Uuids of the datasets in a store (by their pointer files), sorted.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"a": [1]}), store=store, dataset_uuid="one")
    >>> dk.list_datasets(store)
    ['one']
    """
    return _commit.list_dataset_uuids(open_store(store))
