"""Lazy garbage collection of one dataset: delete blobs no retained version references.

Updates only change metadata; the blobs they stop referencing (replaced partitions, old
index files, blobs of failed or abandoned writers) stay until a GC removes them. A blob is
deleted only if

* no retained snapshot of the current history references it (nor a pointer written by
  another tool), and
* it is older than the grace period, so blobs of writers that have not committed yet
  (they are young) are never touched; a blob whose age is unknown (stores without
  modification times report 0) is never deleted.

Snapshots themselves are never deleted here: expiring versions is a separate operation.
A dataset that no longer exists (deleted, or never committed) references nothing: its
remaining blobs are collected under the same grace period.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.exceptions import DatasetNotFoundError, InvalidInputError
from dataset_kit.io import commit as _commit
from dataset_kit.store import BlobInfo, Store

__all__ = [
    "GarbageReport",
    "collect_garbage",
    "expire_versions",
    "find_garbage",
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
        unknown age).
    failed
        Keys whose deletion failed, with the error text.
    versions
        The retained versions whose references were kept.
    spared
        Candidates that a version committed after planning references, so they were
        kept (pipeline GC only).
    """

    dataset_uuid: str
    dry_run: bool
    keys: list[str] = field(default_factory=list)
    nbytes: int = 0
    too_young: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    spared: int = 0

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
    if keep_versions is not None and keep_versions < 1:
        raise InvalidInputError(f"keep_versions must be >= 1, got {keep_versions}")
    if retention is not None and retention < 0:
        raise InvalidInputError(f"retention must be >= 0 seconds, got {retention}")
    snapshots = list(_commit.iter_snapshots(store, dataset_uuid, strict=True))
    if keep_versions is None and retention is None:
        return snapshots, []
    now = time.time() if now is None else now
    kept: list[DatasetMetadata] = []
    expired: list[int] = []
    for i, meta in enumerate(snapshots):
        newest_n = keep_versions is not None and i >= len(snapshots) - keep_versions
        young = retention is not None and now - _commit_time(meta) < retention
        if i == len(snapshots) - 1 or newest_n or young:
            kept.append(meta)
        elif meta.version is not None:
            expired.append(meta.version)
    return kept, expired


def _commit_time(meta: DatasetMetadata) -> float:
    stamp = meta.commit.get("timestamp")
    try:
        return _dt.datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0.0
    except ValueError:
        return 0.0  # unknown: treat as old (only the explicit retention rules keep it)


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
    latest = _commit.resolve(store, dataset_uuid).meta
    keys: set[str] = set(references(latest))
    kept, _ = retained_snapshots(
        store, dataset_uuid, keep_versions=keep_versions, retention=retention
    )
    for meta in kept:
        keys.update(references(meta))
    return keys, [m.version for m in kept if m.version is not None]


def find_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: float | None = None,
    now: float | None = None,
) -> tuple[list[BlobInfo], int, list[int]]:
    """Unreferenced blobs older than ``grace_period`` seconds.

    Returns the candidates, the number of unreferenced blobs kept for being too young (or
    of unknown age), and the retained versions.
    """
    if grace_period < 0:
        raise InvalidInputError(f"grace_period must be >= 0 seconds, got {grace_period}")
    uuid = naming.validate_uuid(dataset_uuid)
    prefix = naming.dataset_prefix(uuid)
    try:
        referenced, versions = referenced_keys(
            store, uuid, keep_versions=keep_versions, retention=retention
        )
    except DatasetNotFoundError:
        # deleted (a tombstone, or plateau removed the pointer) or never committed: no
        # version references anything, but a delete that died halfway or a writer that
        # died before its commit left blobs behind; they are garbage once old enough
        if next(iter(store.iter_keys(prefix)), None) is None:
            raise
        logger.info("dataset %s does not exist: all its blobs are unreferenced", uuid)
        referenced, versions = set(), []
    now = time.time() if now is None else now
    versions_prefix = naming.snapshot_prefix(uuid)
    candidates: list[BlobInfo] = []
    too_young = 0
    for info in store.iter_infos(prefix):
        key = info.key
        if key in referenced or key.startswith(versions_prefix):
            continue
        if key.endswith("/" + naming.COMMON_METADATA_FILE):
            continue
        if info.mtime <= 0 or now - info.mtime < grace_period:
            too_young += 1
            continue
        candidates.append(info)
    return candidates, too_young, versions


def collect_garbage(
    store: Store,
    dataset_uuid: str,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    keep_versions: int | None = None,
    retention: float | None = None,
    dry_run: bool = False,
) -> GarbageReport:
    """Find and (unless ``dry_run``) delete a dataset's garbage; see the module docstring."""
    candidates, too_young, versions = find_garbage(
        store,
        dataset_uuid,
        grace_period=grace_period,
        keep_versions=keep_versions,
        retention=retention,
    )
    report = GarbageReport(
        dataset_uuid=dataset_uuid,
        dry_run=dry_run,
        keys=sorted(info.key for info in candidates),
        nbytes=sum(info.size for info in candidates),
        too_young=too_young,
        versions=versions,
    )
    if not dry_run and report.keys:
        result = store.delete_many(report.keys)
        report.failed = {key: repr(err) for key, err in result.failed.items()}
    logger.info(
        "dataset %s: garbage %d blobs (%d bytes)%s, %d too young, %d failed",
        dataset_uuid,
        len(report.keys),
        report.nbytes,
        " (dry run)" if dry_run else " deleted",
        too_young,
        len(report.failed),
    )
    return report


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
    longer be read (``VersionNotFoundError``); their blobs become garbage for
    :func:`collect_garbage`.
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
