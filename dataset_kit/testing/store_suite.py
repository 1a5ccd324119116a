"""A conformance suite that every :class:`~dataset_kit.store.Store` backend must pass.

Subclass :class:`StoreConformanceSuite` in a test module (the class name must start with
``Test``) and provide a ``store`` fixture that returns a fresh, empty store::

    import pytest
    from dataset_kit.testing.store_suite import StoreConformanceSuite

    class TestMyBackend(StoreConformanceSuite):
        @pytest.fixture
        def store(self, tmp_path):
            return MyBackend(tmp_path)

Class attributes describe the limits of a backend (see :class:`StoreConformanceSuite`);
tests of optional capabilities check that undeclared ones raise
:class:`~dataset_kit.exceptions.UnsupportedOperationError`.

This module imports pytest: it is part of the ``testing`` extra.
"""

from __future__ import annotations

import pickle
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pytest

from dataset_kit.exceptions import (
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    PreconditionFailedError,
    UnsafeCommitWarning,
    UnsupportedOperationError,
)
from dataset_kit.store import BlobInfo, Capability, DeleteReport, Store
from dataset_kit.testing.processes import run_in_processes

__all__ = ["INVALID_KEYS", "QUOTED_KEYS", "StoreConformanceSuite", "race_create_only_in_processes"]

#: Keys every backend must reject with InvalidKeyError.
INVALID_KEYS: tuple[Any, ...] = (
    "",
    "../x",
    "a/../b",
    "a//b",
    "/a",
    "a/",
    "a/./b",
    ".",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\ud800b",  # a lone surrogate: not UTF-8
    None,
    b"bytes-key",
)

#: URL-quoted keys (what datasets store): every backend must store them verbatim.
QUOTED_KEYS: tuple[str, ...] = (
    "a%20b",
    "a%2Fb",
    "col=value",
    "date=2024-01-01/part%3D1.parquet",
    "a+b",
    "a~b",
    "caf%C3%A9/%E6%97%A5%E6%9C%AC",
    "x%25y",
)

#: Keys with raw (unquoted) non-ASCII text.
RAW_UNICODE_KEYS: tuple[str, ...] = ("café/ü.bin", "日本/データ", "emoji-\U0001f600")

_THREADS = 16


def _run_threads(n: int, target: Callable[[int], Any], *, timeout: float = 60.0) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads started together; return results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = target(i)
        except BaseException as exc:  # collected and checked by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"thread did not finish within {timeout} s")
    return results


def _create_only_worker(store: Store, key: str, payload: bytes, barrier: Any, results: Any) -> None:
    """Process target of :func:`race_create_only_in_processes` (module level: picklable)."""
    try:
        barrier.wait(60)
        store.put(key, payload, if_absent=True)
    except KeyExistsError:
        results.put((payload, "exists"))
    except BaseException as exc:  # reported to the parent
        results.put((payload, f"error: {exc!r}"))
    else:
        results.put((payload, "won"))


def race_create_only_in_processes(
    store: Store, key: str, processes: int = 4, *, timeout: float = 60.0
) -> dict[bytes, str]:
    """Race ``put(key, if_absent=True)`` from ``processes`` fresh ("spawn") processes.

    The store travels to each process by pickling, so it must be shared across processes
    (e.g. a LocalStore or a cloud store). All processes wait on a barrier, then write a
    payload of their own.

    Returns
    -------
    dict
        Payload -> ``"won"``, ``"exists"`` or ``"error: ..."`` for each process.
    """
    payloads = [f"process-{i}".encode() for i in range(processes)]
    return run_in_processes(
        _create_only_worker, [(store, key, p) for p in payloads], timeout=timeout
    )


