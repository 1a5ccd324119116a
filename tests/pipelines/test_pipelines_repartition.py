"""Repartition: every row lands in its new partition, files are balanced, one commit.

The fast tests run on the local scheduler (disk shuffle); the ``slow`` ones on a
LocalCluster with the P2P shuffle, with a worker killed mid-shuffle, and with workers
whose memory limit is smaller than the dataset.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.naming import decode_label
from dataset_kit.exceptions import (
    DatasetExistsError,
    InvalidInputError,
    KeyNotFoundError,
    PartitionValueError,
)
from dataset_kit.io import read as _read
from dataset_kit.pipelines.repartition import (
    BUCKET_COLUMN,
    _add_bucket,
    _add_bucket_arrow,
    balanced_chunks,
    repartition,
)
from dataset_kit.store import Capability, DelegatingStore, LocalStore, Store
from dataset_kit.testing.dask_cluster import local_cluster
from dataset_kit.testing.frames import all_types_frame

SRC = "by_date"
SHOPS = 12


def source_frame(rows: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Rows over 6 dates and 12 shops, shop 0 holding about a third of them (skew)."""
    rng = np.random.default_rng(seed)
    shop = rng.integers(0, SHOPS, rows)
    shop[rng.random(rows) < 0.3] = 0
    return pd.DataFrame(
        {
            "id": rng.permutation(rows).astype("int64"),
            "date": [f"2024-01-0{d}" for d in rng.integers(1, 7, rows)],
            "shop": shop.astype("int64"),
            "sales": rng.gamma(2.0, 50.0, rows).round(2),
            "label": [f"l{i % 97}" for i in range(rows)],
        }
    )


