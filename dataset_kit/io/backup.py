"""Copy and verify steps on one dataset: the building blocks of backup, restore, verify.

A copy is planned against a listing of the target: blobs the target already holds under
the same key with the same size are skipped (data and index blobs are immutable and
uniquely named, so key and size identify them), the others are copied (server-side when
source and target are the same store), then checked. Only after every blob is in place
are the snapshots written (create-only) and, last, the pointer: a copy that dies halfway
is not a visible dataset at the target, and the next run resumes where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata, is_expired_stub, parse_json
from dataset_kit.exceptions import (
    DataBlobMissingError,
    DatasetExistsError,
    InvalidInputError,
    KeyNotFoundError,
    MetadataFormatError,
    StoreError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io._concurrent import io_map
from dataset_kit.io.gc import references
from dataset_kit.store import Store

__all__ = [
    "BlobCopy",
    "CopyPlan",
    "CopyResult",
    "VerifyReport",
    "copy_blobs",
    "finish_copy",
    "io_map",
    "plan_blobs",
    "plan_copy",
    "verify_blobs",
]

logger = logging.getLogger(__name__)


Versions = Literal["all", "latest"]
Check = Literal["size", "checksum"]


@dataclass(frozen=True)
class BlobCopy:
    """One blob to copy: source key, target key, expected size."""

    src: str
    dst: str
    size: int


@dataclass
class CopyPlan:
    """What a copy of one dataset will do.

    Attributes
    ----------
    source_uuid, target_uuid
        The dataset at the source and its name at the target.
    snapshots
        Target snapshots to write, oldest first (already relocated to ``target_uuid``).
    blobs
        Blobs to copy.
    skipped
        Blobs the target already holds identically (count and bytes).
    common_metadata
        ``(source key, target key)`` of the ``_common_metadata`` file, if the source has one.
    incomplete_versions
        Older source versions left out because garbage collection already deleted some of
        their blobs (they cannot be read at the source either).
    """

    source_uuid: str
    target_uuid: str
    snapshots: list[DatasetMetadata]
    blobs: list[BlobCopy]
    skipped: int = 0
    skipped_bytes: int = 0
    common_metadata: tuple[str, str] | None = None
    incomplete_versions: list[int] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes to copy."""
        return sum(b.size for b in self.blobs)


@dataclass
class CopyResult:
    """What a batch of copies did: copied keys and bytes, per-key failures."""

    copied: list[str] = field(default_factory=list)
    nbytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _relocate_key(key: str, uuid: str, target: str) -> str:
    prefix = naming.dataset_prefix(uuid)
    if not key.startswith(prefix):
        raise MetadataFormatError(f"dataset {uuid!r} references {key!r} outside its prefix")
    return naming.dataset_prefix(target) + key[len(prefix) :]


def _source_snapshots(store: Store, uuid: str, versions: Versions) -> list[DatasetMetadata]:
    latest = _commit.resolve(store, uuid).meta
    if latest.version is None:  # written by plateau after us: copy it as the next version
        nxt = latest.parent + 1 if latest.parent is not None else 0
        ident = "adopt-" + _digest(latest.to_json())[:32]  # the same in every run
        commit = {"id": ident, "operation": "adopt", "timestamp": _now()}
        latest = latest.evolve(version=nxt, parent=latest.parent, commit=commit, foreign=False)
        if versions == "latest":
            return [latest]
        older = list(_commit.iter_snapshots(store, uuid, strict=True))
        return [m for m in older if m.version is not None and m.version < nxt] + [latest]
    if versions == "latest":
        return [latest]
    history = _commit.iter_snapshots(store, uuid, strict=True, latest=latest)
    return [m for m in history if m.version is not None]


#: What :func:`_existing_snapshot` says of the stub of a version expired at the target.
EXPIRED_AT_TARGET = "<expired>"


