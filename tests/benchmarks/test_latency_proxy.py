"""The latency proxy of the Azure round-trip benchmarks (``benchmarks/latency_proxy.py``).

Timing assertions are lower bounds (the proxy must add at least the round trip) with only
generous upper bounds against gross errors: speed targets do not belong in unit tests.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.latency_proxy import (
    blob_endpoint_address,
    latency_proxy,
    rewrite_blob_endpoint,
)

#: The test server answers every byte b with b + 1, so a reply proves a trip through it.
SHIFT = bytes((b + 1) % 256 for b in range(256))
MODES = [pytest.param(False, id="process"), pytest.param(True, id="thread")]


@pytest.fixture
def shift_server() -> Iterator[tuple[str, int]]:
    """A threaded TCP server on 127.0.0.1 that streams back every chunk shifted by 1."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so that the acceptor notices the end of the test
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.translate(SHIFT))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            connections.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[:2]
    stop.set()
    acceptor.join(5)
    listener.close()
    for conn in connections:
        conn.close()


def exchange(address: tuple[str, int], payload: bytes) -> bytes:
    """Send ``payload`` (then half-close) while reading the reply until EOF."""
    with socket.create_connection(address, timeout=60) as sock:

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        sender.join()
    return b"".join(chunks)


@pytest.mark.parametrize("in_thread", MODES)
def test_bytes_pass_through_unchanged_both_ways(
    shift_server: tuple[str, int], in_thread: bool
) -> None:
    payloads = [os.urandom(size) for size in (1, 1000, 3 * 2**20, 12 * 2**20)]
    with latency_proxy(*shift_server, rtt_ms=4, in_thread=in_thread) as proxy:
        with ThreadPoolExecutor(len(payloads)) as pool:
            replies = list(pool.map(lambda p: exchange((proxy.host, proxy.port), p), payloads))
        stats = proxy.stats()
    for payload, reply in zip(payloads, replies, strict=True):
        assert len(reply) == len(payload)
        assert reply == payload.translate(SHIFT)
    total = sum(map(len, payloads))
    assert (stats.connections, stats.bytes_to_server, stats.bytes_to_client) == (4, total, total)


@pytest.mark.parametrize("in_thread", MODES)
def test_a_round_trip_takes_at_least_the_rtt(
    shift_server: tuple[str, int], in_thread: bool
) -> None:
    rtt = 0.08
    slack = 0.003  # timer resolution
    with latency_proxy(*shift_server, rtt_ms=rtt * 1000, connect_rtts=2, in_thread=in_thread) as p:
        with socket.create_connection((p.host, p.port), timeout=30) as sock:
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                sock.sendall(b"ping")
                assert sock.recv(16) == b"ping".translate(SHIFT)
                timings.append(time.perf_counter() - started)
    first, *later = timings
    # a new connection's first exchange also waits for the 2 modelled handshakes
    assert 3 * rtt - slack <= first < 3 * rtt + 5.0
    for seconds in later:
        assert rtt - slack <= seconds < rtt + 5.0


def test_the_delay_does_not_add_up_along_a_stream(shift_server: tuple[str, int]) -> None:
    """Many chunks in flight: the stream takes about one RTT more, not one per chunk."""
    rtt = 0.05
    payload = os.urandom(2**20)
    with latency_proxy(*shift_server, rtt_ms=rtt * 1000, connect_rtts=0) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:
            started = time.perf_counter()
            received = 0
            for offset in range(0, len(payload), 4096):  # 256 separate small sends
                sock.sendall(payload[offset : offset + 4096])
            while received < len(payload):
                received += len(sock.recv(1 << 20))
            seconds = time.perf_counter() - started
    assert received == len(payload)
    assert rtt <= seconds < 100 * rtt  # 256 chunks x 50 ms would be 12.8 s


@pytest.mark.parametrize("in_thread", MODES)
def test_exit_stops_listening_and_closes_connections(
    shift_server: tuple[str, int], in_thread: bool
) -> None:
    with latency_proxy(*shift_server, rtt_ms=1, in_thread=in_thread) as proxy:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
        sock.sendall(b"a")
        assert sock.recv(4) == b"b"
    with sock:
        try:
            assert sock.recv(4) == b""  # closed by the proxy
        except ConnectionResetError:
            pass
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()


def test_connection_string_rewrite() -> None:
    from dataset_kit.testing.azurite import ACCOUNT_KEY, connection_string

    original = connection_string(10000)
    assert blob_endpoint_address(original) == ("127.0.0.1", 10000)
    rewritten = rewrite_blob_endpoint(original, "127.0.0.1", 4242)
    assert blob_endpoint_address(rewritten) == ("127.0.0.1", 4242)
    assert "BlobEndpoint=http://127.0.0.1:4242/devstoreaccount1;" in rewritten
    assert f"AccountKey={ACCOUNT_KEY};" in rewritten
    assert rewritten.replace(":4242/", ":10000/") == original
    with pytest.raises(ValueError, match="BlobEndpoint"):
        blob_endpoint_address("AccountName=a;AccountKey=b")


def test_azure_store_through_the_proxy(azurite: str, container: str) -> None:
    """dataset_kit's Azure store against Azurite through the proxy: blobs and a dataset."""
    import pandas as pd

    import dataset_kit as dk

    frame = pd.DataFrame({"part": [1, 1, 2], "value": [1.5, 2.5, 3.5]})
    with latency_proxy(*blob_endpoint_address(azurite), rtt_ms=5) as proxy:
        slow = rewrite_blob_endpoint(azurite, proxy.host, proxy.port)
        store = dk.open_store(f"azure://{container}", connection_string=slow)
        try:
            store.put("a/b.bin", b"x" * 100_000)
            assert store.get("a/b.bin") == b"x" * 100_000
            for name in ("a/c", "a/d", "a/e"):
                store.put(name, b"")
            store.delete("a/b.bin")
            store.delete_many(["a/c", "a/d", "a/e"])  # a batch request, as the GC sends
            assert list(store.iter_keys("a/")) == []
            dk.write_dataset(frame, store=store, dataset_uuid="ds", partition_on=["part"])
            back = dk.read_table(store=store, dataset_uuid="ds")
        finally:
            store.close()
        stats = proxy.stats()
    assert sorted(back["value"]) == [1.5, 2.5, 3.5]
    assert stats.connections >= 1 and stats.bytes_to_server > 100_000
    # what went through the proxy is really in the emulator
    direct = dk.open_store(f"azure://{container}", connection_string=azurite)
    try:
        assert len(dk.read_table(store=direct, dataset_uuid="ds")) == 3
    finally:
        direct.close()
