"""Repartition a dataset: shuffle its rows on the new keys, write balanced files, commit.

The graph: read tasks over groups of source blobs of bounded size, a shuffle on the new
partition columns (plus the bucket column), one write node per shuffle output and one
commit node. Three ways to shuffle:

* ``"staged"`` (default when the target store has a local path: a local or shared
  filesystem): read tasks cut their Arrow tables by output into one staging blob each
  in the target store (:mod:`dataset_kit.pipelines._staged_shuffle`), write nodes read
  their byte range of every staging blob; Arrow end to end, no pandas, and a re-run
  task rewrites the same blob. The commit node deletes the staging blobs.
* ``"p2p"`` (default on a distributed cluster otherwise): dask's P2P shuffle of the
  source read as a dask DataFrame (``dd.from_map``, so root-task queuing applies); it
  spills to the workers' disks and restarts when a worker dies.
* ``"disk"`` (default on the local scheduler otherwise) and ``"tasks"``: dask's.

Because the shuffle brings every row of a target partition (or bucket) to one write
node, that node sees the partition whole and cuts it into files of balanced size: with
``n = max(1, round(rows / target_rows_per_file))`` equal files, every file holds between
half and twice the target, except a partition's only file when the partition itself is
smaller than half the target; no file is ever empty, and a selective filter yields one
well-filled file per partition rather than one sliver per source blob.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import uuid as _uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dataset_kit.api._ops import as_list
from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.partition import check_partition_type
from dataset_kit.core.schema import (
    null_columns,
    pandas_metadata,
    with_nullable_dtypes,
    with_pandas_metadata,
)
from dataset_kit.exceptions import InvalidInputError
from dataset_kit.io import commit as _commit
from dataset_kit.io import read as _read
from dataset_kit.io.write import (
    WriteOptions,
    WrittenPartition,
    check_partition_nulls,
    group_order,
    to_arrow,
    validate_write_columns,
    write_partitions,
)
from dataset_kit.pipelines import _job
from dataset_kit.pipelines import _staged_shuffle as _staged
from dataset_kit.pipelines._job import Bundle, Job, final_node, job_token, task_key
from dataset_kit.pipelines._stores import with_throttle
from dataset_kit.pipelines.compute import (
    NodeResult,
    WriteTarget,
    commit_results,
    resolve_target,
    slim_plan,
)
from dataset_kit.pipelines.ddf import from_plan
from dataset_kit.store import Capability, Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = ["BUCKET_COLUMN", "balanced_chunks", "repartition"]

logger = logging.getLogger(__name__)

#: Name of the temporary bucket column (as kartothek/plateau name it); never written.
BUCKET_COLUMN = "__KTK_HASH_BUCKET"

#: Default target rows per file.
DEFAULT_ROWS_PER_FILE = 1_000_000

#: In-memory bytes a read task and a shuffle output aim at (estimated from the schema).
_TASK_BYTES = 16 * 2**20

ShuffleMethod = Literal["staged", "p2p", "disk", "tasks"]
_METHODS = ("staged", "p2p", "disk", "tasks")


def balanced_chunks(rows: int, target: int) -> list[int]:
    """Sizes of the files one partition of ``rows`` rows is cut into.

    ``n = max(1, round(rows / target))`` files of equal size (to one row): each within
    ``[target / 2, 2 * target)`` unless the partition holds less than ``target / 2`` rows
    (then it is one file). Never an empty file.

    Examples
    --------
    >>> balanced_chunks(10, 4)
    [5, 5]
    >>> balanced_chunks(3, 10)
    [3]
    >>> balanced_chunks(25, 10)
    [13, 12]
    >>> balanced_chunks(0, 10)
    []
    """
    if rows <= 0:
        return []
    n = max(1, round(rows / target))
    base, extra = divmod(rows, n)
    return [base + 1] * extra + [base] * (n - extra)


def _row_bytes(schema: pa.Schema, columns: Sequence[str]) -> int:
    """A rough in-memory size of one row of ``columns`` (pandas + Arrow copies)."""
    total = 0
    for name in columns:
        t = schema.field(name).type
        if pa.types.is_dictionary(t):
            total += t.index_type.bit_width // 8
            continue
        try:
            total += max(1, t.bit_width // 8)
        except ValueError:  # variable width: strings, binary, nested
            total += 40
    return max(total, 8) * 2


def _pack(parts: list[_read.PartitionRead], meta: DatasetMetadata, n: int) -> list[list[Any]]:
    """Cut the plan's blobs (in order) into about ``n`` groups of at most ~1/n of the rows.

    A blob is never split: a blob bigger than the share is a group of its own.
    """
    known = all(p.label in meta.stats for p in parts)
    weights = [float(meta.stats[p.label][0]) if known else 1.0 for p in parts]
    share = sum(weights) / max(1, n)
    groups: list[list[Any]] = []
    current: list[Any] = []
    held = 0.0
    for p, w in zip(parts, weights, strict=True):
        if current and held + w > share * 1.25:
            groups.append(current)
            current, held = [], 0.0
        current.append(p)
        held += w
    if current:
        groups.append(current)
    return groups


def _cluster_shape() -> tuple[int, int]:
    """Threads of the active cluster (or of this machine), and the bytes each task may
    hold: :data:`_TASK_BYTES`, less on workers with a small memory limit."""
    task_bytes = _TASK_BYTES
    client = _job._active_client()
    if client is not None:
        try:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            threads = sum(w.get("nthreads", 1) for w in workers)
            limits = [w.get("memory_limit") or 0 for w in workers]
            per_thread = [
                lim // max(1, w.get("nthreads", 1))
                for lim, w in zip(limits, workers, strict=True)
                if lim
            ]
            if per_thread:
                task_bytes = min(task_bytes, min(per_thread) // 16)
            return max(1, threads), max(2**20, task_bytes)
        except Exception:  # pragma: no cover - a client that lost its scheduler
            pass
    return os.cpu_count() or 2, task_bytes


def _buckets(
    table: pa.Table, columns: list[str], types: Mapping[str, pa.DataType], num_buckets: int
) -> np.ndarray:
    """The hash bucket of every row of ``table`` (kartothek's bucketing of integer
    columns; stable across processes).

    The values are hashed in their canonical form (:func:`_staged.hash_rows`, with the
    dataset's ``types``), so a value's bucket does not depend on how a read represents it
    (int64, or float64 for a blob with nulls) nor on the pandas or Arrow path.
    """
    hashed = _staged.hash_rows(table, columns, types)
    width = next(w for w in (8, 16, 32, 64) if 2**w >= num_buckets)
    return (hashed % np.uint64(num_buckets)).astype(f"uint{width}")


def _add_bucket(
    frame: pd.DataFrame,
    columns: list[str],
    num_buckets: int,
    types: Mapping[str, pa.DataType],
) -> pd.DataFrame:
    """Add the hash bucket of ``columns`` as :data:`BUCKET_COLUMN`."""
    values = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return frame.assign(**{BUCKET_COLUMN: _buckets(values, columns, types, num_buckets)})


def _add_bucket_arrow(
    table: pa.Table, columns: list[str], num_buckets: int, types: Mapping[str, pa.DataType]
) -> pa.Table:
    """:func:`_add_bucket` for an Arrow table."""
    return table.append_column(
        BUCKET_COLUMN, pa.array(_buckets(table, columns, types, num_buckets))
    )


@dataclass(frozen=True)
class _Spec:
    """What every write node needs (small; shipped once per node)."""

    target: WriteTarget
    schema: pa.Schema
    categories: dict[str, pa.Array]
    group_by: tuple[str, ...]
    sort_by: tuple[str, ...]
    rows_per_file: int
    bucketed: bool


def _run_starts(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Start offsets of the runs of equal ``columns`` values in a sorted table (nulls are
    equal to each other, as in a grouping)."""
    n = table.num_rows
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for name in columns:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        arr = col.combine_chunks()
        after, before = arr.slice(1), arr.slice(0, n - 1)
        # a change: both valid and different, or one null and the other not
        differ = pc.fill_null(pc.not_equal(after, before), False)
        differ = pc.or_(differ, pc.not_equal(pc.is_null(after), pc.is_null(before)))
        change[1:] |= differ.to_numpy(zero_copy_only=False)
    return np.flatnonzero(change)


def _same_storage(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether ``a`` and ``b`` differ only in offset width (string/large_string, ...)."""
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {a, b} == {small, large}:
            return True
    return False


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The node's table in the target's exact Arrow types and pandas metadata."""
    arrays = []
    for f in schema:
        col = table.column(f.name)
        if _same_storage(col.type, f.type):
            pass  # the readers cast to the logical type; a copy here would cost memory
        elif col.type != f.type:
            if pa.types.is_dictionary(f.type) and pa.types.is_dictionary(col.type):
                col = col.cast(f.type.value_type).dictionary_encode()
                if col.type != f.type:
                    col = col.cast(f.type)
            else:
                col = col.cast(f.type)
        arrays.append(col)
    fields = [f.with_type(a.type) for f, a in zip(schema, arrays, strict=True)]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, schema.metadata))


