"""The commit protocol: versioned snapshots written create-only, then the pointer.

1. Data and index blobs are immutable and uniquely named; a commit never rewrites them.
2. Whoever creates ``<uuid>/_versions/<v>.json`` (create-only) has committed version ``v``.
3. Then the kartothek pointer ``<uuid>.by-dataset-metadata.json`` (and
   ``_common_metadata`` when the schema changed) is brought up to date for plateau and
   kartothek readers, by compare-and-swap so it never moves backwards.
4. Readers take the pointer (the existence marker) and probe forward for newer snapshots,
   so a writer that died between 2 and 3 loses nothing.
5. A pointer without our ``dataset_kit`` block was written by plateau/kartothek after us:
   it is read as the newest state and, on our next commit, adopted as a snapshot.
6. A create-only conflict means another writer won: the operation rebases onto the new
   version (appends) or fails with :class:`CommitConflictError` (overwrites, deletes).
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import logging
import operator
import random
import time
import uuid as _uuid
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pyarrow as pa

from dataset_kit.core import naming
from dataset_kit.core.metadata import (
    STUB_MAX_BYTES,
    DatasetMetadata,
    expired_stub,
    is_expired_stub,
    parse_json,
    parse_msgpack_zstd,
)
from dataset_kit.core.schema import may_take_nullable, plateau_schema, with_nullable_from
from dataset_kit.exceptions import (
    CommitConflictError,
    CommitStateUnknownError,
    DatasetNotFoundError,
    KeyExistsError,
    KeyNotFoundError,
    MetadataFormatError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
    UnsupportedOperationError,
    VersionNotFoundError,
)
from dataset_kit.io._concurrent import io_map
from dataset_kit.io.parquet import read_common_metadata, read_footer, write_common_metadata
from dataset_kit.store import Capability, Store

__all__ = [
    "ExpiredVersionError",
    "Resolved",
    "bury_unreadable",
    "commit",
    "expire",
    "require_atomic",
    "list_dataset_uuids",
    "load_version",
    "pointer_state",
    "publish",
    "read_snapshot",
    "write_common_metadata_file",
    "resolve",
    "resolve_listed",
    "snapshot_versions",
]

logger = logging.getLogger(__name__)

#: How often a commit retries after losing a create-only race before giving up, and for
#: how long: with many writers on a slow store (8 processes appending through Azurite),
#: 20 attempts were not enough for the unluckiest writer; a rebase costs nothing but time.
DEFAULT_MAX_ATTEMPTS = 1000
DEFAULT_COMMIT_DEADLINE = 300.0
#: Snapshot writes that failed in a row (the store itself, not a lost race) before a
#: commit gives up with the store's error. Create-only writes are not retried by the
#: store layer (their outcome is checked here), so this is their retry budget: at a 30%
#: failure rate, 10 in a row happen once in 170,000 commits; a store that is down fails
#: the commit within a few seconds of backoff.
MAX_STORE_FAILURES = 10


@dataclass(frozen=True)
class Resolved:
    """The newest state of a dataset and how the pointer looked when it was read.

    Attributes
    ----------
    meta
        Newest metadata (a snapshot, or a foreign pointer not yet adopted).
    pointer_etag
        Etag of the pointer as read (None: msgpack-only or missing).
    pointer_version
        Version the pointer carried (None for foreign pointers).
    msgpack_pointer
        True if the dataset's pointer is the msgpack variant only.
    """

    meta: DatasetMetadata
    pointer_etag: str | None
    pointer_version: int | None
    msgpack_pointer: bool = False


# --------------------------------------------------------------------------- reading
def _listing_partitions(store: Store, uuid: str, table: str | None) -> dict[str, str]:
    """Partitions of a kartothek dataset with implicit partitions (found by listing)."""
    found: dict[str, str] = {}
    tables: set[str] = set()
    for key in sorted(store.iter_keys(naming.dataset_prefix(uuid))):
        parts = key.split("/")
        if len(parts) >= 3 and parts[1] not in (naming.INDICES_DIR, naming.VERSIONS_DIR):
            if key.endswith(naming.DATA_SUFFIX):
                tables.add(parts[1])
                tbl = table or parts[1]
                label = naming.label_from_data_key(uuid, tbl, key)
                if label is not None:
                    found[label] = key
    if len(tables) > 1:
        raise MetadataFormatError(
            f"dataset {uuid!r}: implicit partitions in several tables {sorted(tables)}"
        )
    return found


def _parse_pointer(store: Store, uuid: str, data: bytes, *, msgpack: bool) -> DatasetMetadata:
    what = f"metadata of dataset {uuid!r}"
    # Parsing allocates a few objects per partition and nothing cyclic: the cyclic GC
    # would only rescan them (it doubles the time to open 20,000 partitions).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc = parse_msgpack_zstd(data, what=what) if msgpack else parse_json(data, what=what)
        listing = None
        if isinstance(doc, dict) and "partitions" not in doc:
            listing = _listing_partitions(store, uuid, None)
        return DatasetMetadata.from_dict(doc, dataset_uuid=uuid, partitions_from_listing=listing)
    finally:
        if was_enabled:
            gc.enable()


class ExpiredVersionError(KeyNotFoundError):
    """Internal: the snapshot was replaced by the stub of an expired version.

    A :class:`KeyNotFoundError`, so every caller treats it like a snapshot that is gone.
    """


def _read_snapshot(store: Store, uuid: str, version: int) -> DatasetMetadata:
    key = naming.snapshot_key(uuid, version)
    data = store.get(key)
    if len(data) <= STUB_MAX_BYTES and is_expired_stub(_try_json(data)):
        raise ExpiredVersionError(f"version {version} of dataset {uuid!r} has expired")
    meta = _parse_pointer(store, uuid, data, msgpack=False)
    if meta.version != version:
        raise MetadataFormatError(
            f"dataset {uuid!r}: snapshot {version} claims to be version {meta.version}"
        )
    return meta


def read_snapshot(store: Store, uuid: str, version: int) -> DatasetMetadata:
    """Read the snapshot file of one version, whether or not the dataset exists now.

    Raises
    ------
    KeyNotFoundError
        No such snapshot (:class:`~dataset_kit.exceptions.ExpiredVersionError`: a stub).
    MetadataFormatError
        It is unreadable.
    """
    return _read_snapshot(store, uuid, version)


def _try_json(data: bytes) -> Any:
    try:
        return parse_json(data, what="snapshot")
    except MetadataFormatError:
        return None


def snapshot_versions(store: Store, uuid: str, *, expired: bool = True) -> list[int]:
    """Snapshot versions present in the store, ascending (listing; not on hot paths).

    With ``expired=False`` the stubs of expired versions are left out (told apart by their
    size, from the listing alone).
    """
    versions = []
    for info in store.iter_infos(naming.snapshot_prefix(uuid)):
        v = naming.parse_snapshot_key(uuid, info.key)
        if v is not None and (expired or info.size > STUB_MAX_BYTES):
            versions.append(v)
    return sorted(versions)


def expire(store: Store, uuid: str, versions: list[int]) -> None:
    """Replace the snapshots of ``versions`` by stubs: unreadable, but never free again.

    See :func:`dataset_kit.core.metadata.expired_stub` for why the slot must stay taken.
    """

    def stub(v: int) -> None:
        store.put(naming.snapshot_key(uuid, v), expired_stub(uuid, v))

    if len(versions) <= 4:
        for v in versions:
            stub(v)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(8, len(versions))) as pool:
        list(pool.map(stub, versions))  # re-raises the first failure


def _foreign_schema(
    store: Store, meta: DatasetMetadata, ours: DatasetMetadata | None
) -> DatasetMetadata:
    """``meta`` (a pointer another tool wrote) with its schema: ``_common_metadata``, with
    the nullable pandas dtypes the data say (:func:`with_nullable_from`).

    plateau normalizes ``_common_metadata``'s pandas dtypes (a ``Float64`` or ``Int8``
    column says float64/int64 there) but returns the nullable dtype the data files carry.
    So the pandas metadata of one data file is read (its footer: the newest blob the
    pointer added, a file of ours holds our dtypes already), plus our own newest snapshot
    (``ours``) if the pointer still holds its blobs. Nothing is read when no column needs
    it. Deciding once, here, keeps every read of the dataset (a partition, a dask
    partition, the whole table) converting alike. The first commit of ours stores the
    result (adoption), so later opens read nothing more.
    """
    key = naming.common_metadata_key(meta.uuid, meta.table_name)
    try:
        data = store.get(key)
    except KeyNotFoundError:
        return meta
    schema = read_common_metadata(data, what=repr(key))
    ours_keys = set(ours.partitions.values()) if ours is not None else set()
    theirs = [k for k in meta.partitions.values() if k not in ours_keys]
    hints = []
    if ours is not None and ours.schema is not None and len(theirs) < len(meta.partitions):
        hints.append(ours.schema)
    if theirs and may_take_nullable(schema, skip=meta.partition_keys):
        sample = _data_file_schema(store, theirs[-1])
        if sample is not None:
            hints.append(sample)
    return meta.evolve(schema=with_nullable_from(schema, hints))


def _data_file_schema(store: Store, key: str) -> pa.Schema | None:
    """The schema (with pandas metadata) in a data file's footer; None if it cannot be
    read cheaply (no range reads) or is not a Parquet file: it only decides dtypes.

    Cost: that of :func:`~dataset_kit.io.parquet.read_footer`.
    """
    if not key.endswith(naming.DATA_SUFFIX):
        return None
    try:
        if Capability.RANGE_READ not in store.capabilities and (
            Capability.LOCAL_PATH not in store.capabilities or store.local_path(key) is None
        ):
            return None  # a footer would cost reading the whole blob
        return read_footer(store, key).schema.to_arrow_schema()
    except (KeyNotFoundError, OSError, pa.ArrowException) as exc:
        # a missing or corrupt blob: its read reports it; transient store errors propagate
        # (the schema decides the adoption's commit id: it must not depend on luck)
        logger.debug("dataset file %s: no footer for pandas dtypes: %s", key, exc)
        return None


def _adopt_foreign(store: Store, meta: DatasetMetadata) -> DatasetMetadata:
    """Place a foreign pointer after the newest snapshot of its history."""
    versions = snapshot_versions(store, meta.uuid)
    if not versions:
        return _foreign_schema(store, meta, None).evolve(version=None, history_start=0)
    newest = _read_snapshot(store, meta.uuid, versions[-1])
    if newest.tombstone or _recreated_elsewhere(store, meta, newest):
        return _foreign_schema(store, meta, None).evolve(
            version=None, parent=versions[-1], history_start=versions[-1] + 1
        )
    history = history_id(newest)
    meta = _foreign_schema(store, meta, newest)
    return meta.evolve(
        version=None,
        parent=versions[-1],
        history_start=newest.history_start,
        commit={"history": history} if history else {},
    )


def _recreated_elsewhere(store: Store, foreign: DatasetMetadata, newest: DatasetMetadata) -> bool:
    """True if another tool deleted the dataset and created it anew after our newest
    version: a new history then, not a continuation of ours.

    plateau's delete leaves no tombstone (it removes the files it knows, not our
    snapshots). Its updates keep the dataset's ``creation_time``; creating the dataset
    (anew, or with ``overwrite``) sets a new one. An overwrite keeps our files, so our
    versions stay readable: only a new creation time *and* a file of our newest version
    gone (one request, and only in that case) mean a delete.
    """
    ours = newest.metadata.get("creation_time")
    theirs = foreign.metadata.get("creation_time")
    if ours is None or theirs is None or ours == theirs:
        return False
    probe = next(iter(newest.partitions.values()), None)
    if probe is None or probe in set(foreign.partitions.values()):
        return False
    return not store.exists(probe)


def resolve(store: Store, dataset_uuid: str) -> Resolved:
    """Find the newest committed state of a dataset.

    Raises
    ------
    DatasetNotFoundError
        If the dataset has no pointer (or was deleted).
    MetadataFormatError
        If its metadata is corrupt, truncated or of an unknown format.
    """
    uuid = naming.validate_uuid(dataset_uuid)
    msgpack = False
    try:
        # bytes and etag of one version of the pointer (one request on Azure)
        data, info = store.get_with_info(naming.pointer_key(uuid))
        etag: str | None = info.etag
    except KeyNotFoundError:
        try:
            data = store.get(naming.pointer_msgpack_key(uuid))
        except KeyNotFoundError:
            raise DatasetNotFoundError(f"dataset {uuid!r} does not exist in {store!r}") from None
        etag, msgpack = None, True
    meta = _parse_pointer(store, uuid, data, msgpack=msgpack)
    if meta.foreign:
        return Resolved(_adopt_foreign(store, meta), etag, None, msgpack)
    assert meta.version is not None  # the dataset_kit block always has a version
    pointer_version = meta.version
    version = pointer_version
    while store.exists(naming.snapshot_key(uuid, version + 1)):
        version += 1
    if version != pointer_version:
        logger.debug(
            "dataset %s: pointer at %d, newest snapshot %d", uuid, pointer_version, version
        )
        meta = _read_snapshot(store, uuid, version)
    if meta.tombstone:
        raise DatasetNotFoundError(f"dataset {uuid!r} was deleted")
    return Resolved(meta, etag, pointer_version, msgpack)


def resolve_listed(
    store: Store, dataset_uuid: str, pointer: bytes, listed: Container[str]
) -> DatasetMetadata | None:
    """:func:`resolve` from the pointer's bytes and a listing of the dataset's keys.

    For callers that fetched both concurrently: the probe for snapshots past a lagging
    pointer is answered by the listing, so only such a snapshot costs a round trip. A
    listing taken just before a commit may lack its snapshot; the pointer then still
    names a committed state. None for a pointer written by another tool (call
    :func:`resolve`, which adopts it).

    Raises
    ------
    DatasetNotFoundError
        If the dataset was deleted.
    MetadataFormatError
        If the pointer or the snapshot is corrupt.
    """
    uuid = naming.validate_uuid(dataset_uuid)
    meta = _parse_pointer(store, uuid, pointer, msgpack=False)
    if meta.foreign:
        return None
    assert meta.version is not None
    version = meta.version
    while naming.snapshot_key(uuid, version + 1) in listed:
        version += 1
    if version != meta.version:
        meta = _read_snapshot(store, uuid, version)
    if meta.tombstone:
        raise DatasetNotFoundError(f"dataset {uuid!r} was deleted")
    return meta


def load_version(store: Store, dataset_uuid: str, version: int | None) -> DatasetMetadata:
    """The metadata of ``version`` (None: the newest).

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError, MetadataFormatError
        (VersionNotFoundError also for a ``version`` that is not an integer; numpy
        integers are integers.)
    """
    if version is not None:
        if isinstance(version, bool) or not hasattr(version, "__index__"):
            raise VersionNotFoundError(f"version must be an integer, got {version!r}")
        version = operator.index(version)  # numpy integers too
    latest = resolve(store, dataset_uuid).meta
    if version is None or version == latest.version:
        return latest
    newest = latest.version if latest.version is not None else (latest.parent or 0)
    if version < latest.history_start or version > newest:
        raise VersionNotFoundError(
            f"dataset {dataset_uuid!r} has no version {version} "
            f"(versions {latest.history_start}..{newest})"
        )
    try:
        return _read_snapshot(store, dataset_uuid, version)
    except KeyNotFoundError:
        raise VersionNotFoundError(
            f"version {version} of dataset {dataset_uuid!r} has expired"
        ) from None


def list_dataset_uuids(store: Store) -> list[str]:
    """Uuids of every dataset with a pointer in the store, sorted."""
    found = set()
    for key in store.iter_shallow_keys(""):
        uuid = naming.uuid_from_pointer_key(key)
        if uuid is not None:
            found.add(uuid)
    return sorted(found)


# --------------------------------------------------------------------------- committing
def _next_free_version(store: Store, uuid: str) -> int:
    versions = snapshot_versions(store, uuid)
    return versions[-1] + 1 if versions else 0


def _backoff(attempt: int) -> None:
    # capped low: a writer that lost many times must not wait much longer than the
    # winners, who retry at once (a high cap starves the losers)
    time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))


def _jitter() -> None:
    """The pause after losing a create-only race: short, and *not* growing.

    The winner has committed and goes on to write its next data, which takes longer than
    our rebase; retrying at once wins the next round. A backoff that grows with every
    loss did the opposite: the loser slept longer each time, woke up behind a newer
    version again and starved (one of two tight appenders waited 4-7.5 s per append).
    Someone wins every round, so immediate retries cannot livelock.
    """
    time.sleep(random.uniform(0, 0.001))


def require_atomic(store: Store) -> None:
    """Raise :class:`UnsupportedOperationError` unless ``store`` can commit safely."""
    if Capability.ATOMIC_CREATE not in store.capabilities:
        raise UnsupportedOperationError(
            f"{store!r} has no atomic create-only writes, so commits could silently lose "
            "data; use a store that has them, or wrap a simplekv/minimalkv store with "
            "KVStoreAdapter(..., allow_unsafe_commits=True) to opt in explicitly"
        )


def _create_snapshot(store: Store, meta: DatasetMetadata) -> bool:
    """Create the snapshot file; True if we created it, False if another writer had."""
    assert meta.version is not None
    key = naming.snapshot_key(meta.uuid, meta.version)
    try:
        store.put(key, meta.to_json(), if_absent=True)
        return True
    except KeyExistsError:
        return False
    except (StoreUnavailableError, TimeoutError, OSError) as exc:
        # Outcome unknown: look at what is there now.
        try:
            existing = store.get(key)
        except KeyNotFoundError:
            raise _Retry() from exc
        except StoreError as exc2:
            raise CommitStateUnknownError(
                f"dataset {meta.uuid!r}: writing snapshot {meta.version} failed ({exc}) and its "
                f"state could not be checked ({exc2}); the written blobs are kept"
            ) from exc2
        try:
            ours = parse_json(existing, what=key).get("dataset_kit", {}).get("commit", {})
        except MetadataFormatError:
            ours = {}
        if ours.get("id") == meta.commit.get("id"):
            return True
        return False


class _Retry(Exception):
    """Internal: the snapshot write failed before it happened; try the same version again."""


def commit(
    store: Store,
    dataset_uuid: str,
    *,
    base: Resolved | None,
    build: Callable[[DatasetMetadata | None], DatasetMetadata],
    on_conflict: Callable[[DatasetMetadata | None, DatasetMetadata | None], None],
    operation: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    deadline: float = DEFAULT_COMMIT_DEADLINE,
    commit_info: dict[str, Any] | None = None,
) -> DatasetMetadata:
    """Commit the state ``build(base_meta)`` as the next version of a dataset.

    Parameters
    ----------
    store
        The store.
    dataset_uuid
        The dataset.
    base
        The state the operation was planned on (None: the dataset does not exist).
    build
        Makes the new metadata from a base (called again after every rebase); the
        version fields are filled in here.
    on_conflict
        Called as ``on_conflict(old_base, new_base)`` when another writer committed
        first; raises (e.g. :class:`CommitConflictError`) if the operation cannot rebase.
    operation
        Name recorded in the snapshot (``write``, ``append``, ``delete``...).
    max_attempts, deadline
        Upper bounds of rebase attempts and of the seconds spent trying.
    commit_info
        Extra fields for the snapshot's commit record.

    Raises
    ------
    CommitConflictError
        If ``on_conflict`` refuses to rebase or the attempts run out.
    CommitStateUnknownError
        If the outcome of the snapshot write cannot be established.
    """
    require_atomic(store)
    commit_id = _uuid.uuid4().hex
    give_up = time.monotonic() + deadline
    tried = 0
    store_failures: list[BaseException] = []  # in a row
    for attempt in range(max_attempts):
        if attempt and time.monotonic() > give_up:
            break
        tried += 1
        if base is None:
            # "new dataset": make sure nobody created it since the caller looked (a
            # pipeline's commit node can run long after planning)
            base = _reload(store, dataset_uuid, None, on_conflict, missing_ok=True)
        base_meta = base.meta if base is not None else None
        new = build(base_meta)
        if base_meta is not None and base_meta.foreign:
            adopted = _persist_adoption(store, base_meta)
            if adopted is None:
                base = _reload(store, dataset_uuid, base_meta, on_conflict)
                _backoff(attempt)
                continue
            base_meta = adopted
        if base_meta is None:
            version, parent = _next_free_version(store, dataset_uuid), None
            start = version
            if version > 0 and not _fresh_history_allowed(store, dataset_uuid, version - 1):
                # the dataset exists after all (created since we looked), or another
                # writer committed its first version and is about to write the pointer:
                # build on it, never start a history over it
                if not store.exists(naming.pointer_key(dataset_uuid)):
                    _await_creation(store, dataset_uuid, version - 1)
                base = _reload(store, dataset_uuid, None, on_conflict, missing_ok=True)
                _backoff(attempt)
                continue
        else:
            assert base_meta.version is not None
            version, parent, start = (
                base_meta.version + 1,
                base_meta.version,
                base_meta.history_start,
            )
        schema_changed = base_meta is None or base_meta.foreign or new.schema != base_meta.schema
        info = {
            "id": commit_id,
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(),
            "operation": operation,
            **(commit_info or {}),
            "history": commit_id if base_meta is None else history_id(base_meta) or commit_id,
        }
        snapshot = new.with_creation_time().evolve(
            uuid=dataset_uuid,
            version=version,
            parent=parent,
            history_start=start,
            commit=info,
            foreign=False,
        )
        try:
            created = _create_snapshot(store, snapshot)
        except _Retry as retry:
            store_failures.append(retry.__cause__ or retry)
            if len(store_failures) >= MAX_STORE_FAILURES:
                _give_up_on_store(dataset_uuid, base_meta, store_failures)
            _backoff(attempt)
            continue
        store_failures.clear()
        if not created:
            logger.info("dataset %s: version %d taken by another writer", dataset_uuid, version)
            if base_meta is None:
                _await_creation(store, dataset_uuid, version)
            base = _reload(store, dataset_uuid, base_meta, on_conflict)
            _jitter()
            continue
        logger.info(
            "dataset %s: committed version %d (%s, %d partitions)",
            dataset_uuid,
            version,
            operation,
            len(snapshot.partitions),
        )
        _publish(store, snapshot, base, schema_changed=bool(schema_changed))
        return snapshot
    if store_failures:  # the deadline passed while the store was failing
        _give_up_on_store(dataset_uuid, base.meta if base is not None else None, store_failures)
    raise CommitConflictError(
        f"dataset {dataset_uuid!r}: gave up after {tried} commit attempts "
        "(too many concurrent writers)"
    )


def bury_unreadable(store: Store, dataset_uuid: str, *, reason: str) -> DatasetMetadata:
    """Commit a tombstone for a dataset whose metadata cannot be read (to delete it).

    Like any commit it takes the next free version create-only, so a writer that planned
    on an earlier state cannot commit past it, and a new dataset may start its history
    after it. Unlike :func:`commit` it reads no earlier state and publishes no pointer
    (the caller deletes the pointer).

    Raises
    ------
    CommitConflictError
        If other writers keep taking the next version.
    """
    require_atomic(store)
    uuid = naming.validate_uuid(dataset_uuid)
    info = {"id": _uuid.uuid4().hex, "operation": "delete", "unreadable": reason}
    failures: list[BaseException] = []
    for attempt in range(DEFAULT_MAX_ATTEMPTS):
        version = _next_free_version(store, uuid)
        tomb = (
            DatasetMetadata(uuid=uuid, table_name=naming.DEFAULT_TABLE, tombstone=True)
            .with_creation_time()
            .evolve(
                version=version,
                parent=None,
                history_start=version,
                commit={**info, "timestamp": _dt.datetime.now(_dt.UTC).isoformat()},
            )
        )
        try:
            if _create_snapshot(store, tomb):
                logger.info("dataset %s: unreadable, tombstone at version %d", uuid, version)
                return tomb
        except _Retry as retry:
            failures.append(retry.__cause__ or retry)
            if len(failures) >= MAX_STORE_FAILURES:
                _give_up_on_store(uuid, None, failures)
        _backoff(attempt)
    raise CommitConflictError(
        f"dataset {uuid!r}: gave up writing a tombstone (too many concurrent writers)"
    )


def _give_up_on_store(
    uuid: str, base: DatasetMetadata | None, failures: list[BaseException]
) -> NoReturn:
    """Raise the store's own error: the snapshot write kept failing (not a lost race)."""
    last = failures[-1]
    state = f"still at version {base.version}" if base is not None else "not created"
    message = (
        f"dataset {uuid!r}: the commit failed: writing the snapshot failed {len(failures)} "
        f"times in a row ({last}); the dataset is {state}, the written blobs are kept "
        "(garbage for a later GC)"
    )
    key = last.key if isinstance(last, StoreError) else None
    raise StoreUnavailableError(message, key=key) from last


