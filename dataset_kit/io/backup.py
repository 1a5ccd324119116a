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
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_kit.core import naming
from dataset_kit.core.metadata import (
    STUB_MAX_BYTES,
    DatasetMetadata,
    is_expired_stub,
    parse_json,
)
from dataset_kit.exceptions import (
    DataBlobCorruptError,
    DataBlobMissingError,
    DatasetExistsError,
    InvalidInputError,
    KeyNotFoundError,
    MetadataFormatError,
    PreconditionFailedError,
    StoreError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io._concurrent import ByteBudget, io_map
from dataset_kit.io.gc import references
from dataset_kit.store import BlobInfo, Capability, Store
from dataset_kit.store._streams import STREAMED_COPY_HOLD, RangeReader

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
    """One blob to copy: source key, target key, expected size, and the source's etag
    when a listing gave it (a copy inside the service is then conditional on it)."""

    src: str
    dst: str
    size: int
    etag: str | None = None


@dataclass
class CopyPlan:
    """What a copy of one dataset will do.

    Attributes
    ----------
    source_uuid, target_uuid
        The dataset at the source and its name at the target.
    snapshots
        Target snapshots to write, oldest first (already relocated to ``target_uuid``);
        the newest is the copy's result even when the target holds it already.
    blobs
        Blobs to copy.
    skipped
        Blobs the target already holds identically (count and bytes).
    common_metadata
        ``(source key, target key)`` of the ``_common_metadata`` file, if the source has one.
    common_metadata_data
        Its content, if the target's differs (None: the target holds it already).
    incomplete_versions
        Older source versions left out because garbage collection already deleted some of
        their blobs (they cannot be read at the source either).
    existing
        Per snapshot, what the target held when planned: None (absent) or its commit id.
    target_pointer
        ``(version, etag)`` of the target's pointer when planned (see
        :func:`~dataset_kit.io.commit.pointer_state`); None if not read.
    skips_protected
        Every skipped blob is referenced by the target's newest version, which garbage
        collection at the target never deletes: no need to look for vanished ones after
        the commit.
    held
        The skipped blobs, as copies to make if they turn out to differ (only if the
        plan was asked for them: ``check="checksum"`` compares their content too, see
        :func:`recheck_blobs`).
    versions
        Every version of this history the target holds after the copy (those it held
        already and those in ``snapshots``).
    """

    source_uuid: str
    target_uuid: str
    snapshots: list[DatasetMetadata]
    blobs: list[BlobCopy]
    skipped: int = 0
    skipped_bytes: int = 0
    common_metadata: tuple[str, str] | None = None
    common_metadata_data: bytes | None = None
    incomplete_versions: list[int] = field(default_factory=list)
    existing: list[str | None] = field(default_factory=list)
    target_pointer: tuple[int | None, str | None] | None = None
    skips_protected: bool = False
    versions: list[int] = field(default_factory=list)
    held: list[BlobCopy] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes to copy."""
        return sum(b.size for b in self.blobs)


@dataclass
class CopyResult:
    """What a batch of copies did: copied keys and bytes, per-key failures, and how many
    of the copies are hard links."""

    copied: list[str] = field(default_factory=list)
    nbytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    linked: int = 0
    #: Blobs planned as held by the target that :func:`recheck_blobs` found to differ
    #: (and copied again: they are in ``copied`` too), and their bytes.
    recopied: int = 0
    recopied_bytes: int = 0


def _relocate_key(key: str, uuid: str, target: str) -> str:
    prefix = naming.dataset_prefix(uuid)
    if not key.startswith(prefix):
        raise MetadataFormatError(f"dataset {uuid!r} references {key!r} outside its prefix")
    return naming.dataset_prefix(target) + key[len(prefix) :]


def _source_snapshots(store: Store, uuid: str, versions: Versions) -> list[DatasetMetadata]:
    latest = _commit.resolve(store, uuid).meta
    if latest.version is None:  # written by plateau after us: copy it as the next version
        nxt = latest.parent + 1 if latest.parent is not None else 0
        ident = _commit.adoption_id(latest)  # as the store's own adoption names it
        lineage = _commit.history_id(latest) or ident
        commit = {"id": ident, "operation": "adopt", "timestamp": _now(), "history": lineage}
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


def _check_same_history(
    tuuid: str, target_newest: DatasetMetadata | None, source_newest: DatasetMetadata | None
) -> None:
    """Refuse a target whose live dataset is another history than the source's.

    The newest version both sides hold is compared by commit id further on; this also
    catches a target whose versions do not overlap the source's at all (the source
    expired the old ones), where there is no common version to compare.
    """
    if target_newest is None or target_newest.tombstone or source_newest is None:
        return
    theirs, ours = _commit.history_id(target_newest), _commit.history_id(source_newest)
    if theirs and ours and theirs != ours:
        raise DatasetExistsError(
            f"the target already holds another dataset {tuuid!r} (its version "
            f"{target_newest.version} belongs to another history); choose another target "
            "uuid or delete it first"
        )


def _run_all(calls: Sequence[Callable[[], Any]], *stores: Store) -> list[Any]:
    """Run independent store calls at once on network stores (in order elsewhere)."""
    return list(io_map(lambda call: call(), calls, *stores))


def _sizes(store: Store, prefix: str) -> dict[str, int]:
    return {info.key: info.size for info in store.iter_infos(prefix)}


def _infos(store: Store, prefix: str) -> dict[str, BlobInfo]:
    return {info.key: info for info in store.iter_infos(prefix)}


def _get_or_none(store: Store, key: str) -> bytes | None:
    try:
        return store.get(key)
    except KeyNotFoundError:
        return None


def _listed_snapshots(
    source: Store, uuid: str, latest: DatasetMetadata, listed: Mapping[str, BlobInfo]
) -> list[int]:
    """Versions of ``latest``'s history older than it that the listing shows unexpired."""
    assert latest.version is not None
    versions = []
    for key, info in listed.items():
        v = naming.parse_snapshot_key(uuid, key)
        stub = info.size <= STUB_MAX_BYTES
        if v is not None and latest.history_start <= v < latest.version and not stub:
            versions.append(v)
    return sorted(versions)