def _prepare(table: pa.Table, spec: _Spec) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The node's rows sorted by partition (and ``sort_by``), and the files to cut them into
    as ``(offset, rows)``."""
    keys = spec.group_by  # never empty: partition columns and/or the bucket
    # null partition values fail the node here, counted over all of its rows: every null
    # row of a single partition column hashes to this output; with more keys (columns or
    # the bucket) the null rows of other key values are elsewhere
    check_partition_nulls(table, spec.target.partition_on, part=len(keys) > 1)
    if spec.sort_by:
        # a comparison sort: by partition, then ``sort_by``; categoricals by value (Arrow
        # sorts no dictionary arrays)
        cols = [table.column(c) for c in [*keys, *spec.sort_by]]
        cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in cols]
        order = pc.sort_indices(
            pa.table(cols, names=[f"k{i}" for i in range(len(cols))]),
            sort_keys=[(f"k{i}", "ascending") for i in range(len(cols))],
        )
        table = table.take(order)
        sizes = np.diff([*_run_starts(table, keys).tolist(), table.num_rows])
    else:
        # grouping alone: a radix sort of group ids, 4x faster on a write node
        grouped, sizes = group_order(table, keys)
        if grouped is not None:
            table = table.take(pa.array(grouped))
    starts = [0, *np.cumsum(sizes).tolist()]
    if spec.bucketed:
        table = table.drop_columns([BUCKET_COLUMN])
    table = _conform(table, spec.schema)
    chunks: list[tuple[int, int]] = []
    for start, stop in itertools.pairwise(starts):
        if spec.bucketed:
            chunks.append((start, stop - start))
            continue
        offset = start
        for size in balanced_chunks(stop - start, spec.rows_per_file):
            chunks.append((offset, size))
            offset += size
    return table, chunks


def _write_chunks(
    table: pa.Table, chunks: list[tuple[int, int]], spec: _Spec
) -> list[WrittenPartition]:
    target = spec.target

    def write(chunk: tuple[int, int]) -> list[WrittenPartition]:
        return write_partitions(
            target.store,
            target.uuid,
            table.slice(*chunk),
            table_name=target.table_name,
            partition_on=target.partition_on,
            secondary_indices=target.secondary_indices,
            options=target.options,
            logical_schema=spec.schema,
        )

    if len(chunks) > 1 and table.num_rows >= 20_000 and target.options.threads > 1:
        with ThreadPoolExecutor(target.options.threads, thread_name_prefix="dk-repart") as pool:
            return [w for ws in pool.map(write, chunks) for w in ws]
    return [w for chunk in chunks for w in write(chunk)]


def _write_node(frame: pd.DataFrame, spec: _Spec) -> NodeResult:
    """One shuffle output (whole target partitions) -> balanced files, a descriptor."""
    if len(frame) == 0:
        return NodeResult((), spec.schema, {}, 0)
    return _write_table(to_arrow(frame), spec)


def _write_table(table: pa.Table, spec: _Spec) -> NodeResult:
    """:func:`_write_node` for an Arrow table with at least one row."""
    table, chunks = _prepare(table, spec)
    rows = table.num_rows
    # integer/boolean columns holding nulls read back in their nullable dtype (a source
    # written before datasets recorded that gets it here)
    schema = with_nullable_dtypes(spec.schema, null_columns(table))
    written = _write_chunks(table, chunks, spec)
    del table
    # Arrow's allocator keeps freed memory for reuse: hand it back, so that the worker's
    # memory (what the nanny's limit and the scheduler see) really drops
    pa.default_memory_pool().release_unused()
    return NodeResult(tuple(written), schema, spec.categories, rows)


@dataclass(frozen=True)
class _Staging:
    """Where and how the staged shuffle of one run keeps its shards."""

    store: Store
    dataset_uuid: str
    run: str
    n_out: int
    compression: str | None


def _stage_map(
    parts: Sequence[_read.PartitionRead],
    index: int,
    *,
    reader: Store,
    plan: _read.ReadPlan,
    spec: _Spec,
    staging: _Staging,
    bucket_by: list[str],
    num_buckets: int | None,
) -> tuple[str | None, np.ndarray]:
    """Read a group of source blobs (Arrow) and write its rows as shards by output."""
    table = _read.concat(plan, _read.read_partitions(reader, plan, list(parts)))
    if bucket_by:
        assert num_buckets is not None
        types = {c: plan.schema.field(c).type for c in bucket_by}
        table = _add_bucket_arrow(table, bucket_by, num_buckets, types)
    ids = _staged.output_ids(table, spec.group_by, staging.n_out)
    key = naming.staging_key(staging.dataset_uuid, staging.run, index)
    return _staged.write_shards(
        staging.store, key, table, ids, staging.n_out, compression=staging.compression
    )


def _stage_reduce(
    index: _staged.StagingIndex, j: int, *, staging: _Staging, spec: _Spec
) -> NodeResult:
    """Output ``j`` of the staged shuffle -> balanced files, a descriptor."""
    table = _staged.read_output(staging.store, index, j)
    if table is None:
        return NodeResult((), spec.schema, {}, 0)
    return _write_table(table, spec)


def _commit_staged(nodes: list[NodeResult], *, staging: _Staging, **commit: Any) -> DatasetMetadata:
    """Commit, then delete the run's staging blobs."""
    meta = commit_results(nodes, **commit)
    _staged.clean_staging(staging.store, staging.dataset_uuid, staging.run)
    return meta