#: A snapshot without a pointer younger than this is a creation in progress; an older
#: one is what a deleted dataset left behind (its pointer is the existence marker).
PENDING_CREATION_SECONDS = 60.0


def _fresh_history_allowed(store: Store, uuid: str, newest: int) -> bool:
    """May a new history start after snapshot ``newest``? Only after a deleted dataset.

    Yes if ``newest`` is a tombstone, or is what a dataset deleted by another tool left
    (no pointer, not a creation in progress). No if a pointer exists (the dataset was
    created since the caller looked) or another writer's first version is being published.
    """
    try:
        snapshot = _read_snapshot(store, uuid, newest)
    except KeyNotFoundError:
        return True
    except MetadataFormatError:
        return False  # never start over what cannot be read
    if snapshot.tombstone:
        return True
    pointer = naming.pointer_key(uuid)
    if store.exists(pointer) or _pending_creation(store, snapshot):
        return False
    # The creator may have published its pointer while we looked: checked last, so a
    # pointer that appeared at any moment before here is seen.
    return not store.exists(pointer)


def _pending_creation(store: Store, snapshot: DatasetMetadata) -> bool:
    """True if ``snapshot`` looks like a fresh, unpublished first commit of a new dataset.

    Says nothing about the pointer: the caller checks it, before *and* after.
    """
    if snapshot.tombstone or snapshot.version != snapshot.history_start:
        return False
    # plateau's delete_dataset removes the pointer and the blobs, not our snapshots: a
    # deleted dataset's leftover snapshot references blobs that are gone
    if any(not store.exists(key) for key in list(snapshot.partitions.values())[:3]):
        return False
    stamp = snapshot.commit.get("timestamp")
    try:
        committed = _dt.datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0
    except ValueError:
        return False
    return time.time() - committed < PENDING_CREATION_SECONDS


