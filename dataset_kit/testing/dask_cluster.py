"""Start and stop real dask clusters for tests.

:func:`local_cluster` runs a :class:`distributed.LocalCluster` and yields a client for it::

    with local_cluster(n_workers=2) as client:
        assert client.submit(sum, [1, 2]).result() == 3

:func:`remote_cluster` starts a scheduler and workers as separate ``dask scheduler`` /
``dask worker`` processes, the way a deployed cluster runs, and yields a
:class:`RemoteCluster` describing them; tests connect with ``distributed.Client(address)``
and can SIGKILL a worker with :meth:`RemoteCluster.kill_worker`::

    with remote_cluster(n_workers=2) as cluster, distributed.Client(cluster.address) as client:
        cluster.kill_worker(0)

Every server listens on 127.0.0.1 only. ``distributed`` is imported lazily, so importing
this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import distributed

__all__ = ["ClusterStartError", "RemoteCluster", "local_cluster", "remote_cluster"]

_log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
#: Where the HTTP servers (health/metrics, dashboard when bokeh is installed) listen. The
#: scheduler *always* starts one; ``dashboard_address=None`` would mean port 8787, which
#: collides with anything else holding it ("Port 8787 is already in use" is a UserWarning,
#: fatal under ``-W error``), and the CLI default ``:0`` would mean all interfaces.
_HTTP_ADDRESS = f"{_HOST}:0"
#: Seconds a process gets after SIGTERM before it is SIGKILLed.
_STOP_GRACE = 10.0
_TAIL_CHARS = 3000


class ClusterStartError(RuntimeError):
    """A cluster process exited during start-up, or the cluster was not ready in time."""


@contextlib.contextmanager
def local_cluster(
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    processes: bool = True,
    memory_limit: str | None = None,
) -> Iterator[distributed.Client]:
    """Run a :class:`distributed.LocalCluster` on 127.0.0.1 and yield a client for it.

    Parameters
    ----------
    n_workers
        Number of workers.
    threads_per_worker
        Threads of each worker.
    processes
        Whether workers are separate (nanny-managed) processes or threads of this process.
    memory_limit
        Memory limit per worker, like ``"2GiB"``; ``None`` keeps distributed's ``"auto"``.

    Yields
    ------
    distributed.Client
        A client connected to the cluster; it is the default client (``dask.compute``
        uses it) while the context is open.

    Notes
    -----
    Client and cluster are closed when the context exits, also when the body raised.
    Cluster logs below WARNING are silenced. The dashboard is off; the scheduler's HTTP
    server (health/metrics routes, always started by distributed) gets a free port on
    127.0.0.1 rather than the default 8787. Code that builds a process-based cluster needs
    an ``if __name__ == "__main__":`` guard when run as a script (workers are spawned).
    """
    import distributed

    dist: Any = distributed  # LocalCluster and Client are untyped
    kwargs: dict[str, object] = {}
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    started = time.monotonic()
    with dist.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        host=_HOST,
        dashboard_address=_HTTP_ADDRESS,
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.WARNING,
        **kwargs,
    ) as cluster:
        with dist.Client(cluster, set_as_default=True) as client:
            _log.debug(
                "local cluster %s with %d workers up in %.1f s",
                cluster.scheduler_address,
                n_workers,
                time.monotonic() - started,
            )
            yield client


@dataclass(frozen=True)
class RemoteCluster:
    """A scheduler and workers running as separate processes, from :func:`remote_cluster`.

    Attributes
    ----------
    address
        The scheduler's address, ``tcp://127.0.0.1:<port>``.
    scheduler_file
        The scheduler file written by ``dask scheduler --scheduler-file``.
    worker_pids
        The worker processes, in start order.
    scheduler_pid
        The scheduler process.
    """

    address: str
    scheduler_file: str
    worker_pids: tuple[int, ...]
    scheduler_pid: int
    _processes: tuple[subprocess.Popen[bytes], ...] = field(default=(), repr=False, compare=False)

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL worker ``index`` (its whole process group) and reap it.

        The workers run without a nanny, so nothing restarts the worker: the scheduler
        notices the closed connection and drops it, and its tasks are rescheduled.
        Killing a worker that is already gone does nothing.

        Parameters
        ----------
        index
            Position of the worker in :attr:`worker_pids`.

        Raises
        ------
        IndexError
            If there is no worker ``index``.
        """
        pid = self.worker_pids[index]
        proc = next((p for p in self._processes if p.pid == pid), None)
        if proc is not None and proc.poll() is not None:
            return  # already reaped: the pid may belong to someone else by now
        _log.debug("killing dask worker %d (pid %d)", index, pid)
        _kill_group(pid, signal.SIGKILL)
        if proc is not None:
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                _log.warning("dask worker pid %d survived SIGKILL for %.0f s", pid, _STOP_GRACE)


