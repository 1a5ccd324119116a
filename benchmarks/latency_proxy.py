"""A TCP proxy that adds network round-trip time, to model a remote service with a local one.

``latency_proxy(host, port, rtt_ms=20)`` listens on an ephemeral port of 127.0.0.1 and
forwards every connection to ``host:port``. Each chunk read from one side is written to the
other ``rtt_ms / 2`` after it arrived (a per-connection, per-direction queue), so a
request/response exchange costs one extra round trip while throughput is preserved: delays
do not add up across the chunks of one stream, and connections are independent. A new
connection additionally waits ``connect_rtts`` round trips before its first byte reaches the
server, as a real client waits for the TCP (and TLS) handshake.

The proxy runs in a subprocess by default (``python -m benchmarks.latency_proxy``), so that
the measured process's threads and GIL do not delay its timers; ``in_thread=True`` runs it in
a background thread instead. Either way it stops, closing every connection, when the context
exits. :func:`blob_endpoint_address` and :func:`rewrite_blob_endpoint` route an Azurite
connection string through it::

    with azurite_server() as cs:
        with latency_proxy(*blob_endpoint_address(cs), rtt_ms=20) as proxy:
            slow_cs = rewrite_blob_endpoint(cs, proxy.host, proxy.port)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "LatencyProxy",
    "ProxyStats",
    "RunningProxy",
    "blob_endpoint_address",
    "latency_proxy",
    "rewrite_blob_endpoint",
]

ROOT = Path(__file__).resolve().parent.parent
#: Bytes read from a socket at a time.
CHUNK = 256 * 1024
#: Chunks in flight per direction of one connection (bounds memory; at 256 KiB a chunk this
#: caps throughput at 256 MiB per half round trip, far above what is measured here).
QUEUE_CHUNKS = 1024
_EOF = b""


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started."""

    connections: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0


class LatencyProxy:
    """The asyncio proxy itself; use :func:`latency_proxy` rather than this class directly.

    Parameters
    ----------
    target_host, target_port
        Where connections are forwarded to.
    rtt_ms
        Round-trip time to add: every chunk is delayed by ``rtt_ms / 2`` in each direction.
    connect_rtts
        Round trips a new connection waits before its first byte reaches the target
        (1 = a TCP handshake, 2 = TCP + TLS 1.3, 3 = TCP + TLS 1.2).
    """

    def __init__(
        self, target_host: str, target_port: int, *, rtt_ms: float, connect_rtts: float = 1.0
    ) -> None:
        if rtt_ms < 0 or connect_rtts < 0:
            raise ValueError("rtt_ms and connect_rtts must be >= 0")
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0
        self.connect_delay = connect_rtts * rtt_ms / 1000.0
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._counts = {"connections": 0, "bytes_to_server": 0, "bytes_to_client": 0}

    def stats(self) -> ProxyStats:
        """The counters so far."""
        return ProxyStats(**self._counts)

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1 (sets :attr:`port`)."""
        self._server = await asyncio.start_server(self._handle, self.host, 0, limit=CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection, both sides."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(client_w)
        self._counts["connections"] += 1
        loop = asyncio.get_running_loop()
        server_w: asyncio.StreamWriter | None = None
        try:
            accepted = loop.time()
            try:
                server_r, server_w = await asyncio.open_connection(*self.target, limit=CHUNK)
            except OSError:
                return
            self._writers.add(server_w)
            ready = accepted + self.connect_delay
            await asyncio.gather(
                self._pipe(client_r, server_w, "bytes_to_server", ready),
                self._pipe(server_r, client_w, "bytes_to_client", 0.0),
            )
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str, ready: float
    ) -> None:
        """Copy one direction: chunk i is written at max(arrival_i, ready) + delay."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def receive() -> None:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = _EOF
                await queue.put((max(loop.time(), ready) + self.delay, data))
                if not data:
                    return

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if writer.is_closing():
                    return
                if not data:  # forward the half-close
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                self._counts[counter] += len(data)
                try:
                    await writer.drain()
                except OSError:  # the receiver is gone; its reader sees EOF and ends
                    writer.transport.abort()
                    return

        receiving = asyncio.ensure_future(receive())
        try:
            await deliver()
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)


@dataclass(frozen=True)
class RunningProxy:
    """A started proxy: connect to ``host:port``; :meth:`stats` reads its counters."""

    host: str
    port: int
    _stats: Any

    def stats(self) -> ProxyStats:
        """Connections accepted and bytes forwarded so far."""
        result: ProxyStats = self._stats()
        return result