def _await_creation(store: Store, uuid: str, version: int) -> None:
    """Another writer just created the first snapshot of a new dataset: let it appear.

    The dataset becomes visible when its creator writes the pointer, normally within
    milliseconds. If that does not happen (the creator died or failed between the two
    writes), its snapshot is committed all the same, so it is published here; the
    creator's caller was told the outcome was unknown, and now it happened.
    """
    pointer = naming.pointer_key(uuid)
    for attempt in range(12):  # up to ~2.5 s in total
        if store.exists(pointer):
            return
        time.sleep(min(0.5, 0.005 * 2**attempt))
    try:
        snapshot = _read_snapshot(store, uuid, version)
    except (KeyNotFoundError, MetadataFormatError):
        return
    if snapshot.tombstone or store.exists(pointer):
        return
    logger.warning(
        "dataset %s: version %d was committed without its pointer; publishing it", uuid, version
    )
    try:
        _publish(store, snapshot, None, schema_changed=True)
    except CommitStateUnknownError:  # the next reader or writer repairs it
        pass


def _reload(
    store: Store,
    uuid: str,
    old: DatasetMetadata | None,
    on_conflict: Callable[[DatasetMetadata | None, DatasetMetadata | None], None],
    *,
    missing_ok: bool = False,
) -> Resolved | None:
    try:
        new = resolve(store, uuid)
    except DatasetNotFoundError:
        new = None
    if new is None and missing_ok:
        return None
    on_conflict(old, new.meta if new is not None else None)
    return new


