"""A pipeline as a lazy dask graph, and where it runs.

Every pipeline returns a :class:`Job`: a ``dask.delayed`` graph of many parallel nodes
and one final node (the commit, or the report). Nothing happens until
:meth:`Job.compute`. Where it runs:

1. ``scheduler=`` given: a ``distributed.Client``, a scheduler address
   (``tcp://host:port``, ``tls://...``), a scheduler file (``*.json``), or a local
   scheduler name (``"threads"``, ``"sync"``);
2. otherwise the active ``distributed.Client`` (``with Client(...):`` or the default
   client), if any;
3. otherwise ``$DATASET_KIT_SCHEDULER`` (address or scheduler file), if set;
4. otherwise the local threaded scheduler (the embedded default).

A client this module opens from an address is closed after the computation. TLS
clusters: configure ``distributed.comm.tls.*`` in the dask config (or pass a ``Client``
built with a ``distributed.security.Security``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from dataset_kit.exceptions import ConfigError

__all__ = ["SCHEDULER_ENV", "Bundle", "Job", "final_node", "job_token", "task_key"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable naming the default scheduler (address or scheduler file).
SCHEDULER_ENV = "DATASET_KIT_SCHEDULER"

_LOCAL_SCHEDULERS = {"threads", "threading", "sync", "synchronous", "single-threaded"}


def task_key(pipeline: str, step: str, *token_parts: Any) -> str:
    """A deterministic dask key: the same inputs give the same key in every run.

    Examples
    --------
    >>> task_key("gc", "delete", "ds", 3) == task_key("gc", "delete", "ds", 3)
    True
    >>> task_key("gc", "delete", "ds", 3).startswith("dk-gc-delete-")
    True
    """
    from dask.base import tokenize

    return f"dk-{pipeline}-{step}-{tokenize(*token_parts)}"


def final_node(func: Any, nodes: Sequence[Any], *, key: str, **literals: Any) -> Any:
    """The final node of a pipeline: ``func(nodes, **literals)`` as a ``dask.delayed``.

    The literals (plans, base snapshots, targets) are bound with ``functools.partial``:
    passed as arguments, dask would walk every list, dict and dataclass inside them
    looking for collections (0.16 s for the base snapshot of a 20,000-partition
    dataset; a third of a 1,000-blob backup's run time). Only ``nodes`` is searched.

    Examples
    --------
    >>> import dask
    >>> parts = [dask.delayed(len)([1, 2]), dask.delayed(len)([3])]
    >>> final_node(lambda ns, *, plus: sum(ns) + plus, parts, key="total-1", plus=10).compute()
    13
    """
    import dask

    bound = functools.partial(func, **literals) if literals else func
    return dask.delayed(bound, pure=False)(list(nodes), dask_key_name=key)


def job_token(*parts: Any) -> str:
    """Hash a job's inputs once, for :func:`task_key` (hashing 10,000 keys per node cost
    0.5 s in a GC of 10,000 blobs)."""
    from dask.base import tokenize

    return str(tokenize(*parts))


def _active_client() -> Any | None:
    if "distributed" not in sys.modules:  # nobody made a client: don't import distributed
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _open_client(address: str) -> Any:
    """A ``distributed.Client`` connected to ``address`` (or a scheduler file).

    Every failure is a :class:`ConfigError`, raised at once (a malformed address) or after
    ``distributed.comm.timeouts.connect`` (an unreachable scheduler); a client whose
    constructor failed is closed here, so nothing waits in ``Client.__del__`` at exit.
    """
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency of the extra
        raise ConfigError(
            "running on a dask cluster needs dask.distributed: pip install 'dataset-kit[dask]'"
        ) from exc

    class _ClosingClient(Client):  # type: ignore[misc]
        """Closes itself when its constructor fails: a half-built client (connecting,
        never closed) makes ``Client.__del__`` wait twice the connect timeout (60 s by
        default) and then print a ``TimeoutError``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.close(timeout=5)
                raise

    is_file = address.endswith(".json") and "://" not in address
    if is_file:
        _check_scheduler_file(address)
    try:
        if is_file:
            return _ClosingClient(scheduler_file=address, set_as_default=False)
        return _ClosingClient(address, set_as_default=False)  # distributed.comm.timeouts.connect
    except ValueError as exc:  # a malformed address: no port, unknown scheme, ...
        raise ConfigError(_bad_address(address, exc)) from exc
    except (OSError, TypeError) as exc:  # TypeError: a tls:// address without certificates
        raise ConfigError(f"cannot connect to the dask scheduler at {address!r}: {exc}") from exc


