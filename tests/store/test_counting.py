"""CountingStore: counts by kind, passes calls through, keeps the backend's batching."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pandas as pd

import dataset_kit as dk
from dataset_kit.store import CountingStore, DelegatingStore, MemoryStore, RetryingStore
from dataset_kit.store._base import DeleteReport


def test_counts_every_kind_of_call() -> None:
    store = CountingStore(MemoryStore())
    store.put("a", b"12345")
    store.put("b", b"1", if_absent=True)
    etag = store.stat("a").etag
    store.put("a", b"123", if_match=etag)
    assert store.get("a") == b"123" and store.get_range("a", 1, 1) == b"2"
    assert store.exists("a") and not store.exists("zz")
    assert sorted(store.iter_keys("")) == ["a", "b"]
    store.copy("a", "c")
    store.delete("c")
    report = store.delete_many(["a", "b", "missing"])
    assert sorted(report.deleted) == ["a", "b", "missing"]
    assert dict(store.counts) == {
        "put": 1,
        "put_if_absent": 1,
        "put_if_match": 1,
        "stat": 1,
        "get": 1,
        "get_range": 1,
        "exists": 2,
        "list": 1,
        "copy": 1,
        "delete": 1,
        "delete_many": 1,
        "delete_many_keys": 3,
        "bytes_written": 9,
        "bytes_read": 4,
    }
    assert store.requests() == 12
    assert store.reset()["get"] == 1 and store.requests() == 0


def test_measure_counts_only_the_calls_inside() -> None:
    store = CountingStore(MemoryStore())
    dk.write_dataset(pd.DataFrame({"x": [1, 2]}), store=store, dataset_uuid="d")
    with store.measure() as calls:
        dk.read_table(store=store, dataset_uuid="d")
    assert calls["put"] == calls["put_if_absent"] == 0
    assert calls["get"] >= 2  # the pointer and the data
    assert store.counts["put_if_absent"] == 2


def test_counts_are_exact_under_threads() -> None:
    store = CountingStore(MemoryStore())
    store.put("k", b"x")

    def work() -> None:
        for _ in range(500):
            store.get("k")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts["get"] == 4000


def test_pickles_without_its_counts() -> None:
    store = CountingStore(MemoryStore())
    store.put("k", b"x")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("k") == b"x" and clone.counts["get"] == 1 and store.counts["get"] == 0


class _Batching(DelegatingStore):
    """Records the batch deletes that reach it."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.batches: list[int] = []

    def delete_many(self, keys):  # type: ignore[no-untyped-def]
        keys = list(keys)
        self.batches.append(len(keys))
        return self.inner.delete_many(keys)


def test_wrappers_keep_the_backends_batch_delete() -> None:
    """Wrapping a store (counting, retries) must not turn one batch into one call per key."""
    backend = _Batching(MemoryStore())
    for i in range(10):
        backend.put(f"k{i}", b"x")
    store = CountingStore(RetryingStore(backend))
    report = store.delete_many([f"k{i}" for i in range(10)])
    assert len(report.deleted) == 10 and backend.batches == [10]
    assert list(backend.iter_keys("")) == []


def test_retrying_store_retries_the_keys_a_batch_failed() -> None:
    class FailOnce(DelegatingStore):
        failed = False

        def delete_many(self, keys, **options):  # type: ignore[no-untyped-def]
            keys = list(keys)
            if self.failed:
                return self.inner.delete_many(keys, **options)
            from dataset_kit.exceptions import StoreUnavailableError

            self.failed = True
            report = self.inner.delete_many(keys[1:], **options)
            report.failed[keys[0]] = StoreUnavailableError("503 ServerBusy")
            return report

    backend = MemoryStore()
    for i in range(3):
        backend.put(f"k{i}", b"x")
    store = RetryingStore(FailOnce(backend), base_delay=0.0)
    report = store.delete_many(["k0", "k1", "k2"])
    assert isinstance(report, DeleteReport)
    assert sorted(report.deleted) == ["k0", "k1", "k2"] and not report.failed
    assert list(backend.iter_keys("")) == []


def test_retried_keys_keep_the_directory_rule(tmp_path: Path) -> None:
    """A key retried after a failed batch is deleted as in the batch: with
    ``prune_dirs=False`` its emptied directory stays, as the others' do."""
    from dataset_kit.exceptions import StoreUnavailableError
    from dataset_kit.store import LocalStore

    class FailFirst(DelegatingStore):
        calls = 0

        def delete_many(self, keys, **options):  # type: ignore[no-untyped-def]
            keys = list(keys)
            self.calls += 1
            if self.calls > 1:
                return self.inner.delete_many(keys, **options)
            report = self.inner.delete_many(keys[1:], **options)
            report.failed[keys[0]] = StoreUnavailableError("503 ServerBusy")
            return report

    for prune in (False, True):
        backend = LocalStore(tmp_path / f"prune-{prune}")
        keys = [f"t/p={i}/blob" for i in range(3)]
        for key in keys:
            backend.put(key, b"x")
        store = RetryingStore(FailFirst(backend), base_delay=0.0)
        report = store.delete_many(keys, prune_dirs=prune)
        assert sorted(report.deleted) == keys and not report.failed
        left = sorted(p.name for p in (tmp_path / f"prune-{prune}" / "t").glob("p=*"))
        assert left == ([] if prune else ["p=0", "p=1", "p=2"])


def test_wrappers_pass_touch_on_as_one_call() -> None:
    """Retrying, throttled and counting wrappers forward ``touch`` (one metadata request
    on Azure); only a wrapper that hooks writes rewrites the blob through its own put."""
    from dataset_kit.pipelines._stores import ThrottledStore
    from dataset_kit.throttle import Throttle

    counted = CountingStore(MemoryStore())
    counted.put("k", b"x")
    wrapped = ThrottledStore(RetryingStore(counted), Throttle("storage", 1))
    wrapped.touch("k")
    assert counted.counts["touch"] == 1 and counted.counts["put"] == 1  # only the first put

    class HookedPut(DelegatingStore):
        puts = 0

        def _put(self, key, data, *, if_absent, if_match):  # type: ignore[no-untyped-def]
            HookedPut.puts += 1
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    HookedPut(counted).touch("k")
    assert HookedPut.puts == 1 and counted.get("k") == b"x"


def test_counts_links_and_forwards_them(tmp_path: Path) -> None:
    from dataset_kit.store import LocalStore

    source, target = LocalStore(tmp_path / "a"), CountingStore(LocalStore(tmp_path / "b"))
    source.put("k", b"data")
    info = target.link_from(source, "k", "k")
    assert info is not None and target.get("k") == b"data"
    assert target.counts["link_from"] == 1
    assert (tmp_path / "a/k").stat().st_ino == (tmp_path / "b/k").stat().st_ino
    retrying = RetryingStore(LocalStore(tmp_path / "c"))
    assert retrying.link_from(target, "k", "k") is not None  # through both wrappers
    memory = CountingStore(MemoryStore())
    assert memory.link_from(source, "k", "k") is None
    assert memory.counts["link_from"] == 0  # nothing linked: the copy is what counts