def history_id(meta: DatasetMetadata) -> str | None:
    """The id of the history a snapshot belongs to (None: written before it was recorded).

    Every commit records it: a new dataset's first commit (or the first after a delete)
    starts a history with its own commit id, and every later commit inherits its base's.
    Two snapshots of one uuid with different history ids are different datasets, even
    where their version numbers do not overlap (a backup target that holds another
    dataset under the same name).
    """
    value = meta.commit.get("history") if meta.commit else None
    return value if isinstance(value, str) and value else None


def adoption_id(foreign: DatasetMetadata) -> str:
    """The commit id of the version that adopts a pointer another tool wrote.

    The same for the same state wherever it is computed (the store's own adoption, or a
    backup copying that state), so a backup recognises the version later.
    """
    digest = hashlib.sha256(foreign.to_json()).hexdigest()
    return "adopt-" + digest[:32]


def _persist_adoption(store: Store, foreign: DatasetMetadata) -> DatasetMetadata | None:
    """Write a foreign pointer's state as a snapshot; None if another writer got there."""
    version = _next_free_version(store, foreign.uuid)
    start = foreign.history_start
    ident = adoption_id(foreign)
    adopted = foreign.with_creation_time().evolve(
        version=version,
        parent=version - 1 if version > start else None,
        history_start=start,
        commit={
            "id": ident,
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(),
            "operation": "adopt",
            "history": foreign.commit.get("history") or ident,
        },
        foreign=False,
    )
    try:
        store.put(naming.snapshot_key(foreign.uuid, version), adopted.to_json(), if_absent=True)
    except KeyExistsError:
        return None
    logger.info(
        "dataset %s: adopted a pointer written by another tool as version %d", foreign.uuid, version
    )
    return adopted


