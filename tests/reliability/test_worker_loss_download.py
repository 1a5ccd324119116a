"""A dask worker SIGKILLed while a database download's chunk nodes run.

A resumable download (``job_id=``) of an SQLite table in many small chunks runs on a
LocalCluster of 2 worker processes; every store ``put`` is slowed down and recorded
(time and process), so the test can see the chunks stream and kill the worker that wrote
last while the download is about a quarter done: the worker kills itself, in the same
step of its event loop that reads which chunk it is executing (read here and killed from
the test process, the chunk could finish in between). The nanny restarts the worker; the
chunk that was streaming on it is downloaded again (its half-written blobs stay behind
as uncommitted garbage), the chunks it had finished are reused from the job's staging
area (their results died with the worker's memory), the ones queued on it move to the
other worker.

Checked: the run either completes with exactly the table's rows (no row missing, none
twice) or fails with the target unchanged (no new version); the kill really landed
mid-run (the killed worker was executing a chunk and had just written, work went on
after the kill, the scheduler ran that chunk again); only the cut chunk's blobs are left
as garbage (no finished chunk downloaded twice); a rerun with the same job id completes
with exactly the table's rows.

Measured (2 CPUs, load 4-10): killed after ~45 of ~170 puts, 2.6-4.6 s in; the run
completed every time; 15 chunk tasks rescheduled: 1 cut short and downloaded again, 3-4
finished and reused from staging, 10-11 queued on the killed worker and moved; 0-4
orphan blobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.pipelines.download import download_table
from dataset_kit.store import LocalStore
from dataset_kit.testing.dask_cluster import local_cluster
from dataset_kit.testing.recording import IntervalRecordingStore, read_intervals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROWS = 30_000
CHUNKS = 30  # 1,000 rows each
PER_FILE = 250  # 4 blobs per chunk: 120 data blobs in all
PUT_DELAY = 0.05  # seconds per put: a chunk takes >= 0.2 s, the download several seconds
UUID = "orders"
JOB = "orders-full"


def make_source(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, grp INTEGER, qty INTEGER)")
        con.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(i, i % 7, (i * 37) % 1000) for i in range(1, ROWS + 1)],
        )
        con.commit()
    finally:
        con.close()
    return f"sqlite:///{path}"


def written_so_far(log: Path) -> list[tuple[float, float, int]]:
    """The puts recorded so far (each interval file appears whole: written aside and
    renamed)."""
    return read_intervals(log)


def assert_exact_rows(store: LocalStore) -> None:
    """The dataset holds exactly the table's rows: every id once, values intact."""
    df = dk.read_table(store=store, dataset_uuid=UUID).sort_values("id")
    assert df["id"].tolist() == list(range(1, ROWS + 1))
    assert df["qty"].tolist() == [(i * 37) % 1000 for i in range(1, ROWS + 1)]


def chunk_attempts(client: Any) -> dict[str, list[str]]:
    """Per chunk task: the states the scheduler moved it to, in order (its transition log;
    the LocalCluster's scheduler runs in this process)."""
    log = client.cluster.scheduler.transition_log
    # a bounded deque (distributed.admin.low-level-log-length): a full one has dropped
    # the oldest transitions, and the counts below would be silently short
    assert log.maxlen is None or len(log) < log.maxlen, "the transition log overflowed"
    out: dict[str, list[str]] = {}
    for entry in list(log):
        key, finish = str(entry[0]), entry[2]
        if "download-chunk" in key:
            out.setdefault(key, []).append(finish)
    return out


def first_attempt(states: list[str]) -> list[str]:
    """The states of a task's first attempt (up to its second "processing")."""
    starts = [i for i, state in enumerate(states) if state == "processing"]
    return states[: starts[1]] if len(starts) > 1 else states