def write_source(store: Store, rows: int = 6000, appends: int = 2) -> pd.DataFrame:
    """The source, partitioned on date, written in ``appends`` commits (several blobs per date)."""
    frames = [source_frame(rows // appends, seed) for seed in range(appends)]
    for i, f in enumerate(frames):
        f["id"] += i * (rows // appends)
        dk.update_dataset(f, store=store, dataset_uuid=SRC, partition_on="date")
    return dk.read_table(store=store, dataset_uuid=SRC)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "lake")


@pytest.fixture(params=["staged", "disk"])
def method(request: pytest.FixtureRequest, store: LocalStore) -> Iterator[str]:
    """The local shuffle methods; a staged run leaves no staging blob behind."""
    yield request.param
    assert staging_keys(store) == []


def staging_keys(store: Store) -> list[str]:
    return [k for k in store.iter_keys() if "/_staging/" in k]


def by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("id").reset_index(drop=True)


def files_by_partition(meta: DatasetMetadata) -> dict[str, list[int]]:
    """Partition (label without the file name) -> rows of each of its files."""
    out: dict[str, list[int]] = defaultdict(list)
    for label in meta.partitions:
        values, _ = decode_label(label)
        out["/".join(f"{k}={v}" for k, v in values)].append(meta.stats[label][0])
    return dict(out)


def check_same_rows(store: Store, target: str, want: pd.DataFrame) -> pd.DataFrame:
    got = dk.read_table(store=store, dataset_uuid=target)
    assert_frame_equal(by_id(got), by_id(want[got.columns]))
    return got


def check_balanced(meta: DatasetMetadata, target_rows: int) -> None:
    """Files within [target/2, 2*target), except a partition's single small file; none empty."""
    for partition, sizes in files_by_partition(meta).items():
        assert all(s > 0 for s in sizes), partition
        if sum(sizes) < target_rows / 2:
            assert len(sizes) == 1, (partition, sizes)
        else:
            assert all(target_rows / 2 <= s < 2 * target_rows for s in sizes), (partition, sizes)
        assert sorted(sizes) == sorted(balanced_chunks(sum(sizes), target_rows))


@pytest.mark.parametrize("method", [None, "disk"])
def test_every_row_lands_in_its_partition(store: LocalStore, method: str | None) -> None:
    src = write_source(store)
    job = repartition(
        SRC,
        "by_shop",
        store=store,
        partition_on="shop",
        target_rows_per_file=400,
        shuffle_method=method,  # type: ignore[arg-type]
    )
    # a store with local paths shuffles through itself by default
    assert job.shuffle_method == (method or "staged")  # type: ignore[attr-defined]
    meta = job.compute()
    assert meta.version == 0 and meta.partition_keys == ("shop",)
    got = check_same_rows(store, "by_shop", src)
    assert list(got.columns) == list(src.columns)
    assert got.dtypes.equals(src.dtypes)
    # each partition holds exactly its key's rows: the (id, shop) pairs are the source's,
    # and every file of a partition carries that partition's value
    parts = files_by_partition(meta)
    assert sorted(parts) == [f"shop={s}" for s in sorted(src["shop"].unique(), key=str)]
    assert sum(sum(v) for v in parts.values()) == len(src)
    for frame in dk.read_dataset_as_dataframes(store=store, dataset_uuid="by_shop"):
        assert frame["shop"].nunique() == 1
        want = set(src.loc[src["shop"] == frame["shop"].iloc[0], "id"])
        assert set(frame["id"]) <= want
    check_balanced(meta, 400)
    assert dk.read_table(store=store, dataset_uuid=SRC).shape == src.shape  # source untouched


@pytest.mark.parametrize("target_rows", [7, 150, 700, 100_000])
def test_files_are_balanced(store: LocalStore, method: str, target_rows: int) -> None:
    src = write_source(store, rows=3000)
    meta = repartition(
        SRC,
        "t",
        store=store,
        partition_on=["shop"],
        target_rows_per_file=target_rows,
        shuffle_method=method,
    ).compute()
    check_balanced(meta, target_rows)
    check_same_rows(store, "t", src)


@pytest.mark.parametrize("target_kib", [24, 96])
def test_files_are_balanced_by_bytes(store: LocalStore, method: str, target_kib: int) -> None:
    """``target_bytes_per_file``: every file but the last of a partition lands within 2x
    of the size asked for (rows per file estimated from the source's bytes per row)."""
    src = write_source(store, rows=60_000, appends=1)
    target = target_kib * 1024
    meta = repartition(
        SRC,
        "b",
        store=store,
        partition_on=["shop"],
        target_bytes_per_file=target,
        shuffle_method=method,
    ).compute()
    check_same_rows(store, "b", src)
    sizes: dict[str, list[int]] = {}
    for label, key in meta.partitions.items():
        sizes.setdefault(label.rsplit("/", 1)[0], []).append(store.stat(key).size)
    assert sum(len(v) for v in sizes.values()) > len(sizes)  # several files per shop
    for files in sizes.values():
        files.sort()
        for size in files[1:] if len(files) > 1 else []:  # the smallest may be the rest
            assert target / 2 <= size <= target * 2, (target, files)


def test_a_selective_filter_yields_few_well_filled_files(store: LocalStore, method: str) -> None:
    src = write_source(store, rows=20_000, appends=4)
    assert dk.open_dataset(store=store, dataset_uuid=SRC).num_partitions == 24
    predicates = [[("id", "<", 200)]]  # 1% of the rows
    meta = repartition(
        SRC,
        "few",
        store=store,
        partition_on="shop",
        predicates=predicates,
        npartitions=24,
        shuffle_method=method,
    ).compute()
    want = src[src["id"] < 200]
    # one file per shop, not one sliver per (source blob, shop): up to 24 x 12 = 288
    assert meta.num_partitions == want["shop"].nunique() == SHOPS
    check_same_rows(store, "few", want)


def test_bucketing_keeps_each_bucket_value_in_one_file(store: LocalStore, method: str) -> None:
    src = write_source(store)
    meta = repartition(
        SRC,
        "b",
        store=store,
        partition_on="date",
        bucket_by="shop",
        num_buckets=3,
        shuffle_method=method,
    ).compute()
    check_same_rows(store, "b", src)
    per_date: dict[str, list[set[int]]] = defaultdict(list)
    for frame in dk.read_dataset_as_dataframes(store=store, dataset_uuid="b"):
        per_date[frame["date"].iloc[0]].append(set(frame["shop"]))
    for shops in per_date.values():
        assert len(shops) <= 3
        assert sum(len(s) for s in shops) == len(set().union(*shops))  # disjoint
    assert "__KTK_HASH_BUCKET" not in dk.read_table(store=store, dataset_uuid="b").columns
    assert meta.num_partitions <= 6 * 3


def test_sort_by_gives_files_with_consecutive_ranges(store: LocalStore, method: str) -> None:
    write_source(store)
    repartition(
        SRC,
        "s",
        store=store,
        partition_on="shop",
        sort_by="id",
        target_rows_per_file=300,
        shuffle_method=method,
    ).compute()
    ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for frame in dk.read_dataset_as_dataframes(store=store, dataset_uuid="s"):
        assert frame["id"].is_monotonic_increasing
        ranges[int(frame["shop"].iloc[0])].append((frame["id"].min(), frame["id"].max()))
    assert max(len(r) for r in ranges.values()) > 1
    for spans in ranges.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))