def _publish(
    store: Store, snapshot: DatasetMetadata, base: Resolved | None, *, schema_changed: bool
) -> None:
    """Bring the pointer (and ``_common_metadata``) up to ``snapshot``; never backwards.

    Raises
    ------
    CommitStateUnknownError
        If a *new* dataset's pointer could not be written: the snapshot exists but the
        dataset is not visible (the pointer is its existence marker).
    """
    uuid = snapshot.uuid
    if schema_changed and snapshot.schema is not None:
        try:
            write_common_metadata_file(store, snapshot)
        except StoreError as exc:  # only plateau reads it; the next commit rewrites it
            logger.warning("dataset %s: _common_metadata not updated: %s", uuid, exc)
    try:
        etag = base.pointer_etag if base is not None else None
        _cas_pointer(store, snapshot, etag)
        if base is not None and base.msgpack_pointer:
            store.delete(naming.pointer_msgpack_key(uuid))
    except (StoreError, DatasetNotFoundError, MetadataFormatError) as exc:
        if base is None:
            raise CommitStateUnknownError(
                f"dataset {uuid!r}: version {snapshot.version} was committed but its pointer "
                f"could not be written ({exc}), so the new dataset is not visible yet; "
                "retry the write"
            ) from exc
        # the commit stands; readers probe past a lagging pointer
        logger.warning(
            "dataset %s: version %s committed but the pointer update failed: %s",
            uuid,
            snapshot.version,
            exc,
        )


