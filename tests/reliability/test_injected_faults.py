"""Injected store faults: every operation gives results identical to the fault-free run.

The stack is ``RetryingStore(FaultInjectingStore(inner))``: a share of the store calls
fails before it reaches the store (``fail_rate``), a share of the writes that did reach it
report a failure anyway (``fail_after_write_rate``: outcome unknown), and some runs slow
every call down (``slow_seconds``). The retrying layer absorbs transient failures of
idempotent calls; unknown outcomes of conditional writes (commit snapshots, the pointer's
compare-and-swap, backup snapshots) are resolved by the commit protocol.

One scenario runs phase by phase (write, update, read, compute, repartition, download, gc,
backup) on the faulty stack and, once, on the plain store; the frames every read returned
and the content of every committed version of every dataset (source, compute,
repartition and download targets, backup) must be identical, and after GC no garbage may
be left. The local store drops its LOCAL_PATH
capability in the stack, so data reads go through the faults too.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import StoreUnavailableError
from dataset_kit.io import gc as _gc
from dataset_kit.io.commit import iter_snapshots
from dataset_kit.store import (
    BlobInfo,
    Capability,
    DelegatingStore,
    FaultInjectingStore,
    LocalStore,
    RetryingStore,
    Store,
)
from dataset_kit.store.azure import AzureBlobStore
from dataset_kit.testing.soak import scaled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

UUID = "sales"
TARGET = "forecast"
PHASES = ("write", "update", "read", "compute", "repartition", "download", "gc", "backup")
BY_STORE = "by_store"
ORDERS = "orders"
#: Scenario size: days in the initial write and appends afterwards.
DAYS = scaled("faults_days", 4, 10)
APPENDS = scaled("faults_appends", 4, 12)
#: Runs per configuration, each with another seed (another pattern of faults).
SEEDS = scaled("faults_seeds", 3, 20)
AZURE_SEEDS = scaled("faults_azure_seeds", 1, 5)


def frame(day: int, n: int = 12) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [f"2024-01-{day:02d}"] * n,
            "store_id": [i % 4 for i in range(n)],
            "sales": [float(day * 100 + i) for i in range(n)],
            "note": [f"d{day}-r{i}" if i % 3 else None for i in range(n)],
        }
    )


def forecast(df: pd.DataFrame, factor: float) -> pd.DataFrame:
    return df.assign(forecast=df["sales"] * factor).drop(columns=["note"])


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """A frame in a fixed row order (the order of files within a partition is not part of
    the contract when appends interleave with retries)."""
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@dataclass
class Outcome:
    """What one run of the scenario saw."""

    reads: list[pd.DataFrame] = field(default_factory=list)
    versions: dict[str, list[pd.DataFrame | None]] = field(default_factory=dict)
    facts: list[Any] = field(default_factory=list)


def all_versions(store: Store, uuid: str) -> list[pd.DataFrame | None]:
    """Every retained version's content, by version number (None: expired)."""
    numbers = [v["version"] for v in dk.open_dataset(store=store, dataset_uuid=uuid).versions()]
    out: list[pd.DataFrame | None] = [None] * (max(numbers) + 1)
    for v in numbers:
        out[v] = canonical(dk.read_table(store=store, dataset_uuid=uuid, version=v))
    return out


def leftovers(store: Store, uuid: str) -> list[str]:
    """Data/index blobs no snapshot references (what a GC with grace 0 must leave: none)."""
    referenced: set[str] = set()
    for meta in iter_snapshots(store, uuid, strict=True):
        referenced.update(_gc.references(meta))
    return sorted(
        k
        for k in store.iter_keys(naming.dataset_prefix(uuid))
        if k.endswith(".parquet") and k not in referenced
    )


_DB: list[str] = []


def orders_db() -> str:
    """A SQLite table for the download phase (made once per session, in a temp dir)."""
    if not _DB:
        path = Path(tempfile.mkdtemp(prefix="dk-faults-")) / "orders.db"
        with sqlite3.connect(path) as con:
            con.execute(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, day TEXT, store_id INTEGER, "
                "qty REAL, note TEXT)"
            )
            con.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                [
                    (i, f"2024-02-{1 + i % 5:02d}", i % 7, i * 0.5, None if i % 4 else f"n{i}")
                    for i in range(600)
                ],
            )
        con.close()
        _DB.append(str(path))
    return _DB[0]


