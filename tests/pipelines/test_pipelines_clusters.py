"""The same pipeline graphs on a LocalCluster (processes) and on real scheduler/worker processes.

Stores travel into tasks as specs (a LocalStore pickles as its path); functions defined
inside the tests travel by value (cloudpickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import ConfigError
from dataset_kit.pipelines import SCHEDULER_ENV
from dataset_kit.store import LocalStore
from dataset_kit.testing.dask_cluster import local_cluster, remote_cluster
from dataset_kit.testing.recording import IntervalRecordingStore, max_overlap, read_intervals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SRC = "src"


def source(store: LocalStore, days: int = 6, stores: int = 4) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"day": d, "shop": s, "qty": d * 100 + s} for d in range(days) for s in range(stores)]
    )
    dk.write_dataset(df, store=store, dataset_uuid=SRC, partition_on=["day", "shop"])
    return df


def run_all_pipelines(store: LocalStore, backup_store: LocalStore, scheduler: Any) -> None:
    """Compute, repartition, GC, backup, verify, restore on one scheduler; check every
    result."""
    df = source(store)

    def tag(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(pid=os.getpid(), double=frame["qty"] * 2)

    meta = dk.pipelines.map_partitions(
        tag, source=SRC, target="out", store=store, partition_on="day", partitions_per_node=2
    ).compute(scheduler=scheduler)
    assert meta.num_partitions == 24
    out = dk.read_table(store=store, dataset_uuid="out")
    assert sorted(out["double"]) == sorted(df["qty"] * 2)
    assert os.getpid() not in set(out["pid"]) or scheduler == "threads"

    # repartition: staged through the local store (the default) and dask's own shuffle
    dask_shuffle = "disk" if scheduler == "threads" else "p2p"
    for method in ("staged", dask_shuffle):
        target = f"by_shop_{method}"
        job = dk.pipelines.repartition(
            SRC,
            target,
            store=store,
            partition_on="shop",
            target_rows_per_file=4,
            shuffle_method=None if method == "staged" else method,  # type: ignore[arg-type]
        )
        meta = job.compute(scheduler=scheduler)
        assert job.shuffle_method == method  # type: ignore[attr-defined]
        assert meta.partition_keys == ("shop",) and meta.num_partitions == 4 * 2
        by_shop = dk.read_table(store=store, dataset_uuid=target)
        assert sorted(by_shop["qty"]) == sorted(df["qty"])
    assert not [k for k in store.iter_keys() if "/_staging/" in k]

    dk.write_dataset(df.head(3), store=store, dataset_uuid="out", mode="overwrite")
    report = dk.pipelines.garbage_collect(
        "out", store=store, grace_period=0, keep_versions=1, batch_size=5
    ).compute(scheduler=scheduler)
    assert report.count == 24 and not report.failed
    assert len(dk.read_table(store=store, dataset_uuid="out")) == 3

    copy = dk.pipelines.backup(SRC, source=store, target=backup_store, batch_size=5).compute(
        scheduler=scheduler
    )
    assert copy.copied == 24
    assert dk.pipelines.verify(SRC, store=backup_store, deep=True).compute(scheduler=scheduler).ok
    dk.delete_dataset(store=store, dataset_uuid=SRC)
    dk.pipelines.restore(SRC, source=backup_store, target=store).compute(scheduler=scheduler)
    back = dk.read_table(store=store, dataset_uuid=SRC)
    assert sorted(back["qty"]) == sorted(df["qty"])


def test_local_cluster_as_the_active_client(tmp_path: Path) -> None:
    store, vault = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    with local_cluster(n_workers=2, threads_per_worker=1):
        run_all_pipelines(store, vault, scheduler=None)  # picks the active client


def test_remote_scheduler_by_address_env_and_scheduler_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with remote_cluster(n_workers=2, tmp_dir=tmp_path / "cluster") as cluster:
        run_all_pipelines(LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b"), cluster.address)
        monkeypatch.setenv(SCHEDULER_ENV, cluster.address)
        run_all_pipelines(LocalStore(tmp_path / "c"), LocalStore(tmp_path / "d"), None)
        monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_file)
        run_all_pipelines(LocalStore(tmp_path / "e"), LocalStore(tmp_path / "f"), None)


def test_threads_give_the_same_result(tmp_path: Path) -> None:
    run_all_pipelines(LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b"), "threads")


def test_unreachable_scheduler_is_a_config_error(tmp_path: Path) -> None:
    import dask

    store = LocalStore(tmp_path / "a")
    source(store, 1, 1)
    job = dk.pipelines.verify(SRC, store=store)
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(ConfigError, match="scheduler"),
    ):
        job.compute(scheduler="tcp://127.0.0.1:9")
    with pytest.raises(ConfigError, match="does not exist"):
        job.compute(scheduler=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError):
        job.compute(scheduler="processes")


def test_storage_concurrency_holds_across_worker_processes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a")
    source(store, 6, 4)
    log_free, log_limited = tmp_path / "free", tmp_path / "limited"
    log_free.mkdir()
    log_limited.mkdir()

    def ident(frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    with local_cluster(n_workers=2, threads_per_worker=3):
        for target, log, limit in (("free", log_free, None), ("lim", log_limited, 2)):
            recorded = IntervalRecordingStore(store, log, delay=0.1)
            dk.pipelines.map_partitions(
                ident,
                source=SRC,
                target=target,
                store=store,
                target_store=recorded,
                partition_on=["day", "shop"],
                storage_concurrency=limit,
                partitions_per_node=1,  # tiny partitions would otherwise share one node
            ).compute()
    free, limited = read_intervals(log_free), read_intervals(log_limited)
    assert len({pid for _, _, pid in limited}) == 2  # both worker processes wrote
    assert max_overlap(limited) <= 2 < max_overlap(free)
    assert len(dk.read_table(store=store, dataset_uuid="lim")) == 24


def test_worker_killed_mid_pipeline_completes_without_duplicates(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a")
    df = source(store, 6, 4)
    marker = tmp_path / "killed-once"

    def die_once(frame: pd.DataFrame) -> pd.DataFrame:
        if frame["qty"].iloc[0] == 302 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task; the nanny restarts it
        return frame

    with local_cluster(n_workers=2, threads_per_worker=1):
        # three calls per node: the killed node had written some of its blobs already
        meta = dk.pipelines.map_partitions(
            die_once,
            source=SRC,
            target="out",
            store=store,
            partition_on=["day", "shop"],
            partitions_per_node=3,
        ).compute()
    assert marker.exists()
    out = dk.read_table(store=store, dataset_uuid="out")
    assert len(out) == len(df) and meta.num_partitions == 24
    assert sorted(out["qty"]) == sorted(df["qty"])  # nothing missing, nothing twice