def test_columns_and_every_type_survive_exactly(store: LocalStore, method: str) -> None:
    df = pd.concat([all_types_frame()] * 3, ignore_index=True)
    df["key"] = np.arange(len(df))
    df["p"] = np.arange(len(df)) % 2
    dk.write_dataset(df, store=store, dataset_uuid="types", partition_on="p")
    src = dk.read_table(store=store, dataset_uuid="types")
    repartition(
        "types", "by_s", store=store, partition_on=["s", "tz"], shuffle_method=method
    ).compute()
    got = dk.read_table(store=store, dataset_uuid="by_s")
    assert_frame_equal(
        got.sort_values("key").reset_index(drop=True),
        src[got.columns].sort_values("key").reset_index(drop=True),
    )
    meta = repartition(
        "types",
        "few",
        store=store,
        partition_on="cat",
        columns=["cat", "key", "S"],
        shuffle_method=method,
    ).compute()
    assert meta.schema is not None and meta.schema.names == ["cat", "key", "S"]
    assert dk.read_table(store=store, dataset_uuid="few").dtypes.equals(
        src.dtypes[["cat", "key", "S"]]
    )


def test_a_failed_run_leaves_the_target_unchanged(store: LocalStore, method: str) -> None:
    df = pd.DataFrame({"x": [1.0, np.nan, 3.0], "y": [1, 2, 3], "p": [1, 1, 2]})
    dk.write_dataset(df, store=store, dataset_uuid="nan", partition_on="p")
    dk.write_dataset(df.head(1), store=store, dataset_uuid="t")
    job = repartition(
        "nan", "t", store=store, partition_on="x", mode="overwrite", shuffle_method=method
    )
    with pytest.raises(PartitionValueError):
        job.compute()
    assert dk.open_dataset(store=store, dataset_uuid="t").version == 0
    assert len(dk.read_table(store=store, dataset_uuid="t")) == 1
    with pytest.raises(DatasetExistsError):
        repartition("nan", "t", store=store, partition_on="y")


def test_in_place_and_empty_selections(store: LocalStore, method: str) -> None:
    src = write_source(store, rows=600, appends=1)
    meta = repartition(
        SRC, SRC, store=store, partition_on="shop", mode="overwrite", shuffle_method=method
    ).compute()
    assert meta.version == 1 and meta.partition_keys == ("shop",)
    check_same_rows(store, SRC, src)
    assert dk.read_table(store=store, dataset_uuid=SRC, version=0).shape == src.shape
    none = repartition(
        SRC,
        "none",
        store=store,
        partition_on="date",
        predicates=[[("shop", ">", 99)]],
        shuffle_method=method,
    ).compute()
    assert none.num_partitions == 0
    empty = dk.read_table(store=store, dataset_uuid="none")
    assert empty.empty and empty.dtypes.equals(src.dtypes[empty.columns])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"partition_on": []}, "needs partition_on"),
        ({"partition_on": "shop", "num_buckets": 3}, "needs bucket_by"),
        ({"partition_on": "shop", "bucket_by": "id"}, "num_buckets"),
        ({"partition_on": "shop", "sort_by": "shop"}, "partition columns"),
        ({"partition_on": "shop", "columns": ["id"]}, "not read"),
        ({"partition_on": "shop", "target_rows_per_file": 0}, "target_rows_per_file"),
        ({"partition_on": "shop", "target_bytes_per_file": -1}, "target_bytes_per_file"),
        (
            {"partition_on": "shop", "target_bytes_per_file": 9, "target_rows_per_file": 9},
            "not both",
        ),
        ({"partition_on": "shop", "shuffle_method": "magic"}, "shuffle_method"),
        ({"partition_on": "nope"}, "not read"),
    ],
)
def test_bad_options_fail_when_building(
    store: LocalStore, kwargs: dict[str, Any], match: str
) -> None:
    write_source(store, rows=100, appends=1)
    with pytest.raises(InvalidInputError, match=match):
        repartition(SRC, "x", store=store, **kwargs)