@pytest.fixture(autouse=True, scope="module")
def _drop_orders_db() -> Iterator[None]:
    """The SQLite file of the download phase is made once; it goes with the module."""
    yield
    while _DB:
        shutil.rmtree(Path(_DB.pop()).parent, ignore_errors=True)


def scenario(store: Store, vault: Store, on_phase: Callable[[str], None]) -> Outcome:
    """write -> update -> read -> compute -> gc -> backup; ``on_phase(name)`` before each."""
    seen = Outcome()
    on_phase("write")
    dk.write_dataset(
        pd.concat([frame(d) for d in range(1, DAYS + 1)]),
        store=store,
        dataset_uuid=UUID,
        partition_on="day",
        secondary_indices="store_id",
    )
    on_phase("update")
    for i in range(APPENDS):
        dk.update_dataset(frame(DAYS + 1 + i), store=store, dataset_uuid=UUID)
    dk.update_dataset(
        frame(2, 5), store=store, dataset_uuid=UUID, delete_scope=[{"day": "2024-01-02"}]
    )
    odd = frame(27, 3).assign(store_id=9)  # its own partition, removed through the index
    dk.update_dataset(odd, store=store, dataset_uuid=UUID)
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"store_id": 9}])
    dk.build_dataset_indices(store=store, dataset_uuid=UUID, columns="note")
    on_phase("read")
    seen.reads.append(canonical(dk.read_table(store=store, dataset_uuid=UUID)))
    seen.reads.append(
        canonical(
            dk.read_table(
                store=store,
                dataset_uuid=UUID,
                columns=["sales", "day"],
                predicates=[[("store_id", "in", [0, 2])], [("day", ">=", "2024-01-03")]],
            )
        )
    )
    seen.reads.append(
        canonical(
            dk.read_table(
                store=store, dataset_uuid=UUID, version=1, predicates=[[("note", "==", None)]]
            )
        )
    )
    seen.reads.append(
        canonical(
            pd.concat(list(dk.iter.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)))
        )
    )
    on_phase("compute")
    meta = dk.pipelines.map_partitions(
        forecast,
        source=UUID,
        target=TARGET,
        store=store,
        func_kwargs={"factor": 1.5},
        partition_on="day",
        storage_concurrency=4,
    ).compute(scheduler="threads")
    seen.facts.append(("compute", meta.version, len(meta.partitions)))
    seen.reads.append(canonical(dk.read_table(store=store, dataset_uuid=TARGET)))
    on_phase("repartition")
    meta = dk.pipelines.repartition(
        UUID,
        BY_STORE,
        store=store,
        partition_on="store_id",
        sort_by="sales",
        target_rows_per_file=7,
        storage_concurrency=4,
    ).compute(scheduler="threads")
    seen.facts.append(("repartition", meta.version, len(meta.partitions)))
    seen.reads.append(canonical(dk.read_table(store=store, dataset_uuid=BY_STORE)))
    on_phase("download")
    meta = dk.pipelines.download_table(
        f"sqlite:///{orders_db()}",
        table="orders",
        store=store,
        dataset_uuid=ORDERS,
        chunk_by="id",
        n_chunks=4,
        partition_on="day",
        job_id="faults",
        max_rows_per_file=50,
    ).compute(scheduler="threads")
    seen.facts.append(("download", meta.version, len(meta.partitions)))
    seen.reads.append(canonical(dk.read_table(store=store, dataset_uuid=ORDERS)))
    on_phase("gc")
    expired = dk.expire_versions(store=store, dataset_uuid=UUID, keep_versions=3)
    report = dk.pipelines.garbage_collect(
        UUID, store=store, grace_period=0, keep_versions=3, batch_size=4
    ).compute(scheduler="threads")
    seen.facts.append(("gc", expired, report.count > 0, report.failed, report.versions))
    seen.facts.append(("left after gc", leftovers(store, UUID)))
    on_phase("backup")
    first = dk.pipelines.backup(UUID, source=store, target=vault, batch_size=3).compute(
        scheduler="threads"
    )
    dk.update_dataset(frame(28), store=store, dataset_uuid=UUID)
    second = dk.pipelines.backup(
        UUID, source=store, target=vault, check="checksum", batch_size=3
    ).compute(scheduler="threads")
    seen.facts.append(("backup", first.versions, first.copied + first.skipped))
    seen.facts.append(("incremental", second.versions, second.copied, second.skipped))
    verified = dk.pipelines.verify(UUID, store=vault, versions="all", deep=True).compute(
        scheduler="threads"
    )
    seen.facts.append(("verify", verified.ok, verified.checked))
    on_phase("done")
    seen.versions[f"store:{UUID}"] = all_versions(store, UUID)
    seen.versions[f"store:{TARGET}"] = all_versions(store, TARGET)
    seen.versions[f"store:{BY_STORE}"] = all_versions(store, BY_STORE)
    seen.versions[f"store:{ORDERS}"] = all_versions(store, ORDERS)
    seen.versions[f"vault:{UUID}"] = all_versions(vault, UUID)
    return seen


