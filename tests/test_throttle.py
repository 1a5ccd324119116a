"""Throttles: process-local semaphores and distributed.Semaphore on a real LocalCluster."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from dataset_kit.exceptions import ConfigError, InvalidInputError
from dataset_kit.throttle import Throttle, _reset_local_registry, as_throttle, throttled


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    _reset_local_registry()
    yield
    _reset_local_registry()


class _Holders:
    """Counts the threads inside a throttle and remembers the maximum."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.max = 0

    def enter(self) -> None:
        with self._lock:
            self.current += 1
            self.max = max(self.max, self.current)

    def exit(self) -> None:
        with self._lock:
            self.current -= 1


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        current += step
        peak = max(peak, current)
    return peak


# --------------------------------------------------------------------------- local
def test_local_threads_never_exceed_the_limit() -> None:
    throttle = Throttle("local-threads", 2)
    holders = _Holders()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(150):
                if i % 2:
                    with throttle:
                        holders.enter()
                        time.sleep(0.0005)
                        holders.exit()
                else:
                    assert throttle.acquire(timeout=10)
                    try:
                        holders.enter()
                        time.sleep(0.0005)
                        holders.exit()
                    finally:
                        throttle.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert holders.max == 2
    assert throttle.backend == "local"


def test_local_copies_share_one_semaphore_and_time_out() -> None:
    first = Throttle("local-shared", 2, timeout=0.05)
    second = pickle.loads(pickle.dumps(first))
    assert first.acquire()
    assert second.acquire()
    assert not Throttle("local-shared", 2).acquire(timeout=0)  # both leases are taken
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="local-shared"):
        with first:
            pass
    assert time.monotonic() - start >= 0.04
    first.release()
    second.release()
    with first, second:
        pass


def test_release_without_acquire_raises() -> None:
    throttle = Throttle("local-release", 1)
    with pytest.raises(RuntimeError, match="local-release"):
        throttle.release()
    with throttle:
        pass
    with pytest.raises(RuntimeError):
        throttle.release()


def test_one_name_has_one_limit() -> None:
    with Throttle("local-conflict", 2):
        pass
    with pytest.raises(ConfigError, match="local-conflict"):
        Throttle("local-conflict", 3).acquire()


def test_dask_threaded_scheduler_uses_the_local_semaphore() -> None:
    dask = pytest.importorskip("dask")
    throttle = Throttle("local-dask", 2)
    holders = _Holders()

    def task(t: Throttle) -> str:
        with t:
            holders.enter()
            time.sleep(0.02)
            holders.exit()
            return t.backend

    tasks = [dask.delayed(task)(throttle) for _ in range(16)]
    backends = dask.compute(*tasks, scheduler="threads", num_workers=8)
    assert set(backends) == {"local"}
    assert holders.max == 2