@contextlib.contextmanager
def remote_cluster(
    *,
    n_workers: int = 2,
    nthreads: int = 1,
    tmp_dir: str | os.PathLike[str] | None = None,
    memory_limit: str = "2GiB",
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[RemoteCluster]:
    """Run ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Parameters
    ----------
    n_workers
        Number of worker processes.
    nthreads
        Threads of each worker.
    tmp_dir
        Directory for the scheduler file, the process logs (``scheduler.log``,
        ``worker-<i>.log``, stdout and stderr together) and the workers' local
        directories. Kept afterwards when given; a temporary directory, removed at the
        end, when ``None``.
    memory_limit
        ``--memory-limit`` of each worker.
    timeout
        Seconds to wait for the scheduler and all workers to be ready.
    env
        Extra environment variables for the processes, on top of this process's.

    Yields
    ------
    RemoteCluster
        The running cluster, once a client sees all ``n_workers`` workers.

    Raises
    ------
    ValueError
        If ``n_workers`` is less than 1.
    ClusterStartError
        If a process exits during start-up (the message ends with the tail of its
        output) or the cluster is not ready within ``timeout`` seconds.

    Notes
    -----
    - The scheduler binds a port chosen by the OS (``--port 0``) and the address is read
      from its scheduler file, so there is no window in which another process can take a
      port picked in advance. Workers start at the same time as the scheduler and find it
      through the same file.
    - Workers run with ``--no-nanny``: a nanny would restart a killed worker, and fault
      tests need :meth:`RemoteCluster.kill_worker` to really remove it. Each worker is a
      single process whose pid is in :attr:`RemoteCluster.worker_pids`.
    - Every process is the leader of its own session and process group. On exit the
      workers, then the scheduler, get SIGTERM, and SIGKILL after 10 s; the group is
      SIGKILLed in the end so nothing is left behind, also when the body raised.
      (Only if this process is itself SIGKILLed do they stay up; their command lines
      contain the ``tmp_dir`` path.)
    - The directory containing the ``dataset_kit`` package is appended to ``PYTHONPATH``
      (unless it is a ``site-packages``), so workers unpickle the same ``dataset_kit``
      as this process even from a checkout that is not installed.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, not {n_workers}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if tmp_dir is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dask-")))
        else:
            directory = Path(tmp_dir)
            directory.mkdir(parents=True, exist_ok=True)
        scheduler_file = directory / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)  # a stale one would point at a dead scheduler
        child_env = _child_env(env)
        scheduler_cmd = [
            *_entry_point("scheduler"),
            "--host",
            _HOST,
            "--port",
            "0",
            "--no-dashboard",
            "--dashboard-address",
            _HTTP_ADDRESS,
            "--scheduler-file",
            str(scheduler_file),
        ]
        procs: dict[str, subprocess.Popen[bytes]] = {}
        workers: list[subprocess.Popen[bytes]] = []
        try:
            procs["scheduler"] = _spawn(scheduler_cmd, directory / "scheduler.log", child_env)
            for index in range(n_workers):
                worker_cmd = [
                    *_entry_point("worker"),
                    "--scheduler-file",
                    str(scheduler_file),
                    "--host",
                    _HOST,
                    "--nthreads",
                    str(nthreads),
                    "--nworkers",
                    "1",
                    "--no-nanny",
                    "--memory-limit",
                    memory_limit,
                    "--no-dashboard",
                    "--dashboard-address",
                    _HTTP_ADDRESS,
                    "--name",
                    f"worker-{index}",
                    "--local-directory",
                    str(directory / f"worker-{index}"),
                    "--death-timeout",
                    str(max(timeout, 30.0)),
                ]
                worker = _spawn(worker_cmd, directory / f"worker-{index}.log", child_env)
                procs[f"worker-{index}"] = worker
                workers.append(worker)
            address = _wait_until_ready(
                procs, directory, scheduler_file, n_workers, timeout, keep_logs=tmp_dir is not None
            )
            _log.debug(
                "dask cluster %s with %d workers up in %.1f s",
                address,
                n_workers,
                time.monotonic() - started,
            )
            yield RemoteCluster(
                address=address,
                scheduler_file=str(scheduler_file),
                worker_pids=tuple(proc.pid for proc in workers),
                scheduler_pid=procs["scheduler"].pid,
                _processes=tuple(procs.values()),
            )
        finally:
            stopping = time.monotonic()
            _stop(workers)
            if "scheduler" in procs:
                _stop([procs["scheduler"]])
            _log.debug("dask cluster stopped in %.1f s", time.monotonic() - stopping)


def _entry_point(command: str) -> list[str]:
    """The command line prefix that runs ``dask <command>`` with this interpreter's install."""
    script = Path(sys.executable).parent / "dask"
    if os.access(script, os.X_OK):
        return [str(script), command]
    return [sys.executable, "-m", f"distributed.cli.dask_{command}"]


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment plus ``env``, with ``dataset_kit`` importable."""
    merged = {**os.environ, **(env or {})}
    root = Path(__file__).resolve().parents[2]
    if root.name not in ("site-packages", "dist-packages"):
        entries = [p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in entries:
            merged["PYTHONPATH"] = os.pathsep.join([*entries, str(root)])
    return merged


def _spawn(cmd: Sequence[str], log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, stdout and stderr going to ``log_path``."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=log_path.parent,
            start_new_session=True,
        )
    _log.debug("started pid %d: %s", proc.pid, " ".join(cmd))
    return proc


def _read_scheduler_file(path: Path) -> str | None:
    """The address in a scheduler file, or ``None`` while it is missing or half written."""
    try:
        address = json.loads(path.read_text())["address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if isinstance(address, str) else None


def _wait_until_ready(
    procs: Mapping[str, subprocess.Popen[bytes]],
    directory: Path,
    scheduler_file: Path,
    n_workers: int,
    timeout: float,
    keep_logs: bool,
) -> str:
    """Poll until a client sees ``n_workers`` workers; return the scheduler address."""
    import distributed

    dist: Any = distributed  # Client is untyped
    deadline = time.monotonic() + timeout
    address: str | None = None
    seen = 0
    with contextlib.ExitStack() as stack:
        client: distributed.Client | None = None
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise ClusterStartError(
                        f"dask {name} (pid {proc.pid}) exited with {proc.returncode} during "
                        f"start-up; {_output(directory / f'{name}.log', keep_logs)}"
                    )
            if address is None:
                address = _read_scheduler_file(scheduler_file)
            if address is not None:
                try:
                    if client is None:
                        client = stack.enter_context(
                            dist.Client(
                                address,
                                timeout=max(1.0, deadline - time.monotonic()),
                                set_as_default=False,
                            )
                        )
                    seen = len(client.nthreads())
                except OSError as exc:  # the scheduler died: the next round reports it
                    _log.debug("dask scheduler at %s does not answer: %s", address, exc)
                if seen >= n_workers:
                    return address
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"dask cluster not ready within {timeout:g} s (scheduler at {address}, "
                    f"{seen} of {n_workers} workers); scheduler: "
                    f"{_output(directory / 'scheduler.log', keep_logs)}"
                )
            time.sleep(0.1)


def _output(log: Path, keep_logs: bool) -> str:
    """The last lines a process wrote, for an error message."""
    try:
        text = log.read_bytes()[-4 * _TAIL_CHARS :].decode(errors="replace").strip()
    except OSError as exc:
        text = f"<cannot read: {exc}>"
    where = f" ({log})" if keep_logs else ""
    return f"the end of its output{where}:\n{text[-_TAIL_CHARS:]}"


def _kill_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (our children lead their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM ``procs`` at once, SIGKILL what is left after the grace period, reap all."""
    for proc in procs:
        if proc.poll() is None:
            _kill_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log.warning("pid %d ignored SIGTERM for %.0f s, killing it", proc.pid, _STOP_GRACE)
            _kill_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                _log.error("pid %d survived SIGKILL for %.0f s", proc.pid, _STOP_GRACE)
        # anything the process left in its group (its session is its own, see _spawn)
        _kill_group(proc.pid, signal.SIGKILL)