def _existing_snapshot(store: Store, meta: DatasetMetadata) -> str | None:
    """None if the target lacks this snapshot; else its commit id."""
    assert meta.version is not None
    key = naming.snapshot_key(meta.uuid, meta.version)
    try:
        doc = parse_json(store.get(key), what=key)
    except KeyNotFoundError:
        return None
    if is_expired_stub(doc):
        return EXPIRED_AT_TARGET
    block = doc.get("dataset_kit") if isinstance(doc, dict) else None
    commit = block.get("commit") if isinstance(block, dict) else None
    return str(commit.get("id")) if isinstance(commit, dict) else ""


def plan_copy(
    source: Store,
    target: Store,
    dataset_uuid: str,
    *,
    target_uuid: str | None = None,
    versions: Versions = "all",
) -> CopyPlan:
    """Plan a copy of a dataset (every retained version, or only the latest).

    Raises
    ------
    DatasetNotFoundError
        The source dataset does not exist.
    DatasetExistsError
        The target holds a different dataset (another history) under ``target_uuid``.
    MetadataFormatError
        A source snapshot is unreadable.
    """
    uuid = naming.validate_uuid(dataset_uuid)
    tuuid = naming.validate_uuid(uuid if target_uuid is None else target_uuid)
    if versions not in ("all", "latest"):
        raise InvalidInputError(f"versions must be 'all' or 'latest', got {versions!r}")
    if source.url == target.url and tuuid == uuid:
        raise InvalidInputError(f"source and target are the same dataset {uuid!r}")
    sources = _source_snapshots(source, uuid, versions)
    incomplete: list[int] = []
    present = {info.key: info.size for info in source.iter_infos(naming.dataset_prefix(uuid))}
    if len(sources) > 1:
        # older versions whose blobs a GC with keep_versions/retention already deleted
        # cannot be copied whole: leave them out (reported), never copy a broken version
        complete = [m for m in sources[:-1] if all(k in present for k in references(m))]
        incomplete = [
            m.version for m in sources[:-1] if m not in complete and m.version is not None
        ]
        if incomplete:
            logger.warning(
                "dataset %s: versions %s miss blobs deleted by garbage collection; not copied",
                uuid,
                incomplete,
            )
        sources = [*complete, sources[-1]]
    snapshots = []
    relocated = [m.relocated(tuuid) for m in sources]
    found = io_map(lambda m: _existing_snapshot(target, m), relocated, target)
    for meta, existing in zip(relocated, found, strict=True):
        if existing == EXPIRED_AT_TARGET:
            continue  # expired by the target's own retention after an earlier copy
        snapshots.append(meta)
        if existing is not None and existing != str(meta.commit.get("id")):
            raise DatasetExistsError(
                f"the target already holds another dataset {tuuid!r} (its version "
                f"{meta.version} is a different commit); choose another target uuid or "
                "delete it first"
            )
    if not snapshots:
        raise DatasetExistsError(
            f"every version of {uuid!r} to copy has expired at the target {tuuid!r}, which "
            "is ahead of the source; nothing to copy"
        )
    plan = CopyPlan(uuid, tuuid, snapshots, [], incomplete_versions=incomplete)
    plan.blobs, plan.skipped, plan.skipped_bytes = plan_blobs(
        source, target, uuid, snapshots, source_sizes=present
    )
    table = snapshots[-1].table_name
    cm = naming.common_metadata_key(uuid, table)
    if source.exists(cm):
        plan.common_metadata = (cm, naming.common_metadata_key(tuuid, table))
    logger.info(
        "copy %s -> %s: %d versions, %d blobs to copy (%d bytes), %d already there",
        uuid,
        tuuid,
        len(snapshots),
        len(plan.blobs),
        plan.nbytes,
        plan.skipped,
    )
    return plan


