"""Lazy garbage collection of one dataset: delete blobs no retained version references.

Updates only change metadata; the blobs they stop referencing (replaced partitions, old
index files, blobs of failed or abandoned writers) stay until a GC removes them. A blob is
deleted only if

* no retained snapshot of the current history references it (nor a pointer written by
  another tool), and
* it is older than the grace period, so blobs of writers that have not committed yet
  (they are young) are never touched; a blob whose age is unknown (stores without
  modification times report 0) is never deleted.

Two ways to find them:

* **scanning** (the default) lists every blob under the dataset's prefix, so it also finds
  the orphans of writers that died before committing and the blobs of versions expired
  long ago;
* **from the metadata alone** (``scan=False``, deltalake's "lite" vacuum): the blobs that
  versions outside the retention rules reference and no retained version (nor the
  pointer) does. No listing, so its cost follows the versions that leave the window, not
  the size of the dataset: the cheap routine run for datasets of millions of blobs, with
  an occasional scanning run for the orphans.

Either way the store checks the grace period again as it deletes
(``delete_many(unmodified_since=...)``; on Azure the service checks it, per blob): a blob
modified within it is kept, whatever the plan saw. That matters where a key comes back:
a backup or restore may write a planned blob again, and a plan made without a scan knows
no ages at all.

Snapshots themselves are never deleted here. Versions outside the retention rules are
expired (replaced by stubs) only when asked (``expire=True``), after their blobs were
deleted: a later run without scanning then no longer reads them; a run interrupted
before the stubs simply does the same work again.

Just before deleting, the collector checks whether the dataset gained versions since
planning and keeps every candidate those versions reference (``report.spared``).

A dataset that no longer exists (deleted, or never committed) references nothing: a
scanning run collects its remaining blobs under the same grace period.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.exceptions import (
    DatasetNotFoundError,
    InvalidInputError,
    KeyNotFoundError,
    VersionNotFoundError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io._concurrent import io_map
from dataset_kit.store import BlobInfo, Store, delete_many_on

__all__ = [
    "GarbageReport",
    "DeleteOutcome",
    "collect_garbage",
    "delete_planned",
    "expire_versions",
    "find_garbage",
    "find_released",
    "finish",
    "plan_garbage",
    "referenced_since",
    "referenced_keys",
    "references",
    "retained_snapshots",
]

logger = logging.getLogger(__name__)

#: Default grace period in seconds: blobs younger than this are never deleted.
DEFAULT_GRACE_PERIOD = 3600.0


@dataclass
class GarbageReport:
    """What a garbage collection deleted (or, in a dry run, would delete).

    Attributes
    ----------
    dataset_uuid
        The dataset.
    dry_run
        True if nothing was deleted.
    keys
        Unreferenced blobs older than the grace period (deleted unless ``dry_run``).
    nbytes
        Their total size.
    too_young
        Unreferenced blobs kept because they are younger than the grace period (or of
        unknown age), when planned or when deleted.
    failed
        Keys whose deletion failed, with the error text.
    versions
        The retained versions whose references were kept.
    spared
        Candidates that a version committed after planning references, so they were
        kept.
    scanned
        True if the dataset's blobs were listed (orphans included); False if the
        candidates came from the metadata alone (``scan=False``).
    expired
        The versions expired after their blobs were deleted (``expire=True``; empty in a
        dry run: would be; empty when a deletion failed: the next run retries them).
    planned
        The dataset's version when the collection was planned (None: it did not exist).
    sizes
        Size in bytes of each key in ``keys``.
    absent
        Planned blobs that were already gone when this run deleted them (another run
        got there first, or a run without a scan planned the blobs of versions it had
        collected before without expiring them), where the store can tell (local
        filesystem, Azure batch deletes). They are not in ``keys``, ``count`` or
        ``nbytes``.
    """

    dataset_uuid: str
    dry_run: bool
    keys: list[str] = field(default_factory=list)
    nbytes: int = 0
    too_young: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    spared: int = 0
    scanned: bool = True
    expired: list[int] = field(default_factory=list)
    planned: int | None = None
    sizes: dict[str, int] = field(default_factory=dict, repr=False)
    absent: int = 0

    @property
    def count(self) -> int:
        """Number of blobs deleted (or to delete)."""
        return len(self.keys) - len(self.failed)


def references(meta: DatasetMetadata) -> Iterable[str]:
    """Every blob key a version references (data blobs and index files)."""
    yield from meta.partitions.values()
    for ref in meta.indices.values():
        if isinstance(ref, str):
            yield ref


def _check_rules(keep_versions: int | None, retention: float | None) -> None:
    if keep_versions is not None and (
        isinstance(keep_versions, bool)
        or not isinstance(keep_versions, int | np.integer)
        or keep_versions < 1
    ):
        raise InvalidInputError(f"keep_versions must be an integer >= 1, got {keep_versions!r}")
    if retention is not None and retention < 0:
        raise InvalidInputError(f"retention must be >= 0 seconds, got {retention}")


def _split_history(
    store: Store,
    uuid: str,
    *,
    keep_versions: int | None,
    retention: float | None,
    now: float | None = None,
    latest: DatasetMetadata | None = None,
) -> tuple[list[DatasetMetadata], list[DatasetMetadata]]:
    """The readable snapshots of the current history: (retained, outside the rules)."""
    _check_rules(keep_versions, retention)
    snapshots = list(_commit.iter_snapshots(store, uuid, strict=True, latest=latest))
    if keep_versions is None and retention is None:
        return snapshots, []
    now = time.time() if now is None else now
    kept: list[DatasetMetadata] = []
    expired: list[DatasetMetadata] = []
    for i, meta in enumerate(snapshots):
        newest_n = keep_versions is not None and i >= len(snapshots) - keep_versions
        young = retention is not None and now - _commit_time(meta) < retention
        if i == len(snapshots) - 1 or newest_n or young:
            kept.append(meta)
        elif meta.version is not None:
            expired.append(meta)
    return kept, expired


def retained_snapshots(
    store: Store,
    dataset_uuid: str,
    *,
    keep_versions: int | None = None,
    retention: float | None = None,
    now: float | None = None,
) -> tuple[list[DatasetMetadata], list[int]]:
    """Split the current history into retained snapshots and expired version numbers.

    With neither ``keep_versions`` nor ``retention`` every version is retained. Otherwise
    a version is retained if it is among the newest ``keep_versions`` or was committed
    less than ``retention`` seconds ago; the newest version is always retained.

    Raises
    ------
    DatasetNotFoundError
        If the dataset does not exist.
    MetadataFormatError
        If a snapshot cannot be read (nothing may be deleted then).
    """
    kept, expired = _split_history(
        store, dataset_uuid, keep_versions=keep_versions, retention=retention, now=now
    )
    return kept, [m.version for m in expired if m.version is not None]


def _commit_time(meta: DatasetMetadata) -> float:
    stamp = meta.commit.get("timestamp")
    try:
        return _dt.datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0.0
    except ValueError:
        return 0.0  # unknown: treat as old (only the explicit retention rules keep it)


def _referenced(
    store: Store,
    uuid: str,
    *,
    keep_versions: int | None,
    retention: float | None,
    now: float | None = None,
) -> tuple[set[str], list[DatasetMetadata], list[DatasetMetadata], DatasetMetadata]:
    """Keys the retained versions and the pointer reference; retained and other
    snapshots; the current metadata."""
    latest = _commit.resolve(store, uuid).meta
    kept, expired = _split_history(
        store, uuid, keep_versions=keep_versions, retention=retention, now=now, latest=latest
    )
    keys: set[str] = set(references(latest))
    for meta in kept:
        keys.update(references(meta))
    return keys, kept, expired, latest


def _numbers(snapshots: list[DatasetMetadata]) -> list[int]:
    return [m.version for m in snapshots if m.version is not None]


def referenced_keys(
    store: Store,
    dataset_uuid: str,
    *,
    keep_versions: int | None = None,
    retention: float | None = None,
) -> tuple[set[str], list[int]]:
    """Every blob key referenced by a retained version (or the pointer), and the versions.

    Raises
    ------
    DatasetNotFoundError
        If the dataset does not exist.
    MetadataFormatError
        If a snapshot cannot be read (nothing is deleted then).
    """
    keys, kept, _, _ = _referenced(
        store, dataset_uuid, keep_versions=keep_versions, retention=retention
    )
    return keys, _numbers(kept)


def _is_schema_file(key: str) -> bool:
    return key.endswith("/" + naming.COMMON_METADATA_FILE)


def _scan(
    store: Store,
    uuid: str,
    *,
    grace_period: float,
    keep_versions: int | None,
    retention: float | None,
    now: float | None,
) -> tuple[list[BlobInfo], int, list[int], list[int], int | None]:
    """Candidates, too young, retained and other versions, version planned on."""
    prefix = naming.dataset_prefix(uuid)
    try:
        referenced, kept, expired, latest = _referenced(
            store, uuid, keep_versions=keep_versions, retention=retention, now=now
        )
        planned = latest.version
    except DatasetNotFoundError:
        # deleted (a tombstone, or plateau removed the pointer) or never committed: no
        # version references anything, but a delete that died halfway or a writer that
        # died before its commit left blobs behind; they are garbage once old enough
        if next(iter(store.iter_keys(prefix)), None) is None:
            raise
        logger.info("dataset %s does not exist: all its blobs are unreferenced", uuid)
        referenced, kept, expired, planned = set(), [], [], None
    now = time.time() if now is None else now
    versions_prefix = naming.snapshot_prefix(uuid)
    candidates: list[BlobInfo] = []
    too_young = 0
    for info in store.iter_infos(prefix):
        key = info.key
        if key in referenced or key.startswith(versions_prefix) or _is_schema_file(key):
            continue
        if info.mtime <= 0 or now - info.mtime < grace_period:
            too_young += 1
            continue
        candidates.append(info)
    return candidates, too_young, _numbers(kept), _numbers(expired), planned


def _check_grace(grace_period: float) -> None:
    if not isinstance(grace_period, int | float) or isinstance(grace_period, bool):
        raise InvalidInputError(f"grace_period must be a duration, got {grace_period!r}")
    if grace_period < 0:
        raise InvalidInputError(f"grace_period must be >= 0 seconds, got {grace_period}")


def find_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: float | None = None,
    now: float | None = None,
) -> tuple[list[BlobInfo], int, list[int]]:
    """Unreferenced blobs older than ``grace_period`` seconds, found by listing.

    Returns the candidates, the number of unreferenced blobs kept for being too young (or
    of unknown age), and the retained versions.
    """
    _check_grace(grace_period)
    candidates, too_young, versions, _, _ = _scan(
        store,
        naming.validate_uuid(dataset_uuid),
        grace_period=grace_period,
        keep_versions=keep_versions,
        retention=retention,
        now=now,
    )
    return candidates, too_young, versions


def _stat_or_none(store: Store, key: str) -> BlobInfo | None:
    try:
        return store.stat(key)
    except KeyNotFoundError:
        return None


def find_released(
    store: Store,
    dataset_uuid: str,
    *,
    keep_versions: int | None = None,
    retention: float | None = None,
    now: float | None = None,
) -> tuple[dict[str, int], list[int], list[int]]:
    """Blobs released by the versions outside the retention rules, from metadata alone.

    A blob is released if a readable snapshot outside the rules references it and no
    retained version nor the pointer does. Nothing is listed: sizes come from the
    snapshots' partition statistics; only blobs without them (index files, partitions
    written by other tools) are looked up, and those already gone are left out.

    Returns
    -------
    tuple
        ``{key: size}`` of the released blobs, the retained versions, and the versions
        outside the rules.

    Raises
    ------
    InvalidInputError
        Neither ``keep_versions`` nor ``retention`` given (then every version is
        retained and nothing is ever released).
    DatasetNotFoundError
        The dataset does not exist (a scanning GC collects a deleted dataset's blobs).
    MetadataFormatError
        A snapshot is unreadable (nothing may be deleted then).

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> df = pd.DataFrame({"p": [1, 2], "x": [1.0, 2.0]})
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="r", partition_on="p")
    >>> _ = dk.write_dataset(df, store=store, dataset_uuid="r", mode="overwrite")
    >>> sizes, kept, other = find_released(store, "r", keep_versions=1)
    >>> len(sizes), kept, other
    (2, [1], [0])
    """
    sizes, kept, expired, _ = _released(
        store,
        naming.validate_uuid(dataset_uuid),
        keep_versions=keep_versions,
        retention=retention,
        now=now,
    )
    return sizes, kept, expired


def _released(
    store: Store,
    uuid: str,
    *,
    keep_versions: int | None,
    retention: float | None,
    now: float | None,
) -> tuple[dict[str, int], list[int], list[int], int | None]:
    """:func:`find_released`, plus the version it planned on (the pointer it read)."""
    if keep_versions is None and retention is None:
        raise InvalidInputError(
            "collecting without a scan needs keep_versions and/or retention: with every "
            "version retained no blob is ever released"
        )
    referenced, kept, expired, latest = _referenced(
        store, uuid, keep_versions=keep_versions, retention=retention, now=now
    )
    sizes: dict[str, int] = {}
    unknown: set[str] = set()
    for meta in expired:
        for label, key in meta.partitions.items():
            if key in referenced or key in sizes:
                continue
            known = meta.stats.get(label)
            if known is None:
                unknown.add(key)
            else:
                sizes[key] = known[1]
                unknown.discard(key)
        unknown.update(
            key
            for key in references(meta)
            if key not in referenced and key not in sizes and not _is_schema_file(key)
        )
    looked_up = sorted(unknown)
    infos = io_map(lambda k: _stat_or_none(store, k), looked_up, store)
    for key, info in zip(looked_up, infos, strict=True):
        if info is not None:
            sizes[key] = info.size
    return sizes, _numbers(kept), _numbers(expired), latest.version


def referenced_since(store: Store, dataset_uuid: str, planned: int | None) -> set[str] | None:
    """Keys referenced by the versions committed after version ``planned``.

    None if there are none (the dataset is still at ``planned``, or it was deleted).
    A collector calls this just before it deletes, and keeps what it returns: a version
    committed after planning (a restore, say) may reference a candidate again.
    """
    uuid = naming.validate_uuid(dataset_uuid)
    try:
        latest = _commit.resolve(store, uuid).meta
    except DatasetNotFoundError:
        return None  # deleted meanwhile: nothing references its blobs any more
    if latest.version is not None and latest.version == planned:
        return None
    refs = set(references(latest))
    newest = latest.version if latest.version is not None else (latest.parent or -1)
    start = latest.history_start - 1 if planned is None else planned
    for version in range(max(start, latest.history_start - 1) + 1, newest + 1):
        try:
            refs.update(references(_commit.load_version(store, uuid, version)))
        except (DatasetNotFoundError, VersionNotFoundError):
            continue
    return refs


def plan_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: float | None = None,
    scan: bool = True,
    expire: bool = False,
    now: float | None = None,
) -> GarbageReport:
    """What :func:`collect_garbage` would do, as a dry-run report (see the module docs).

    ``report.planned`` is the version the plan saw (None: the dataset did not exist).
    """
    _check_grace(grace_period)
    if expire and keep_versions is None and retention is None:
        raise InvalidInputError("expire needs keep_versions and/or retention: which to keep")
    uuid = naming.validate_uuid(dataset_uuid)
    if scan:
        candidates, too_young, versions, others, planned = _scan(
            store,
            uuid,
            grace_period=grace_period,
            keep_versions=keep_versions,
            retention=retention,
            now=now,
        )
        sizes = {info.key: info.size for info in candidates}
    else:
        sizes, versions, others, planned = _released(
            store, uuid, keep_versions=keep_versions, retention=retention, now=now
        )
        too_young = 0
    return GarbageReport(
        dataset_uuid=uuid,
        dry_run=True,
        keys=sorted(sizes),
        nbytes=sum(sizes.values()),
        too_young=too_young,
        versions=versions,
        scanned=scan,
        expired=others if expire else [],
        planned=planned,
        sizes=sizes,
    )


@dataclass
class DeleteOutcome:
    """What :func:`delete_planned` did with a batch of planned keys."""

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    spared: list[str] = field(default_factory=list)
    young: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


def delete_planned(
    store: Store,
    dataset_uuid: str,
    keys: list[str],
    *,
    planned: int | None,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    prune_dirs: bool = False,
) -> DeleteOutcome:
    """Delete planned keys, except those a version committed after ``planned`` needs and
    those modified within ``grace_period`` seconds (checked by the store as it deletes:
    a backup or restore may have written a planned key again meanwhile). With
    ``prune_dirs`` a local store also removes the directories the deletes emptied."""
    outcome = DeleteOutcome()
    if not keys:
        return outcome
    referenced = referenced_since(store, dataset_uuid, planned)
    if referenced:
        outcome.spared = [k for k in keys if k in referenced]
        keys = [k for k in keys if k not in referenced]
        if outcome.spared:
            logger.info(
                "dataset %s: %d blobs became referenced after planning; kept",
                dataset_uuid,
                len(outcome.spared),
            )
    since = time.time() - grace_period if grace_period > 0 else None
    result = delete_many_on(store, keys, since, prune_dirs=prune_dirs)
    outcome.failed = {key: repr(err) for key, err in result.failed.items()}
    outcome.young = list(result.kept)
    outcome.absent = list(result.absent)
    if outcome.young:
        logger.info(
            "dataset %s: %d blobs were modified within the grace period; kept",
            dataset_uuid,
            len(outcome.young),
        )
    gone = set(outcome.failed).union(outcome.young, outcome.absent)
    outcome.deleted = [k for k in keys if k not in gone]
    return outcome


def finish(
    store: Store,
    plan: GarbageReport,
    outcomes: list[DeleteOutcome],
    *,
    prune_dirs: bool = False,
) -> GarbageReport:
    """The final report from the plan and the delete batches; expires the versions the
    plan names if every planned blob was deleted (else none: the next run retries).

    With ``prune_dirs`` after a scanning run, the empty directories below the dataset
    (those earlier runs left) are removed too (:meth:`Store.remove_empty_dirs`)."""
    spared = {k for o in outcomes for k in o.spared}
    young = {k for o in outcomes for k in o.young}
    failed = {k: v for o in outcomes for k, v in o.failed.items()}
    absent = {k for o in outcomes for k in o.absent}
    left = spared | young | absent
    report = replace(
        plan,
        keys=[k for k in plan.keys if k not in left],
        nbytes=plan.nbytes - sum(plan.sizes.get(k, 0) for k in left),
        too_young=plan.too_young + len(young),
        failed=failed,
        spared=len(spared),
        expired=[] if failed or young else list(plan.expired),
        absent=len(absent),
    )
    if report.expired and not report.dry_run:
        _commit.expire(store, plan.dataset_uuid, report.expired)
    if prune_dirs and plan.scanned and not report.dry_run:
        removed = store.remove_empty_dirs(naming.dataset_prefix(plan.dataset_uuid))
        if removed:
            logger.info("dataset %s: %d empty directories removed", plan.dataset_uuid, removed)
    logger.info(
        "dataset %s: garbage %d blobs (%d bytes)%s, %d too young, %d spared, %d failed, "
        "%d already gone%s",
        plan.dataset_uuid,
        report.count,
        report.nbytes,
        " (dry run)" if report.dry_run else " deleted",
        report.too_young,
        len(spared),
        len(failed),
        len(absent),
        f", versions {report.expired} expired" if report.expired else "",
    )
    return report


def collect_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: float | None = None,
    scan: bool = True,
    expire: bool = False,
    dry_run: bool = False,
    prune_dirs: bool = False,
) -> GarbageReport:
    """Find and (unless ``dry_run``) delete a dataset's garbage; see the module docstring."""
    plan = plan_garbage(
        store,
        dataset_uuid,
        grace_period=grace_period,
        keep_versions=keep_versions,
        retention=retention,
        scan=scan,
        expire=expire,
    )
    plan.dry_run = dry_run
    outcomes = []
    if not dry_run:
        outcomes.append(
            delete_planned(
                store,
                plan.dataset_uuid,
                plan.keys,
                planned=plan.planned,
                grace_period=grace_period,
                prune_dirs=prune_dirs,
            )
        )
    return finish(store, plan, outcomes, prune_dirs=prune_dirs)


def expire_versions(
    store: Store,
    dataset_uuid: str,
    *,
    keep_versions: int | None = None,
    retention: float | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Expire the versions outside the retention rules; return them.

    Their snapshot files are replaced by small stubs (never deleted: a version number is
    never committed twice). The newest version is never expired. Expired versions can no
    longer be read (``VersionNotFoundError``); their blobs become garbage for a scanning
    :func:`collect_garbage` (to delete them from the metadata alone, collect with
    ``scan=False, expire=True`` instead of expiring first).
    """
    if keep_versions is None and retention is None:
        raise InvalidInputError("give keep_versions and/or retention: which versions to keep")
    _, expired = retained_snapshots(
        store, dataset_uuid, keep_versions=keep_versions, retention=retention
    )
    if not dry_run and expired:
        _commit.expire(store, dataset_uuid, expired)
    logger.info("dataset %s: expired versions %s", dataset_uuid, expired)
    return expired