@contextlib.contextmanager
def latency_proxy(
    target_host: str,
    target_port: int,
    *,
    rtt_ms: float,
    connect_rtts: float = 1.0,
    in_thread: bool = False,
    startup_timeout: float = 30.0,
) -> Iterator[RunningProxy]:
    """Run a :class:`LatencyProxy` to ``target_host:target_port`` for the ``with`` block.

    Parameters
    ----------
    target_host, target_port
        The server to forward to.
    rtt_ms
        Added round-trip time in milliseconds (``rtt_ms / 2`` per direction and chunk).
    connect_rtts
        Round trips a new connection waits before its first byte reaches the server.
    in_thread
        Run the event loop in a background thread of this process instead of a subprocess
        (a busy, GIL-holding process then delays the proxy's timers).
    startup_timeout
        Seconds to wait for the proxy to listen.

    Yields
    ------
    RunningProxy
        Its address (``host``, ``port``) and counters.
    """
    if in_thread:
        runner = _thread_proxy(target_host, target_port, rtt_ms, connect_rtts, startup_timeout)
    else:
        runner = _process_proxy(target_host, target_port, rtt_ms, connect_rtts, startup_timeout)
    with runner as proxy:
        yield proxy


@contextlib.contextmanager
def _thread_proxy(
    host: str, port: int, rtt_ms: float, connect_rtts: float, timeout: float
) -> Iterator[RunningProxy]:
    proxy = LatencyProxy(host, port, rtt_ms=rtt_ms, connect_rtts=connect_rtts)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="latency-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout)
        yield RunningProxy(proxy.host, proxy.port, proxy.stats)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from an unbuffered pipe, or '' at EOF or after ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode() if ready else ""


@contextlib.contextmanager
def _process_proxy(
    host: str, port: int, rtt_ms: float, connect_rtts: float, timeout: float
) -> Iterator[RunningProxy]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "benchmarks.latency_proxy", host, str(port)]
    command += ["--rtt-ms", repr(rtt_ms), "--connect-rtts", repr(connect_rtts)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    lock = threading.Lock()

    def stats() -> ProxyStats:
        with lock:
            stdin.write(b"stats\n")
            return ProxyStats(**json.loads(_read_line(stdout, timeout)))

    try:
        line = _read_line(stdout, timeout)
        if not line:
            raise RuntimeError(f"the latency proxy did not start (exit code {proc.poll()})")
        address = json.loads(line)
        yield RunningProxy(address["host"], address["port"], stats)
    finally:
        with contextlib.suppress(OSError):
            stdin.close()  # the proxy stops at EOF on its stdin
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout.close()


def blob_endpoint_address(connection_string: str) -> tuple[str, int]:
    """``(host, port)`` of the ``BlobEndpoint`` of an (Azurite) connection string.

    See :func:`dataset_kit.testing.azurite.connection_string` for the format.
    """
    url = urllib.parse.urlsplit(_endpoint(connection_string))
    if url.hostname is None:
        raise ValueError("the BlobEndpoint has no host")
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def rewrite_blob_endpoint(connection_string: str, host: str, port: int) -> str:
    """The connection string with its ``BlobEndpoint`` pointing at ``host:port`` instead
    (scheme, account path and every other field unchanged)."""
    url = urllib.parse.urlsplit(_endpoint(connection_string))
    new = urllib.parse.urlunsplit(url._replace(netloc=f"{host}:{port}"))
    parts = []
    for part in connection_string.split(";"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}={new}" if sep and name.strip().lower() == "blobendpoint" else part)
    return ";".join(parts)


def _endpoint(connection_string: str) -> str:
    for part in connection_string.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() == "blobendpoint":
            return value.strip()
    raise ValueError("the connection string has no BlobEndpoint")


async def _serve(args: argparse.Namespace) -> None:
    """The subprocess: print the address, answer 'stats' lines, stop at EOF on stdin."""
    proxy = LatencyProxy(args.host, args.port, rtt_ms=args.rtt_ms, connect_rtts=args.connect_rtts)
    await proxy.start()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:  # a thread: portable blocking reads of the control pipe
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read_stdin, daemon=True).start()
    _say({"host": proxy.host, "port": proxy.port})
    try:
        while line := await lines.get():  # '' = EOF: the parent is done (or gone)
            if line.strip() == "stats":
                _say(asdict(proxy.stats()))
    finally:
        await proxy.stop()


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.latency_proxy HOST PORT --rtt-ms MS [--connect-rtts N]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_proxy")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--connect-rtts", type=float, default=1.0)
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
