"""Named semaphores ("throttles") that bound concurrent access to databases and storage.

A :class:`Throttle` is a small picklable spec (name, limit, optional default timeout). It is
built on the client together with the dask graph, travels into the tasks by pickling, and
resolves to a real semaphore only when a task acquires it, in the process running that task:

- inside a dask.distributed worker: a ``distributed.Semaphore(max_leases=limit,
  name="dataset_kit-" + name)`` on the worker's scheduler, so the limit holds across every
  worker process of the cluster;
- in a process with an active distributed ``Client`` (but not in a worker): the same
  ``distributed.Semaphore``, bound to that client;
- otherwise (dask's local threaded scheduler, plain Python): a process-local
  :class:`threading.BoundedSemaphore` from a registry keyed by (name, limit), shared by every
  thread of the process.

The resolved semaphores are cached per process (per worker or client for the distributed
variant), never pickled. Importing this module does not import ``distributed``; it is imported
only once a throttle is used in a process that has already loaded it.

One name is one resource with one limit. The distributed scheduler refuses to register a
semaphore name a second time with a different ``max_leases``; the local registry refuses the
same, so both backends raise :class:`~dataset_kit.exceptions.ConfigError` for it.

Hold a throttle only around the I/O call it protects, never around compute.

Pitfall: lease timeout and the GIL
----------------------------------
A ``distributed.Semaphore`` lease is kept alive by the holding process's event loop, which
refreshes it every ``lease-timeout / 5``. If the worker holding a lease dies, the scheduler
frees the lease after ``distributed.scheduler.locks.lease-timeout`` (default 30 s) plus up to
one ``distributed.scheduler.locks.lease-validation-interval`` (default 10 s; measured 37 s with
the defaults), so a pipeline does not deadlock on a dead worker. The same mechanism bites a
task that holds the GIL for longer than lease-timeout: the refresh cannot run, the scheduler
expires the lease *silently* and hands it to another task while the first one still works,
so the throttle is over-subscribed (the only trace is a scheduler warning "Tried to release
Lock or Semaphore but it was already released"). Therefore:

- keep only GIL-releasing I/O (ADBC, pyarrow, network and file reads/writes) inside the
  throttle, not Python-level loops or pandas compute;
- do not shrink ``lease-timeout`` below the longest call made while holding a lease, even
  though a shorter value recovers faster from dead workers.

Examples
--------
>>> from dataset_kit.throttle import Throttle, as_throttle, throttled
>>> db = Throttle("doctest-db", 2)
>>> with db:
...     db.backend
'local'
>>> as_throttle(4, name="doctest-storage")
Throttle(name='doctest-storage-4', limit=4)
>>> with throttled(None):
...     pass
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import weakref
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, Self

from dataset_kit.exceptions import ConfigError, InvalidInputError

__all__ = ["Backend", "Throttle", "as_throttle", "throttled"]

logger = logging.getLogger(__name__)

Backend = Literal["distributed", "local"]
"""What a throttle resolved to in the current process."""

#: Prefix of the ``distributed.Semaphore`` names, so ours do not clash with other users'.
SEMAPHORE_PREFIX = "dataset_kit-"

# Process-local semaphores: (name, limit) -> semaphore, and name -> limit to refuse a second
# limit for the same name (as the distributed scheduler does).
_LOCAL_LOCK = threading.Lock()
_LOCAL_REGISTRY: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_LOCAL_LIMITS: dict[str, int] = {}

# distributed.Semaphore objects, per Worker or Client they are bound to, then per (name, limit).
_DISTRIBUTED_LOCK = threading.Lock()
_DISTRIBUTED_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, int], Any]] = (
    weakref.WeakKeyDictionary()
)


def _check_timeout(timeout: float | None, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidInputError(f"{what} must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise InvalidInputError(f"{what} must be >= 0 seconds, got {timeout!r}")
    if timeout > threading.TIMEOUT_MAX:  # inf included: no backend takes it; wait forever
        return None
    return float(timeout)


class Throttle:
    """A named counting semaphore that resolves per process at execution time.

    Parameters
    ----------
    name
        The resource name, e.g. ``"db"``. Every throttle with this name shares the leases
        (across the whole cluster on dask.distributed, across threads otherwise).
    limit
        The maximum number of concurrent holders, at least 1.
    timeout
        Default seconds to wait in :meth:`acquire` and ``with throttle:``; ``None`` waits
        forever.

    Raises
    ------
    InvalidInputError
        If ``name`` is not a non-empty string, ``limit`` is not an int >= 1 or ``timeout`` is
        negative.

    Notes
    -----
    Pickling keeps only the spec (name, limit, timeout); a pickled copy holds no lease.
    Equality and hashing use (name, limit). ``release`` returns the lease to the semaphore it
    was acquired from, so acquire and release must be called on the same object (``with``
    does that).

    Examples
    --------
    >>> import pickle
    >>> t = Throttle("doctest-example", 1, timeout=5)
    >>> t.acquire()
    True
    >>> t.acquire(timeout=0)  # the only lease is taken
    False
    >>> t.release()
    >>> pickle.loads(pickle.dumps(t)) == t
    True
    """

    __slots__ = ("_held", "_held_lock", "_limit", "_name", "_timeout")

    def __init__(self, name: str, limit: int, *, timeout: float | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"throttle name must be a non-empty string, got {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidInputError(f"throttle {name!r}: limit must be an int, got {limit!r}")
        if limit < 1:
            raise InvalidInputError(f"throttle {name!r}: limit must be >= 1, got {limit}")
        self._name = name
        self._limit = limit
        self._timeout = _check_timeout(timeout, f"throttle {name!r}: timeout")
        # Semaphores this object holds leases on (LIFO), never pickled.
        self._held: list[tuple[Backend, Any]] = []
        self._held_lock = threading.Lock()

    # ------------------------------------------------------------------ spec
    @property
    def name(self) -> str:
        """The resource name (the distributed semaphore is ``"dataset_kit-" + name``)."""
        return self._name

    @property
    def limit(self) -> int:
        """The maximum number of concurrent holders."""
        return self._limit

    @property
    def timeout(self) -> float | None:
        """The default acquire timeout in seconds (``None``: wait forever)."""
        return self._timeout

    def __repr__(self) -> str:
        extra = "" if self._timeout is None else f", timeout={self._timeout!r}"
        return f"Throttle(name={self._name!r}, limit={self._limit}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Throttle):
            return NotImplemented
        return (self._name, self._limit) == (other._name, other._limit)

    def __hash__(self) -> int:
        return hash((Throttle, self._name, self._limit))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_throttle, (self._name, self._limit, self._timeout))

    def __dask_tokenize__(self) -> tuple[str, str, int, float | None]:
        return ("dataset_kit.throttle.Throttle", self._name, self._limit, self._timeout)

    # ------------------------------------------------------------------ resolution
    @property
    def backend(self) -> Backend:
        """What this throttle resolves to in the current process and thread.

        ``"distributed"`` inside a dask.distributed worker or with an active distributed
        client, ``"local"`` otherwise.
        """
        return "local" if _distributed_owner() is None else "distributed"

    def _resolve(self) -> tuple[Backend, Any]:
        owner = _distributed_owner()
        if owner is None:
            return "local", _local_semaphore(self._name, self._limit)
        return "distributed", _distributed_semaphore(owner, self._name, self._limit)

    # ------------------------------------------------------------------ leases
    def acquire(self, *, timeout: float | None = None) -> bool:
        """Take one lease, waiting at most ``timeout`` seconds.

        Parameters
        ----------
        timeout
            Seconds to wait; ``None`` uses the throttle's default timeout (and waits forever
            when that is ``None`` too). ``0`` only tries once.

        Returns
        -------
        bool
            ``True`` if a lease was taken, ``False`` if the timeout expired.

        Raises
        ------
        InvalidInputError
            If ``timeout`` is negative or not a number.
        ConfigError
            If this name is already in use with a different limit (in this process, or on
            the distributed scheduler).
        """
        wait = _check_timeout(timeout, "timeout")
        if wait is None:
            wait = self._timeout
        kind, semaphore = self._resolve()
        if kind == "local":
            acquired = semaphore.acquire(timeout=wait)
        else:
            acquired = _acquire_distributed(semaphore, self._name, self._limit, wait)
        if acquired:
            with self._held_lock:
                self._held.append((kind, semaphore))
        else:
            logger.debug("throttle %r: no %s lease within %s s", self._name, kind, wait)
        return bool(acquired)

    def release(self) -> None:
        """Return the most recently taken lease of this object.

        Raises
        ------
        RuntimeError
            If this object holds no lease.
        """
        with self._held_lock:
            if not self._held:
                raise RuntimeError(f"throttle {self._name!r} released more often than acquired")
            kind, semaphore = self._held.pop()
        if kind == "local":
            semaphore.release()
        elif not semaphore.release():
            # distributed logs the cause; the scheduler frees the lease after lease-timeout.
            logger.warning(
                "throttle %r: releasing the distributed lease failed; the scheduler frees it "
                "after distributed.scheduler.locks.lease-timeout",
                self._name,
            )

    def __enter__(self) -> Self:
        """Hold one lease for the ``with`` block.

        Raises
        ------
        TimeoutError
            If the throttle's default timeout expires before a lease is free.
        """
        if not self.acquire():
            raise TimeoutError(
                f"throttle {self._name!r} (limit {self._limit}): no lease free within "
                f"{self._timeout} s"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _rebuild_throttle(name: str, limit: int, timeout: float | None) -> Throttle:
    return Throttle(name, limit, timeout=timeout)


def as_throttle(value: Throttle | int | None, *, name: str) -> Throttle | None:
    """Normalize a throttle option: an int ``n`` becomes ``Throttle(f"{name}-{n}", n)``.

    One name is one resource with one limit, so an int limit gets its own name: pipelines
    given the same int share one throttle; to share a limit across resources or change
    it, pass a :class:`Throttle` object.

    Parameters
    ----------
    value
        A :class:`Throttle` (returned as is, ``name`` is ignored), an int limit, or ``None``
        for no throttling.
    name
        The resource name used when ``value`` is an int.

    Returns
    -------
    Throttle or None

    Raises
    ------
    InvalidInputError
        If ``value`` is of another type or the int is < 1.

    Examples
    --------
    >>> as_throttle(3, name="db")
    Throttle(name='db-3', limit=3)
    >>> as_throttle(None, name="db") is None
    True
    """
    if value is None or isinstance(value, Throttle):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise InvalidInputError(f"{name} concurrency must be >= 1, got {value}")
        return Throttle(f"{name}-{value}", value)
    raise InvalidInputError(
        f"throttle {name!r} must be a Throttle, an int limit or None, got {type(value).__name__}"
    )


def throttled(throttle: Throttle | None) -> AbstractContextManager[Throttle | None]:
    """A context manager holding one lease of ``throttle``, or doing nothing for ``None``.

    Examples
    --------
    >>> with throttled(Throttle("doctest-throttled", 1)) as held:
    ...     held.name
    'doctest-throttled'
    """
    if throttle is None:
        return contextlib.nullcontext()
    return throttle


# ---------------------------------------------------------------------- backends
def _distributed_owner() -> Any:
    """The distributed Worker running this task, else the active Client, else ``None``."""
    if "distributed" not in sys.modules:  # neither a worker nor a client can exist
        return None
    import distributed

    dist: Any = distributed  # default_client is untyped
    try:
        return dist.get_worker()
    except ValueError:
        pass
    try:
        client = dist.default_client()
    except ValueError:
        return None
    if client.status in ("closing", "closed"):
        return None
    return client


def _local_semaphore(name: str, limit: int) -> threading.BoundedSemaphore:
    with _LOCAL_LOCK:
        known = _LOCAL_LIMITS.setdefault(name, limit)
        if known != limit:
            raise ConfigError(
                f"throttle {name!r} is already in use in this process with limit {known}, "
                f"not {limit}: one name is one resource with one limit"
            )
        semaphore = _LOCAL_REGISTRY.get((name, limit))
        if semaphore is None:
            semaphore = _LOCAL_REGISTRY[name, limit] = threading.BoundedSemaphore(limit)
            logger.debug("throttle %r: process-local semaphore, limit %d", name, limit)
        return semaphore


def _distributed_semaphore(owner: Any, name: str, limit: int) -> Any:
    with _DISTRIBUTED_LOCK:
        per_owner = _DISTRIBUTED_CACHE.setdefault(owner, {})
        semaphore = per_owner.get((name, limit))
        if semaphore is None:
            import distributed

            dist: Any = distributed  # Semaphore is untyped
            semaphore = dist.Semaphore(
                max_leases=limit,
                name=SEMAPHORE_PREFIX + name,
                scheduler_rpc=owner.scheduler,
                loop=owner.loop,
            )
            per_owner[name, limit] = semaphore
            logger.debug(
                "throttle %r: distributed.Semaphore %r, limit %d, bound to %s",
                name,
                semaphore.name,
                limit,
                type(owner).__name__,
            )
        return semaphore


def _acquire_distributed(semaphore: Any, name: str, limit: int, timeout: float | None) -> bool:
    try:
        return bool(semaphore.acquire(timeout=timeout))
    except ValueError as exc:  # raised by the scheduler's SemaphoreExtension.create
        if "Inconsistent max leases" not in str(exc):
            raise
        raise ConfigError(
            f"throttle {name!r}: the scheduler already has semaphore "
            f"{SEMAPHORE_PREFIX + name!r} with another limit than {limit} ({exc}); one name "
            "is one resource with one limit"
        ) from exc


def _reset_local_registry() -> None:
    """Forget the process-local semaphores (for tests; leases still held are lost)."""
    with _LOCAL_LOCK:
        _LOCAL_REGISTRY.clear()
        _LOCAL_LIMITS.clear()