def _uses_cluster(scheduler: Any) -> bool:
    """Whether :meth:`Job.compute` with ``scheduler`` runs on a distributed cluster."""
    if scheduler is None:
        return _job._active_client() is not None or bool(os.environ.get(_job.SCHEDULER_ENV))
    if isinstance(scheduler, str):
        return scheduler not in _job._LOCAL_SCHEDULERS and scheduler != "processes"
    return True


class _ShuffleJob(Job[DatasetMetadata]):
    """A job whose shuffle method follows where it runs (unless one was chosen).

    ``staged`` needs a store with a local path (else it would send everything through
    the network store twice); P2P needs a distributed cluster, and the disk shuffle is
    only correct in one process: so the graph is built for the scheduler :meth:`compute`
    is given. A failed staged run deletes its staging blobs.
    """

    def __init__(
        self,
        build: Callable[[str], tuple[Any, Callable[[], None] | None]],
        method: str | None,
        *,
        staged: bool,
        name: str,
        tasks: int,
    ) -> None:
        self._build = build
        self._fixed = method or ("staged" if staged else None)
        self._method = self._fixed or ("p2p" if _uses_cluster(None) else "disk")
        delayed, self._cleanup = build(self._method)
        super().__init__(delayed, name=name, tasks=tasks)

    @property
    def shuffle_method(self) -> str:
        """The shuffle method of the current graph."""
        return self._method

    def compute(self, *, scheduler: Any = None, progress: bool = False) -> DatasetMetadata:
        """Run the job (see :meth:`Job.compute`); the shuffle suits the scheduler."""
        if self._fixed is None:
            method = "p2p" if _uses_cluster(scheduler) else "disk"
            if method != self._method:
                self._method = method
                self._delayed, self._cleanup = self._build(method)
        try:
            return super().compute(scheduler=scheduler, progress=progress)
        except BaseException:
            if self._cleanup is not None:
                self._cleanup()
            raise