def _read_older(source: Store, uuid: str, version: int) -> DatasetMetadata | None:
    try:
        return _commit.read_snapshot(source, uuid, version)
    except KeyNotFoundError:  # expired meanwhile
        return None


def _snapshot_id(store: Store, uuid: str, version: int) -> str | None:
    return _existing_snapshot(store, DatasetMetadata(uuid=uuid, version=version))


def _read_target_newest(target: Store, uuid: str, version: int | None) -> DatasetMetadata | None:
    """The target's newest snapshot, or None if it cannot be read (then nothing counts as
    protected by it)."""
    if version is None:
        return None
    try:
        return _commit.read_snapshot(target, uuid, version)
    except (KeyNotFoundError, MetadataFormatError):
        return None


def plan_copy(
    source: Store,
    target: Store,
    dataset_uuid: str,
    *,
    target_uuid: str | None = None,
    versions: Versions = "all",
    list_held: bool = False,
) -> CopyPlan:
    """Plan a copy of a dataset (every retained version, or only the latest).

    ``list_held``: also list the blobs the target holds already (:attr:`CopyPlan.held`),
    for a run that compares their content.

    Two rounds of concurrent requests on network stores: the source pointer, both
    listings and the target's pointer; then the snapshots and schema files on both
    sides (on Azure each request is a round trip: this used to take about 10 in a row).

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
    # the source's snapshots only: its blobs are listed in the second round, and only if
    # the target holds no version yet or older versions are to be copied (an incremental
    # backup takes the sizes of its few new blobs from the newest snapshot instead)
    pointer, present, have, target_pointer = _run_all(
        [
            lambda: _get_or_none(source, naming.pointer_key(uuid)),
            lambda: _infos(source, naming.snapshot_prefix(uuid)),
            lambda: _sizes(target, naming.dataset_prefix(tuuid)),
            lambda: _commit.pointer_state(target, tuuid),
        ],
        source,
        target,
    )
    latest = None if pointer is None else _commit.resolve_listed(source, uuid, pointer, present)
    known: dict[int, DatasetMetadata] = {}  # source snapshots read so far, by version
    if latest is None:  # msgpack-only, missing or foreign: the general path reads them all
        read = _source_snapshots(source, uuid, versions)
        known = {m.version: m for m in read if m.version is not None}
        numbers = sorted(known)
    else:
        assert latest.version is not None
        known[latest.version] = latest
        older = [] if versions == "latest" else _listed_snapshots(source, uuid, latest, present)
        numbers = [*older, latest.version]
    newest = numbers[-1]
    # What the target holds of these versions, from its listing alone: a version it
    # holds whole was complete when its snapshot was written (snapshots come after the
    # blobs), and its garbage collection keeps a retained version's blobs. So only the
    # newest version both sides hold is compared (by commit id: a different dataset
    # under the same uuid differs there), and only versions the target lacks are read
    # and planned: an incremental backup of a long history reads a few snapshots, not
    # all of them. (`verify` checks every version's blobs at the target.)
    held: list[int] = []
    expired: set[int] = set()
    for v in numbers:
        size = have.get(naming.snapshot_key(tuuid, v))
        if size is None:
            continue
        if size > STUB_MAX_BYTES:
            held.append(v)
        else:
            expired.add(v)
    common = held[-1] if held else None
    wanted = [v for v in numbers if v not in held and v not in expired]
    to_read = [v for v in wanted if v not in known]
    if common is not None and common not in known:
        to_read.append(common)
    # the target's newest snapshot (past a lagging pointer, as resolve would find it)
    target_newest = target_pointer[0]
    if target_newest is not None:
        while naming.snapshot_key(tuuid, target_newest + 1) in have:
            target_newest += 1
    newest_key = None if target_newest is None else naming.snapshot_key(tuuid, target_newest)
    table = known[newest].table_name if newest in known else None
    # a first copy lists the source (most of its blobs are to be copied); so does one
    # that copies older versions (each must be checked whole at the source)
    list_source = target_newest is None or any(v != newest for v in wanted)
    calls: list[Callable[[], Any]] = [
        lambda: _infos(source, naming.dataset_prefix(uuid)) if list_source else None,
        lambda: (
            _read_target_newest(target, tuuid, target_newest)
            if newest_key is not None and newest_key in have
            else None
        ),
        lambda: (
            None
            if common is None or (common == target_newest and newest_key in have)
            else _snapshot_id(target, tuuid, common)
        ),
    ]
    calls += [functools.partial(_read_older, source, uuid, v) for v in to_read]
    if table is not None:
        cm = naming.common_metadata_key(uuid, table)
        tcm = naming.common_metadata_key(tuuid, table)
        calls += [
            lambda: _get_or_none(source, cm),
            lambda: _get_or_none(target, tcm) if tcm in have else None,
        ]
    source_listing, newest_at_target, common_id, *rest = _run_all(calls, source, target)
    if source_listing is not None:
        present = source_listing
    for v, meta in zip(to_read, rest[: len(to_read)], strict=False):
        if meta is not None:
            known[v] = meta
    cm_data, target_cm = rest[len(to_read) :] if table is not None else (None, None)
    _check_same_history(tuuid, newest_at_target, known.get(newest))
    if common is not None and common == target_newest and newest_key in have:
        # the commit id of the target's newest snapshot, read whole above (None: a stub
        # or unreadable: ask again, which tells the two apart)
        common_id = (
            _snapshot_id(target, tuuid, common)
            if newest_at_target is None
            else str(newest_at_target.commit.get("id"))
            if newest_at_target.commit
            else ""
        )
    if common is not None and common in known:
        ours = str(known[common].commit.get("id"))
        if common_id == EXPIRED_AT_TARGET:
            expired.add(common)  # expired between the listing and the read
            held.remove(common)
        elif common_id != ours:
            raise DatasetExistsError(
                f"the target already holds another dataset {tuuid!r} (its version "
                f"{common} is a different commit); choose another target uuid or "
                "delete it first"
            )
    sources = [known[v] for v in wanted if v in known]  # expired at the source meanwhile: gone
    incomplete: list[int] = []
    older_sources = [m for m in sources if m.version != newest]
    if older_sources:
        # older versions whose blobs a GC with keep_versions/retention already deleted
        # cannot be copied whole: leave them out (reported), never copy a broken version
        broken = [m for m in older_sources if not all(k in present for k in references(m))]
        incomplete = [m.version for m in broken if m.version is not None]
        if incomplete:
            logger.warning(
                "dataset %s: versions %s miss blobs deleted by garbage collection; not copied",
                uuid,
                incomplete,
            )
        sources = [m for m in sources if m not in broken]
    snapshots = [m.relocated(tuuid) for m in sources]
    existing: list[str | None] = [None] * len(snapshots)
    if newest in held:  # nothing new at the source: the plan still moves a lagging pointer
        snapshots.append(known[newest].relocated(tuuid))  # newest is common, and was read
        existing.append(common_id)
    if not snapshots:
        raise DatasetExistsError(
            f"every version of {uuid!r} to copy has expired at the target {tuuid!r}, which "
            "is ahead of the source; nothing to copy"
        )
    plan = CopyPlan(uuid, tuuid, snapshots, [], incomplete_versions=incomplete)
    plan.existing, plan.target_pointer = existing, target_pointer
    plan.versions = sorted(set(held) | {m.version for m in snapshots if m.version is not None})
    infos = source_listing
    if infos is None:
        infos = _recorded_infos(source, uuid, snapshots, have)
    if infos is None:  # sizes not recorded, or many blobs to copy: list the source after all
        infos = _infos(source, naming.dataset_prefix(uuid))
    plan.blobs, plan.skipped, plan.skipped_bytes = plan_blobs(
        source,
        target,
        uuid,
        snapshots,
        source_infos=infos,
        target_sizes=have,
        held=plan.held if list_held else None,
    )
    if plan.skipped:
        needed = {key for meta in snapshots for key in references(meta)}
        skipped = needed.difference(b.dst for b in plan.blobs)
        protected = (
            set(references(newest_at_target))
            if newest_at_target is not None and not newest_at_target.tombstone
            else set()
        )
        plan.skips_protected = skipped <= protected
    if cm_data is not None:
        plan.common_metadata = (cm, tcm)
        plan.common_metadata_data = None if target_cm == cm_data else cm_data
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


#: Most blobs an incremental backup stats one by one (concurrently) instead of listing
#: the source's blobs: on Azure a listing page holds 5,000, so a few stats are cheaper
#: only for a few blobs.
MAX_STATS_INSTEAD_OF_LISTING = 64


def _recorded_sizes(meta: DatasetMetadata) -> dict[str, int]:
    """Data blob key -> the size ``meta``'s stats record for it (partitions with stats)."""
    return {
        key: meta.stats[label][1] for label, key in meta.partitions.items() if label in meta.stats
    }