def test_staged_and_disk_shuffles_make_the_same_buckets(store: LocalStore) -> None:
    """Bucketing hashes the same pandas values on both paths (kartothek's bucketing)."""
    write_source(store)

    def buckets(method: str) -> set[tuple[str, frozenset[int]]]:
        uuid = f"b_{method}"
        repartition(
            SRC,
            uuid,
            store=store,
            partition_on="date",
            bucket_by="shop",
            num_buckets=4,
            shuffle_method=method,  # type: ignore[arg-type]
        ).compute()
        return {
            (frame["date"].iloc[0], frozenset(frame["shop"]))
            for frame in dk.read_dataset_as_dataframes(store=store, dataset_uuid=uuid)
        }

    assert buckets("staged") == buckets("disk")


BIG = 2**53 + 1  # not a float64


def write_nulls_in_some_blobs(
    store: Store, monkeypatch: pytest.MonkeyPatch, recorded: bool, uuid: str = "nulls"
) -> None:
    """Arrow data whose int column ``k`` holds nulls in the second blob only (``recorded``
    False: written as before datasets recorded nullable dtypes, float64 on read)."""
    first = pa.table({"g": ["a"] * 6, "id": range(6), "k": pa.array([BIG, 2, 3, 4, 5, 6])})
    second = pa.table(
        {"g": ["a"] * 6, "id": range(6, 12), "k": pa.array([BIG, 2, 3, None, 5, BIG + 2])}
    )
    with monkeypatch.context() as m:
        if not recorded:
            m.setattr("dataset_kit.io.write.with_null_dtypes", lambda table: table)
        dk.write_dataset(first, store=store, dataset_uuid=uuid, partition_on="g")
        dk.update_dataset(second, store=store, dataset_uuid=uuid)


def arrow_rows(store: Store, uuid: str) -> list[tuple[Any, ...]]:
    table = dk.read_table(store=store, dataset_uuid=uuid, output="arrow")
    return sorted(zip(table.column("id").to_pylist(), table.column("k").to_pylist(), strict=True))


