"""Pipelines against Azure Blob Storage (a real Azurite server started by the test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import StoreError
from dataset_kit.io import commit as _commit
from dataset_kit.store import CountingStore, LocalStore, Store
from dataset_kit.store.azure import AzureBlobStore
from dataset_kit.testing.dask_cluster import local_cluster

UUID = "sales"


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"p": [i % 10 for i in range(n)], "x": [float(i) for i in range(n)]})


@pytest.fixture
def azure(azurite: str, container: str) -> Iterator[AzureBlobStore]:
    store = AzureBlobStore(container, connection_string=azurite, retry_total=2)
    yield store
    store.close()


@pytest.fixture
def live(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "live")
    dk.write_dataset(frame(100), store=store, dataset_uuid=UUID, partition_on="p")
    return store


def sort(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("x").reset_index(drop=True)


def assert_same_table(got: Store, want: Store) -> None:
    """The dataset ``UUID`` holds the same rows in both stores."""
    pd.testing.assert_frame_equal(
        sort(dk.read_table(store=got, dataset_uuid=UUID)),
        sort(dk.read_table(store=want, dataset_uuid=UUID)),
    )


def test_backup_to_azure_incremental_verify_and_restore(
    live: LocalStore, azure: AzureBlobStore, tmp_path: Path
) -> None:
    first = dk.pipelines.backup(UUID, source=live, target=azure, batch_size=3).compute()
    assert first.copied == 10
    dk.update_dataset(frame(5).assign(p=42), store=live, dataset_uuid=UUID)
    second = dk.pipelines.backup(UUID, source=live, target=azure).compute()
    assert (second.copied, second.skipped, second.version) == (1, 10, 1)
    report = dk.pipelines.verify(UUID, store=azure, versions="all", deep=True).compute()
    assert report.ok and report.checked == 11
    fresh = LocalStore(tmp_path / "fresh")
    dk.pipelines.restore(UUID, source=azure, target=fresh).compute()
    assert_same_table(fresh, live)


def test_big_blobs_come_from_azure_in_ranged_reads(
    live: LocalStore, azure: AzureBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore from Azure into a local store writes blobs above STREAMED_COPY_BYTES
    from ranged reads (none read whole), and a checksum check hashes them in chunks."""
    import dataset_kit.store._streams as streams
    from dataset_kit.io import backup as io_backup

    dk.pipelines.backup(UUID, source=live, target=azure).compute()
    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    monkeypatch.setattr(streams, "STREAMED_COPY_CHUNK", 256)
    monkeypatch.setattr(io_backup, "WHOLE_BLOB_BYTES", 100)
    monkeypatch.setattr(io_backup, "DIGEST_CHUNK_BYTES", 512)
    source = CountingStore(azure)
    fresh = LocalStore(tmp_path / "fresh")
    report = dk.pipelines.restore(UUID, source=source, target=fresh, check="checksum").compute()
    assert report.copied == 10
    blobs = [k for k in fresh.iter_keys() if k.endswith(".parquet")]
    sizes = [fresh.stat(k).size for k in blobs]
    assert min(sizes) > 512  # every blob is streamed and hashed in several chunks
    ranges = sum(-(-n // 256) + -(-n // 512) for n in sizes)  # the copy's and the digest's
    assert source.counts["get_range"] == ranges
    assert source.counts["get"] < 10  # the metadata's reads only
    assert_same_table(fresh, live)


def test_big_blobs_go_to_azure_as_streams(
    live: LocalStore, azure: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs above STREAMED_COPY_BYTES go to Azure as streams: a local source's files
    are uploaded from the open file (never read whole through the store), another
    store's blobs from ranged reads; a blob replaced during its upload fails the copy
    and leaves nothing at the target."""
    import dataset_kit.store._streams as streams
    from dataset_kit.store import MemoryStore

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    source = CountingStore(live)
    assert dk.pipelines.backup(UUID, source=source, target=azure).compute().copied == 10
    assert source.counts["get_range"] == 0 and source.counts["get"] < 10  # metadata only
    assert_same_table(azure, live)

    memory = MemoryStore()
    payload = os.urandom(3_000)
    listed = memory.put("big", payload)
    ranged = CountingStore(memory)
    assert azure.copy_from(ranged, "big", "copies/big", source_info=listed).size == 3_000
    assert azure.get("copies/big") == payload
    assert ranged.counts["get"] == 0 and ranged.counts["get_range"] >= 1

    class Replacing(CountingStore):
        def _get_range(self, key: str, start: int, length: int) -> bytes:
            data = super()._get_range(key, start, length)
            memory.put(key, payload[::-1])  # replaced during the upload
            return data

    with pytest.raises(StoreError, match="changed during the copy"):
        azure.copy_from(Replacing(memory), "big", "copies/torn", source_info=memory.stat("big"))
    assert not azure.exists("copies/torn")


def test_a_blob_above_the_sdk_single_put_limit_uploads_in_bounded_memory(
    azure: AzureBlobStore, tmp_path: Path
) -> None:
    """70 MiB from a local file: the SDK stages blocks of 4 MiB from the stream, so the
    copy allocates a fraction of the blob (through get and put: about 90 MiB here)."""
    import hashlib
    import tracemalloc

    local = LocalStore(tmp_path / "big")
    payload = os.urandom(70 * 2**20)
    listed = local.put("big", payload)
    tracemalloc.start()
    try:
        info = azure.copy_from(local, "big", "copies/big", source_info=listed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.size == len(payload) and azure.stat("copies/big").size == len(payload)
    assert peak < 32 * 2**20, f"the upload allocated {peak >> 20} MiB"
    sha = hashlib.sha256()
    for start in range(0, len(payload), 8 * 2**20):
        sha.update(azure.get_range("copies/big", start, min(8 * 2**20, len(payload) - start)))
    assert sha.digest() == hashlib.sha256(payload).digest()


def test_a_throttled_backup_streams_big_blobs_too(
    live: LocalStore, azure: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With storage_concurrency (a throttle around every store call) big blobs still go
    as streams: one lease around each copy, the files read directly. Before, a throttled
    target copied through a whole read of the source, lease by lease."""
    import dataset_kit.store._streams as streams

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    source = CountingStore(live)
    report = dk.pipelines.backup(UUID, source=source, target=azure, storage_concurrency=2).compute()
    assert report.copied == 10
    assert source.counts["get"] < 10  # the metadata's reads only: no data blob read whole
    assert_same_table(azure, live)


def test_which_copies_into_azure_stream(
    live: LocalStore, azure: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataset_kit.store._streams as streams
    from dataset_kit.store import BlobInfo, MemoryStore

    monkeypatch.setattr(streams, "STREAMED_COPY_BYTES", 100)
    big, small = BlobInfo("k", 101, 0.0, "e"), BlobInfo("k", 100, 0.0, "e")
    assert azure._streams_from(CountingStore(live), big)  # a local file
    assert azure._streams_from(MemoryStore(), big)  # ranged reads
    assert not azure._streams_from(live, small) and not azure._streams_from(live, None)
    assert not azure._streams_from(azure, big)  # the service copies


def test_server_side_copy_within_azure_and_gc(azure: AzureBlobStore) -> None:
    dk.write_dataset(frame(50), store=azure, dataset_uuid=UUID, partition_on="p")
    report = dk.pipelines.backup(UUID, source=azure, target=azure, target_uuid="copy").compute()
    assert report.copied == 10
    assert len(dk.read_table(store=azure, dataset_uuid="copy")) == 50

    dk.write_dataset(frame(3), store=azure, dataset_uuid=UUID, mode="overwrite")
    gc = dk.pipelines.garbage_collect(
        UUID, store=azure, grace_period=0, keep_versions=1, batch_size=4
    ).compute()
    assert gc.count == 10 and not gc.failed
    assert len(dk.read_table(store=azure, dataset_uuid=UUID)) == 3
    assert len(dk.read_table(store=azure, dataset_uuid="copy")) == 50  # other datasets untouched


def test_compute_from_and_to_azure(azure: AzureBlobStore, live: LocalStore) -> None:
    def plus_one(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(x=df["x"] + 1)

    dk.pipelines.map_partitions(
        plus_one, source=UUID, target="plus", store=live, target_store=azure, partition_on="p"
    ).compute()
    dk.pipelines.map_partitions(
        plus_one, source="plus", target="plus2", store=azure, target_store=live
    ).compute()
    got = dk.read_table(store=live, dataset_uuid="plus2")
    assert sorted(got["x"]) == [float(i) + 2 for i in range(100)]


def test_repartition_into_azure(azure: AzureBlobStore, live: LocalStore) -> None:
    """Into a network store: dask's disk shuffle by default (staging would send the data
    through Azure twice more); staged on request, with ranged reads of lz4 shards and
    no staging blob left in the container."""
    job = dk.pipelines.repartition(
        UUID, "by_p_disk", store=live, target_store=azure, partition_on="p"
    )
    assert job.shuffle_method == "disk"  # type: ignore[attr-defined]
    job.compute()
    staged = dk.pipelines.repartition(
        UUID,
        "by_p_staged",
        store=live,
        target_store=azure,
        partition_on="p",
        target_rows_per_file=4,
        shuffle_method="staged",
    )
    meta = staged.compute()
    assert meta.num_partitions == 10 * 2  # 10 rows per value of p: 2 files of 5
    for uuid in ("by_p_disk", "by_p_staged"):
        assert sort(dk.read_table(store=azure, dataset_uuid=uuid)).equals(
            sort(dk.read_table(store=live, dataset_uuid=UUID))
        )
    assert not [k for k in azure.iter_keys() if "/_staging/" in k]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_azure_store_travels_to_worker_processes(live: LocalStore, azure: AzureBlobStore) -> None:
    """On a LocalCluster the Azure store is rebuilt in each worker from its spec."""
    with local_cluster(n_workers=2):
        report = dk.pipelines.backup(UUID, source=live, target=azure, batch_size=2).compute()
        assert report.copied == 10
        assert dk.pipelines.verify(UUID, store=azure, deep=True).compute().ok


def test_cli_backup_to_azure(live: LocalStore, azurite: str, container: str) -> None:
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataset_kit.cli",
            "--store",
            live.url,
            "--json",
            "backup",
            UUID,
            "--target",
            f"azure://{container}?prefix=vault",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["copied"] == 10
    assert "AccountKey" not in out.stdout + out.stderr
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataset_kit.cli",
            "--store",
            f"azure://{container}?prefix=vault",
            "verify",
            UUID,
            "--deep",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert "0 missing, 0 corrupt" in verify.stdout


def test_gc_without_a_scan_lists_only_the_snapshots(azure: AzureBlobStore) -> None:
    dk.write_dataset(frame(50), store=azure, dataset_uuid=UUID, partition_on="p")
    dk.write_dataset(frame(3), store=azure, dataset_uuid=UUID, mode="overwrite")
    counted = CountingStore(azure)
    job = dk.pipelines.garbage_collect(
        UUID, store=counted, keep_versions=1, grace_period=0, scan=False, expire=True, batch_size=4
    )
    assert counted.counts["list"] == 1
    report = job.compute()
    assert report.count == 10 and report.expired == [0] and not report.failed
    assert len(dk.read_table(store=azure, dataset_uuid=UUID)) == 3
    live = set(_commit.resolve(azure, UUID).meta.partitions.values())
    assert {k for k in azure.iter_keys(f"{UUID}/") if k.endswith(".parquet")} == live