def assert_same(got: Outcome, expected: Outcome) -> None:
    assert len(got.reads) == len(expected.reads)
    for a, b in zip(got.reads, expected.reads, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert got.facts == expected.facts
    assert got.versions.keys() == expected.versions.keys()
    for name, versions in expected.versions.items():
        mine = got.versions[name]
        assert [v is None for v in mine] == [v is None for v in versions], name
        for a, b in zip(mine, versions, strict=True):
            if a is not None and b is not None:
                pd.testing.assert_frame_equal(a, b)


@dataclass
class Stack:
    """The faulty stacks of a run (store and vault) and per-phase counters."""

    faulty: list[FaultInjectingStore]
    phase: str = "setup"
    calls: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)

    def switch(self, phase: str) -> None:
        for store in self.faulty:
            for stats in store.stats.values():
                self.calls[self.phase] = self.calls.get(self.phase, 0) + stats.calls
                self.faults[self.phase] = (
                    self.faults.get(self.phase, 0) + stats.faults + stats.unknown_outcome
                )
            store.reset_stats()
        self.phase = phase


def faulty_stack(
    inner: Store, *, fail_rate: float, slow: float, seed: int
) -> tuple[Store, FaultInjectingStore]:
    faulty = FaultInjectingStore(
        inner,
        fail_rate=fail_rate,
        fail_after_write_rate=fail_rate / 3,
        errors=("unavailable", "timeout"),
        slow_seconds=slow,
        seed=seed,
    )
    caps = faulty.capabilities - {Capability.LOCAL_PATH}  # data reads through the faults
    return RetryingStore(
        faulty, attempts=40, base_delay=0.0005, max_delay=0.01, capabilities=caps
    ), faulty


_CLEAN: dict[str, Outcome] = {}


def run_faulty(
    make: Callable[[str], Store], *, fail_rate: float, slow: float, seed: int, clean_key: str
) -> tuple[Stack, float]:
    if clean_key not in _CLEAN:  # the fault-free run, once per backend
        _CLEAN[clean_key] = scenario(make("clean"), make("clean-vault"), lambda _: None)
    store, f1 = faulty_stack(make(f"s{seed}"), fail_rate=fail_rate, slow=slow, seed=seed)
    vault, f2 = faulty_stack(make(f"v{seed}"), fail_rate=fail_rate, slow=slow, seed=seed + 1000)
    stack = Stack([f1, f2])
    started = time.monotonic()
    outcome = scenario(store, vault, stack.switch)
    elapsed = time.monotonic() - started
    assert_same(outcome, _CLEAN[clean_key])
    return stack, elapsed


def assert_every_phase_met_faults(stacks: list[tuple[Stack, float]]) -> None:
    for phase in PHASES:
        assert sum(s.faults.get(phase, 0) for s, _ in stacks) > 0, (phase, stacks)


def summary(backend: str, fail_rate: float, slow: float, stacks: list[tuple[Stack, float]]) -> str:
    calls = sum(sum(s.calls.values()) for s, _ in stacks)
    faults = sum(sum(s.faults.values()) for s, _ in stacks)
    per_phase = ", ".join(f"{p} {sum(s.faults.get(p, 0) for s, _ in stacks)}" for p in PHASES)
    slow_text = f", {slow * 1000:.0f} ms per call" if slow else ""
    return (
        f"injected faults {backend} {fail_rate:.0%}{slow_text}: {len(stacks)} runs, "
        f"{calls} store calls, {faults} faults injected ({per_phase}), results identical, "
        f"data lost 0, {max(e for _, e in stacks):.1f} s per run"
    )


