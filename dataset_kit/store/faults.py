"""A store wrapper that injects transient failures, for testing retries and commit logic."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dataset_kit.exceptions import ConfigError, StoreUnavailableError
from dataset_kit.store._base import BlobInfo, DeleteReport, Store, delete_many_on

__all__ = ["FaultInjectingStore", "InjectedTimeoutError", "OperationStats"]

#: Operation names understood by ``operations`` and reported in ``stats``.
OPERATIONS = frozenset(
    {"get", "get_range", "stat", "exists", "iter_keys", "iter_infos", "put", "delete", "copy"}
)
_WRITES = frozenset({"put", "delete", "copy"})
_ERROR_KINDS = ("unavailable", "timeout")


class InjectedTimeoutError(StoreUnavailableError, TimeoutError):
    """An injected time-out: a :class:`StoreUnavailableError` that is also a ``TimeoutError``."""


@dataclass(frozen=True)
class OperationStats:
    """Counters of one operation of a :class:`FaultInjectingStore`.

    Attributes
    ----------
    calls
        Calls made to the wrapper.
    faults
        Calls failed before reaching the inner store.
    unknown_outcome
        Writes that reached the inner store and then failed anyway.
    """

    calls: int = 0
    faults: int = 0
    unknown_outcome: int = 0


class FaultInjectingStore(Store):
    """Wrap a store and fail a chosen fraction of its calls, reproducibly.

    Parameters
    ----------
    inner
        The store that does the work.
    fail_rate
        Probability that a call fails with :class:`StoreUnavailableError` *before* it
        reaches the inner store.
    seed
        Seed of the random generator; the same seed and the same sequence of calls give
        the same failures (concurrent calls draw in the order they take the lock).
    errors
        Kinds of injected failure, chosen at random among: ``"unavailable"``
        (:class:`StoreUnavailableError`) and ``"timeout"``
        (:class:`InjectedTimeoutError`, also a ``TimeoutError``).
    fail_after_write_rate
        Probability that a write (``put``, ``delete``, ``copy``) that succeeded in the
        inner store raises :class:`StoreUnavailableError` anyway ("outcome unknown").
    slow_seconds
        Sleep this long before each affected call.
    operations
        Names of the affected operations (see :data:`OPERATIONS`); None means all.

    Raises
    ------
    ConfigError
        For a rate outside ``[0, 1]``, a negative delay, or an unknown error kind or
        operation name.

    Notes
    -----
    Capabilities, :meth:`local_path` and :attr:`url` are those of the inner store.
    Pickling keeps the configuration and the inner store; a seeded generator restarts
    from its seed and the counters from zero.
    """

    def __init__(
        self,
        inner: Store,
        *,
        fail_rate: float = 0.0,
        seed: int | None = None,
        errors: tuple[str, ...] = ("unavailable",),
        fail_after_write_rate: float = 0.0,
        slow_seconds: float = 0.0,
        operations: frozenset[str] | None = None,
    ) -> None:
        if not isinstance(inner, Store):
            raise ConfigError(f"FaultInjectingStore wraps a Store, not {type(inner).__name__}")
        for name, rate in (
            ("fail_rate", fail_rate),
            ("fail_after_write_rate", fail_after_write_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], not {rate!r}")
        if slow_seconds < 0:
            raise ConfigError(f"slow_seconds must not be negative, not {slow_seconds!r}")
        errors = tuple(errors)
        if not errors or any(kind not in _ERROR_KINDS for kind in errors):
            raise ConfigError(f"errors must be a non-empty tuple of {_ERROR_KINDS}, not {errors!r}")
        if operations is not None:
            operations = frozenset(operations)
            unknown = sorted(operations - OPERATIONS)
            if unknown:
                raise ConfigError(f"unknown operations {unknown}; known: {sorted(OPERATIONS)}")
        self._inner = inner
        self._fail_rate = float(fail_rate)
        self._seed = seed
        self._errors = errors
        self._fail_after_write_rate = float(fail_after_write_rate)
        self._slow_seconds = float(slow_seconds)
        self._operations = operations
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stats: dict[str, OperationStats] = {}
        self.capabilities = inner.capabilities

    # ------------------------------------------------------------------ identity
    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._inner

    @property
    def url(self) -> str:
        """The inner store's URL."""
        return self._inner.url

    @property
    def options(self) -> Mapping[str, Any]:
        """The inner store's options."""
        return self._inner.options

    @property
    def stats(self) -> dict[str, OperationStats]:
        """A snapshot of the counters, by operation name (only operations called)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Set all counters back to zero."""
        with self._lock:
            self._stats.clear()

    def __reduce__(self) -> tuple[Any, ...]:
        config = {
            "fail_rate": self._fail_rate,
            "seed": self._seed,
            "errors": self._errors,
            "fail_after_write_rate": self._fail_after_write_rate,
            "slow_seconds": self._slow_seconds,
            "operations": self._operations,
        }
        return (_rebuild, (self._inner, config))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, fail_rate={self._fail_rate})"

    def local_path(self, key: str) -> str | None:
        """The inner store's local path of ``key``."""
        return self._inner.local_path(key)

    def close(self) -> None:
        """Close the inner store."""
        self._inner.close()

    # ------------------------------------------------------------------ injection
    def _bump(self, op: str, *, calls: int = 0, faults: int = 0, unknown: int = 0) -> None:
        """Add to the counters of ``op``; the caller holds ``self._lock``."""
        old = self._stats.get(op, OperationStats())
        self._stats[op] = OperationStats(
            calls=old.calls + calls,
            faults=old.faults + faults,
            unknown_outcome=old.unknown_outcome + unknown,
        )

    def _affects(self, op: str) -> bool:
        return self._operations is None or op in self._operations

    def _before(self, op: str, key: str | None) -> None:
        """Count the call; maybe sleep, maybe fail before reaching the inner store."""
        affected = self._affects(op)
        with self._lock:
            fail = affected and self._fail_rate > 0 and self._rng.random() < self._fail_rate
            kind = self._rng.choice(self._errors) if fail else ""
            self._bump(op, calls=1, faults=int(fail))
        if affected and self._slow_seconds:
            time.sleep(self._slow_seconds)
        if fail:
            if kind == "timeout":
                raise InjectedTimeoutError(f"injected timeout in {op}", key=key)
            raise StoreUnavailableError(f"injected failure in {op}", key=key)

    def _after_write(self, op: str, key: str) -> None:
        """Maybe fail a write that already happened."""
        if not self._affects(op) or self._fail_after_write_rate <= 0:
            return
        with self._lock:
            fail = self._rng.random() < self._fail_after_write_rate
            self._bump(op, unknown=int(fail))
        if fail:
            raise StoreUnavailableError(
                f"injected failure after {op} of {key!r} reached the store: outcome unknown",
                key=key,
            )

    # ------------------------------------------------------------------ hooks
    def _get(self, key: str) -> bytes:
        self._before("get", key)
        return self._inner.get(key)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        self._before("get_range", key)
        return self._inner.get_range(key, start, length)

    def _stat(self, key: str) -> BlobInfo:
        self._before("stat", key)
        return self._inner.stat(key)

    def _exists(self, key: str) -> bool:
        self._before("exists", key)
        return self._inner.exists(key)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        self._before("iter_keys", None)
        return self._inner.iter_keys(prefix)

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        self._before("iter_infos", None)
        return self._inner.iter_infos(prefix)

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        self._before("put", key)
        info = self._inner.put(key, data, if_absent=if_absent, if_match=if_match)
        self._after_write("put", key)
        return info

    def _delete(self, key: str, *, if_match: str | None) -> None:
        self._before("delete", key)
        self._inner.delete(key, if_match=if_match)
        self._after_write("delete", key)

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """One key at a time, each a fault-injectable ``delete`` (failures reported per
        key), through the wrapped store's ``delete_many`` so that its options hold."""
        report = DeleteReport()
        for key in keys:
            try:
                self._before("delete", key)
                part = delete_many_on(self._inner, [key], unmodified_since, prune_dirs=prune_dirs)
                if part.failed:
                    raise next(iter(part.failed.values()))
                if part.deleted:
                    self._after_write("delete", key)
            except Exception as exc:  # reported per key, like Store.delete_many
                report.failed[key] = exc
                continue
            report.merge(part)
        return report

    def remove_empty_dirs(self, prefix: str = "") -> int:
        """The wrapped store's (directories are not blobs: no faults injected)."""
        return self._inner.remove_empty_dirs(prefix)

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        self._before("copy", dst)
        info = self._inner.copy(src, dst, if_absent=if_absent)
        self._after_write("copy", dst)
        return info


def _rebuild(inner: Store, config: dict[str, Any]) -> FaultInjectingStore:
    return FaultInjectingStore(inner, **config)