def _recorded_infos(
    source: Store, source_uuid: str, metas: Sequence[DatasetMetadata], have: Mapping[str, int]
) -> dict[str, BlobInfo] | None:
    """Source blob infos for :func:`plan_blobs` without listing the source's blobs.

    A blob the target holds at the size the snapshot records for it (each partition's
    stats hold its blob's size) needs nothing from the source. The others are stat'ed
    (for their size and etag), concurrently, if they are few. None if a referenced blob
    has no recorded size (index files, plateau's snapshots) or too many are to be
    copied: the caller lists the source instead.
    """
    recorded: dict[str, BlobInfo] = {}
    todo: list[str] = []
    for meta in metas:
        if meta.indices and any(isinstance(ref, str) for ref in meta.indices.values()):
            return None
        sizes = _recorded_sizes(meta)
        if len(sizes) != len(meta.partitions):
            return None
        for dst, size in sizes.items():
            src = _relocate_key(dst, meta.uuid, source_uuid)
            if have.get(dst) == size:
                recorded[src] = BlobInfo(src, size, 0.0, "")  # skipped: etag unused
            else:
                todo.append(src)
    if len(todo) > MAX_STATS_INSTEAD_OF_LISTING:
        return None

    def stat_or_none(key: str) -> BlobInfo | None:
        try:
            return source.stat(key)
        except KeyNotFoundError:
            return None  # plan_blobs stats it once more and reports it missing

    for key, info in zip(todo, io_map(stat_or_none, todo, source), strict=True):
        if info is not None:
            recorded[key] = info
    return recorded