@pytest.mark.parametrize("recorded", [True, False], ids=["nullable-recorded", "written-before"])
def test_a_bucket_value_lands_in_one_file_with_nulls_in_some_blobs(
    store: LocalStore, method: str, recorded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 in a blob without nulls (int64) and 5.0 in one with nulls (float64) hashed apart:
    # one value in several bucket files of its partition
    write_nulls_in_some_blobs(store, monkeypatch, recorded)
    meta = repartition(
        "nulls",
        "b",
        store=store,
        partition_on="g",
        bucket_by="k",
        num_buckets=4,
        shuffle_method=method,
    ).compute()
    files_of: dict[Any, set[str]] = defaultdict(set)
    plan = _read.plan_read(store, meta)
    for part in plan.parts:
        for value in _read.read_partition(store, plan, part).column("k").to_pylist():
            files_of[value].add(part.key)
    assert {v: len(f) for v, f in files_of.items() if len(f) > 1} == {}
    assert arrow_rows(store, "b") == arrow_rows(store, "nulls")


def test_bucket_hash_depends_on_the_value_only() -> None:
    """int64 5, float64 5.0 (an int column with nulls), Int64 5; Arrow or pandas path."""
    types = {"k": pa.int64()}
    as_int = pa.table({"k": pa.array([5, BIG], pa.int64())})
    as_float = pa.table({"k": pa.array([5.0, None])})
    as_nullable = pa.table({"k": pa.array([5, None], pa.int64())})
    buckets = [
        _add_bucket_arrow(t, ["k"], 7, types).column(BUCKET_COLUMN).to_pylist()[0]
        for t in (as_int, as_float, as_nullable)
    ]
    frames = [
        pd.DataFrame({"k": [5, 6]}),
        pd.DataFrame({"k": [5.0, np.nan]}),
        pd.DataFrame({"k": pd.array([5, None], "Int64")}),
        pd.DataFrame({"k": pd.array([5, 6], "Int8")}),
    ]
    buckets += [int(_add_bucket(f, ["k"], 7, types)[BUCKET_COLUMN].iloc[0]) for f in frames]
    assert len(set(buckets)) == 1, buckets
    # without nulls, kartothek's/plateau's bucketing of int64 columns
    kartothek = pd.util.hash_pandas_object(pd.DataFrame({"k": [5, BIG]}), index=False) % 7
    assert _add_bucket_arrow(as_int, ["k"], 7, types).column(BUCKET_COLUMN).to_pylist() == list(
        kartothek
    )
    narrow = pd.DataFrame({"k": np.array([-1, 5], "int8")})
    kartothek = pd.util.hash_pandas_object(narrow, index=False) % 7
    assert list(_add_bucket(narrow, ["k"], 7, {"k": pa.int8()})[BUCKET_COLUMN]) == list(kartothek)


@pytest.mark.parametrize("method", ["disk", "tasks"])
@pytest.mark.parametrize("recorded", [True, False], ids=["nullable-recorded", "written-before"])
def test_big_integers_with_nulls_in_some_blobs_survive_the_dask_shuffle(
    method: str, recorded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pandas shuffle read the column as float64 where a blob held nulls: 2**53 + 3
    # came back as 2**53 + 4, silently
    store = dk.open_store("memory://")
    write_nulls_in_some_blobs(store, monkeypatch, recorded)
    job = repartition("nulls", "t", store=store, partition_on="id", shuffle_method=method)  # type: ignore[arg-type]
    job.compute(scheduler="sync")
    assert arrow_rows(store, "t") == arrow_rows(store, "nulls")
    got = dk.read_table(store=store, dataset_uuid="t")
    assert got["k"].dtype == "Int64"  # nulls: the nullable dtype, also for the old source


@pytest.mark.parametrize("method", ["staged", "disk", "tasks"])
def test_null_partition_values_are_counted(store: LocalStore, method: str) -> None:
    # each null was a run of its own: "1 null/NaN values" for 3
    t = pa.table({"p": ["x", None, None, None, "y"], "v": range(5)})
    dk.write_dataset(t, store=store, dataset_uuid="s")
    job = repartition("s", "t", store=store, partition_on="p", shuffle_method=method)  # type: ignore[arg-type]
    with pytest.raises(PartitionValueError, match="'p' has 3 null/NaN values"):
        job.compute(scheduler="sync")
    assert "t" not in dk.list_datasets(store=store)
    # with buckets, the null rows of other buckets are in other nodes: a lower bound
    job = repartition(
        "s", "t", store=store, partition_on="p", bucket_by="v", num_buckets=8, shuffle_method=method
    )  # type: ignore[arg-type]
    with pytest.raises(PartitionValueError, match=r"'p' has at least [123] null/NaN values"):
        job.compute(scheduler="sync")


def test_staged_through_a_store_without_local_paths() -> None:
    """A memory store: dask's disk shuffle by default; staged on request (ranged reads,
    lz4-compressed shards), and the staging blobs are gone after the commit."""
    store = dk.open_store("memory://")
    src = write_source(store, rows=3000)
    assert repartition(SRC, "d", store=store, partition_on="shop").shuffle_method == "disk"  # type: ignore[attr-defined]
    job = repartition(SRC, "s", store=store, partition_on="shop", shuffle_method="staged")
    meta = job.compute()
    check_same_rows(store, "s", src)
    assert meta.num_partitions == SHOPS
    assert staging_keys(store) == []


class GcOnFirstStagingRead(DelegatingStore):
    """Runs a garbage collection with no grace period when a write node first reads a
    staging blob: the one way to pull a running job's shards from under it."""

    def __init__(self, inner: Store, dataset_uuid: str) -> None:
        super().__init__(inner, capabilities=inner.capabilities)
        self.dataset_uuid = dataset_uuid
        self.collected: list[str] = []

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        if "/_staging/" in key and not self.collected:
            report = dk.pipelines.garbage_collect(
                self.dataset_uuid, store=self.inner, grace_period=0
            ).compute(scheduler="sync")
            self.collected.extend(report.keys)
        return super()._get_range(key, start, length)


def test_staging_blobs_collected_under_a_running_job_fail_it_cleanly(
    store: LocalStore,
) -> None:
    write_source(store)
    dk.write_dataset(pd.DataFrame({"shop": [1], "id": [7]}), store=store, dataset_uuid="t")
    gc_store = GcOnFirstStagingRead(store, "t")
    job = repartition(
        SRC, "t", store=store, target_store=gc_store, partition_on="shop", mode="overwrite"
    )
    assert job.shuffle_method == "staged"  # type: ignore[attr-defined]
    with pytest.raises(KeyNotFoundError):
        job.compute(scheduler="sync")
    assert gc_store.collected and all("/_staging/" in k for k in gc_store.collected)
    assert dk.open_dataset(store=store, dataset_uuid="t").version == 0
    assert dk.read_table(store=store, dataset_uuid="t")["id"].tolist() == [7]
    assert staging_keys(store) == []  # the failed run deleted what was left


def test_garbage_collection_removes_the_staging_of_a_crashed_run(store: LocalStore) -> None:
    from dataset_kit.core import naming
    from dataset_kit.pipelines._staged_shuffle import write_shards

    write_source(store, rows=300, appends=1)
    table = pa.table({"k": [1, 2, 3]})
    key = naming.staging_key(SRC, "0123abcd", 0)
    write_shards(store, key, table, np.array([0, 1, 0], dtype=np.uint16), 2)
    path = store.local_path(key)
    assert path is not None
    os.utime(path, (1, 1))  # older than any grace period
    report = dk.pipelines.garbage_collect(SRC, store=store).compute()
    assert report.keys == [key]
    assert staging_keys(store) == []


# ------------------------------------------------------------------ on a LocalCluster


class KillOnceStore(DelegatingStore):
    """SIGKILL the worker process on the ``kill_at``-th data-blob read, once per test.

    Reads go through ``get`` (no local paths); reads are counted with files in
    ``marker_dir``, shared by every process.
    """

    def __init__(self, inner: Store, marker_dir: str, kill_at: int) -> None:
        super().__init__(inner, capabilities=inner.capabilities - {Capability.LOCAL_PATH})
        self.marker_dir = marker_dir
        self.kill_at = kill_at

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner, self.marker_dir, self.kill_at))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("kill-once", self.inner.url, self.marker_dir, self.kill_at)

    def _get(self, key: str) -> bytes:
        if key.endswith(".parquet"):
            Path(self.marker_dir, f"read-{uuid.uuid4().hex}").touch()
            reads = sum(1 for p in Path(self.marker_dir).iterdir() if p.name.startswith("read-"))
            killed = Path(self.marker_dir, "killed")
            if reads >= self.kill_at and not killed.exists():
                # the marker appears whole, and for one caller only: a second thread of
                # the same worker that also passed the check used to truncate it
                # (write_text) just before the kill, leaving it empty
                mine = Path(self.marker_dir, f"pid-{uuid.uuid4().hex}")
                mine.write_text(str(os.getpid()))
                try:
                    os.link(mine, killed)
                except FileExistsError:
                    return super()._get(key)  # another caller kills its worker
                os.kill(os.getpid(), signal.SIGKILL)
        return super()._get(key)


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests


class NoPathStore(DelegatingStore):
    """The store without ``LOCAL_PATH``: a network store, as far as defaults go."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, capabilities=inner.capabilities - {Capability.LOCAL_PATH})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.inner,))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("no-path", self.inner.url)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_p2p_follows_the_scheduler(store: LocalStore) -> None:
    """Without local paths the shuffle is dask's: disk locally, P2P on a cluster, even
    for a job built before the cluster existed."""
    src = write_source(store, rows=20_000, appends=4)
    remote = NoPathStore(store)
    built_locally = repartition(SRC, "late", store=remote, partition_on="shop")
    assert built_locally.shuffle_method == "disk"  # type: ignore[attr-defined]
    with local_cluster(n_workers=2) as client:
        job = repartition(
            SRC, "by_shop", store=remote, partition_on="shop", target_rows_per_file=500
        )
        assert job.shuffle_method == "p2p"  # type: ignore[attr-defined]
        meta = job.compute()
        check_same_rows(store, "by_shop", src)
        check_balanced(meta, 500)
        built_locally.compute(scheduler=client)
        assert built_locally.shuffle_method == "p2p"  # type: ignore[attr-defined]
        check_same_rows(store, "late", src)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["staged", "p2p"])
def test_a_worker_killed_mid_shuffle(store: LocalStore, tmp_path: Path, method: str) -> None:
    """A worker SIGKILLed while reading: staged map tasks run again (rewriting the same
    staging blob), P2P restarts; or the run fails cleanly, leaving no target."""
    src = write_source(store, rows=20_000, appends=4)
    with local_cluster(n_workers=2) as client:
        job = repartition(
            SRC, "balanced", store=store, partition_on="shop", target_rows_per_file=500
        )
        assert job.shuffle_method == "staged"  # type: ignore[attr-defined]
        meta = job.compute()
        check_same_rows(store, "balanced", src)
        check_balanced(meta, 500)

        markers = tmp_path / "markers"
        markers.mkdir()
        killer = KillOnceStore(store, str(markers), kill_at=10)
        workers = set(client.run(os.getpid).values())
        job = repartition(
            SRC,
            "killed",
            store=killer,
            target_store=store,
            partition_on="shop",
            npartitions=8,
            shuffle_method=method,  # type: ignore[arg-type]
        )
        try:
            meta = job.compute()
        except Exception:
            assert "killed" not in dk.list_datasets(store)
        else:
            check_same_rows(store, "killed", src)
            check_balanced(meta, 1_000_000)
        victim = int((markers / "killed").read_text())
        assert victim in workers and victim not in set(client.run(os.getpid).values())
    assert staging_keys(store) == []


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("method", "rows"), [("staged", 24_000_000), ("p2p", 8_000_000)])
def test_a_dataset_larger_than_the_workers_memory_limit(
    store: LocalStore, method: str, rows: int
) -> None:
    """2 workers of 450 MiB (about 170 MiB of which the imported libraries take)
    repartition 24M rows staged (1.2 GiB as Arrow: 2.7x a worker's limit, 4.5x what is
    left after the imports) and 8M rows with P2P (400 MiB) without a restart, and no
    worker's resident memory ever reaches its limit: the read tasks are sized from the
    workers' memory limit; the staged shuffle holds one task's rows at a time, P2P
    spills to disk."""
    labels = pa.array([f"label-{i:04d}" for i in range(1000)])
    for part in range(4):
        rng = np.random.default_rng(part)
        n = rows // 4
        table = pa.table(
            {
                "date": pa.array([f"2024-01-{d:02d}" for d in range(1, 31)]).take(
                    rng.integers(0, 30, n)
                ),
                "store_id": rng.integers(0, 100, n),
                "product_id": rng.integers(0, 5_000_000, n),
                "sales": rng.gamma(2.0, 50.0, n),
                "label": labels.take(rng.integers(0, 1000, n)),
            }
        )
        dk.update_dataset(table, store=store, dataset_uuid=SRC, partition_on="date")
        del table
    limit = 450 * 2**20
    with local_cluster(n_workers=2, memory_limit=limit) as client:
        pids = set(client.run(os.getpid).values())
        meta = repartition(
            SRC,
            "by_store",
            store=store,
            partition_on="store_id",
            shuffle_method=method,  # type: ignore[arg-type]
        ).compute()
        assert set(client.run(os.getpid).values()) == pids  # nobody was killed
        peaks = client.run(peak_rss).values()
    assert all(0 < peak < limit for peak in peaks), [p / 2**20 for p in peaks]
    assert sum(rows for rows, _ in meta.stats.values()) == rows
    assert meta.num_partitions == 100


def peak_rss() -> int:
    """This process's resident-memory high-water mark (VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
