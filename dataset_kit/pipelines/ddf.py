"""Dask DataFrame I/O: a dataset as a lazy dask DataFrame, a dask DataFrame as a dataset.

Reading plans on the client (version pinned; partition, index and row-group pruning as for
:func:`dataset_kit.read_table`) and builds the frame with ``dd.from_map``: one task per
blob (or per ``dispatch_by`` group) with no dependencies, so the distributed scheduler's
root-task queuing keeps only a few partitions in memory at a time. Column selections on
the frame (``ddf[["a", "b"]]``) reach the Parquet reader through dask's projection
pushdown. Every partition, and the frame's ``meta``, has exactly the dtypes the eager
reader returns, whatever ``dataframe.convert-string`` says (dask's string conversion is
not applied: the dataset's pandas metadata decides between ``str`` and ``string``, and
between ``int64`` and ``Int64``, never each blob's own). A dataset written before
datasets recorded the nullable dtype of integer/boolean columns with nulls reads such a
column as ``Int64``/``boolean`` only in the partitions that hold nulls (exact, but the
meta says ``int64``/``bool``); rewriting it (or appending nulls) records the dtype.

Writing follows the pipeline model: one node per dask partition writes its blobs and
returns a small descriptor, one commit node makes all of them visible as one version;
both functions return a :class:`~dataset_kit.pipelines.Job`, like every pipeline.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from dataset_kit.api._ops import as_list, delete_scope_labels
from dataset_kit.core import naming
from dataset_kit.core.partition import value_type
from dataset_kit.core.schema import merge_schemas
from dataset_kit.exceptions import DataBlobMissingError, InvalidInputError, KeyNotFoundError
from dataset_kit.io import commit as _commit
from dataset_kit.io import read as _read
from dataset_kit.io.parquet import read_footer
from dataset_kit.io.write import WriteOptions, to_arrow, validate_write_columns
from dataset_kit.pipelines._job import Job, final_node, task_key
from dataset_kit.pipelines.compute import (
    Mode,
    NodeResult,
    WriteTarget,
    commit_results,
    resolve_target,
    slim_plan,
    write_result,
)
from dataset_kit.store import Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = ["empty_frame", "from_plan", "read_dataset_as_ddf", "update_from_ddf", "write_ddf"]

logger = logging.getLogger(__name__)

Group = list[_read.PartitionRead]


def _dd() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:  # pragma: no cover - dask is a dependency of the extra
        raise ImportError(
            "dask DataFrames need dask[dataframe]: pip install 'dataset-kit[dask]'"
        ) from exc
    return dd


def _to_frame(
    plan: _read.ReadPlan, table: pa.Table, categoricals: Sequence[str], nullable: bool = False
) -> pd.DataFrame:
    """A read table as pandas, exactly as :func:`dataset_kit.read_table` returns it
    (``nullable``: every integer and boolean column in its nullable dtype)."""
    for col in categoricals:
        if col not in table.column_names:
            continue  # projected away
        idx = table.column_names.index(col)
        if not pa.types.is_dictionary(table.schema.field(idx).type):
            table = table.set_column(idx, col, table.column(idx).dictionary_encode())
    frame: pd.DataFrame = _read.to_output(plan, table, "pandas", nullable=nullable)
    return frame


def empty_frame(
    plan: _read.ReadPlan, categoricals: Sequence[str] = (), *, nullable: bool = False
) -> pd.DataFrame:
    """A zero-row frame with the exact dtypes of a read of ``plan``.

    Categorical columns of the dataset carry the dataset's categories (every partition
    reads with them); ``categoricals`` that are plain columns in the dataset get
    categories per partition, so their categories are unknown (dask's convention).
    ``nullable``: every integer and boolean column in its nullable dtype.
    """
    arrays = []
    fields = []
    for name in plan.columns:
        f = plan.schema.field(name)
        empty = pa.array([], value_type(f.type))
        arr = _read._conform_column(name, f.type, empty, plan.meta.categories.get(name))
        arrays.append(arr)
        fields.append(f.with_type(arr.type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    frame = _to_frame(plan, table, categoricals, nullable)
    unknown = [
        c
        for c in categoricals
        if c in plan.columns and not pa.types.is_dictionary(plan.schema.field(c).type)
    ]
    if unknown:
        from dask.dataframe.utils import clear_known_categories

        frame = clear_known_categories(frame, cols=unknown)
    return frame


class _GroupReader:
    """The ``from_map`` function: read one group of blobs as a pandas DataFrame.

    Small and picklable (the plan carries no partition list); ``columns`` is what dask's
    projection pushdown passes in.
    """

    def __init__(
        self,
        store: Store,
        plan: _read.ReadPlan,
        categoricals: tuple[str, ...],
        index: str | None,
        sort_index: bool,
        nullable: bool = False,
    ) -> None:
        self.store = store
        self.plan = plan
        self.categoricals = categoricals
        self.index = index
        self.sort_index = sort_index
        self.nullable = nullable

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        meta = self.plan.meta
        return (
            "dk-read",
            self.store.url,
            meta.uuid,
            meta.version,
            self.plan.columns,
            self.categoricals,
            self.index,
            self.nullable,
        )

    def __call__(self, parts: Group, columns: Sequence[str] | None = None) -> pd.DataFrame:
        plan = self.plan
        if columns is not None:
            wanted = list(columns)
            if self.index is not None and self.index not in wanted:
                wanted.append(self.index)
            plan = replace(plan, columns=wanted)
        table = _read.concat(plan, _read.read_partitions(self.store, plan, parts))
        frame = _to_frame(plan, table, self.categoricals, self.nullable)
        if self.index is not None:
            frame = frame.set_index(self.index)
            if self.sort_index:
                frame = frame.sort_index(kind="stable")
        if columns is not None:
            frame = frame[list(columns)]
        return frame


def _as_pandas_values(values: Sequence[Any], t: pa.DataType) -> list[Any]:
    """Python values (or Arrow scalars) of Arrow type ``t`` as the pandas index holds them."""
    arr = pa.array([v.as_py() if isinstance(v, pa.Scalar) else v for v in values], t)
    return list(arr.to_pandas())


def _blob_range(
    store: Store, plan: _read.ReadPlan, part: _read.PartitionRead, column: str
) -> tuple[Any, Any] | None:
    """(min, max) of ``column`` in a blob from its row-group statistics (None: no rows).

    Raises
    ------
    InvalidInputError
        Without statistics, or with nulls in the column.
    """
    stats = plan.meta.stats.get(part.label)
    try:
        md = read_footer(store, part.key, size=stats[1] if stats is not None else None)
    except (KeyNotFoundError, FileNotFoundError) as exc:
        raise DataBlobMissingError(
            f"dataset {plan.meta.uuid!r}: data blob {part.key!r} is referenced but missing"
        ) from exc
    names = [md.schema.column(j).path for j in range(md.num_columns)]
    if column not in names:
        raise InvalidInputError(
            f"divisions_by={column!r}: blob {part.key!r} has no such column (all nulls)"
        )
    j = names.index(column)
    lo = hi = None
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_rows == 0:
            continue
        s = rg.column(j).statistics
        if s is None or not s.has_min_max or s.null_count is None or s.null_count > 0:
            raise InvalidInputError(
                f"divisions_by={column!r}: blob {part.key!r} has nulls in the column or no "
                "statistics; known divisions need a null-free column with statistics"
            )
        lo = s.min if lo is None or s.min < lo else lo
        hi = s.max if hi is None or s.max > hi else hi
    return None if lo is None else (lo, hi)


_SORTABLE = (
    pa.types.is_integer,
    pa.types.is_date,
    pa.types.is_timestamp,
    pa.types.is_string,
    pa.types.is_large_string,
)


def _divisions(
    store: Store, plan: _read.ReadPlan, groups: list[Group], column: str
) -> tuple[list[Group], tuple[Any, ...]]:
    """Groups in index order and their known divisions on ``column``.

    Raises
    ------
    InvalidInputError
        The column is not sorted across the groups (overlapping ranges), has nulls, or a
        group of a partition column holds several of its values.
    """
    t = value_type(plan.schema.field(column).type)
    if column in plan.meta.partition_keys:
        firsts = []
        for g in groups:
            distinct = {p.values[column].as_py() for p in g}
            if len(distinct) != 1:
                raise InvalidInputError(
                    f"divisions_by={column!r}: a dispatch_by group holds several of its "
                    "values; include it in dispatch_by"
                )
            firsts.append(g[0].values[column])
        values = _as_pandas_values(firsts, t)
        order = sorted(range(len(groups)), key=lambda i: values[i])
        divs = [values[i] for i in order]
        return [groups[i] for i in order], (*divs, divs[-1])
    if pa.types.is_dictionary(plan.schema.field(column).type) or not any(
        check(t) for check in _SORTABLE
    ):
        raise InvalidInputError(
            f"divisions_by={column!r}: known divisions need an integer, date, timestamp or "
            f"string column or a partition column, not {t}"
        )
    flat = [p for g in groups for p in g]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="dk-footer") as pool:
        ranges = dict(
            zip(
                (p.label for p in flat),
                pool.map(lambda p: _blob_range(store, plan, p, column), flat),
                strict=True,
            )
        )
    bounds: list[tuple[Any, Any, Group]] = []
    for g in groups:
        rs = [r for r in (ranges[p.label] for p in g) if r is not None]
        if not rs:
            continue  # only empty blobs: cannot happen for blobs dataset_kit writes
        lo, hi = _as_pandas_values([min(r[0] for r in rs), max(r[1] for r in rs)], t)
        bounds.append((lo, hi, g))
    bounds.sort(key=lambda b: b[0])
    for (_, hi, _), (lo, _, _) in itertools.pairwise(bounds):
        if not hi < lo:
            raise InvalidInputError(
                f"divisions_by={column!r}: the column is not sorted across partitions "
                f"(value ranges overlap at {hi!r} / {lo!r}); use ddf.set_index({column!r})"
            )
    if not bounds:
        return [], ()
    divs = [b[0] for b in bounds] + [bounds[-1][1]]
    return [b[2] for b in bounds], tuple(divs)


def from_plan(
    store: Store,
    plan: _read.ReadPlan,
    groups: list[Group],
    *,
    categoricals: Sequence[str] = (),
    divisions_by: str | None = None,
    nullable: bool = False,
) -> Any:
    """A dask DataFrame reading ``groups`` (lists of blobs of ``plan``), one per partition.

    The building block of :func:`read_dataset_as_ddf` and the repartition pipeline.
    ``nullable=True`` reads every integer and boolean column in its nullable dtype (meta
    and partitions alike, with or without nulls): exact, whatever the dataset's pandas
    metadata says (the repartition's shuffle).
    """
    import dask

    dd = _dd()
    cats = tuple(categoricals)
    meta = empty_frame(plan, cats, nullable=nullable)
    divisions = None
    if divisions_by is not None:
        if divisions_by not in plan.schema.names:
            raise InvalidInputError(f"divisions_by names unknown column {divisions_by!r}")
        if divisions_by not in plan.columns:
            plan = replace(plan, columns=[*plan.columns, divisions_by])
            meta = empty_frame(plan, cats, nullable=nullable)
        if groups:
            groups, divisions = _divisions(store, plan, groups, divisions_by)
        meta = meta.set_index(divisions_by)
    # dask's string conversion would turn ``str`` columns into ``string[pyarrow]``; the
    # dataset's own dtypes are kept (the eager and the dask readers agree)
    with dask.config.set({"dataframe.convert-string": False}):
        if not groups:
            return dd.from_pandas(meta, npartitions=1)
        reader = _GroupReader(
            store,
            slim_plan(plan),
            cats,
            divisions_by,
            divisions_by is not None and divisions_by not in plan.meta.partition_keys,
            nullable,
        )
        return dd.from_map(
            reader,
            groups,
            meta=meta,
            divisions=divisions,
            label=f"dk-read-{plan.meta.uuid}",
            enforce_metadata=False,
        )


def read_dataset_as_ddf(
    *,
    store: Any,
    dataset_uuid: str,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
    version: int | None = None,
    dispatch_by: str | Sequence[str] | None = None,
    categoricals: Sequence[str] | None = None,
    divisions_by: str | None = None,
) -> Any:
    """Read a dataset as a lazy dask DataFrame: one partition per blob or ``dispatch_by`` group.

    Planning happens here (the version is pinned, so later commits do not change what the
    frame reads); each partition is read when computed. The frame, computed, equals
    :func:`dataset_kit.read_table` with the same arguments (same dtypes, and the same
    rows in the same order unless ``divisions_by`` reorders them), whatever
    ``dataframe.convert-string`` is set to.

    Parameters
    ----------
    store, dataset_uuid
        The dataset.
    columns
        Columns to read (None: all). Selecting columns on the returned frame later also
        prunes what is read (dask's projection pushdown reaches the reader).
    predicates
        DNF filter as for :func:`dataset_kit.read_table`: partition and secondary-index
        pruning happen here (pruned blobs get no partition), row-group pruning and row
        filtering when a partition is read.
    version
        A retained version (None: the newest).
    dispatch_by
        Partition columns: one dask partition per distinct combination of their values
        (``[]``: a single partition) instead of one per blob.
    categoricals
        Columns to return as categoricals. Categorical columns of the dataset keep their
        known categories; other columns get per-partition categories (unknown to dask).
    divisions_by
        Make this column the index, with known divisions (so ``loc``, joins and
        ``map_overlap`` know where every value lives). A partition column: one partition
        per value (implies ``dispatch_by=[column]``). Any other integer, date, timestamp
        or string column: its value ranges are taken from the blobs' Parquet statistics
        (footers only are read) and must not overlap between partitions; each partition
        is sorted by it.

    Returns
    -------
    dask.dataframe.DataFrame

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError, PredicateError, InvalidInputError
        Here, when planning.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> from dataset_kit.pipelines.ddf import read_dataset_as_ddf
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"day": [1, 1, 2], "x": [1.0, 2.0, 3.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="t", partition_on="day")
    >>> ddf = read_dataset_as_ddf(store=store, dataset_uuid="t", divisions_by="day")
    >>> ddf.npartitions, ddf.divisions
    (2, (1, 2, 2))
    >>> ddf["x"].sum().compute()
    np.float64(6.0)
    """
    kv = open_store(store)
    meta = _commit.load_version(kv, naming.validate_uuid(dataset_uuid), version)
    plan = _read.plan_read(kv, meta, columns=columns, predicates=predicates)
    cats = as_list(categoricals, "categoricals")
    unknown = [c for c in cats if c not in plan.schema.names]
    if unknown:
        raise InvalidInputError(f"categoricals names unknown columns {unknown!r}")
    dispatch = None if dispatch_by is None else as_list(dispatch_by, "dispatch_by")
    if dispatch is None and divisions_by is not None and divisions_by in meta.partition_keys:
        dispatch = [divisions_by]
    groups = list(_read.iter_groups(plan, dispatch))
    logger.debug("read_dataset_as_ddf %s@%s: %d partitions", meta.uuid, meta.version, len(groups))
    return from_plan(kv, plan, groups, categoricals=cats, divisions_by=divisions_by)


# --------------------------------------------------------------------------- writing


def _write_frame(frame: pd.DataFrame, target: WriteTarget) -> NodeResult:
    """One write node: a dask partition -> uncommitted blobs and their descriptor."""
    return write_result(to_arrow(frame), target)


def _write_job(
    ddf: Any,
    *,
    store: Any,
    dataset_uuid: str,
    mode: Mode,
    partition_on: str | Sequence[str] | None,
    secondary_indices: str | Sequence[str] | None,
    delete_scope: Any,
    metadata: Mapping[str, Any] | None,
    compression: str,
    row_group_size: int | None,
    sort_partitions_by: str | Sequence[str] | None,
    storage_concurrency: int | Throttle | None,
) -> Job[Any]:
    dd = _dd()
    if not isinstance(ddf, dd.DataFrame):
        raise InvalidInputError(f"expected a dask DataFrame, got {type(ddf).__name__}")
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    _commit.require_atomic(kv)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    options = WriteOptions(
        compression=compression,
        row_group_size=row_group_size,
        sort_partitions_by=tuple(as_list(sort_partitions_by, "sort_partitions_by")),
    )
    throttle = as_throttle(storage_concurrency, name="storage")
    target, base = resolve_target(
        kv,
        uuid,
        mode=mode,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        options=options,
        throttle=throttle,
    )
    # fail here, not in the nodes, for what the frame's meta already tells
    schema = to_arrow(ddf._meta).schema
    validate_write_columns(
        schema.empty_table(),
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        sort_partitions_by=options.sort_partitions_by,
    )
    merge_schemas(target.base_schema, schema, dataset_uuid=uuid)
    removed = (
        frozenset(delete_scope_labels(kv, base.meta, delete_scope))
        if base is not None and delete_scope is not None
        else frozenset()
    )

    token = (
        "ddf",
        ddf._name,
        kv.url,
        uuid,
        base.meta.version if base is not None else None,
        mode,
        target.partition_on,
        target.secondary_indices,
        options,
        repr(delete_scope),
    )
    written = ddf.map_partitions(
        _write_frame, target, meta=pd.Series([], dtype=object), enforce_metadata=False
    )
    nodes = written.to_delayed(optimize_graph=True)
    final = final_node(
        commit_results,
        nodes,
        key=task_key("ddf", "commit", *token),
        target=target,
        mode=mode,
        base=base,
        metadata=dict(metadata or {}),
        delete_scope=delete_scope,
        removed=removed,
    )
    logger.info("write ddf -> %s (%s): %d nodes", uuid, mode, len(nodes))
    return Job(final, name=f"write_ddf -> {uuid}", tasks=len(nodes))


def write_ddf(
    ddf: Any,
    *,
    store: Any,
    dataset_uuid: str,
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    mode: Literal["error", "overwrite"] = "error",
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    sort_partitions_by: str | Sequence[str] | None = None,
    storage_concurrency: int | Throttle | None = None,
) -> Job[Any]:
    """Write a dask DataFrame as a dataset: one node per dask partition, one commit.

    Each node writes its partition's blobs (one per ``partition_on`` value it holds; an
    empty partition writes nothing); the commit node makes them visible as one version.
    A failing partition fails the job and commits nothing (its siblings' blobs are
    garbage for :func:`~dataset_kit.pipelines.garbage_collect`). The frame's index is
    not stored (``reset_index()`` first to keep it). To get one file per partition value,
    shuffle first (or use :func:`~dataset_kit.pipelines.repartition`).

    Parameters
    ----------
    ddf
        The dask DataFrame.
    store, dataset_uuid
        The target.
    mode
        ``"error"`` (the dataset must not exist) or ``"overwrite"``.
    partition_on, secondary_indices, metadata, compression, row_group_size, sort_partitions_by
        As for :func:`dataset_kit.write_dataset`.
    storage_concurrency
        Most concurrent store requests across the cluster.

    Returns
    -------
    Job
        Its :meth:`~dataset_kit.pipelines.Job.compute` returns the committed
        :class:`~dataset_kit.DatasetMetadata`. (A job, like every pipeline: it runs where
        ``compute`` says, and :meth:`~dataset_kit.pipelines.Job.to_delayed` combines it
        with other graphs.)

    Raises
    ------
    DatasetExistsError
        ``mode="error"`` and the dataset exists.
    InvalidInputError
        Unknown or unsuitable layout columns (checked on the frame's meta).
    SchemaMismatchError, PartitionValueError
        When computed, for data that does not fit: nothing is committed.

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd, dataset_kit as dk
    >>> from dataset_kit.pipelines.ddf import write_ddf
    >>> store = dk.open_store("memory://")
    >>> ddf = dd.from_pandas(pd.DataFrame({"p": [1, 2, 2], "x": [1, 2, 3]}), npartitions=2)
    >>> write_ddf(ddf, store=store, dataset_uuid="w", partition_on="p").compute().version
    0
    """
    if mode not in ("error", "overwrite"):
        raise InvalidInputError(f"mode must be 'error' or 'overwrite', got {mode!r}")
    return _write_job(
        ddf,
        store=store,
        dataset_uuid=dataset_uuid,
        mode=mode,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        delete_scope=None,
        metadata=metadata,
        compression=compression,
        row_group_size=row_group_size,
        sort_partitions_by=sort_partitions_by,
        storage_concurrency=storage_concurrency,
    )


def update_from_ddf(
    ddf: Any,
    *,
    store: Any,
    dataset_uuid: str,
    delete_scope: Sequence[Mapping[str, Any]] | None = None,
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    sort_partitions_by: str | Sequence[str] | None = None,
    storage_concurrency: int | Throttle | None = None,
) -> Job[Any]:
    """Append a dask DataFrame to a dataset (created if missing) as one new version.

    As :func:`write_ddf`, with the semantics of :func:`dataset_kit.update_dataset`: the
    dataset's layout applies, appends rebase onto concurrent commits, and the partitions
    ``delete_scope`` selects (when the job is built) are removed in the same commit; a
    concurrent commit that changes that selection fails the commit.

    Raises
    ------
    InvalidInputError
        ``partition_on`` differs from the dataset's.
    DeleteScopeError
        An invalid ``delete_scope``.
    CommitConflictError
        When computed, for a conflicting concurrent commit: nothing is committed.

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd, dataset_kit as dk
    >>> from dataset_kit.pipelines.ddf import update_from_ddf
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"p": [1], "x": [0]}), store=store,
    ...                      dataset_uuid="u", partition_on="p")
    >>> ddf = dd.from_pandas(pd.DataFrame({"p": [2, 2], "x": [1, 2]}), npartitions=1)
    >>> update_from_ddf(ddf, store=store, dataset_uuid="u",
    ...                 delete_scope=[{"p": 1}]).compute().num_partitions
    1
    """
    return _write_job(
        ddf,
        store=store,
        dataset_uuid=dataset_uuid,
        mode="append",
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        delete_scope=delete_scope,
        metadata=metadata,
        compression=compression,
        row_group_size=row_group_size,
        sort_partitions_by=sort_partitions_by,
        storage_concurrency=storage_concurrency,
    )