def plan_blobs(
    source: Store,
    target: Store,
    source_uuid: str,
    metas: Sequence[DatasetMetadata],
    *,
    source_infos: Mapping[str, BlobInfo] | None = None,
    target_sizes: Mapping[str, int] | None = None,
    held: list[BlobCopy] | None = None,
) -> tuple[list[BlobCopy], int, int]:
    """Blobs that ``metas`` (relocated to the target) need and the target lacks.

    Returns the copies to make, and the count and bytes of blobs the target already holds
    under the same key with the same size. ``source_infos`` and ``target_sizes`` are
    listings of the two datasets' blobs the caller already made (key -> info or size).
    ``held``: a list to append those held blobs to (as copies to make if their content
    turns out to differ, see :func:`recheck_blobs`).

    Raises
    ------
    DataBlobMissingError
        A referenced blob is missing at the source.
    DataBlobCorruptError
        A blob to copy has another size at the source than its snapshot records
        (truncated or overwritten there): a backup never copies damage silently.
    """
    wanted: dict[str, str] = {}  # target key -> source key
    recorded: dict[str, int] = {}  # target key -> size its snapshot records
    for meta in metas:
        for dst in references(meta):
            wanted[dst] = _relocate_key(dst, meta.uuid, source_uuid)
        recorded.update(_recorded_sizes(meta))
    if not metas:
        return [], 0, 0
    tuuid = metas[0].uuid
    have = target_sizes
    if have is None:
        have = _sizes(target, naming.dataset_prefix(tuuid))
    # One listing of the source instead of a stat per blob (a listing page holds up to
    # 5,000 blobs on Azure: 1,000 stats took seconds there); a key the listing lacks is
    # stat'ed before it is called missing.
    infos = source_infos
    if infos is None:
        infos = _infos(source, naming.dataset_prefix(source_uuid))
    blobs: list[BlobCopy] = []
    skipped = skipped_bytes = 0
    for dst, src in sorted(wanted.items()):
        info = infos.get(src)
        if info is None:
            try:
                info = source.stat(src)
            except KeyNotFoundError:
                raise DataBlobMissingError(
                    f"dataset {source_uuid!r}: blob {src!r} referenced by a copied version "
                    "is missing at the source; run verify, or copy only the latest version"
                ) from None
        if have.get(dst) == info.size:
            skipped += 1
            skipped_bytes += info.size
            if held is not None:
                held.append(BlobCopy(src, dst, info.size))
        else:
            blobs.append(BlobCopy(src, dst, info.size, info.etag))
    damaged = [b.src for b in blobs if recorded.get(b.dst, b.size) != b.size]
    if damaged:
        raise DataBlobCorruptError(
            f"dataset {source_uuid!r}: {len(damaged)} blob(s) to copy have another size at "
            f"the source than their snapshot records (first: {damaged[0]!r}); nothing was "
            "copied. Run verify on the source, and restore those blobs from a backup"
        )
    return blobs, skipped, skipped_bytes