class StoreConformanceSuite:
    """Behaviour every :class:`~dataset_kit.store.Store` backend must have.

    Subclasses provide a ``store`` fixture returning a fresh, empty store and may adjust
    these class attributes:

    Attributes
    ----------
    supports_raw_unicode_keys
        Raw non-ASCII keys round-trip; if False they must raise InvalidKeyError.
    reports_mtime
        ``stat().mtime`` is the time of the write; if False it only has to be a float.
    pickle_shares_data
        A pickled copy sees writes made through the original afterwards (and vice
        versa); if False the copy only has to see what existed when it was pickled.
    large_value_size
        Size of the large-value round trip.
    threads
        Threads used by the concurrency tests.
    run_cross_process_tests
        Also race create-only writes from several processes (slow: spawns processes;
        only for stores shared across processes).
    """

    supports_raw_unicode_keys: ClassVar[bool] = True
    reports_mtime: ClassVar[bool] = True
    pickle_shares_data: ClassVar[bool] = True
    large_value_size: ClassVar[int] = 32 * 1024 * 1024
    threads: ClassVar[int] = _THREADS
    run_cross_process_tests: ClassVar[bool] = False

    # ------------------------------------------------------------------ basics
    def test_capabilities_are_declared(self, store: Store) -> None:
        """Capabilities are a frozenset of Capability; the URL is a URL."""
        assert isinstance(store.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in store.capabilities)
        assert isinstance(store.url, str)
        assert "://" in store.url
        assert isinstance(repr(store), str)

    def test_put_get_round_trip(self, store: Store) -> None:
        """``put`` returns the new blob's info and ``get`` returns its bytes."""
        info = store.put("dir/blob.bin", b"hello world")
        assert isinstance(info, BlobInfo)
        assert info.key == "dir/blob.bin"
        assert info.size == 11
        assert store.get("dir/blob.bin") == b"hello world"

    def test_put_accepts_bytes_like(self, store: Store) -> None:
        """bytearray and memoryview (of any item size) are stored as their bytes."""
        store.put("ba", bytearray(b"abc"))
        store.put("mv", memoryview(b"xabcx")[1:4])
        wide = memoryview(bytearray(range(8))).cast("I")  # 2 items of 4 bytes
        assert store.put("wide", wide).size == 8
        assert store.get("ba") == store.get("mv") == b"abc"
        assert store.get("wide") == bytes(range(8))

    def test_put_rejects_text(self, store: Store) -> None:
        """``str`` data is a TypeError, and nothing is written."""
        with pytest.raises(TypeError):
            store.put("text", "not bytes")  # type: ignore[arg-type]
        assert not store.exists("text")

    def test_overwrite_replaces_content(self, store: Store) -> None:
        """A plain put replaces the whole blob."""
        store.put("k", b"first version")
        store.put("k", b"v2")
        assert store.get("k") == b"v2"
        assert store.stat("k").size == 2

    def test_empty_value(self, store: Store) -> None:
        """Empty blobs exist, are listed and read back empty."""
        info = store.put("empty", b"")
        assert info.size == 0
        assert store.get("empty") == b""
        assert store.exists("empty")
        assert store.stat("empty").size == 0
        assert store.get_range("empty", 0, 10) == b""
        assert list(store.iter_keys("empty")) == ["empty"]

    def test_large_value(self, store: Store) -> None:
        """A large blob (``large_value_size``) round-trips intact."""
        size = self.large_value_size
        pattern = bytes(range(251))  # prime length: shifted in every 256-byte window
        data = (pattern * (size // len(pattern) + 1))[:size]
        assert store.put("large/blob", data).size == size
        assert store.stat("large/blob").size == size
        assert store.get("large/blob") == data
        assert store.get_range("large/blob", size - 100, 1000) == data[-100:]

    def test_all_byte_values(self, store: Store) -> None:
        """Binary content with every byte value round-trips (no text mode)."""
        data = bytes(range(256)) * 3 + b"\r\n\x00\x1a\xff"
        store.put("binary", data)
        assert store.get("binary") == data

    @pytest.mark.parametrize("key", ["missing/key", "missing/InvalidRange.bin"])
    def test_missing_key(self, store: Store, key: str) -> None:
        """Reads of a missing key raise KeyNotFoundError (a KeyError) with ``key`` set
        (whatever the key's text: a range read once decided by an error's text)."""
        for call in (
            lambda: store.get(key),
            lambda: store.stat(key),
            lambda: store.get_range(key, 0, 1),
            lambda: store.get_range(key, 0, 0),
        ):
            with pytest.raises(KeyNotFoundError) as info:
                call()
            assert info.value.key == key
            assert isinstance(info.value, KeyError)
        assert not store.exists(key)

    def test_prefix_of_a_key_is_not_a_key(self, store: Store) -> None:
        """A key's directory-like prefixes are not keys."""
        store.put("dir/sub/blob", b"x")
        for key in ("dir", "dir/sub"):
            assert not store.exists(key)
            with pytest.raises(KeyNotFoundError):
                store.get(key)
            with pytest.raises(KeyNotFoundError):
                store.stat(key)

    def test_delete(self, store: Store) -> None:
        """Deleted blobs are gone; their former directory can be written again."""
        store.put("a/b/c", b"x")
        store.put("a/keep", b"y")
        store.delete("a/b/c")
        assert not store.exists("a/b/c")
        with pytest.raises(KeyNotFoundError):
            store.get("a/b/c")
        assert sorted(store.iter_keys("a")) == ["a/keep"]
        store.put("a/b/c", b"again")  # the emptied directory can be written again
        assert store.get("a/b/c") == b"again"

    def test_delete_missing_is_noop(self, store: Store) -> None:
        """Deleting a missing key is not an error, also twice."""
        store.delete("never/existed")
        store.put("k", b"x")
        store.delete("k")
        store.delete("k")
        assert not store.exists("k")

    def test_exists(self, store: Store) -> None:
        """``exists`` tells present from absent keys."""
        assert not store.exists("e")
        store.put("e", b"1")
        assert store.exists("e")
        assert not store.exists("e2")

    def test_context_manager(self, store: Store) -> None:
        """The store is a context manager and usable after ``close``."""
        with store as entered:
            assert entered is store
        store.put("after-close", b"usable")
        assert store.get("after-close") == b"usable"

    # ------------------------------------------------------------------ stat
    def test_stat(self, store: Store) -> None:
        """``stat`` reports size, a non-empty etag equal to ``put``'s, and the mtime."""
        before = time.time()
        put_info = store.put("s/blob", b"12345")
        after = time.time()
        info = store.stat("s/blob")
        assert info.key == "s/blob"
        assert info.size == 5
        assert isinstance(info.etag, str)
        assert info.etag
        assert info.etag == put_info.etag
        assert put_info.size == 5
        assert isinstance(info.mtime, float)
        if self.reports_mtime:
            assert before - 5 <= info.mtime <= after + 5
            assert abs(info.mtime - put_info.mtime) < 1
        else:
            assert info.mtime >= 0

    def test_get_with_info(self, store: Store) -> None:
        """``get_with_info`` returns ``get``'s bytes and ``stat``'s info; the etag is the
        one to swap against, and it moves with every overwrite."""
        first = store.put("gi/blob", b"first")
        data, info = store.get_with_info("gi/blob")
        assert data == b"first" and data == store.get("gi/blob")
        assert (info.key, info.size, info.etag) == ("gi/blob", 5, first.etag)
        assert info.etag == store.stat("gi/blob").etag
        store.put("gi/blob", b"second!")
        data, newer = store.get_with_info("gi/blob")
        assert (data, newer.size) == (b"second!", 7)
        assert newer.etag != info.etag
        if Capability.COMPARE_AND_SWAP in store.capabilities:
            with pytest.raises(PreconditionFailedError):
                store.put("gi/blob", b"stale", if_match=info.etag)
            store.put("gi/blob", b"third", if_match=newer.etag)
            assert store.get("gi/blob") == b"third"
        with pytest.raises(KeyNotFoundError):
            store.get_with_info("gi/missing")
        with pytest.raises(InvalidKeyError):
            store.get_with_info("../escape")

    def test_etag_changes_on_overwrite(self, store: Store) -> None:
        """Every overwrite with new content gives a new etag."""
        first = store.put("v", b"one")
        second = store.put("v", b"two!")
        assert first.etag != second.etag
        assert store.stat("v").etag == second.etag
        third = store.put("v", b"three")
        assert len({first.etag, second.etag, third.etag}) == 3

    # ------------------------------------------------------------------ ranges
    def test_get_range(self, store: Store) -> None:
        """Ranges at the start, the middle and past the end; negative ones are errors."""
        data = bytes(range(100))
        store.put("r", data)
        assert store.get_range("r", 0, 10) == data[:10]
        assert store.get_range("r", 40, 20) == data[40:60]
        assert store.get_range("r", 90, 50) == data[90:]
        assert store.get_range("r", 100, 5) == b""
        assert store.get_range("r", 500, 5) == b""
        assert store.get_range("r", 10, 0) == b""
        with pytest.raises(ValueError):
            store.get_range("r", -1, 5)
        with pytest.raises(ValueError):
            store.get_range("r", 0, -5)

    # ------------------------------------------------------------------ listing
    def test_prefix_listing(self, store: Store) -> None:
        """Listing uses plain string prefixes (``ab`` vs ``ab/`` vs ``abc``)."""
        keys = ["ab.json", "ab/x", "ab/c/d", "abc/y", "a", "b/ab", "zz/top"]
        for key in keys:
            store.put(key, key.encode())

        def listed(prefix: str) -> list[str]:
            return sorted(store.iter_keys(prefix))

        assert listed("") == sorted(keys)
        assert listed("ab") == ["ab.json", "ab/c/d", "ab/x", "abc/y"]
        assert listed("ab/") == ["ab/c/d", "ab/x"]
        assert listed("abc") == ["abc/y"]
        assert listed("ab/c") == ["ab/c/d"]
        assert listed("ab/c/") == ["ab/c/d"]
        assert listed("ab/c/d") == ["ab/c/d"]
        assert listed("a") == ["a", "ab.json", "ab/c/d", "ab/x", "abc/y"]
        assert listed("b/") == ["b/ab"]
        assert listed("nothing") == []
        assert listed("nothing/below/") == []
        assert listed("ab/x/") == []
        assert listed("../") == []
        infos = {info.key: info for info in store.iter_infos("ab")}
        assert sorted(infos) == listed("ab")
        for key, info in infos.items():
            assert info.size == len(key.encode())
            assert info.etag == store.stat(key).etag

    def test_shallow_listing(self, store: Store) -> None:
        """``iter_shallow_keys`` lists one level: no key with a ``/`` after the prefix."""
        keys = ["ab.json", "ab/x", "ab/c/d", "abc/y", "a", "b/ab", "zz/top", "ab/c.json"]
        for key in keys:
            store.put(key, key.encode())

        def shallow(prefix: str) -> list[str]:
            return sorted(store.iter_shallow_keys(prefix))

        assert shallow("") == ["a", "ab.json"]
        assert shallow("ab") == ["ab.json"]
        assert shallow("ab/") == ["ab/c.json", "ab/x"]
        assert shallow("ab/c") == ["ab/c.json"]
        assert shallow("ab/c/") == ["ab/c/d"]
        assert shallow("nothing/") == []

    def test_listing_skips_deleted(self, store: Store) -> None:
        """Deleted keys are neither listed by keys nor by infos."""
        for i in range(5):
            store.put(f"del/{i}", b"x")
        store.delete("del/2")
        assert sorted(store.iter_keys("del/")) == ["del/0", "del/1", "del/3", "del/4"]
        assert sorted(i.key for i in store.iter_infos("del/")) == [
            "del/0",
            "del/1",
            "del/3",
            "del/4",
        ]

    def test_listing_never_shows_temporary_files(self, store: Store) -> None:
        """Listing during writes shows only real keys (no temporary files)."""
        expected = {f"busy/{i}" for i in range(4)}
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                payload = b"x" * 200_000
                while not stop.is_set():
                    for key in sorted(expected):
                        store.put(key, payload)
            except BaseException as exc:
                errors.append(exc)

        for key in expected:
            store.put(key, b"seed")
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                assert set(store.iter_keys("busy/")) == expected
                assert set(store.iter_keys("")) == expected
                assert {i.key for i in store.iter_infos("busy")} == expected
        finally:
            stop.set()
            thread.join(30)
        assert not errors, errors

    # ------------------------------------------------------------------ keys
    @pytest.mark.parametrize("key", QUOTED_KEYS)
    def test_quoted_keys(self, store: Store, key: str) -> None:
        """URL-quoted keys are stored and listed verbatim, never decoded."""
        store.put(key, key.encode())
        assert store.get(key) == key.encode()
        assert store.exists(key)
        assert list(store.iter_keys(key)) == [key]
        assert list(store.iter_keys()) == [key]
        store.delete(key)
        assert not store.exists(key)

    def test_quoted_keys_are_distinct(self, store: Store) -> None:
        """Quoted and unquoted spellings are different keys."""
        store.put("a%2Fb", b"quoted")
        store.put("a/b", b"nested")
        store.put("a b", b"space")
        store.put("a%20b", b"quoted space")
        assert store.get("a%2Fb") == b"quoted"
        assert store.get("a/b") == b"nested"
        assert store.get("a b") == b"space"
        assert store.get("a%20b") == b"quoted space"

    @pytest.mark.parametrize("key", RAW_UNICODE_KEYS)
    def test_raw_unicode_keys(self, store: Store, key: str) -> None:
        """Raw non-ASCII keys round-trip (or are InvalidKeyError where unsupported)."""
        if not self.supports_raw_unicode_keys:
            with pytest.raises(InvalidKeyError):
                store.put(key, b"x")
            return
        store.put(key, key.encode())
        assert store.get(key) == key.encode()
        assert list(store.iter_keys(key.split("/")[0])) == [key]

    @pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
    def test_invalid_keys(self, store: Store, key: Any) -> None:
        """Malformed keys raise InvalidKeyError in every operation and write nothing."""
        calls: list[Callable[[], object]] = [
            lambda: store.get(key),
            lambda: store.get_range(key, 0, 1),
            lambda: store.stat(key),
            lambda: store.exists(key),
            lambda: store.put(key, b"x"),
            lambda: store.delete(key),
            lambda: store.touch(key),
            lambda: store.copy(key, "ok"),
        ]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                call()
        store.put("ok", b"x")
        with pytest.raises(InvalidKeyError):
            store.copy("ok", key)
        assert list(store.iter_keys()) == ["ok"]

    # ------------------------------------------------------------------ create-only
    def test_create_only(self, store: Store) -> None:
        """``put(if_absent=True)`` creates once, then raises KeyExistsError."""
        if Capability.ATOMIC_CREATE not in store.capabilities:
            with pytest.raises(UnsupportedOperationError):
                store.put("c", b"x", if_absent=True)
            assert not store.exists("c")
            return
        info = store.put("c/1", b"first", if_absent=True)
        assert info.size == 5
        with pytest.raises(KeyExistsError) as exc_info:
            store.put("c/1", b"second", if_absent=True)
        assert exc_info.value.key == "c/1"
        assert isinstance(exc_info.value, FileExistsError)
        assert store.get("c/1") == b"first"
        assert store.stat("c/1").etag == info.etag
        store.delete("c/1")
        store.put("c/1", b"third", if_absent=True)
        assert store.get("c/1") == b"third"

    def test_if_absent_and_if_match_are_exclusive(self, store: Store) -> None:
        """``if_absent`` with ``if_match`` is a ValueError."""
        with pytest.raises(ValueError):
            store.put("k", b"x", if_absent=True, if_match="etag")

    def test_create_only_race(self, store: Store) -> None:
        """Of ``threads`` racing create-only writers exactly one wins."""
        if Capability.ATOMIC_CREATE not in store.capabilities:
            pytest.skip("no ATOMIC_CREATE (covered by test_create_only)")
        n = self.threads

        def create(i: int) -> BlobInfo:
            return store.put("race/version-1.json", f"writer-{i}".encode(), if_absent=True)

        results = _run_threads(n, create)
        winners = [i for i, r in enumerate(results) if isinstance(r, BlobInfo)]
        losers = [r for r in results if isinstance(r, KeyExistsError)]
        assert len(winners) == 1, results
        assert len(losers) == n - 1, results
        assert store.get("race/version-1.json") == f"writer-{winners[0]}".encode()
        assert list(store.iter_keys("race/")) == ["race/version-1.json"]

    def test_create_only_race_across_processes(self, store: Store) -> None:
        """Of 4 racing create-only processes exactly one wins (opt-in)."""
        if not self.run_cross_process_tests:
            pytest.skip("run_cross_process_tests is off for this backend")
        if Capability.ATOMIC_CREATE not in store.capabilities:
            pytest.skip("no ATOMIC_CREATE")
        outcomes = race_create_only_in_processes(store, "xproc/version-1.json")
        winners = [p for p, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1, outcomes
        assert sorted(outcomes.values()).count("exists") == len(outcomes) - 1, outcomes
        assert store.get("xproc/version-1.json") == winners[0]

    # ------------------------------------------------------------------ compare-and-swap
    def test_compare_and_swap(self, store: Store) -> None:
        """``put(if_match=...)`` succeeds with the current etag only."""
        if Capability.COMPARE_AND_SWAP not in store.capabilities:
            store.put("p", b"x")
            with pytest.raises(UnsupportedOperationError):
                store.put("p", b"y", if_match=store.stat("p").etag)
            assert store.get("p") == b"x"
            return
        first = store.put("p", b"v1")
        second = store.put("p", b"v2", if_match=first.etag)
        assert store.get("p") == b"v2"
        assert second.etag != first.etag
        assert store.stat("p").etag == second.etag
        with pytest.raises(PreconditionFailedError) as info:
            store.put("p", b"stale", if_match=first.etag)
        assert info.value.key == "p"
        assert store.get("p") == b"v2"
        with pytest.raises(PreconditionFailedError):
            store.put("absent", b"x", if_match=first.etag)
        assert not store.exists("absent")
        with pytest.raises(PreconditionFailedError):
            store.put("absent/deeper", b"x", if_match="no-such-etag")
        assert not store.exists("absent/deeper")

    def test_compare_and_swap_counter_race(self, store: Store) -> None:
        """``threads`` CAS increments with retry lose no update."""
        if Capability.COMPARE_AND_SWAP not in store.capabilities:
            pytest.skip("no COMPARE_AND_SWAP (covered by test_compare_and_swap)")
        store.put("counter", b"0")
        n = self.threads

        def increment(_: int) -> int:
            for attempt in range(10_000):
                etag = store.stat("counter").etag  # stat before get: never a stale pair
                value = int(store.get("counter"))
                try:
                    store.put("counter", str(value + 1).encode(), if_match=etag)
                except PreconditionFailedError:
                    continue
                return attempt
            raise AssertionError("no progress")

        results = _run_threads(n, increment)
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert int(store.get("counter")) == n

    def test_conditional_delete(self, store: Store) -> None:
        """``delete(if_match=...)`` deletes only with the current etag."""
        info = store.put("d", b"x")
        if Capability.COMPARE_AND_SWAP not in store.capabilities:
            with pytest.raises(UnsupportedOperationError):
                store.delete("d", if_match=info.etag)
            assert store.exists("d")
            return
        newer = store.put("d", b"y")
        with pytest.raises(PreconditionFailedError):
            store.delete("d", if_match=info.etag)
        assert store.get("d") == b"y"
        store.delete("d", if_match=newer.etag)
        assert not store.exists("d")
        with pytest.raises(PreconditionFailedError):
            store.delete("d", if_match=newer.etag)
        with pytest.raises(PreconditionFailedError):
            store.delete("never/there", if_match="x")

    # ------------------------------------------------------------------ copy
    def test_copy(self, store: Store) -> None:
        """``copy`` duplicates content, leaves the source alone and overwrites plainly."""
        data = bytes(range(256)) * 10
        src_info = store.put("src/blob", data)
        info = store.copy("src/blob", "dst/nested/blob")
        assert info.key == "dst/nested/blob"
        assert info.size == len(data)
        assert store.get("dst/nested/blob") == data
        assert store.get("src/blob") == data
        assert store.stat("src/blob").etag == src_info.etag
        assert store.stat("dst/nested/blob").etag == info.etag
        # the copy is independent of its source
        store.put("src/blob", b"changed")
        assert store.get("dst/nested/blob") == data
        # plain copy overwrites
        store.copy("src/blob", "dst/nested/blob")
        assert store.get("dst/nested/blob") == b"changed"

    def test_copy_create_only(self, store: Store) -> None:
        """``copy(if_absent=True)`` never replaces an existing destination."""
        store.put("s", b"source")
        store.put("d", b"existing")
        if Capability.ATOMIC_CREATE not in store.capabilities:
            with pytest.raises(UnsupportedOperationError):
                store.copy("s", "new", if_absent=True)
            assert not store.exists("new")
            return
        with pytest.raises(KeyExistsError):
            store.copy("s", "d", if_absent=True)
        assert store.get("d") == b"existing"
        store.copy("s", "new", if_absent=True)
        assert store.get("new") == b"source"

    def test_copy_missing_source(self, store: Store) -> None:
        """Copying a missing source is KeyNotFoundError naming the source."""
        with pytest.raises(KeyNotFoundError) as info:
            store.copy("no/such/src", "dst")
        assert info.value.key == "no/such/src"
        assert not store.exists("dst")
        assert list(store.iter_keys()) == []

    def test_copy_from(self, store: Store) -> None:
        """``copy_from`` copies from another store and from this one, listed or not."""
        from dataset_kit.store import MemoryStore

        other = MemoryStore()
        data = bytes(range(256)) * 10
        listed = other.put("o/blob", data)
        info = store.copy_from(other, "o/blob", "in/copy", source_info=listed)
        assert (info.key, info.size) == ("in/copy", len(data))
        assert store.get("in/copy") == data
        assert store.stat("in/copy").etag == info.etag
        assert other.get("o/blob") == data  # the source is left alone
        store.put("in/src", b"from this store")
        info = store.copy_from(store, "in/src", "in/dst")
        assert store.get("in/dst") == b"from this store"
        assert info.size == len(b"from this store")
        info = store.copy_from(store, "in/src", "in/dst2", source_info=store.stat("in/src"))
        assert store.get("in/dst2") == b"from this store"

    def test_copy_from_missing_source(self, store: Store) -> None:
        """A missing source is KeyNotFoundError naming it, and nothing is written."""
        from dataset_kit.store import MemoryStore

        for source in (MemoryStore(), store):
            with pytest.raises(KeyNotFoundError) as info:
                store.copy_from(source, "no/such/src", "dst")
            assert info.value.key == "no/such/src"
        assert not store.exists("dst")

    def test_link_from(self, store: Store) -> None:
        """``link_from`` links (a store that can) or returns None with nothing written; a
        link is young for garbage collection, and the two keys stay independent."""
        from dataset_kit.store import MemoryStore

        assert store.link_from(MemoryStore(), "o/blob", "in/none") is None  # nothing to link
        data = bytes(range(256)) * 40
        store.put("in/src", data)
        before = time.time()
        info = store.link_from(store, "in/src", "in/dst")
        if info is None:
            assert not store.exists("in/dst")
            return
        assert (info.key, info.size) == ("in/dst", len(data))
        assert store.get("in/dst") == data
        assert store.stat("in/dst").etag == info.etag
        assert info.mtime >= before - 1.0  # young: a GC's grace period protects it
        store.put("in/src", b"replaced")  # writes replace, never change the shared file
        assert store.get("in/dst") == data
        assert store.link_from(store, "in/src", "in/dst") is not None  # onto an existing key
        assert store.get("in/dst") == b"replaced"
        store.delete("in/src")
        assert store.get("in/dst") == b"replaced"
        with pytest.raises(KeyNotFoundError) as missing:
            store.link_from(store, "no/such/src", "in/other")
        assert missing.value.key == "no/such/src"
        assert not store.exists("in/other")
        assert sorted(store.iter_keys()) == ["in/dst"]  # no temporary file left behind

    # ------------------------------------------------------------------ delete_many
    def test_delete_many(self, store: Store) -> None:
        """``delete_many`` deletes present and missing keys, reports bad ones."""
        for key in ("m/1", "m/2", "m/3"):
            store.put(key, b"x")
        keys: Iterable[str] = iter(["m/1", "missing", "m/3", "m/other/missing", "../bad"])
        report = store.delete_many(keys)
        assert isinstance(report, DeleteReport)
        assert sorted(report.deleted) == ["m/1", "m/3", "m/other/missing", "missing"]
        # stores that can tell at no cost say which were gone already; none lie
        assert set(report.absent) <= {"m/other/missing", "missing"}
        assert list(report.failed) == ["../bad"]
        assert isinstance(report.failed["../bad"], InvalidKeyError)
        assert sorted(store.iter_keys()) == ["m/2"]

    def test_delete_many_without_pruning_and_remove_empty_dirs(self, store: Store) -> None:
        """``prune_dirs=False`` deletes the same keys; ``remove_empty_dirs`` returns a
        count and never touches a blob (stores without directories remove none)."""
        for key in ("e/a/1", "e/a/2", "e/b/1", "f/1"):
            store.put(key, b"x")
        report = store.delete_many(["e/a/1", "e/a/2", "e/none"], prune_dirs=False)
        assert sorted(report.deleted) == ["e/a/1", "e/a/2", "e/none"] and not report.failed
        assert sorted(store.iter_keys()) == ["e/b/1", "f/1"]
        removed = store.remove_empty_dirs("e/")
        assert isinstance(removed, int) and removed >= 0
        assert store.remove_empty_dirs("e/") == 0
        assert sorted(store.iter_keys()) == ["e/b/1", "f/1"]
        store.put("e/a/3", b"y")  # the prefix is usable again
        assert store.get("e/a/3") == b"y"

    def test_delete_many_unmodified_since(self, store: Store) -> None:
        """With ``unmodified_since`` only blobs modified before it go; newer ones, and
        those of unknown age, are kept and reported (garbage collection's grace period
        enforced at delete time)."""
        for key in ("u/a", "u/b"):
            store.put(key, b"x")
        unknown_age = store.stat("u/a").mtime <= 0
        before = time.time() - 120  # both blobs are newer
        report = store.delete_many(["u/b", "u/missing", "../bad"], unmodified_since=before)
        assert report.kept == ["u/b"] and report.deleted == ["u/missing"]
        assert list(report.failed) == ["../bad"]
        assert store.exists("u/b")
        after = time.time() + 120  # both blobs are older
        report = store.delete_many(["u/a", "u/b"], unmodified_since=after)
        if unknown_age:
            assert sorted(report.kept) == ["u/a", "u/b"] and not report.deleted
        else:
            assert sorted(report.deleted) == ["u/a", "u/b"] and not report.kept
            assert list(store.iter_keys("u/")) == []

    def test_touch(self, store: Store) -> None:
        """``touch`` renews the modification time and keeps the content; a missing key
        is KeyNotFoundError."""
        first = store.stat(store.put("t/k", b"payload").key)
        # whole seconds (Azure's Last-Modified) need a second to show a change
        time.sleep(1.05 if first.mtime == int(first.mtime) else 0.02)
        store.touch("t/k")
        after = store.stat("t/k")
        assert store.get("t/k") == b"payload" and after.size == first.size
        if first.mtime > 0:  # stores that keep modification times
            assert after.mtime > first.mtime
        with pytest.raises(KeyNotFoundError):
            store.touch("t/missing")
        with pytest.raises(InvalidKeyError):
            store.touch("../bad")

    # ------------------------------------------------------------------ pickling
    def test_pickle_round_trip(self, store: Store) -> None:
        """A pickled store reopens the same data (shared, if the backend is)."""
        store.put("p/before", b"written before pickling")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsafeCommitWarning)
            clone = pickle.loads(pickle.dumps(store))
        assert isinstance(clone, Store)
        assert clone.url == store.url
        assert dict(clone.options) == dict(store.options)
        assert clone.capabilities == store.capabilities
        assert clone.get("p/before") == b"written before pickling"
        if self.pickle_shares_data:
            clone.put("p/from-clone", b"clone")
            assert store.get("p/from-clone") == b"clone"
            store.put("p/from-original", b"original")
            assert clone.get("p/from-original") == b"original"

    # ------------------------------------------------------------------ threads
    def test_threaded_stress(self, store: Store) -> None:
        """Concurrent put/get/delete on distinct keys in one directory never fail."""
        rounds = 25

        def work(i: int) -> int:
            done = 0
            for r in range(rounds):
                key = f"stress/t{i:02d}-{r % 3}"  # shared directory, distinct keys
                payload = f"{i}:{r}".encode() * (r + 1)
                store.put(key, payload)
                if store.get(key) != payload:
                    raise AssertionError(f"read back wrong content for {key}")
                if r % 2:
                    store.delete(key)
                    if store.exists(key):
                        raise AssertionError(f"{key} still exists after delete")
                done += 1
            return done

        results = _run_threads(self.threads, work)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors
        assert results == [rounds] * self.threads
        for key in store.iter_keys("stress/"):
            assert store.get(key)

    # ------------------------------------------------------------------ local paths
    def test_local_path(self, store: Store) -> None:
        """``local_path`` gives a readable file exactly when LOCAL_PATH is declared."""
        store.put("lp/blob", b"local bytes")
        path = store.local_path("lp/blob")
        if Capability.LOCAL_PATH not in store.capabilities:
            assert path is None
            return
        assert isinstance(path, str)
        with open(path, "rb") as f:
            assert f.read() == b"local bytes"