def test_importing_does_not_import_distributed() -> None:
    code = (
        "import sys\n"
        "import dataset_kit\n"
        "from dataset_kit.throttle import Throttle\n"
        "t = Throttle('subprocess', 1)\n"
        "with t:\n"
        "    assert t.backend == 'local'\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- spec
def test_pickle_keeps_only_the_spec() -> None:
    throttle = Throttle("spec", 3, timeout=1.5)
    with throttle:  # resolved and holding a lease while pickled
        for dumped in (pickle.dumps(throttle), cloudpickle.dumps(throttle)):
            assert b"Semaphore" not in dumped
            assert b"threading" not in dumped
            assert b"distributed" not in dumped
            copy = pickle.loads(dumped)
            assert (copy.name, copy.limit, copy.timeout) == ("spec", 3, 1.5)
            assert copy == throttle
            assert hash(copy) == hash(throttle)
            with pytest.raises(RuntimeError):
                copy.release()  # the copy holds no lease
    assert repr(throttle) == "Throttle(name='spec', limit=3, timeout=1.5)"
    assert Throttle("spec", 3) == throttle  # timeout is not part of the identity
    assert Throttle("spec", 4) != throttle
    assert Throttle("other", 3) != throttle
    assert throttle != ("spec", 3)


@pytest.mark.parametrize("limit", [0, -1, True, 2.0, "2", None])
def test_invalid_limit(limit: Any) -> None:
    with pytest.raises(InvalidInputError):
        Throttle("x", limit)


@pytest.mark.parametrize("name", ["", "   ", 3, None, b"db"])
def test_invalid_name(name: Any) -> None:
    with pytest.raises(InvalidInputError):
        Throttle(name, 1)


@pytest.mark.parametrize("timeout", [-1, math.nan, "1", True])
def test_invalid_timeout(timeout: Any) -> None:
    with pytest.raises(InvalidInputError):
        Throttle("x", 1, timeout=timeout)
    with pytest.raises(InvalidInputError):
        Throttle("x", 1).acquire(timeout=timeout)


def test_as_throttle() -> None:
    existing = Throttle("db", 2)
    assert as_throttle(existing, name="ignored") is existing
    assert as_throttle(None, name="db") is None
    converted = as_throttle(4, name="storage")
    assert converted == Throttle("storage-4", 4)
    assert as_throttle(4, name="storage") == converted  # same int: one shared throttle
    for bad in (0, -3, True, 2.5, "4", [4]):
        with pytest.raises(InvalidInputError):
            as_throttle(bad, name="db")  # type: ignore[arg-type]


def test_throttled() -> None:
    with throttled(None) as nothing:
        assert nothing is None
    throttle = Throttle("throttled", 1)
    with throttled(throttle) as held:
        assert held is throttle
        assert not throttle.acquire(timeout=0)
    assert throttle.acquire(timeout=0)
    throttle.release()


# --------------------------------------------------------------------------- distributed
def _hold(throttle: Throttle | None, seconds: float) -> dict[str, Any]:
    """Task: hold ``throttle`` (or nothing) for ``seconds``; report when, where and how."""
    with throttled(throttle):
        start = time.time()
        time.sleep(seconds)
        end = time.time()
    backend = throttle.backend if throttle is not None else None
    return {"start": start, "end": end, "pid": os.getpid(), "backend": backend}


def _acquire_within(throttle: Throttle, timeout: float) -> bool | str:
    """Task: try to take and give back one lease; ``"ConfigError"`` on a limit conflict."""
    try:
        if not throttle.acquire(timeout=timeout):
            return False
    except ConfigError:
        return "ConfigError"
    throttle.release()
    return True


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=3,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # None still binds 8787; ":0" binds 0.0.0.0
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _run_holders(client: Any, throttle: Throttle | None) -> list[dict[str, Any]]:
    import dask

    tasks = [dask.delayed(_hold, pure=False)(throttle, 0.3) for _ in range(12)]
    return list(client.gather(client.compute(tasks), errors="raise"))


def test_distributed_limit_holds_across_processes(dask_client: Any) -> None:
    throttle = Throttle("dist-limit", 2)
    results = _run_holders(dask_client, throttle)
    overlap = _max_overlap([(r["start"], r["end"]) for r in results])
    assert {r["backend"] for r in results} == {"distributed"}
    assert len({r["pid"] for r in results}) == 2  # both worker processes held leases
    assert overlap == 2


def test_distributed_without_throttle_oversubscribes(dask_client: Any) -> None:
    results = _run_holders(dask_client, None)
    overlap = _max_overlap([(r["start"], r["end"]) for r in results])
    assert overlap > 2  # the measurement does see more holders than a limit of 2


def test_distributed_client_side_and_conflicting_limit(dask_client: Any) -> None:
    throttle = Throttle("dist-client", 1)
    assert throttle.backend == "distributed"  # an active client in this process
    with throttle:  # the client process holds the cluster-wide lease
        assert dask_client.submit(_acquire_within, throttle, 0.3, pure=False).result() is False
    assert dask_client.submit(_acquire_within, throttle, 5, pure=False).result() is True
    conflicting = Throttle("dist-client", 5)
    assert dask_client.submit(_acquire_within, conflicting, 5, pure=False).result() == (
        "ConfigError"
    )
    with pytest.raises(ConfigError, match="dist-client"):
        conflicting.acquire()


# --------------------------------------------------------------------------- worker death
def _hold_then_die(throttle: Throttle, marker: str) -> dict[str, Any]:
    """Task: acquire; on the first attempt kill this worker process while holding the lease."""
    import dask

    with throttle:
        acquired = time.time()
        if not os.path.exists(marker):
            info = {
                "kill_time": time.time(),
                "pid": os.getpid(),
                "lease_timeout": dask.config.get("distributed.scheduler.locks.lease-timeout"),
            }
            Path(marker + ".tmp").write_text(json.dumps(info))
            os.replace(marker + ".tmp", marker)
            os._exit(1)
        time.sleep(0.1)
    return {"acquired": acquired, "pid": os.getpid()}


def _wait_for_lease(throttle: Throttle) -> dict[str, Any]:
    requested = time.time()
    with throttle:
        acquired = time.time()
        time.sleep(0.1)
    return {"requested": requested, "acquired": acquired, "pid": os.getpid()}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dead_worker_frees_its_lease_after_lease_timeout(tmp_path: Path) -> None:
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    marker = str(tmp_path / "killed.json")
    throttle = Throttle("dist-death", 1)
    lease_config = {
        "distributed.scheduler.locks.lease-timeout": "3s",
        "distributed.scheduler.locks.lease-validation-interval": "0.5s",
    }
    with (
        dask.config.set(lease_config),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # None still binds 8787; ":0" binds 0.0.0.0
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        killer = client.compute(dask.delayed(_hold_then_die, pure=False)(throttle, marker))
        deadline = time.monotonic() + 30
        while not os.path.exists(marker):
            assert time.monotonic() < deadline, "the killer task never acquired the throttle"
            time.sleep(0.05)
        killed = json.loads(Path(marker).read_text())
        waiter = client.compute(dask.delayed(_wait_for_lease, pure=False)(throttle))
        distributed.wait([killer, waiter], timeout=60)
        retried, waited = killer.result(), waiter.result()

    assert killed["lease_timeout"] == "3s"  # the config reached the worker processes
    assert retried["pid"] != killed["pid"]  # the killer ran again in another process
    first_after_kill = min(retried["acquired"], waited["acquired"])
    recovery = first_after_kill - killed["kill_time"]
    # The dead worker's lease blocked everyone for about lease-timeout, then expired.
    assert 2.0 < recovery < 20, recovery
    assert max(retried["acquired"], waited["acquired"]) - killed["kill_time"] < 20


def test_an_infinite_timeout_waits_like_none() -> None:
    """inf (or any timeout beyond what the platform can wait) passed validation, then
    failed inside the backend with OverflowError (or, on a cluster, a KeyError from
    distributed): it now means "wait forever", like None."""
    throttle = Throttle("local-inf", 1, timeout=math.inf)
    assert throttle.acquire(timeout=1e300)
    waiter_got: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_got.append(throttle.acquire()))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive() and not waiter_got  # waiting, no error
    throttle.release()
    waiter.join(5)
    assert waiter_got == [True]
    throttle.release()
    with pytest.raises(InvalidInputError):
        Throttle("local-inf", 1, timeout=-math.inf)