def publish(
    store: Store,
    snapshot: DatasetMetadata,
    *,
    schema_written: bool = False,
    pointer: tuple[int | None, str | None] | None = None,
) -> None:
    """Bring the pointer of an existing snapshot's dataset up to it (never backwards).

    For copies (backups, restores) whose snapshots were written create-only already;
    ``schema_written``: the copy wrote the table's ``_common_metadata`` itself (it is not
    written again). ``pointer``: the ``(version, etag)`` of our pointer as
    :func:`pointer_state` read it earlier, if the caller has it: then the pointer is
    swapped against that etag without resolving the dataset again (a stale etag only
    costs a failed swap, after which the pointer is looked at afresh).
    """
    base: Resolved | None
    if pointer is not None and pointer[0] is not None and pointer[1] is not None:
        base = Resolved(snapshot, pointer[1], pointer[0])
    else:
        try:
            base = resolve(store, snapshot.uuid)
        except DatasetNotFoundError:
            base = None
    if base is not None and base.pointer_version is not None:
        assert snapshot.version is not None
        if base.pointer_version >= snapshot.version:
            return  # the pointer is there already, or ahead: never move it backwards
    _publish(store, snapshot, base, schema_changed=not schema_written)


def write_common_metadata_file(store: Store, meta: DatasetMetadata) -> None:
    """Write ``<uuid>/<table>/_common_metadata`` (plateau's schema file) from ``meta``."""
    assert meta.schema is not None
    schema = plateau_schema(meta.schema, list(meta.partition_keys))
    store.put(naming.common_metadata_key(meta.uuid, meta.table_name), write_common_metadata(schema))


