"""Lazy garbage collection as a dask graph: plan, delete in parallel batches, report.

Planning (on the client, when the job is built) lists the dataset once and reads its
retained snapshots: candidates are blobs no retained version references that are older
than the grace period. Each delete node takes one batch (at most 256 keys: the Azure
batch limit), first checks whether the dataset gained versions since planning and, if it
did, spares every key those versions reference; then deletes. The final node merges the
batches into one :class:`~dataset_kit.io.gc.GarbageReport`.

Why it never deletes a live blob: a writer's blobs are younger than the grace period
until it commits (a writer must commit within the grace period); a commit made after
planning is seen by the delete nodes; retained versions' blobs are never candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dataset_kit.core import naming
from dataset_kit.core.duration import Duration, parse_duration
from dataset_kit.exceptions import DatasetNotFoundError, InvalidInputError, VersionNotFoundError
from dataset_kit.io import commit as _commit
from dataset_kit.io import gc as _gc
from dataset_kit.pipelines._job import Bundle, Job, final_node, job_token, task_key
from dataset_kit.pipelines._stores import with_throttle
from dataset_kit.store import Capability, Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = ["garbage_collect"]

logger = logging.getLogger(__name__)

#: Keys per delete node (the Azure Blob Batch API takes at most 256 per request).
DEFAULT_BATCH_SIZE = 256


@dataclass
class _BatchResult:
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    spared: list[str] = field(default_factory=list)


def _referenced_since(store: Store, uuid: str, planned: int | None) -> set[str] | None:
    """Keys referenced by versions committed after ``planned`` (None: nothing new)."""
    try:
        latest = _commit.resolve(store, uuid).meta
    except DatasetNotFoundError:
        return None  # deleted meanwhile: nothing references its blobs any more
    if latest.version is not None and latest.version == planned:
        return None
    refs = set(_gc.references(latest))
    newest = latest.version if latest.version is not None else (latest.parent or -1)
    start = latest.history_start - 1 if planned is None else planned
    for version in range(max(start, latest.history_start - 1) + 1, newest + 1):
        try:
            refs.update(_gc.references(_commit.load_version(store, uuid, version)))
        except (DatasetNotFoundError, VersionNotFoundError):
            continue
    return refs


def _delete_batch(
    store: Store, uuid: str, keys: Sequence[str], planned: int | None
) -> _BatchResult:
    result = _BatchResult()
    referenced = _referenced_since(store, uuid, planned)
    if referenced:
        result.spared = [k for k in keys if k in referenced]
        keys = [k for k in keys if k not in referenced]
        if result.spared:
            logger.info(
                "dataset %s: %d blobs became referenced after planning; kept",
                uuid,
                len(result.spared),
            )
    report = store.delete_many(keys)
    result.failed = {key: repr(err) for key, err in report.failed.items()}
    result.deleted = [k for k in keys if k not in result.failed]
    return result


def _merge(batches: list[_BatchResult], *, plan: _gc.GarbageReport) -> _gc.GarbageReport:
    spared = {k for b in batches for k in b.spared}
    failed = {k: v for b in batches for k, v in b.failed.items()}
    plan = replace(
        plan, keys=[k for k in plan.keys if k not in spared], failed=failed, spared=len(spared)
    )
    logger.info(
        "dataset %s: deleted %d garbage blobs, %d failed, %d spared",
        plan.dataset_uuid,
        plan.count,
        len(failed),
        len(spared),
    )
    return plan


def garbage_collect(
    dataset_uuid: str,
    *,
    store: object,
    grace_period: Duration = _gc.DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: Duration | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    storage_concurrency: int | Throttle | None = None,
) -> Job[_gc.GarbageReport]:
    """Delete, in parallel batches, the blobs of a dataset that no retained version needs.

    Parameters
    ----------
    dataset_uuid
        The dataset.
    store
        Its store (URL, path or store object).
    grace_period
        Minimum age of a blob to delete (seconds, ``timedelta`` or text like ``"1h"``;
        default one hour). Writers must commit within it.
    keep_versions, retention
        Which versions' blobs to keep: the newest ``keep_versions`` and/or those committed
        within ``retention``; neither: every version. The newest is always kept.
    dry_run
        Plan and report only; the job deletes nothing.
    batch_size
        Keys per delete node (1..256). Default: 256 on network stores; on others (a
        local filesystem, memory) one node deletes everything, since deletes there are
        kernel work that threads do not spread.
    storage_concurrency
        Most concurrent delete requests across the cluster (int or shared throttle).

    Returns
    -------
    Job
        Its :meth:`~Job.compute` returns a :class:`~dataset_kit.io.gc.GarbageReport`.

    Raises
    ------
    DatasetNotFoundError
        The dataset does not exist.
    MetadataFormatError
        A retained snapshot is unreadable (nothing is deleted).

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"p": [1, 2], "x": [1.0, 2.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="g", partition_on="p")
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="g", mode="overwrite")
    >>> report = dk.pipelines.garbage_collect("g", store=store, grace_period=0,
    ...                                       keep_versions=1).compute()
    >>> report.count, dk.read_table(store=store, dataset_uuid="g").shape
    (2, (2, 2))
    """
    kv = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    if batch_size is not None and not 1 <= batch_size <= DEFAULT_BATCH_SIZE:
        raise InvalidInputError(f"batch_size must be within 1..256, got {batch_size}")
    grace = parse_duration(grace_period, name="grace_period")
    assert grace is not None
    keep = parse_duration(retention, name="retention")
    throttle = as_throttle(storage_concurrency, name="storage")
    try:
        planned: int | None = _commit.resolve(kv, uuid).meta.version
    except DatasetNotFoundError:
        planned = None  # deleted or never committed: collect_garbage decides
    plan = _gc.collect_garbage(
        kv, uuid, grace_period=grace, keep_versions=keep_versions, retention=keep, dry_run=True
    )
    plan.dry_run = dry_run
    import dask

    token = (job_token("gc", kv.url, uuid, planned, plan.keys, dry_run),)
    if batch_size is None:
        concurrent = Capability.CONCURRENT_IO in kv.capabilities
        batch_size = DEFAULT_BATCH_SIZE if concurrent else max(1, len(plan.keys))
    batches = (
        []
        if dry_run
        else [Bundle(plan.keys[i : i + batch_size]) for i in range(0, len(plan.keys), batch_size)]
    )
    deleter = with_throttle(kv, throttle)
    nodes = [
        dask.delayed(_delete_batch, pure=False)(
            deleter, uuid, batch, planned, dask_key_name=task_key("gc", f"delete{i}", *token)
        )
        for i, batch in enumerate(batches)
    ]
    final = final_node(_merge, nodes, key=task_key("gc", "report", *token), plan=plan)
    return Job(final, name=f"garbage_collect {uuid}", tasks=len(nodes))