def plan_blobs(
    source: Store,
    target: Store,
    source_uuid: str,
    metas: Sequence[DatasetMetadata],
    *,
    source_sizes: Mapping[str, int] | None = None,
) -> tuple[list[BlobCopy], int, int]:
    """Blobs that ``metas`` (relocated to the target) need and the target lacks.

    Returns the copies to make, and the count and bytes of blobs the target already holds
    under the same key with the same size. ``source_sizes`` is a listing of the source
    dataset's blobs the caller already made (key -> size).

    Raises
    ------
    DataBlobMissingError
        A referenced blob is missing at the source.
    """
    wanted: dict[str, str] = {}  # target key -> source key
    for meta in metas:
        for dst in references(meta):
            wanted[dst] = _relocate_key(dst, meta.uuid, source_uuid)
    if not metas:
        return [], 0, 0
    tuuid = metas[0].uuid
    have = {info.key: info.size for info in target.iter_infos(naming.dataset_prefix(tuuid))}
    # One listing of the source instead of a stat per blob (a listing page holds up to
    # 5,000 blobs on Azure: 1,000 stats took seconds there); a key the listing lacks is
    # stat'ed before it is called missing.
    sizes = source_sizes
    if sizes is None:
        prefix = naming.dataset_prefix(source_uuid)
        sizes = {info.key: info.size for info in source.iter_infos(prefix)}
    blobs: list[BlobCopy] = []
    skipped = skipped_bytes = 0
    for dst, src in sorted(wanted.items()):
        size = sizes.get(src)
        if size is None:
            try:
                size = source.stat(src).size
            except KeyNotFoundError:
                raise DataBlobMissingError(
                    f"dataset {source_uuid!r}: blob {src!r} referenced by a copied version "
                    "is missing at the source; run verify, or copy only the latest version"
                ) from None
        if have.get(dst) == size:
            skipped += 1
            skipped_bytes += size
        else:
            blobs.append(BlobCopy(src, dst, size))
    return blobs, skipped, skipped_bytes


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def copy_blobs(
    source: Store, target: Store, blobs: Iterable[BlobCopy], *, check: Check = "size"
) -> CopyResult:
    """Copy blobs and check each copy (size, or SHA-256 of the content); never raises per key.

    Copies within one store are server-side (:meth:`Store.copy`); across stores the bytes
    pass through this process.
    """
    result = CopyResult()
    same = source.url == target.url

    def copy_one(blob: BlobCopy) -> str | None:
        """Copy and check one blob; the error text, or None."""
        try:
            if same:
                info = target.copy(blob.src, blob.dst)
                data = None
            else:
                data = source.get(blob.src)
                info = target.put(blob.dst, data)
            if info.size != blob.size:
                raise StoreError(f"copied {info.size} bytes, expected {blob.size}", key=blob.dst)
            if check == "checksum":
                want = _digest(data if data is not None else source.get(blob.src))
                if _digest(target.get(blob.dst)) != want:
                    raise StoreError("checksum of the copy differs from the source", key=blob.dst)
        except Exception as exc:  # reported per key; the caller decides
            return f"{type(exc).__name__}: {exc}"
        return None

    todo = list(blobs)
    for blob, error in zip(todo, io_map(copy_one, todo, source, target), strict=True):
        if error is not None:
            result.failed[blob.dst] = error
            continue
        result.copied.append(blob.dst)
        result.nbytes += blob.size
    return result


