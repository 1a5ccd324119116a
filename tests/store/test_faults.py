"""FaultInjectingStore: reproducible failures, rates, unknown outcomes, pickling."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_kit.exceptions import ConfigError, StoreError, StoreUnavailableError
from dataset_kit.store import Capability, FaultInjectingStore, LocalStore, MemoryStore
from dataset_kit.store.faults import InjectedTimeoutError, OperationStats


@pytest.fixture
def inner() -> Iterator[MemoryStore]:
    store = MemoryStore()
    yield store
    MemoryStore.drop(store.name)


def _pattern(store: FaultInjectingStore, calls: int) -> list[bool]:
    failed = []
    for _ in range(calls):
        try:
            store.get("k")
        except StoreUnavailableError:
            failed.append(True)
        else:
            failed.append(False)
    return failed


def test_same_seed_same_failures(inner: MemoryStore) -> None:
    inner.put("k", b"v")
    first = _pattern(FaultInjectingStore(inner, fail_rate=0.3, seed=42), 300)
    second = _pattern(FaultInjectingStore(inner, fail_rate=0.3, seed=42), 300)
    other = _pattern(FaultInjectingStore(inner, fail_rate=0.3, seed=43), 300)
    assert first == second
    assert first != other
    assert any(first)
    assert not all(first)


def test_fail_rate_statistics(inner: MemoryStore) -> None:
    inner.put("k", b"v")
    store = FaultInjectingStore(inner, fail_rate=0.2, seed=7)
    calls = 2000
    failed = sum(_pattern(store, calls))
    # binomial(2000, 0.2): sd ~ 17.9; 5 sd either side
    assert abs(failed - 0.2 * calls) < 90
    assert store.stats["get"] == OperationStats(calls=calls, faults=failed, unknown_outcome=0)


def test_failures_happen_before_the_inner_store(inner: MemoryStore) -> None:
    counter = FaultInjectingStore(inner)  # counts what reaches the inner store
    store = FaultInjectingStore(counter, fail_rate=1.0, seed=0)
    for call in (
        lambda: store.put("k", b"v"),
        lambda: store.get("k"),
        lambda: store.get_range("k", 0, 1),
        lambda: store.stat("k"),
        lambda: store.exists("k"),
        lambda: store.delete("k"),
        lambda: store.copy("k", "k2"),
        lambda: store.iter_keys(""),
        lambda: store.iter_infos(""),
    ):
        with pytest.raises(StoreUnavailableError) as info:
            call()
        assert "injected" in str(info.value)
    assert counter.stats == {}
    assert not inner.exists("k")
    assert set(store.stats) == {
        "put",
        "get",
        "get_range",
        "stat",
        "exists",
        "delete",
        "copy",
        "iter_keys",
        "iter_infos",
    }
    assert all(s.calls == 1 and s.faults == 1 for s in store.stats.values())


def test_zero_rate_passes_everything_through(inner: MemoryStore) -> None:
    store = FaultInjectingStore(inner)
    store.put("a/b", b"v")
    assert store.get("a/b") == b"v"
    assert list(store.iter_keys("a/")) == ["a/b"]
    assert store.stats["put"] == OperationStats(calls=1)
    store.reset_stats()
    assert store.stats == {}


def test_timeout_errors(inner: MemoryStore) -> None:
    store = FaultInjectingStore(inner, fail_rate=1.0, seed=1, errors=("timeout",))
    with pytest.raises(InjectedTimeoutError) as info:
        store.get("k")
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, StoreUnavailableError)
    assert info.value.key == "k"
    clone = pickle.loads(pickle.dumps(info.value))  # errors cross process boundaries in dask
    assert type(clone) is InjectedTimeoutError
    assert clone.key == "k"

    mixed = FaultInjectingStore(inner, fail_rate=1.0, seed=1, errors=("unavailable", "timeout"))
    kinds = set()
    for _ in range(50):
        try:
            mixed.get("k")
        except StoreUnavailableError as exc:
            kinds.add(type(exc))
    assert kinds == {StoreUnavailableError, InjectedTimeoutError}


def test_fail_after_write_keeps_the_write(inner: MemoryStore) -> None:
    store = FaultInjectingStore(inner, fail_after_write_rate=1.0, seed=5)
    with pytest.raises(StoreUnavailableError, match="outcome unknown"):
        store.put("k", b"written")
    assert inner.get("k") == b"written"
    with pytest.raises(StoreUnavailableError, match="outcome unknown"):
        store.copy("k", "k2")
    assert inner.get("k2") == b"written"
    with pytest.raises(StoreUnavailableError, match="outcome unknown"):
        store.delete("k")
    assert not inner.exists("k")
    assert store.get("k2") == b"written"  # reads are unaffected
    assert store.stats["put"] == OperationStats(calls=1, faults=0, unknown_outcome=1)


def test_operations_filter(inner: MemoryStore) -> None:
    inner.put("k", b"v")
    store = FaultInjectingStore(inner, fail_rate=1.0, seed=0, operations=frozenset({"put"}))
    assert store.get("k") == b"v"
    with pytest.raises(StoreUnavailableError):
        store.put("k", b"x")
    assert store.stats["get"] == OperationStats(calls=1)


def test_slow_seconds(inner: MemoryStore) -> None:
    store = FaultInjectingStore(inner, slow_seconds=0.05, operations=frozenset({"exists"}))
    start = time.perf_counter()
    store.exists("k")
    assert time.perf_counter() - start >= 0.05
    start = time.perf_counter()
    store.put("k", b"v")  # not affected
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fail_rate": -0.1},
        {"fail_rate": 1.5},
        {"fail_after_write_rate": 2.0},
        {"slow_seconds": -1.0},
        {"errors": ()},
        {"errors": ("boom",)},
        {"operations": frozenset({"gett"})},
    ],
)
def test_invalid_configuration(inner: MemoryStore, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        FaultInjectingStore(inner, **kwargs)  # type: ignore[arg-type]


def test_not_a_store() -> None:
    with pytest.raises(ConfigError):
        FaultInjectingStore("memory://")  # type: ignore[arg-type]


def test_capabilities_url_and_local_path_of_inner(tmp_path: Path) -> None:
    local = LocalStore(tmp_path)
    store = FaultInjectingStore(local)
    assert store.capabilities == local.capabilities
    assert Capability.LOCAL_PATH in store.capabilities
    assert store.url == local.url
    assert store.options == local.options
    store.put("k", b"v")
    assert store.local_path("k") == local.local_path("k")
    assert "fail_rate" in repr(store)


def test_pickling_keeps_configuration_and_data(inner: MemoryStore) -> None:
    inner.put("k", b"v")
    store = FaultInjectingStore(
        inner, fail_rate=0.5, seed=11, fail_after_write_rate=0.1, operations=frozenset({"get"})
    )
    expected = _pattern(FaultInjectingStore(inner, fail_rate=0.5, seed=11), 100)
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone) is FaultInjectingStore
    assert isinstance(clone.inner, MemoryStore)
    assert clone.inner.url == inner.url
    assert _pattern(clone, 100) == expected  # the generator restarts from the seed
    assert clone.stats["get"].calls == 100


def test_wrapped_errors_are_store_errors(inner: MemoryStore) -> None:
    store = FaultInjectingStore(inner, fail_rate=1.0, seed=0)
    with pytest.raises(StoreError):
        store.get("k")