def _rows_for_bytes(meta: DatasetMetadata, plan: Any, target_bytes: int) -> int:
    """Rows per file that make files of about ``target_bytes``, from the source's stats.

    Bytes per row: the recorded file bytes over the recorded rows of the planned blobs,
    scaled by the share of the columns read (an estimate: column widths differ).
    """
    rows = nbytes = 0
    for part in plan.parts:
        r, b = meta.stats.get(part.label, (0, 0))
        rows, nbytes = rows + r, nbytes + b
    if not rows or not nbytes:
        return DEFAULT_ROWS_PER_FILE  # no statistics recorded (e.g. a foreign dataset)
    width = len(meta.schema.names) if meta.schema is not None else len(plan.columns)
    share = min(1.0, len(plan.columns) / max(1, width))
    per_row = max(nbytes * share / rows, 1e-3)
    return max(1, round(target_bytes / per_row))


def repartition(
    source: str,
    target: str,
    *,
    store: Any,
    target_store: Any = None,
    partition_on: str | Sequence[str],
    bucket_by: str | Sequence[str] | None = None,
    num_buckets: int | None = None,
    sort_by: str | Sequence[str] | None = None,
    target_rows_per_file: int | None = None,
    target_bytes_per_file: int | None = None,
    predicates: Any = None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
    mode: Literal["error", "overwrite"] = "error",
    secondary_indices: str | Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    shuffle_method: ShuffleMethod | None = None,
    npartitions: int | None = None,
    storage_concurrency: int | Throttle | None = None,
) -> Job[DatasetMetadata]:
    """Rewrite ``source`` as ``target`` partitioned on other columns, in balanced files.

    Plans here (source version pinned, blobs pruned by ``predicates``); the returned job
    reads the source as a dask DataFrame, shuffles it on the new partition columns (and
    the bucket), writes each target partition's files from one node and commits once:
    nothing is visible before the commit, a failed run leaves only garbage.

    Parameters
    ----------
    source, target
        Dataset uuids.
    store
        The source's store; ``target_store`` the target's (default: the same).
    partition_on
        The target's partition columns (``[]`` with ``bucket_by``: buckets only).
    bucket_by, num_buckets
        Hash the rows of each partition by these columns into ``num_buckets`` buckets:
        one file per (partition, bucket), so every value of ``bucket_by`` lives in one
        file of its partition (kartothek/plateau bucketing; ``target_rows_per_file``
        does not apply).
    sort_by
        Sort the rows of each partition by these columns: its files hold consecutive
        ranges (row-group statistics then prune well).
    target_rows_per_file
        Rows per file: files hold between half and twice this, except a partition
        smaller than half of it (one file). Default 1,000,000 (unless
        ``target_bytes_per_file`` is given).
    target_bytes_per_file
        Bytes per file instead: turned into rows per file with the source's recorded
        Parquet bytes per row (of the columns read), so files land near this size when
        the target is written with the source's compression.
    predicates, columns, version
        What to read of the source (as for :func:`dataset_kit.read_table`); the target
        gets ``columns`` (default: all).
    mode
        ``"error"`` (the target must not exist) or ``"overwrite"``.
    secondary_indices, metadata, compression, row_group_size
        Of the target (as for :func:`dataset_kit.write_dataset`).
    shuffle_method
        ``"staged"``, ``"p2p"``, ``"disk"`` or ``"tasks"`` (see the module docstring).
        None: ``"staged"`` when the target store has local paths (a local or shared
        filesystem), else P2P on a distributed cluster and disk on the local scheduler
        (decided when the job runs). Staged shards live under
        ``<target>/_staging/<run>/`` until the commit (or the failure) deletes them; a
        client killed mid-run leaves them to :func:`garbage_collect` of the target.
    npartitions
        Shuffle outputs (write nodes). Default: the number of read tasks, which are
        sized from the source's statistics (about 16 MiB of estimated memory each, less on
        workers with a small memory limit, never less than one source blob).
    storage_concurrency
        Most concurrent store requests across the cluster.

    Returns
    -------
    Job
        Its :meth:`~Job.compute` returns the target's committed :class:`DatasetMetadata`.

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError
        The source (version) does not exist.
    DatasetExistsError
        ``mode="error"`` and the target exists.
    InvalidInputError, PredicateError, PartitionValueError
        Bad options, or columns that cannot be partition columns.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> from dataset_kit.pipelines.repartition import repartition
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"day": [1, 1, 2, 2], "shop": [1, 2, 1, 2], "qty": [1, 2, 3, 4]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="by_day", partition_on="day")
    >>> job = repartition("by_day", "by_shop", store=store, partition_on="shop", sort_by="day")
    >>> job.compute().num_partitions
    2
    >>> dk.read_table(store=store, dataset_uuid="by_shop", predicates=[[("shop", "==", 2)]])
       day  shop  qty
    0    1     2    2
    1    2     2    4
    """
    if mode not in ("error", "overwrite"):
        raise InvalidInputError(f"mode must be 'error' or 'overwrite', got {mode!r}")
    if shuffle_method is not None and shuffle_method not in _METHODS:
        raise InvalidInputError(
            f"shuffle_method must be one of {_METHODS} or None, got {shuffle_method!r}"
        )
    if target_rows_per_file is not None and target_bytes_per_file is not None:
        raise InvalidInputError("give target_rows_per_file or target_bytes_per_file, not both")
    for name, value in (
        ("target_rows_per_file", target_rows_per_file),
        ("target_bytes_per_file", target_bytes_per_file),
    ):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
    if npartitions is not None and (not isinstance(npartitions, int) or npartitions < 1):
        raise InvalidInputError(f"npartitions must be a positive int, got {npartitions!r}")
    keys = as_list(partition_on, "partition_on")
    buckets = as_list(bucket_by, "bucket_by")
    sort = as_list(sort_by, "sort_by")
    if buckets:
        if not isinstance(num_buckets, int) or num_buckets < 1:
            raise InvalidInputError(f"bucket_by needs num_buckets >= 1, got {num_buckets!r}")
    elif num_buckets is not None:
        raise InvalidInputError("num_buckets needs bucket_by")
    if not keys and not buckets:
        raise InvalidInputError("repartition needs partition_on (or bucket_by)")
    both = sorted(set(keys) & set(sort))
    if both:
        raise InvalidInputError(f"sort_by names partition columns {both}")
    src = open_store(store)
    dst = src if target_store is None else open_store(target_store)
    src_uuid = naming.validate_uuid(source)
    dst_uuid = naming.validate_uuid(target)
    _commit.require_atomic(dst)
    throttle = as_throttle(storage_concurrency, name="storage")

    meta = _commit.load_version(src, src_uuid, version)
    plan = _read.plan_read(src, meta, columns=columns, predicates=predicates)
    for role, cols in (("partition_on", keys), ("bucket_by", buckets), ("sort_by", sort)):
        missing = [c for c in cols if c not in plan.columns]
        if missing:
            raise InvalidInputError(f"{role} names columns {missing} that are not read")
    for name in keys:
        check_partition_type(name, plan.schema.field(name).type)

    if target_rows_per_file is None:
        target_rows_per_file = (
            DEFAULT_ROWS_PER_FILE
            if target_bytes_per_file is None
            else _rows_for_bytes(meta, plan, target_bytes_per_file)
        )
    options = WriteOptions(compression=compression, row_group_size=row_group_size)
    tgt, base = resolve_target(
        dst,
        dst_uuid,
        mode=mode,
        partition_on=keys,
        secondary_indices=secondary_indices,
        options=options,
        throttle=throttle,
    )
    schema = _target_schema(plan)
    validate_write_columns(
        schema.empty_table(),
        partition_on=keys,
        secondary_indices=tgt.secondary_indices,
        sort_partitions_by=(),
    )
    categories = {c: a for c, a in meta.categories.items() if c in plan.columns}
    spec = _Spec(
        target=tgt,
        schema=schema,
        categories=categories,
        group_by=(*keys, BUCKET_COLUMN) if buckets else tuple(keys),
        sort_by=tuple(sort),
        rows_per_file=target_rows_per_file,
        bucketed=bool(buckets),
    )

    total_rows = sum(meta.stats.get(p.label, (0, 0))[0] for p in plan.parts)
    threads, task_bytes = _cluster_shape()
    rows_per_task = max(1, task_bytes // _row_bytes(plan.schema, plan.columns))
    n_tasks = max(math.ceil(total_rows / rows_per_task), 2 * threads)
    groups = _pack(plan.parts, meta, n_tasks)
    n_out = npartitions or max(1, len(groups))
    reader = with_throttle(src, throttle)
    user_meta = dict(metadata or {})
    token = (
        "repartition",
        src.url,
        src_uuid,
        meta.version,
        dst.url,
        dst_uuid,
        base.meta.version if base is not None else None,
        mode,
        plan.columns,
        repr(predicates),
        keys,
        buckets,
        num_buckets,
        sort,
        target_rows_per_file,
        tgt.secondary_indices,
        options,
        n_out,
    )

    tok = job_token(*token)
    slim = slim_plan(plan)
    staging_store = with_throttle(dst, throttle)

    def build(method: str) -> tuple[Any, Callable[[], None] | None]:
        import dask

        commit = {"target": tgt, "mode": mode, "base": base, "metadata": user_meta}
        if method == "staged" and groups:
            local = Capability.LOCAL_PATH in dst.capabilities
            staging = _Staging(
                store=staging_store,
                dataset_uuid=dst_uuid,
                run=_uuid.uuid4().hex,
                n_out=n_out,
                compression=None if local else "lz4",
            )
            stage = functools.partial(
                _stage_map,
                reader=reader,
                plan=slim,
                spec=spec,
                staging=staging,
                bucket_by=buckets,
                num_buckets=num_buckets,
            )
            maps = [
                dask.delayed(stage, pure=False)(
                    Bundle(group), i, dask_key_name=task_key("repartition", "stage", tok, i)
                )
                for i, group in enumerate(groups)
            ]
            index = dask.delayed(_staged.collect_index, pure=False)(
                maps, dask_key_name=task_key("repartition", "index", tok)
            )
            reduce = functools.partial(_stage_reduce, staging=staging, spec=spec)
            writes = [
                dask.delayed(reduce, pure=False)(
                    index, j, dask_key_name=task_key("repartition", "write", tok, j)
                )
                for j in range(n_out)
            ]
            final = final_node(
                _commit_staged,
                writes,
                key=task_key("repartition", "commit", method, tok),
                staging=staging,
                **commit,
            )

            def cleanup() -> None:
                _staged.clean_staging(staging.store, staging.dataset_uuid, staging.run)

            return final, cleanup

        # an empty selection still commits the target with the source's schema
        nodes: list[Any] = [NodeResult((), spec.schema, spec.categories, 0)]
        if groups:
            # integers and booleans in their nullable dtypes, whatever the source's pandas
            # metadata says: exact (no float64 for nulls), and every partition (and the
            # meta P2P converts to) alike
            ddf = from_plan(reader, plan, groups, nullable=True)
            if buckets:
                assert num_buckets is not None
                types = {c: plan.schema.field(c).type for c in buckets}
                ddf = ddf.map_partitions(
                    _add_bucket,
                    buckets,
                    num_buckets,
                    types,
                    meta=_add_bucket(ddf._meta, buckets, num_buckets, types),
                )
            shuffled = ddf.shuffle(on=list(spec.group_by), npartitions=n_out, shuffle_method=method)
            written = shuffled.map_partitions(
                _write_node, spec, meta=pd.Series([], dtype=object), enforce_metadata=False
            )
            nodes = written.to_delayed(optimize_graph=True)
        return (
            final_node(
                commit_results,
                nodes,
                key=task_key("repartition", "commit", method, tok),
                **commit,
            ),
            None,
        )

    logger.info(
        "repartition %s@%s -> %s on %s: %d read tasks, %d write nodes",
        src_uuid,
        meta.version,
        dst_uuid,
        keys,
        len(groups),
        n_out if groups else 0,
    )
    return _ShuffleJob(
        build,
        shuffle_method,
        staged=Capability.LOCAL_PATH in dst.capabilities,
        name=f"repartition {src_uuid} -> {dst_uuid}",
        tasks=n_out if groups else 0,
    )


def _target_schema(plan: _read.ReadPlan) -> pa.Schema:
    """The source's logical schema restricted to the columns read (pandas metadata too)."""
    fields = [plan.schema.field(c) for c in plan.columns]
    meta = pandas_metadata(plan.schema)
    schema = pa.schema(fields)
    if meta is not None:
        wanted = set(plan.columns)
        meta = dict(meta)
        meta["columns"] = [c for c in meta.get("columns", []) if c.get("name") in wanted]
        meta["index_columns"] = []
        meta["column_indexes"] = meta.get("column_indexes") or []
    return with_pandas_metadata(schema, meta)