def _bad_address(address: str, exc: Exception) -> str:
    """The message for a scheduler that is neither a local name nor a valid address."""
    import difflib

    known = sorted(_LOCAL_SCHEDULERS)
    message = (
        f"scheduler {address!r} is not a local scheduler ({', '.join(known)}), a "
        f"scheduler address (host:port, tcp://host:port, tls://host:port) or a scheduler "
        f"file (*.json): {exc}"
    )
    close = difflib.get_close_matches(address, known, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _check_scheduler_file(path: str) -> None:
    """Fail fast on a missing or malformed scheduler file (``distributed`` would wait for
    a missing one forever, and try to connect to ``None`` after a malformed one)."""
    import json
    import time

    if not os.path.exists(path):
        raise ConfigError(f"scheduler file {path!r} does not exist")
    content: Any = None
    for attempt in range(10):  # as distributed: the scheduler may be writing it right now
        try:
            with open(path, encoding="utf-8") as fh:
                content = json.load(fh)
            break
        except OSError as exc:
            raise ConfigError(f"cannot read the scheduler file {path!r}: {exc}") from exc
        except ValueError as exc:
            if attempt == 9:
                raise ConfigError(
                    f"scheduler file {path!r} is not a dask scheduler file: {exc}"
                ) from exc
            time.sleep(0.01)
    if not isinstance(content, dict) or not isinstance(content.get("address"), str):
        raise ConfigError(f"scheduler file {path!r} names no scheduler address")


@contextlib.contextmanager
def _scheduler(scheduler: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``("client", Client)`` or ``("local", name)``; close clients opened here."""
    if scheduler is None:
        client = _active_client()
        if client is not None:
            yield "client", client
            return
        scheduler = os.environ.get(SCHEDULER_ENV) or "threads"
    if isinstance(scheduler, str):
        if scheduler in _LOCAL_SCHEDULERS:
            yield "local", "sync" if scheduler.startswith("s") else "threads"
            return
        if scheduler == "processes":
            raise ConfigError(
                "the 'processes' scheduler is not supported (throttles would not span the "
                "processes); use a distributed.LocalCluster"
            )
        client = _open_client(scheduler)
        try:
            yield "client", client
        finally:
            client.close()
        return
    if hasattr(scheduler, "compute") and hasattr(scheduler, "scheduler_info"):
        yield "client", scheduler
        return
    raise ConfigError(
        f"scheduler must be a distributed.Client, an address, a scheduler file or one of "
        f"{sorted(_LOCAL_SCHEDULERS)}, got {scheduler!r}"
    )


class Job(Generic[T]):
    """A lazy pipeline: parallel nodes and one final node, run by :meth:`compute`.

    Parameters
    ----------
    delayed
        The graph's final ``dask.delayed`` node.
    name
        What the job does (for logs and ``repr``).
    tasks
        Number of parallel nodes.

    Examples
    --------
    >>> import dask
    >>> job = Job(dask.delayed(sum)([1, 2, 3]), name="sum", tasks=1)
    >>> job.compute()
    6
    """

    def __init__(self, delayed: Any, *, name: str, tasks: int) -> None:
        self._delayed = delayed
        self.name = name
        self.tasks = tasks

    def __repr__(self) -> str:
        return f"Job({self.name!r}, tasks={self.tasks})"

    def to_delayed(self) -> Any:
        """The final ``dask.delayed`` node (to combine jobs in one ``dask.compute``)."""
        return self._delayed

    @property
    def key(self) -> str:
        """The final node's (deterministic) key."""
        return str(self._delayed.key)

    def compute(self, *, scheduler: Any = None, progress: bool = False) -> T:
        """Run the graph and return the final node's result.

        Parameters
        ----------
        scheduler
            Where to run (see the module docstring): a ``distributed.Client``, an
            address, a scheduler file, ``"threads"`` or ``"sync"``; None picks the
            active client, then ``$DATASET_KIT_SCHEDULER``, then local threads.
        progress
            Show a progress bar: a text bar on stderr, or a widget in Jupyter when running
            on a distributed cluster.

        Raises
        ------
        ConfigError
            For an unknown scheduler or an unreachable cluster.
        DatasetKitError
            Whatever a node raised (the original exception type).
        """
        with _scheduler(scheduler) as (kind, target):
            if kind == "client":
                logger.info("job %s: %d tasks on %s", self.name, self.tasks, target)
                future = target.compute(self._delayed)
                if progress:
                    _show_progress(future)
                result: T = future.result()
                return result
            logger.info("job %s: %d tasks on the local %s scheduler", self.name, self.tasks, target)
            bar: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if progress:
                from dask.diagnostics import ProgressBar

                bar = ProgressBar(out=sys.stderr)
            # a scheduler *function*: dask would import distributed (0.7 s) to look for a
            # client when given the name
            if target == "sync":
                from dask.local import get_sync as get
            else:
                from dask.threaded import get
            with bar:
                out: T = self._delayed.compute(scheduler=get)
            return out


def _show_progress(future: Any) -> None:
    """distributed's progress bar: a widget in Jupyter when ipywidgets is installed, else
    a text bar on stderr (distributed would fail on the import of ipywidgets in Jupyter)."""
    from distributed import progress as show_progress

    try:
        import ipywidgets  # noqa: F401

        notebook: bool | None = None  # distributed decides: a widget in a kernel
    except ImportError:
        notebook = False
    with contextlib.redirect_stdout(sys.stderr):  # text bars go to stderr
        show_progress(future, notebook=notebook)


class Bundle(Sequence[T]):
    """A read-only list that dask passes to a task as it is, without looking inside.

    ``dask.delayed`` calls walk every list, tuple, dict and dataclass in their arguments
    to find dask collections in them: for a node's batch of 1,000 small dataclasses
    (blobs to copy or check) that took about a third of a local backup's time.

    Examples
    --------
    >>> b = Bundle([1, 2, 3])
    >>> len(b), b[0], list(b)
    (3, 1, [1, 2, 3])
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[T]) -> None:
        self._items = list(items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Bundle, (self._items,))

    def __repr__(self) -> str:
        return f"Bundle({len(self._items)} items)"