def _cas_pointer(store: Store, snapshot: DatasetMetadata, etag: str | None) -> None:
    key = naming.pointer_key(snapshot.uuid)
    uuid = snapshot.uuid
    data = snapshot.to_json()
    if snapshot.version is None:
        raise ValueError("only versioned snapshots can be published")
    version: int = snapshot.version
    cas = Capability.COMPARE_AND_SWAP in store.capabilities
    failures = 0
    for _ in range(100):
        if not cas:
            if not store.exists(naming.snapshot_key(uuid, version + 1)):
                store.put(key, data)
            # repair: a newer snapshot may have been committed meanwhile (or a tombstone)
            if not store.exists(naming.snapshot_key(uuid, version + 1)):
                return
            try:
                newest = resolve(store, uuid).meta
            except DatasetNotFoundError:  # deleted meanwhile: never resurrect the pointer
                store.delete(key)
                return
            if newest.version is None or newest.version <= version:
                return
            version, data = newest.version, newest.to_json()
            continue
        try:
            if etag is None:
                store.put(key, data, if_absent=True)
            else:
                store.put(key, data, if_match=etag)
            return
        except StoreUnavailableError:
            # outcome unknown: look at the pointer now
            failures += 1
            current, now_etag = pointer_state(store, uuid)
            if current is not None and current >= version:
                return  # our write happened (or a newer one)
            if current is None and now_etag is not None and now_etag != etag:
                return  # another tool's pointer appeared: keep it (see below)
            if failures >= 10:
                raise
            etag = now_etag
            continue
        except (KeyExistsError, PreconditionFailedError):
            current, etag = pointer_state(store, uuid)
            if current is None and etag is not None:
                # plateau/kartothek rewrote the pointer while we committed: keep their
                # state as the newest (it is adopted on our next commit); ours stays in
                # the history instead of silently replacing theirs
                logger.warning(
                    "dataset %s: another tool wrote the dataset while version %d was "
                    "committed; its write is kept as the newest state",
                    uuid,
                    version,
                )
                return
            if current is None and store.exists(naming.snapshot_key(uuid, version + 1)):
                return  # deleted or superseded meanwhile: never resurrect an older state
            if current is not None and current >= version:
                if current > version:
                    newest = _read_snapshot(store, uuid, current)
                    if newest.history_start > version:
                        raise _superseded(uuid, version, newest) from None
                    if snapshot.schema is not None and newest.schema is not None:
                        if not newest.tombstone:
                            write_common_metadata_file(store, newest)
                return
    logger.warning("dataset %s: pointer update kept losing races", uuid)