#: Blobs up to this size are read whole (one request) to check them: the SHA-256 of
#: ``check="checksum"``, the decoding of ``verify(deep=True)``. Bigger ones are read in
#: ranges (chunks of :data:`DIGEST_CHUNK_BYTES`, or a row group at a time), so memory
#: stays bounded whatever a blob's size.
WHOLE_BLOB_BYTES = 64 * 2**20
DIGEST_CHUNK_BYTES = 8 * 2**20


def _digest(store: Store, key: str, size: int) -> str:
    """SHA-256 of the ``size`` bytes of blob ``key`` (read whole, or in chunks if big)."""
    sha = hashlib.sha256()
    if size <= WHOLE_BLOB_BYTES or Capability.RANGE_READ not in store.capabilities:
        sha.update(store.get(key))
        return sha.hexdigest()
    for start in range(0, size, DIGEST_CHUNK_BYTES):
        sha.update(store.get_range(key, start, min(DIGEST_CHUNK_BYTES, size - start)))
    return sha.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


#: Threads of a copy node into a local filesystem, where two pay: a file's creation
#: waited on the journal more than it computed in one state of this machine's ext4
#: (1,000 puts of 16 KB into sibling directories: 0.32-0.59 s on one thread, 0.21 s on
#: two, 0.24 s on four), and a kernel copy of a big file runs outside the GIL (100 files
#: of 4 MB: 0.10-0.12 s on one thread, 0.06-0.08 s on two). Where the file system keeps
#: up, small files are CPU work under the GIL, and a second thread only contends: 1,000
#: copies of 23 KB took 0.085 s on one thread and 0.118 s on two (ext4 in its quick
#: state; tmpfs 0.055 against 0.095 s).
LOCAL_COPY_THREADS = 2
#: Local copies of blobs this big on average run on :data:`LOCAL_COPY_THREADS` at once.
LOCAL_PARALLEL_COPY_BYTES = 256 * 2**10
#: Smaller blobs: the first this many are copied on one thread, timing the thread's CPU
#: against the wall clock; the rest go on two threads only if the first waited (wall
#: time above :data:`LOCAL_WAIT_RATIO` times its CPU time).
LOCAL_COPY_PROBE = 32
LOCAL_WAIT_RATIO = 1.25


