"""Helper processes that encode and store many small partitions alongside the caller.

Writing thousands of small partitions to a local store costs a fixed 0.13-0.2 ms of CPU
per blob (Parquet writer set-up and footer, a directory and a file creation, more where
the file system is slow to create directories) that holds the GIL, so threads do not help
(measured: sequential is fastest). Processes do. For a write of at
least :data:`MIN_GROUPS` small partitions, :func:`write_groups` starts up to
``processes`` helpers (``python -m dataset_kit.io._encoder_main``: a plain
subprocess, so the caller's ``__main__`` is never re-imported, unlike ``multiprocessing``
with spawn) and hands out chunks of partitions on demand; the calling thread writes chunks
too, so a helper that is slow to start only takes fewer chunks.

Protocol (pickle frames with a length prefix, over the helper's stdin and stdout): the
parent sends the writer (a picklable object with a ``write_many`` method, such as
:class:`dataset_kit.io.blobs.BlobWriter`), then chunk frames (the rows of the chunk as an
Arrow IPC stream plus the partition values); the helper answers each chunk with the
partitions it wrote, or with an error text. Failure of any kind in a helper (it cannot
start, dies, answers garbage) is never fatal: its chunk is written again by the caller,
and the blobs it may have written are unreferenced (removed by the next garbage
collection). An error in the caller's own chunk stops the helpers and is raised.

Nothing here commits: the returned partitions are committed by the caller, as for any
other write.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import IO, Any, Protocol

import pyarrow as pa

__all__ = ["ENV_VAR", "MIN_GROUPS", "helper_count", "write_groups"]

logger = logging.getLogger(__name__)

#: Environment variable: most helper processes per write (``0`` turns them off).
ENV_VAR = "DATASET_KIT_WRITE_PROCESSES"
#: Fewest partitions in one write for which helpers start. A helper imports only pyarrow
#: and :mod:`dataset_kit.io.blobs` (0.1 s), but spawning and feeding it cost more than
#: it saves below this (tmpfs, blobs of 10 rows, median of 5: 1,000 partitions 0.14 s
#: alone, 0.30 s with a helper; 2,000 tie at 0.32 s; 4,000 0.57 s alone, 0.52 s with one).
MIN_GROUPS = 4_000
#: Most helpers by default.
DEFAULT_MAX = 4

_LEN = struct.Struct("<Q")
_warned = False


def helper_count(n_groups: int, *, requested: int | None = None) -> int:
    """How many helper processes a write of ``n_groups`` small partitions gets.

    ``requested`` (or ``$DATASET_KIT_WRITE_PROCESSES``) caps it; ``0`` means none. No
    helpers below :data:`MIN_GROUPS` partitions, on a single CPU, or inside a daemonic
    process (a dask worker: the cluster already runs one task per core).
    """
    if requested is None:
        env = os.environ.get(ENV_VAR, "").strip()
        try:
            requested = int(env) if env else None
        except ValueError:
            logger.warning("ignoring %s=%r: not an integer", ENV_VAR, env)
            requested = None
    cpus = os.cpu_count() or 1
    limit = min(DEFAULT_MAX, cpus - 1) if requested is None else requested
    if limit <= 0 or n_groups < MIN_GROUPS or cpus < 2:
        return 0
    if multiprocessing.current_process().daemon:
        return 0
    return limit


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("the other side closed the pipe")
    (size,) = _LEN.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe mid-frame")
    return pickle.loads(data)


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# A chunk: (first group, end group); a group: (partition values, first row, end row) of
# the sorted payload.
Chunk = tuple[int, int]
Group = tuple[list[str], int, int]


class Writer(Protocol):
    """What writes the partitions; pickled to the helpers."""

    def write_many(self, items: Iterable[tuple[list[str], pa.Table]]) -> list[Any]:
        """Write ``(partition values, rows)`` items; one result per item, in order."""
        ...


def _write_chunk(writer: Writer, table: pa.Table, parts: Sequence[Group]) -> list[Any]:
    """Write the groups ``parts`` (their rows: ``table[first:end]``)."""
    return writer.write_many((values, table.slice(a, b - a)) for values, a, b in parts)


class _Pool:
    """Hands out chunks to the caller and the helpers; collects results."""

    def __init__(self, groups: Sequence[Group], chunk_size: int) -> None:
        self.groups = groups
        self.pending: deque[Chunk] = deque(
            (i, min(i + chunk_size, len(groups))) for i in range(0, len(groups), chunk_size)
        )
        self.results: dict[int, list[Any]] = {}
        self.by_helpers = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def take(self) -> Chunk | None:
        with self.lock:
            if self.stop.is_set() or not self.pending:
                return None
            return self.pending.popleft()

    def give_back(self, chunk: Chunk) -> None:
        with self.lock:
            self.pending.appendleft(chunk)

    def done(self, chunk: Chunk, written: list[Any]) -> None:
        with self.lock:
            self.results[chunk[0]] = written


def _run_helper(pool: _Pool, payload: pa.Table, writer: Writer, index: int) -> None:
    """Feed one helper process until the chunks run out; never raises."""
    global _warned
    proc: subprocess.Popen[bytes] | None = None
    chunk: Chunk | None = None
    try:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataset_kit.io._encoder_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        _send(proc.stdin, writer)
        while (chunk := pool.take()) is not None:
            first, end = chunk
            lo, hi = pool.groups[first][1], pool.groups[end - 1][2]
            parts = [(values, a - lo, b - lo) for values, a, b in pool.groups[first:end]]
            _send(proc.stdin, (parts, _to_ipc(payload.slice(lo, hi - lo))))
            status, value = _receive(proc.stdout)
            if status != "ok":
                logger.info("write helper %d failed a chunk (%s); writing it here", index, value)
                pool.give_back(chunk)
                chunk = None
                return
            pool.done(chunk, value)
            with pool.lock:
                pool.by_helpers += len(value)
            chunk = None
    except Exception as exc:  # a helper is an optimisation: the caller does its work
        if chunk is not None:
            pool.give_back(chunk)
        if not _warned:
            _warned = True
            logger.warning("write helper process unavailable (%r); writing in-process", exc)
    finally:
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()  # EOF: the helper exits
        proc.wait(timeout=5)
    except Exception:
        proc.kill()
        proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def write_groups(
    payload: pa.Table,
    groups: Sequence[Group],
    *,
    writer: Writer,
    processes: int,
    caller_works: bool = True,
    helper_writer: Writer | None = None,
) -> list[Any]:
    """Write every group with ``writer`` here and in ``processes`` helpers; in order.

    ``payload`` holds the rows sorted by group. The helpers get ``helper_writer``
    (default: ``writer``) pickled. With ``caller_works=False`` the calling thread only
    writes chunks no helper could.
    """
    chunk_size = max(64, min(1024, len(groups) // (8 * (processes + 1)) or 1))
    pool = _Pool(groups, chunk_size)
    threads = [
        threading.Thread(
            target=_run_helper,
            args=(pool, payload, writer if helper_writer is None else helper_writer, i),
            name=f"dk-write-helper-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for t in threads:
        t.start()
    try:
        while True:
            alive = any(t.is_alive() for t in threads)
            chunk = pool.take() if caller_works or not alive else None
            if chunk is None:
                with pool.lock:
                    finished = not pool.pending
                if finished and not alive:
                    break
                # helpers are busy: wait for one to finish or to give a chunk back
                for t in threads:
                    t.join(timeout=0.01)
                continue
            first, end = chunk
            pool.done(chunk, _write_chunk(writer, payload, groups[first:end]))
    except BaseException:
        pool.stop.set()
        raise
    finally:
        pool.stop.set()
        for t in threads:
            t.join()
    logger.info(
        "wrote %d partitions, %d of them by %d helper processes",
        len(groups),
        pool.by_helpers,
        processes,
    )
    written = [w for first in sorted(pool.results) for w in pool.results[first]]
    if len(written) != len(groups):  # pragma: no cover - a bug, never a silent gap
        raise RuntimeError(f"wrote {len(written)} of {len(groups)} partitions")
    return written


def main() -> int:
    """Helper process loop: the writer, then chunks until EOF."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    stdin = sys.stdin.buffer
    try:
        writer: Writer = _receive(stdin)
    except EOFError:
        return 0
    while True:
        try:
            parts, data = _receive(stdin)
        except EOFError:
            return 0
        try:
            answer: tuple[str, Any] = ("ok", _write_chunk(writer, _from_ipc(data), parts))
        except Exception as exc:  # reported; the parent writes the chunk itself
            answer = ("error", f"{type(exc).__name__}: {exc}")
        _send(protocol_out, answer)
