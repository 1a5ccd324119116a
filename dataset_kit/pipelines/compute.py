"""Per-partition compute: read each partition of a source, apply a function, write a target.

The graph: planning on the client (source version pinned, partitions pruned and grouped),
one node per partition (or ``dispatch_by`` group) that reads, calls the function and
writes the result's blobs, returning a small descriptor, and one commit node that makes
all of them visible as one new version of the target. A failed run commits nothing; the
blobs its finished nodes wrote are garbage for :func:`~dataset_kit.pipelines.garbage_collect`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from dataset_kit.api._ops import (
    StagedWrite,
    as_list,
    check_partition_keys,
    commit_update,
    commit_write,
    resolve_or_none,
    union_categories,
)
from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.schema import merge_schemas
from dataset_kit.exceptions import DatasetExistsError, InvalidInputError
from dataset_kit.io import commit as _commit
from dataset_kit.io import read as _read
from dataset_kit.io.write import (
    WriteOptions,
    WrittenPartition,
    merge_categories,
    to_arrow,
    validate_write_columns,
    with_null_dtypes,
    write_partitions,
)
from dataset_kit.pipelines._job import Bundle, Job, final_node, job_token, task_key
from dataset_kit.pipelines._stores import with_throttle
from dataset_kit.store import Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = [
    "NodeResult",
    "WriteTarget",
    "commit_results",
    "map_partitions",
    "resolve_target",
    "slim_plan",
    "stage_results",
    "write_result",
]

logger = logging.getLogger(__name__)

Mode = Literal["error", "overwrite", "append"]


@dataclass(frozen=True)
class NodeResult:
    """What one compute node wrote: its blobs and the schema of the function's output.

    Attributes
    ----------
    parts
        Blobs written (not yet committed).
    schema
        Arrow schema of the output (also for an empty output).
    categories
        Categories of the output's categorical columns.
    rows
        Rows written.
    """

    parts: tuple[WrittenPartition, ...]
    schema: pa.Schema
    categories: dict[str, pa.Array]
    rows: int


@dataclass(frozen=True)
class WriteTarget:
    """Where and how pipeline nodes write: the target store, dataset and layout.

    ``base_schema`` is the schema of the dataset appended to (None: a new content).
    """

    store: Store
    uuid: str
    table_name: str
    partition_on: list[str]
    secondary_indices: list[str]
    options: WriteOptions
    base_schema: pa.Schema | None

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # stores tokenize by what they are, not by their (possibly unpicklable) state
        return (
            "dk-target",
            repr(self.store),
            self.store.url,
            self.uuid,
            self.table_name,
            self.partition_on,
            self.secondary_indices,
            self.options,
            None if self.base_schema is None else self.base_schema.serialize().to_pybytes(),
        )


def slim_plan(plan: _read.ReadPlan) -> _read.ReadPlan:
    """The plan without its partition list, so each node ships only its own parts."""
    meta = plan.meta
    slim = DatasetMetadata(
        uuid=meta.uuid,
        partition_keys=meta.partition_keys,
        table_name=meta.table_name,
        schema=meta.schema,
        categories=meta.categories,
        version=meta.version,
    )
    return _read.ReadPlan(slim, plan.schema, plan.columns, [])


def _run_node(
    source: Store,
    plan: _read.ReadPlan,
    parts: Sequence[_read.PartitionRead],
    func: Callable[..., Any],
    func_kwargs: Mapping[str, Any],
    input_kind: str,
    target: WriteTarget,
) -> NodeResult:
    tables = _read.read_partitions(source, plan, parts)
    data = _read.to_output(plan, _read.concat(plan, tables), input_kind)
    out = func(data, **func_kwargs)
    if out is None:
        raise InvalidInputError(
            f"the function {getattr(func, '__name__', func)!r} returned None for partitions "
            f"{[p.label for p in parts]}; return a DataFrame or Arrow table (empty to write "
            "nothing)"
        )
    return write_result(to_arrow(out), target)


def _run_batch(
    groups: Sequence[Sequence[_read.PartitionRead]], **node: Any
) -> tuple[NodeResult, ...]:
    """One node's groups, one after the other (only one group's data in memory)."""
    return tuple(_run_node(parts=group, **node) for group in groups)


def _commit_batches(batches: list[tuple[NodeResult, ...]], **commit: Any) -> DatasetMetadata:
    """The commit node over batched nodes: their results in plan order."""
    return commit_results([r for batch in batches for r in batch], **commit)


#: A compute node takes several small partitions (or ``dispatch_by`` groups) until their
#: stored bytes reach this; bigger ones get a node each. On a cluster each node costs a
#: few milliseconds of scheduling and result transfer: 200 nodes of 50,000 rows spent
#: about a third of their time there (W8 on 2 workers: 1.47 s, batched 1.31 s).
NODE_BYTES = 8 * 2**20
#: ... but never fewer nodes than this (or than calls): they keep a cluster's threads busy
#: and, on a network store, the small reads of different nodes overlap.
MIN_NODES = 32


def node_batches(
    groups: Sequence[list[_read.PartitionRead]],
    stats: Mapping[str, tuple[int | None, int | None]],
    per_node: int | None,
) -> list[list[list[_read.PartitionRead]]]:
    """Consecutive groups per node: ``per_node`` of them, or (None) by the recorded blob
    sizes, up to :data:`NODE_BYTES` of stored data or an even share of the total over
    :data:`MIN_NODES` nodes, whichever is smaller (a group of unknown size gets a node
    of its own).

    Examples
    --------
    >>> from dataset_kit.io.read import PartitionRead
    >>> parts = [[PartitionRead(f"l{i}", f"k{i}", {}, None)] for i in range(100)]
    >>> sizes = {f"l{i}": (1, 1000) for i in range(100)}
    >>> [len(b) for b in node_batches(parts, sizes, None)][:3]  # 100 kB over 32 nodes
    [3, 3, 3]
    >>> len(node_batches(parts[:32], sizes, None)), len(node_batches(parts, sizes, 10))
    (32, 10)
    """
    if per_node is not None:
        return [list(groups[i : i + per_node]) for i in range(0, len(groups), per_node)]
    sizes: list[int | None] = []
    for group in groups:
        known = [stats.get(p.label, (None, None))[1] for p in group]
        sizes.append(None if None in known else sum(k for k in known if k is not None))
    budget = min(NODE_BYTES, sum(s for s in sizes if s is not None) // MIN_NODES)
    batches: list[list[list[_read.PartitionRead]]] = []
    current: list[list[_read.PartitionRead]] = []
    nbytes = 0
    for group, size in zip(groups, sizes, strict=True):
        if current and (size is None or nbytes + size > budget):
            batches.append(current)
            current, nbytes = [], 0
        current.append(group)
        nbytes += size or 0
        if size is None:
            batches.append(current)
            current, nbytes = [], 0
    if current:
        batches.append(current)
    return batches


def write_result(table: pa.Table, target: WriteTarget) -> NodeResult:
    """Write one node's output table as uncommitted blobs and describe them.

    Integer and boolean columns that hold nulls get their nullable pandas dtype (see
    :func:`~dataset_kit.io.write.with_null_dtypes`) in the schema the node reports.

    Raises
    ------
    InvalidInputError, PartitionValueError, SchemaMismatchError
        The table does not fit the target's layout or schema.
    """
    table = with_null_dtypes(table)
    validate_write_columns(
        table,
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        sort_partitions_by=target.options.sort_partitions_by,
    )
    logical = merge_schemas(target.base_schema, table.schema, dataset_uuid=target.uuid)
    written = write_partitions(
        target.store,
        target.uuid,
        table,
        table_name=target.table_name,
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        options=target.options,
        logical_schema=logical,
    )
    categories = merge_categories({}, table, table.schema)
    return NodeResult(tuple(written), table.schema, categories, table.num_rows)


def stage_results(
    results: Sequence[NodeResult], base_schema: pa.Schema | None, uuid: str
) -> StagedWrite:
    """Merge node results (in plan order, so the outcome is deterministic)."""
    staged = StagedWrite()
    staged.schema = base_schema
    nonempty = [r for r in results if r.rows] or list(results[:1])
    for r in nonempty:
        staged.schema = merge_schemas(staged.schema, r.schema, dataset_uuid=uuid)
    for r in results:
        staged.parts.extend(r.parts)
        for col, cats in r.categories.items():
            have = staged.categories.get(col)
            staged.categories[col] = cats if have is None else union_categories(have, cats)
        staged.frames += 1
    return staged


def commit_results(
    results: list[NodeResult],
    *,
    target: WriteTarget,
    mode: Mode,
    base: _commit.Resolved | None,
    metadata: dict[str, Any],
    delete_scope: Any = None,
    removed: frozenset[str] = frozenset(),
) -> DatasetMetadata:
    """The commit node: make every node's blobs visible as one new version of the target.

    ``mode="append"`` adds them to ``base`` (rebasing onto concurrent appends) minus the
    ``removed`` labels that ``delete_scope`` selected when the job was planned; the other
    modes commit them as the target's whole content.
    """
    if mode == "append":
        staged = stage_results(results, base.meta.schema if base is not None else None, target.uuid)
        if (
            base is not None
            and not staged.parts
            and not removed
            and staged.schema == base.meta.schema
        ):
            if not metadata:
                logger.info("dataset %s: the compute wrote nothing; no commit", target.uuid)
                return base.meta
        return commit_update(
            target.store,
            target.uuid,
            staged,
            base=base,
            table_name=target.table_name,
            partition_on=target.partition_on,
            secondary_indices=target.secondary_indices,
            delete_scope=delete_scope,
            removed=set(removed),
            metadata=metadata,
        )
    staged = stage_results(results, None, target.uuid)
    return commit_write(
        target.store,
        target.uuid,
        staged,
        base=base,
        table_name=target.table_name,
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        metadata=metadata,
    )


def resolve_target(
    store: Store,
    dataset_uuid: str,
    *,
    mode: Mode,
    partition_on: str | Sequence[str] | None,
    secondary_indices: str | Sequence[str] | None,
    options: WriteOptions,
    throttle: Throttle | None,
) -> tuple[WriteTarget, _commit.Resolved | None]:
    """The target of a pipeline write and its current state (None: it does not exist).

    An append to an existing dataset takes its layout (``partition_on`` must match it);
    otherwise the requested layout applies.

    Raises
    ------
    DatasetExistsError
        ``mode="error"`` and the dataset exists.
    InvalidInputError
        A layout that does not match the existing dataset appended to.
    """
    base = resolve_or_none(store, dataset_uuid)
    requested_keys = None if partition_on is None else as_list(partition_on, "partition_on")
    requested_indices = as_list(secondary_indices, "secondary_indices")
    if mode == "error" and base is not None:
        raise DatasetExistsError(f"dataset {dataset_uuid!r} already exists (pass mode='overwrite')")
    if mode == "append" and base is not None:
        keys = check_partition_keys(base.meta, requested_keys)
        unknown = [c for c in requested_indices if c not in base.meta.indices]
        if unknown:
            raise InvalidInputError(
                f"dataset {dataset_uuid!r} has no secondary index on {unknown}; build it "
                "first with build_dataset_indices"
            )
        index_cols, table_name = list(base.meta.indices), base.meta.table_name
        base_schema = base.meta.schema
    else:
        keys, index_cols, table_name = requested_keys or [], requested_indices, naming.DEFAULT_TABLE
        base_schema = None
    target = WriteTarget(
        with_throttle(store, throttle),
        dataset_uuid,
        table_name,
        keys,
        index_cols,
        options,
        base_schema,
    )
    return target, base


def map_partitions(
    func: Callable[..., Any],
    *,
    source: str,
    target: str,
    store: Any,
    target_store: Any = None,
    func_kwargs: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
    version: int | None = None,
    dispatch_by: str | Sequence[str] | None = None,
    input: Literal["pandas", "arrow"] = "pandas",
    mode: Mode = "error",
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    sort_partitions_by: str | Sequence[str] | None = None,
    storage_concurrency: int | Throttle | None = None,
    partitions_per_node: int | None = None,
) -> Job[DatasetMetadata]:
    """Apply ``func`` to each partition of ``source`` and write the results to ``target``.

    Planning happens here (the source version is pinned, so a source that changes during
    the run is read consistently); the returned :class:`Job` runs the calls (one per
    partition, or per ``dispatch_by`` group) in parallel nodes, small partitions several
    to a node, and one commit node.

    Parameters
    ----------
    func
        Called as ``func(frame, **func_kwargs)`` with a pandas DataFrame (or an Arrow table
        with ``input="arrow"``); returns a DataFrame or Arrow table. An empty result writes
        nothing. Must be picklable to run on a cluster.
    source, target
        Dataset uuids.
    store
        The source's store (URL, path or store object).
    target_store
        The target's store (default: ``store``).
    func_kwargs
        Extra keyword arguments for ``func``.
    columns, predicates, version
        What to read of the source (as for :func:`dataset_kit.read_table`).
    dispatch_by
        Partition columns: one call per distinct combination of their values (all the
        partitions with those values, concatenated), instead of one call per partition.
    input
        ``"pandas"`` or ``"arrow"``.
    mode
        ``"error"`` (the target must not exist), ``"overwrite"`` (replace its content) or
        ``"append"`` (add to it; created if missing; concurrent appends rebase).
    partition_on, secondary_indices
        Layout of the target (for ``"append"`` to an existing target: its own layout).
    metadata
        User metadata for the target.
    compression, row_group_size, sort_partitions_by
        As for :func:`dataset_kit.write_dataset`.
    storage_concurrency
        Most concurrent store requests across the whole cluster (an int, or a
        :class:`~dataset_kit.throttle.Throttle` shared with other pipelines).
    partitions_per_node
        Calls per dask node (each call still gets one partition or group, and writes its
        own output). Default: consecutive partitions up to :data:`NODE_BYTES` (8 MiB) of
        stored data per node but at least :data:`MIN_NODES` (32) nodes, so that tiny
        tasks do not cost more in scheduling than in work; ``1`` gives every call its
        own node (finest retries and progress).

    Returns
    -------
    Job
        Its :meth:`~Job.compute` returns the target's committed :class:`DatasetMetadata`.

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError
        The source (version) does not exist.
    DatasetExistsError
        ``mode="error"`` and the target exists (checked here and again at commit).
    InvalidInputError, PredicateError
        Bad options (here) or a bad function result (when computed: nothing committed).
    CommitConflictError
        ``mode="overwrite"`` and another writer committed to the target during the run.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"day": [1, 1, 2], "sales": [1.0, 2.0, 3.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="sales", partition_on="day")
    >>> def double(frame):
    ...     return frame.assign(sales=frame["sales"] * 2)
    >>> job = dk.pipelines.map_partitions(double, source="sales", target="doubled",
    ...                                   store=store, partition_on="day")
    >>> job.compute().num_partitions
    2
    >>> dk.read_table(store=store, dataset_uuid="doubled")["sales"].tolist()
    [2.0, 4.0, 6.0]
    """
    if not callable(func):
        raise InvalidInputError(f"func must be callable, got {type(func).__name__}")
    if mode not in ("error", "overwrite", "append"):
        raise InvalidInputError(f"mode must be 'error', 'overwrite' or 'append', got {mode!r}")
    if input not in ("pandas", "arrow"):
        raise InvalidInputError(f"input must be 'pandas' or 'arrow', got {input!r}")
    if partitions_per_node is not None and (
        not isinstance(partitions_per_node, int)
        or isinstance(partitions_per_node, bool)
        or partitions_per_node < 1
    ):
        raise InvalidInputError(
            f"partitions_per_node must be a positive int or None, got {partitions_per_node!r}"
        )
    src = open_store(store)
    dst = src if target_store is None else open_store(target_store)
    src_uuid = naming.validate_uuid(source)
    dst_uuid = naming.validate_uuid(target)
    _commit.require_atomic(dst)
    throttle = as_throttle(storage_concurrency, name="storage")
    dispatch = None if dispatch_by is None else as_list(dispatch_by, "dispatch_by")
    meta = _commit.load_version(src, src_uuid, version)
    plan = _read.plan_read(src, meta, columns=columns, predicates=predicates)
    groups = list(_read.iter_groups(plan, dispatch))
    user_meta = dict(metadata or {})
    options = WriteOptions(
        compression=compression,
        row_group_size=row_group_size,
        sort_partitions_by=tuple(as_list(sort_partitions_by, "sort_partitions_by")),
    )

    tgt, base = resolve_target(
        dst,
        dst_uuid,
        mode=mode,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        options=options,
        throttle=throttle,
    )
    keys, index_cols = tgt.partition_on, tgt.secondary_indices

    import dask

    token = (
        "map",
        src.url,
        src_uuid,
        meta.version,
        dst.url,
        dst_uuid,
        base.meta.version if base is not None else None,
        mode,
        plan.columns,
        repr(predicates),
        dispatch,
        keys,
        index_cols,
        options,
        func,
        func_kwargs,
    )
    reader = with_throttle(src, throttle)
    # the (small) plan goes into every node: a shared dependency would make dask run
    # every node on the worker that holds it
    slim = slim_plan(plan)
    kwargs = dict(func_kwargs or {})
    # what every node shares is bound once: passed as arguments, dask would walk the
    # plan, the target and each group's dataclasses for collections in every call
    # (0.22 s of a 200-node job's 1.1 s)
    node = functools.partial(
        _run_batch,
        source=reader,
        plan=slim,
        func=func,
        func_kwargs=kwargs,
        input_kind=input,
        target=tgt,
    )
    tok = job_token(*token, partitions_per_node)
    batches = node_batches(groups, meta.stats, partitions_per_node)
    nodes = [
        dask.delayed(node, pure=False)(
            Bundle(Bundle(group) for group in batch),
            dask_key_name=task_key("map", f"node{i}", tok),
        )
        for i, batch in enumerate(batches)
    ]
    final = final_node(
        _commit_batches,
        nodes,
        key=task_key("map", "commit", tok),
        target=tgt,
        mode=mode,
        base=base,
        metadata=user_meta,
    )
    logger.info(
        "map_partitions %s@%s -> %s: %d nodes", src_uuid, meta.version, dst_uuid, len(nodes)
    )
    return Job(final, name=f"map_partitions {src_uuid} -> {dst_uuid}", tasks=len(nodes))