def _local_copies(
    copy_one: Callable[[BlobCopy], str | None], todo: list[BlobCopy]
) -> list[str | None]:
    """``copy_one`` over ``todo`` into a local filesystem: on one thread or two, as
    measured to pay (see :data:`LOCAL_COPY_THREADS`)."""
    if not todo:
        return []
    if sum(b.size for b in todo) >= LOCAL_PARALLEL_COPY_BYTES * len(todo):
        return list(io_map(copy_one, todo, threads=LOCAL_COPY_THREADS))
    wall, cpu = time.perf_counter(), time.thread_time()
    out = [copy_one(blob) for blob in todo[:LOCAL_COPY_PROBE]]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    threads = LOCAL_COPY_THREADS if wall > LOCAL_WAIT_RATIO * cpu else 1
    logger.debug(
        "local copies: %d took %.4f s (CPU %.4f s): the other %d on %d thread(s)",
        len(out),
        wall,
        cpu,
        len(todo) - len(out),
        threads,
    )
    out.extend(io_map(copy_one, todo[LOCAL_COPY_PROBE:], threads=threads))
    return out


#: Most bytes of blob content one copy node holds in memory at once. A copy that passes
#: through this process (from a local file to Azure, between storage accounts) holds
#: its blob, and so does each read of a checksum check: with 16 threads per node, 1 GiB
#: blobs would otherwise need 16 GiB. Copies wait for room; a bigger blob runs alone.
#: Copies inside a service or by the kernel hold nothing here.
COPY_MEMORY_BYTES = 512 * 2**20


def _local_target(source: Store, target: Store) -> bool:
    """Whether copies go into a local filesystem and neither store does network I/O."""
    if any(Capability.CONCURRENT_IO in s.capabilities for s in (source, target)):
        return False
    return Capability.LOCAL_PATH in target.capabilities


def _copy_holds(
    source: Store, target: Store, listed: BlobInfo | None, size: int, through_here: bool
) -> int:
    """Bytes a ``target.copy_from(source, ...)`` of one blob holds in this process."""
    if not through_here:
        return 0  # inside the service, or by the kernel
    if target._streams_from(source, listed):
        return min(size, STREAMED_COPY_HOLD)
    return size


def _remove_bad_copy(target: Store, key: str, info: BlobInfo) -> None:
    """Delete a copy that failed its check, if it is still the one just written.

    Left in place, a copy of the right size would be taken for a good one by the next
    run, which skips blobs the target holds at their size. The delete is conditional on
    the copy's etag (a concurrent run may have replaced it with a good copy since);
    stores without compare-and-swap keep it, and a failure to delete is logged: the
    backup fails either way.
    """
    if Capability.COMPARE_AND_SWAP not in target.capabilities:
        logger.warning("copy %r failed its check; %r cannot delete it safely", key, target)
        return
    try:
        target.delete(key, if_match=info.etag)
    except (PreconditionFailedError, KeyNotFoundError):
        pass  # replaced or removed meanwhile: not ours any more
    except StoreError as exc:
        logger.warning("copy %r failed its check and could not be deleted: %s", key, exc)