@pytest.mark.parametrize(
    ("fail_rate", "slow", "first_seed"),
    [(0.1, 0.0, 100), (0.3, 0.0, 300), (0.1, 0.002, 500)],
    ids=["10%", "30%", "10%-slow"],
)
def test_local_store_under_faults(
    tmp_path: Path, fail_rate: float, slow: float, first_seed: int
) -> None:
    def make(name: str) -> Store:
        return LocalStore(tmp_path / name)

    stacks = [
        run_faulty(make, fail_rate=fail_rate, slow=slow, seed=seed, clean_key=str(tmp_path))
        for seed in range(first_seed, first_seed + SEEDS)
    ]
    assert_every_phase_met_faults(stacks)
    print(summary("LocalStore", fail_rate, slow, stacks))


@pytest.fixture
def azure_maker(azurite: str) -> Iterator[Callable[[str], Store]]:
    made: list[AzureBlobStore] = []
    tag = f"{time.time_ns() % 10**9:09d}"

    def make(name: str) -> Store:
        store = AzureBlobStore(
            f"dk-f{tag}-{name}".lower()[:63], connection_string=azurite, retry_total=2
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
        drop_container(azurite, store.container)


def drop_container(connection_string: str, name: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(connection_string, retry_total=1) as service:
        try:
            service.delete_container(name)
        except ResourceNotFoundError:  # never used
            pass


@pytest.mark.parametrize(("fail_rate", "first_seed"), [(0.1, 700), (0.3, 900)], ids=["10%", "30%"])
def test_azure_store_under_faults(
    azure_maker: Callable[[str], Store], fail_rate: float, first_seed: int
) -> None:
    stacks = [
        run_faulty(azure_maker, fail_rate=fail_rate, slow=0.0, seed=seed, clean_key="azure")
        for seed in range(first_seed, first_seed + AZURE_SEEDS)
    ]
    calls = sum(sum(s.calls.values()) for s, _ in stacks)
    faults = sum(sum(s.faults.values()) for s, _ in stacks)
    assert faults >= calls * fail_rate / 3, (faults, calls)  # they really happened
    print(summary("AzureBlobStore", fail_rate, 0.0, stacks))


class _FirstSnapshotPutFails(DelegatingStore):
    """The first create-only put of a snapshot fails *before* reaching the store."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.failed: list[str] = []

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if if_absent and "/_versions/" in key and not self.failed:
            self.failed.append(key)
            raise StoreUnavailableError("injected: snapshot put failed", key=key)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_backup_retries_a_snapshot_write_that_failed_before_reaching_the_store(
    tmp_path: Path,
) -> None:
    """One transient failure of a backup's snapshot write must not fail the backup.

    ``dataset_kit/io/backup.py::finish_copy`` (lines 312-322) treats a failed create-only
    put of a target snapshot as "lost a race or unknown outcome" and re-reads the key; when
    the put failed *before* it reached the store the key is still absent, so ``existing`` is
    None, and ``None != commit id`` raises ``DatasetExistsError`` ("version N at the target
    is another commit") although the target holds nothing of another writer. A transient
    failure should be retried (the commit protocol does: ``_create_snapshot`` -> ``_Retry``).
    Found by test_local_store_under_faults (10% faults: the backup phase).
    """
    source = LocalStore(tmp_path / "live")
    dk.write_dataset(frame(1), store=source, dataset_uuid=UUID, partition_on="day")
    vault = _FirstSnapshotPutFails(LocalStore(tmp_path / "vault"))
    report = dk.pipelines.backup(UUID, source=source, target=vault).compute(scheduler="sync")
    assert vault.failed, "the fault was not injected"
    assert report.versions == [0]
    pd.testing.assert_frame_equal(
        dk.read_table(store=vault, dataset_uuid=UUID),
        dk.read_table(store=source, dataset_uuid=UUID),
    )
    print("backup snapshot write failing once before the store: retried, backup complete")