def executing(dask_worker: Any) -> list[str]:
    """The keys a worker is executing right now (run on the worker)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


async def kill_while_executing(record: str, dask_worker: Any) -> None:
    """Run on the victim worker's event loop: once it executes a chunk task, write the
    keys it executes and the time to ``record`` and SIGKILL this process.

    From reading the worker state to the kill nothing awaits, so nothing else runs on the
    event loop in between: a task found executing may end on its executor thread, but
    its result is handled (executing -> memory, "task-finished" to the scheduler) only
    on this loop, which never gets to it. The keys are what the worker was really
    executing when it died, and the scheduler never saw their results.
    """
    deadline = time.monotonic() + 60
    keys = executing(dask_worker)
    while not any("download-chunk" in key for key in keys) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)  # between two chunks: the next one starts in a moment
        keys = executing(dask_worker)
    killed_at = time.time()
    partial = f"{record}.partial"
    with open(partial, "w") as f:
        json.dump({"executing": keys, "killed_at": killed_at}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, record)  # the client sees the whole record or none
    os.kill(os.getpid(), signal.SIGKILL)


def orphan_blobs(store: LocalStore, keep: set[str]) -> int:
    """Data blobs of the dataset that no version references (a killed chunk's)."""
    return sum(
        1
        for k in store.iter_keys(naming.dataset_prefix(UUID))
        if k.endswith(".parquet") and k not in keep
    )


def test_worker_killed_mid_download_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    url = make_source(tmp_path / "shop.db")
    store = LocalStore(tmp_path / "lake")
    base = dk.write_dataset(  # the target exists: a failed run must leave it alone
        pd.DataFrame({"id": [-1], "grp": [0], "qty": [0]}), store=store, dataset_uuid=UUID
    ).version
    assert base is not None
    base_keys = set(dk.open_dataset(store=store, dataset_uuid=UUID).meta.partitions.values())
    log = tmp_path / "puts"
    log.mkdir()
    slow = IntervalRecordingStore(store, log, delay=PUT_DELAY)

    def job() -> Any:
        return download_table(
            url,
            table="orders",
            store=slow,
            dataset_uuid=UUID,
            chunk_by="id",
            n_chunks=CHUNKS,
            max_rows_per_file=PER_FILE,
            mode="overwrite",
            job_id=JOB,
        )

    outcome: dict[str, Any] = {}
    with local_cluster(n_workers=2, threads_per_worker=1) as client:
        pids = client.run(os.getpid)  # worker address -> pid
        workers = set(pids.values())
        first = job()
        assert first.tasks == CHUNKS

        def run() -> None:
            try:
                outcome["meta"] = first.compute(scheduler=client)
            except BaseException as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=run, daemon=True)
        started = time.time()
        runner.start()
        deadline = time.monotonic() + 120
        while True:  # wait until about a quarter of the data blobs are written
            puts = [i for i in written_so_far(log) if i[2] in workers]
            if len(puts) >= 40 or not runner.is_alive() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert runner.is_alive(), f"the download ended before the kill: {outcome}"
        victim = max(puts, key=lambda i: i[1])[2]  # the worker that wrote last
        address = next(a for a, pid in pids.items() if pid == victim)
        record = tmp_path / "killed.json"
        # on_error="ignore": the worker may die before it answers (the kill can run
        # on its event loop before the answer is sent); a real failure shows as no record
        client.run(
            kill_while_executing, str(record), workers=[address], wait=False, on_error="ignore"
        )
        deadline = time.monotonic() + 120
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert record.exists(), f"the worker {address} did not kill itself: {outcome}"
        killed = json.loads(record.read_text())
        streaming, killed_at = killed["executing"], killed["killed_at"]
        runner.join(300)
        assert not runner.is_alive(), "the download hangs after the worker loss"
        after_workers = set(client.run(os.getpid).values())
        attempts = chunk_attempts(client)

    intervals = read_intervals(log)
    before = [i for i in intervals if i[1] <= killed_at]
    after = [i for i in intervals if i[0] > killed_at and i[2] != victim]
    by_victim = [i for i in before if i[2] == victim]
    # the kill landed mid-run: the victim was writing, and the work went on after it
    assert by_victim and killed_at - max(i[1] for i in by_victim) < 2.0
    assert after, "nothing was written after the kill"
    assert victim not in after_workers  # the nanny replaced it
    meta = outcome.get("meta")
    if meta is not None:
        assert meta.version == base + 1
        assert_exact_rows(store)
        result = "completed"
    else:
        current = dk.open_dataset(store=store, dataset_uuid=UUID)
        assert current.version == base, "a failed run changed the target"
        assert dk.read_table(store=store, dataset_uuid=UUID)["id"].tolist() == [-1]
        result = f"failed cleanly ({type(outcome['error']).__name__})"
    # chunk tasks sent to a worker again: the one streaming on the killed worker is
    # downloaded again; those it had finished are reused from the staging area (their
    # results died with the worker's memory); those waiting in its queue just move
    assert len(attempts) == CHUNKS
    assert len(streaming) == 1 and "download-chunk" in streaming[0], streaming
    rerun = {k for k, states in attempts.items() if states.count("processing") > 1}
    lost_results = {k for k in rerun if "memory" in first_attempt(attempts[k])}
    assert streaming[0] in rerun and streaming[0] not in lost_results
    orphans = orphan_blobs(store, base_keys | (set(meta.partitions.values()) if meta else set()))
    # only the cut chunk's blobs are garbage: no finished chunk was downloaded twice
    assert orphans <= ROWS // CHUNKS // PER_FILE

    again = job()  # a rerun with the same job id completes (or returns the committed run)
    final = again.compute(scheduler="threads")
    assert final.version == base + 1
    assert (again.tasks == 0) == (meta is not None)
    assert_exact_rows(store)
    data_puts = sum(1 for i in intervals if i[2] != os.getpid())
    print(
        f"worker loss during download: {CHUNKS} chunks x {ROWS // CHUNKS} rows, killed pid "
        f"{victim} after {len(before)} of {data_puts} worker puts "
        f"({killed_at - started:.1f} s in); first run {result}; chunk tasks run again: "
        f"{len(rerun)} (1 cut short while streaming, downloaded again; "
        f"{len(lost_results)} finished, reused from staging; {len(rerun) - 1 - len(lost_results)} "
        f"queued on it, moved), {orphans} "
        f"orphan blobs of the cut chunk left for GC; {ROWS:,} rows, each exactly once"
    )