def copy_blobs(
    source: Store,
    target: Store,
    blobs: Iterable[BlobCopy],
    *,
    check: Check = "size",
    link: bool = False,
) -> CopyResult:
    """Copy blobs and check each copy (size, or SHA-256 of the content); never raises per key.

    Copies are made inside the storage service where the two stores allow it (see
    :meth:`Store.copy_from`: within one store, or between Azure containers of one
    account; conditional on the listed etag, so exactly the listed blob is copied);
    otherwise the bytes pass through this process. ``link``: hard-link instead where
    both stores are local on one file system (:meth:`Store.link_from`), copy elsewhere.
    """
    result = CopyResult()
    linked: list[str] = []  # list.append is atomic: the copy threads share it
    budget = ByteBudget(COPY_MEMORY_BYTES)
    through_here = not target._copies_inside(source)

    def copy_one(blob: BlobCopy) -> str | None:
        """Copy and check one blob; the error text, or None."""
        try:
            info = target.link_from(source, blob.src, blob.dst) if link else None
            if info is not None:
                linked.append(blob.dst)
            else:
                listed = (
                    None if blob.etag is None else BlobInfo(blob.src, blob.size, 0.0, blob.etag)
                )
                with budget.hold(_copy_holds(source, target, listed, blob.size, through_here)):
                    info = target.copy_from(source, blob.src, blob.dst, source_info=listed)
            bad = None
            if info.size != blob.size:
                bad = f"copied {info.size} bytes, expected {blob.size}"
            elif check == "checksum":
                # one blob at a time (or a chunk): its digest, then the other's
                with budget.hold(min(blob.size, WHOLE_BLOB_BYTES)):
                    want = _digest(source, blob.src, blob.size)
                    if _digest(target, blob.dst, blob.size) != want:
                        bad = "checksum of the copy differs from the source"
            if bad is not None:
                _remove_bad_copy(target, blob.dst, info)
                raise StoreError(bad, key=blob.dst)
        except Exception as exc:  # reported per key; the caller decides
            return f"{type(exc).__name__}: {exc}"
        return None

    todo = list(blobs)
    errors = (
        _local_copies(copy_one, todo)
        if _local_target(source, target)
        else io_map(copy_one, todo, source, target)
    )
    for blob, error in zip(todo, errors, strict=True):
        if error is not None:
            result.failed[blob.dst] = error
            continue
        result.copied.append(blob.dst)
        result.nbytes += blob.size
    result.linked = len(set(linked).intersection(result.copied))
    return result


def recheck_blobs(source: Store, target: Store, blobs: Iterable[BlobCopy]) -> CopyResult:
    """Compare the content (SHA-256) of blobs the target already holds at their size
    with the source's, and copy again (checked the same way) those that differ.

    With ``check="checksum"`` a backup trusts no size: a copy corrupted in transit
    whose run died before its check, or a blob damaged at rest at the target, would
    otherwise be skipped by every later run. Never raises per key.
    """
    budget = ByteBudget(COPY_MEMORY_BYTES)

    def differs(blob: BlobCopy) -> bool | str:
        """True if the two differ (or the target's is gone), else False; the error text
        if the source cannot be read."""
        try:
            with budget.hold(min(blob.size, WHOLE_BLOB_BYTES)):
                want = _digest(source, blob.src, blob.size)
        except Exception as exc:  # reported per key; the caller decides
            return f"{type(exc).__name__}: {exc}"
        try:
            with budget.hold(min(blob.size, WHOLE_BLOB_BYTES)):
                return _digest(target, blob.dst, blob.size) != want
        except KeyNotFoundError:
            return True  # vanished meanwhile: copy it
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    todo = list(blobs)
    result = CopyResult()
    again: list[BlobCopy] = []
    for blob, verdict in zip(todo, io_map(differs, todo, source, target), strict=True):
        if isinstance(verdict, str):
            result.failed[blob.dst] = verdict
        elif verdict:
            logger.warning(
                "copy %r differs from its source %r: copying it again", blob.dst, blob.src
            )
            again.append(blob)
    if again:
        redone = copy_blobs(source, target, again, check="checksum")
        result.failed.update(redone.failed)
        result.copied, result.nbytes = redone.copied, redone.nbytes
        result.recopied = len(redone.copied)
        result.recopied_bytes = redone.nbytes
    return result