def _superseded(uuid: str, version: int, newest: DatasetMetadata) -> CommitConflictError:
    """A new dataset's first version whose pointer came too late: another writer took
    the pointer-less snapshot for a deleted dataset's leftover (it was older than
    :data:`PENDING_CREATION_SECONDS`) and started a new history over it."""
    return CommitConflictError(
        f"dataset {uuid!r}: version {version} was written, but its pointer came so late "
        f"that another writer created the dataset anew (version {newest.history_start}); "
        "this write is not part of the dataset: write it again (or append)"
    )


def pointer_state(store: Store, uuid: str) -> tuple[int | None, str | None]:
    """``(version, etag)`` of a dataset's JSON pointer: ``(None, etag)`` for a pointer
    without our block (another tool's), ``(None, None)`` if there is none."""
    key = naming.pointer_key(uuid)
    try:
        data, info = store.get_with_info(key)
    except KeyNotFoundError:
        return None, None
    try:
        doc = parse_json(data, what=key)
        version = doc.get("dataset_kit", {}).get("version")
    except (MetadataFormatError, AttributeError):
        version = None
    return (version if isinstance(version, int) else None), info.etag


def iter_snapshots(
    store: Store,
    uuid: str,
    *,
    strict: bool = False,
    latest: DatasetMetadata | None = None,
) -> Iterator[DatasetMetadata]:
    """Every snapshot of the current history, oldest first.

    Snapshots that vanish meanwhile (expired) are skipped; unreadable ones are skipped
    too, unless ``strict`` (garbage collection must not guess what they reference).
    ``latest``: the current metadata, if the caller has just resolved it (saves the
    round trips of resolving it again).

    Raises
    ------
    MetadataFormatError
        With ``strict``, for an unreadable snapshot.
    """
    if latest is None:
        latest = resolve(store, uuid).meta
    wanted = [v for v in snapshot_versions(store, uuid) if v >= latest.history_start]

    def read(version: int) -> DatasetMetadata | None:
        try:
            return _read_snapshot(store, uuid, version)
        except KeyNotFoundError:
            return None
        except MetadataFormatError:
            if strict:
                raise
            return None

    # on a network store the snapshots are fetched concurrently (a history of 365
    # versions is 365 round trips), in order
    for meta in io_map(read, wanted, store):
        if meta is not None:
            yield meta
