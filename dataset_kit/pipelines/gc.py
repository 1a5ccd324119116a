"""Lazy garbage collection as a dask graph: plan, delete in parallel batches, report.

Planning (on the client, when the job is built) lists the dataset once and reads its
retained snapshots: candidates are blobs no retained version references that are older
than the grace period. Without a scan (``scan=False``) planning lists nothing: the
candidates are the blobs that versions outside the retention rules release (see
:mod:`dataset_kit.io.gc`). Each delete node takes one batch (at most 256 keys: the Azure
batch limit), first checks whether the dataset gained versions since planning and, if it
did, spares every key those versions reference; then deletes. The final node merges the
batches into one :class:`~dataset_kit.io.gc.GarbageReport` and, with ``expire=True``
and no failed deletion, expires the versions outside the rules.

Why it never deletes a live blob: a writer's blobs are younger than the grace period
until it commits (a writer must commit within the grace period), and the store checks
every blob's age again as it deletes it (a blob written again under a planned key, by a
backup or restore, is kept); a commit made after planning is seen by the delete nodes;
retained versions' blobs are never candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dataset_kit.core import naming
from dataset_kit.core.duration import Duration, parse_duration, required_duration
from dataset_kit.exceptions import InvalidInputError
from dataset_kit.io import gc as _gc
from dataset_kit.pipelines._job import Bundle, Job, final_node, job_token, task_key
from dataset_kit.pipelines._stores import with_throttle
from dataset_kit.store import Capability, Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = ["garbage_collect"]

logger = logging.getLogger(__name__)

#: Keys per delete node (the Azure Blob Batch API takes at most 256 per request).
DEFAULT_BATCH_SIZE = 256


def _delete_batch(
    store: Store,
    uuid: str,
    keys: Sequence[str],
    planned: int | None,
    grace: float,
    prune_dirs: bool,
) -> _gc.DeleteOutcome:
    return _gc.delete_planned(
        store, uuid, list(keys), planned=planned, grace_period=grace, prune_dirs=prune_dirs
    )


def _merge(
    batches: list[_gc.DeleteOutcome],
    *,
    store: Store,
    plan: _gc.GarbageReport,
    prune_dirs: bool,
) -> _gc.GarbageReport:
    return _gc.finish(store, plan, batches, prune_dirs=prune_dirs)


def garbage_collect(
    dataset_uuid: str,
    *,
    store: object,
    grace_period: Duration = _gc.DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: Duration | None = None,
    scan: bool = True,
    expire: bool = False,
    dry_run: bool = False,
    prune_dirs: bool = False,
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
    scan
        List the dataset's blobs (the default), which also finds the orphans of writers
        that died before committing. ``False``: take the candidates from the metadata
        alone, the blobs that versions outside ``keep_versions``/``retention`` reference
        and no retained version does (deltalake's "lite" vacuum): no listing, so the
        cost follows the versions leaving the window, not the dataset's size. The grace
        period still holds: the store checks each blob's age as it deletes it.
    expire
        After the deletes succeeded, expire the versions outside the rules (as
        :func:`dataset_kit.expire_versions`), so a later ``scan=False`` run does not
        read them again. Nothing is expired if a planned blob was left (a failed
        deletion, or one too young): the next run retries.
    dry_run
        Plan and report only; the job deletes nothing.
    prune_dirs
        On a local filesystem, also remove the partition directories the deletes empty
        and, in a scanning run, every empty directory below the dataset (left by earlier
        runs). Each ``rmdir`` costs about 60-75 us here, serialized per parent directory:
        more than deleting the blob in it. Off by default, as in deltalake's vacuum:
        an empty directory holds no data, and a later write into that partition reuses
        it.
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
        The dataset does not exist (a scanning run collects a deleted dataset's blobs).
    InvalidInputError
        ``scan=False`` or ``expire=True`` without ``keep_versions``/``retention``.
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
    grace = required_duration(grace_period, name="grace_period")
    keep = parse_duration(retention, name="retention")
    throttle = as_throttle(storage_concurrency, name="storage")
    plan = _gc.plan_garbage(
        kv,
        uuid,
        grace_period=grace,
        keep_versions=keep_versions,
        retention=keep,
        scan=scan,
        expire=expire,
    )
    plan.dry_run = dry_run
    import dask

    token = (
        job_token("gc", kv.url, uuid, plan.planned, plan.keys, plan.expired, dry_run, prune_dirs),
    )
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
            deleter,
            uuid,
            batch,
            plan.planned,
            grace,
            prune_dirs,
            dask_key_name=task_key("gc", f"delete{i}", *token),
        )
        for i, batch in enumerate(batches)
    ]
    final = final_node(
        _merge,
        nodes,
        key=task_key("gc", "report", *token),
        store=kv,
        plan=plan,
        prune_dirs=prune_dirs,
    )
    return Job(final, name=f"garbage_collect {uuid}", tasks=len(nodes))