def finish_copy(target: Store, plan: CopyPlan) -> DatasetMetadata:
    """Write the target's snapshots (create-only, oldest first), then its pointer.

    Call only after every blob of the plan is in place. Everything it writes was read
    when planning: the ``_common_metadata`` file (if it differs) is written while the
    snapshots are, and the pointer is swapped against the etag read then. Returns the
    newest snapshot.

    Raises
    ------
    DatasetExistsError
        Another copy wrote different snapshots meanwhile.
    CommitStateUnknownError
        The new dataset's pointer could not be written.
    """

    def put_schema() -> None:
        if plan.common_metadata is not None and plan.common_metadata_data is not None:
            target.put(plan.common_metadata[1], plan.common_metadata_data)

    def put_snapshots() -> None:
        existing_ids = plan.existing or [None] * len(plan.snapshots)
        for meta, existing in zip(plan.snapshots, existing_ids, strict=True):
            _put_snapshot(target, meta, existing)

    _run_all([put_schema, put_snapshots], target)
    newest = plan.snapshots[-1]
    _commit.publish(
        target,
        newest,
        schema_written=plan.common_metadata is not None,
        pointer=plan.target_pointer,
    )
    logger.info("copy of %s committed as %s v%s", plan.source_uuid, newest.uuid, newest.version)
    return newest


def _put_snapshot(target: Store, meta: DatasetMetadata, existing: str | None) -> None:
    """Write one snapshot create-only unless planned as present; check whose it is."""
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
        return  # the target expired this version after an earlier copy: it stays expired
    if existing != str(meta.commit.get("id")):
        raise DatasetExistsError(
            f"dataset {meta.uuid!r}: version {meta.version} at the target is another "
            "commit (a concurrent copy or writer); nothing more was written"
        )


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


def _deep_source(store: Store, key: str, size: int) -> pa.NativeFile:
    """A blob to decode: its bytes if small (or the store cannot read ranges), else a
    file over ranged reads."""
    if size <= WHOLE_BLOB_BYTES or Capability.RANGE_READ not in store.capabilities:
        return pa.BufferReader(store.get(key))
    return pa.PythonFile(RangeReader(store, key, size), mode="r")


def _decoded_rows(source: pa.NativeFile) -> int:
    """Decode every row group of a Parquet blob (one at a time, checking the page
    checksums where its writer stored them); return its rows.

    Raises ``pa.ArrowInvalid`` if the blob does not decode, or decodes to another
    number of rows than its footer records.
    """
    blob = pq.ParquetFile(source, page_checksum_verification=True)
    rows = sum(blob.read_row_group(i).num_rows for i in range(blob.num_row_groups))
    if rows != blob.metadata.num_rows:
        raise pa.ArrowInvalid(f"decoded {rows} rows, the footer records {blob.metadata.num_rows}")
    return rows


def verify_blobs(store: Store, checks: Iterable[BlobCheck], *, deep: bool = False) -> VerifyReport:
    """Check that blobs exist with the recorded size; ``deep`` also decodes each blob.

    Returns a report without ``dataset_uuid``/``versions`` (the caller fills them in).
    """
    report = VerifyReport(dataset_uuid="")
    budget = ByteBudget(COPY_MEMORY_BYTES)

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
                with budget.hold(min(info.size, WHOLE_BLOB_BYTES)):
                    rows = _decoded_rows(_deep_source(store, check.key, info.size))
            except (pa.ArrowException, StoreError, OSError) as exc:
                return ("corrupt", f"unreadable Parquet: {exc}")
            if check.rows is not None and rows != check.rows:
                return ("corrupt", f"{rows} rows, recorded {check.rows}")
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