def finish_copy(source: Store, target: Store, plan: CopyPlan) -> DatasetMetadata:
    """Write the target's snapshots (create-only, oldest first), then its pointer.

    Call only after every blob of the plan is in place. Returns the newest snapshot.

    Raises
    ------
    DatasetExistsError
        Another copy wrote different snapshots meanwhile.
    CommitStateUnknownError
        The new dataset's pointer could not be written.
    """
    if plan.common_metadata is not None:
        src, dst = plan.common_metadata
        target.put(dst, source.get(src))
    # what the target holds already, read at once (one round trip, not one per version)
    found = list(io_map(lambda m: _existing_snapshot(target, m), plan.snapshots, target))
    for meta, existing in zip(plan.snapshots, found, strict=True):
        assert meta.version is not None
        key = naming.snapshot_key(meta.uuid, meta.version)
        for attempt in range(10):
            if existing is not None:
                break
            try:
                target.put(key, meta.to_json(), if_absent=True)
                existing = str(meta.commit.get("id"))
            except StoreError:
                # lost a race, or failed before/after reaching the store: look again
                existing = _existing_snapshot(target, meta)
                if existing is None and attempt == 9:
                    raise
        if existing == EXPIRED_AT_TARGET:
            # the target expired this version after an earlier copy: it stays expired
            continue
        if existing != str(meta.commit.get("id")):
            raise DatasetExistsError(
                f"dataset {meta.uuid!r}: version {meta.version} at the target is another "
                "commit (a concurrent copy or writer); nothing more was written"
            )
    newest = plan.snapshots[-1]
    _commit.publish(target, newest, schema_written=plan.common_metadata is not None)
    logger.info("copy of %s committed as %s v%s", plan.source_uuid, newest.uuid, newest.version)
    return newest


@dataclass
class VerifyReport:
    """What :func:`verify_blobs` found.

    Attributes
    ----------
    dataset_uuid
        The dataset.
    versions
        The versions checked.
    checked
        Blobs checked.
    missing
        Referenced blobs that do not exist.
    corrupt
        Blobs that exist but are unreadable or do not match the recorded size or rows.
    """

    dataset_uuid: str
    versions: list[int] = field(default_factory=list)
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if every referenced blob exists and is readable."""
        return not self.missing and not self.corrupt


@dataclass(frozen=True)
class BlobCheck:
    """One blob to verify, with the size and rows its version recorded (if known)."""

    key: str
    size: int | None
    rows: int | None


def blobs_to_verify(metas: Sequence[DatasetMetadata]) -> list[BlobCheck]:
    """Every blob the versions reference, once, with what their stats recorded."""
    checks: dict[str, BlobCheck] = {}
    for meta in metas:
        for label, key in meta.partitions.items():
            rows, size = meta.stats.get(label, (None, None))
            checks[key] = BlobCheck(key, size, rows)
        for ref in meta.indices.values():
            if isinstance(ref, str):
                checks.setdefault(ref, BlobCheck(ref, None, None))
    return sorted(checks.values(), key=lambda c: c.key)


def verify_blobs(store: Store, checks: Iterable[BlobCheck], *, deep: bool = False) -> VerifyReport:
    """Check that blobs exist with the recorded size; ``deep`` also parses each footer.

    Returns a report without ``dataset_uuid``/``versions`` (the caller fills them in).
    """
    report = VerifyReport(dataset_uuid="")

    def verify_one(check: BlobCheck) -> tuple[str, str] | None:
        """("missing" | "corrupt", detail) for a bad blob, None for a good one."""
        try:
            info = store.stat(check.key)
        except KeyNotFoundError:
            return ("missing", "")
        except StoreError as exc:
            return ("corrupt", f"cannot stat: {exc}")
        if check.size is not None and info.size != check.size:
            return ("corrupt", f"size {info.size}, recorded {check.size}")
        if deep:
            try:
                footer = pq.read_metadata(pa.BufferReader(store.get(check.key)))
            except (pa.ArrowException, StoreError, OSError) as exc:
                return ("corrupt", f"unreadable Parquet: {exc}")
            if check.rows is not None and footer.num_rows != check.rows:
                return ("corrupt", f"{footer.num_rows} rows, recorded {check.rows}")
        return None

    todo = list(checks)
    for check, bad in zip(todo, io_map(verify_one, todo, store), strict=True):
        report.checked += 1
        if bad is None:
            continue
        if bad[0] == "missing":
            report.missing.append(check.key)
        else:
            report.corrupt[check.key] = bad[1]
    return report
