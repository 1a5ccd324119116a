"""Tests of dataset_kit.testing.dask_cluster: real dask clusters started for tests."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import distributed
import pytest

import dataset_kit
from dataset_kit.testing.dask_cluster import (
    ClusterStartError,
    RemoteCluster,
    local_cluster,
    remote_cluster,
)

pytestmark = pytest.mark.timeout(120)


def _processes_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _nobody_listens(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            pass
        else:
            return False
    with socket.socket() as sock:  # SO_REUSEADDR: closed connections in TIME_WAIT don't count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
def test_remote_cluster_runs_tasks_in_its_worker_processes(tmp_path: Path) -> None:
    def identity() -> tuple[int, str]:  # nested, so cloudpickle ships it by value
        import dataset_kit

        return os.getpid(), dataset_kit.__file__

    with remote_cluster(n_workers=2, tmp_dir=tmp_path) as cluster:
        assert isinstance(cluster, RemoteCluster)
        assert cluster.address.startswith("tcp://127.0.0.1:")
        assert Path(cluster.scheduler_file).is_file()
        assert len(set(cluster.worker_pids)) == 2
        processes = {*cluster.worker_pids, cluster.scheduler_pid}
        assert os.getpid() not in processes
        assert set(_processes_mentioning(str(tmp_path))) == processes
        with distributed.Client(cluster.address, set_as_default=False) as client:
            workers = sorted(client.nthreads())
            assert len(workers) == 2
            futures = [
                client.compute(dask.delayed(identity, pure=False)(), workers=[worker])
                for worker in workers
            ]
            seen = client.gather(futures)
        assert {pid for pid, _ in seen} == set(cluster.worker_pids)
        # workers import the same dataset_kit as this process
        assert {file for _, file in seen} == {dataset_kit.__file__}

    assert all(_is_gone(pid) for pid in processes)
    assert _processes_mentioning(str(tmp_path)) == []
    assert _nobody_listens(_port(cluster.address))
    assert (tmp_path / "scheduler.log").is_file()
    assert (tmp_path / "worker-1.log").is_file()


@pytest.mark.slow
def test_kill_worker_removes_it_for_good(tmp_path: Path) -> None:
    with remote_cluster(n_workers=2, tmp_dir=tmp_path) as cluster:
        with distributed.Client(cluster.address, set_as_default=False) as client:
            assert len(client.nthreads()) == 2
            cluster.kill_worker(0)
            assert _is_gone(cluster.worker_pids[0])  # killed and reaped
            assert _wait_for(lambda: len(client.nthreads()) == 1, timeout=10)
            # no nanny brings it back, and the other worker still computes
            time.sleep(0.5)
            assert len(client.nthreads()) == 1
            pid = client.submit(os.getpid, pure=False).result(timeout=30)
            assert pid == cluster.worker_pids[1]
            cluster.kill_worker(0)  # already gone: nothing happens
    assert _processes_mentioning(str(tmp_path)) == []


def test_local_cluster_yields_default_client_and_closes_it() -> None:
    with local_cluster(n_workers=2, processes=True, memory_limit="1GiB") as client:
        assert distributed.default_client() is client
        assert client.scheduler is not None
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert len(client.nthreads()) == 2
        # dask.compute goes to the cluster (the default client): tasks run in worker processes
        pids = dask.compute(*[dask.delayed(os.getpid, pure=False)() for _ in range(4)])
        worker_pids = set(client.run(os.getpid).values())
        assert set(pids) <= worker_pids
        assert os.getpid() not in worker_pids
        cluster = client.cluster
        assert cluster is not None
    assert client.status == "closed"
    assert cluster.status.name == "closed"
    with pytest.raises(ValueError, match="No clients found"):
        distributed.default_client()
    assert _wait_for(lambda: all(_is_gone(pid) for pid in worker_pids), timeout=10)


@pytest.mark.parametrize(
    ("kwargs", "failing", "message"),
    [
        pytest.param(
            {"env": {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": "dataset_kit_no_such_preload"}},
            "scheduler",
            "No module named 'dataset_kit_no_such_preload'",
            id="scheduler",
        ),
        pytest.param(
            {"memory_limit": "plenty"}, "worker-", "Could not interpret 'plenty'", id="worker"
        ),
    ],
)
def test_start_failure_raises_with_output_and_leaves_nothing(
    tmp_path: Path, kwargs: dict[str, Any], failing: str, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterStartError, match=f"dask {failing}") as raised:
        with remote_cluster(n_workers=2, tmp_dir=tmp_path, timeout=60, **kwargs):
            pytest.fail("the cluster should not start")
    assert isinstance(raised.value, RuntimeError)
    assert message in str(raised.value)
    assert time.monotonic() - started < 30
    assert _processes_mentioning(str(tmp_path)) == []


def test_start_timeout_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ClusterStartError, match="not ready within"):
        with remote_cluster(n_workers=2, tmp_dir=tmp_path, timeout=0.2):
            pytest.fail("the cluster should not start")
    assert _processes_mentioning(str(tmp_path)) == []
