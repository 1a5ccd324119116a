"""Database downloads against real databases: SQLite files and a PostgreSQL server.

No mocks: every source is a real database, every result is compared row for row with
what the database itself returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import (
    DatasetExistsError,
    InvalidInputError,
    SchemaMismatchError,
    SourceConnectionError,
    SourceError,
    SourceQueryError,
    StoreUnavailableError,
)
from dataset_kit.pipelines.download import STATE_KEY, download_table, staging_prefix
from dataset_kit.store import DelegatingStore, LocalStore, MemoryStore, Store
from dataset_kit.throttle import Throttle

LOGGER = "dataset_kit.pipelines.download"


# --------------------------------------------------------------------------- helpers
def sqlite_db(path: Path, ddl: str, rows: Sequence[Sequence[Any]] = (), table: str = "t") -> str:
    """Create an SQLite file with one table; return its URL."""
    con = sqlite3.connect(path)
    try:
        con.execute(ddl)
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        con.commit()
    finally:
        con.close()
    return f"sqlite:///{path}"


def pg_exec(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        for sql in statements:
            con.execute(sql)  # type: ignore[arg-type]


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return list(con.execute(sql).fetchall())  # type: ignore[arg-type]


def read_rows(store: Store, uuid: str, key: str = "id") -> list[dict[str, Any]]:
    """The dataset's rows as dicts, sorted by ``key`` (NULL keys last)."""
    table = dk.read_table(store=store, dataset_uuid=uuid, output="arrow")
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0))


def blob_rows(meta: dk.DatasetMetadata) -> list[int]:
    """Rows of every blob of a dataset."""
    return sorted(rows for rows, _ in meta.stats.values())


def assert_no_secret(exc: BaseException, secret: str) -> None:
    text = "".join(traceback.format_exception(exc))
    assert secret not in text
    assert secret not in repr(exc)


def assert_not_committed(store: Store, uuid: str) -> None:
    """No dataset: only uncommitted data blobs (garbage for GC) may be left."""
    assert uuid not in dk.list_datasets(store=store)
    for key in store.iter_keys():
        assert key.startswith(f"{uuid}/table/") and key.endswith(".parquet"), key


@pytest.fixture
def store() -> Store:
    return MemoryStore()


def password_of(url: str) -> str:
    password = urllib.parse.urlsplit(url).password
    assert password
    return password


# --------------------------------------------------------------------------- SQLite
SQLITE_DDL = (
    "CREATE TABLE t (id INTEGER, amount REAL, price NUMERIC(10,2), name TEXT, flag BOOLEAN, "
    "day DATE, at TIMESTAMP, at_tz TIMESTAMP WITH TIME ZONE, payload BLOB, n INTEGER)"
)


def sqlite_rows(n: int = 300) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        if i < 150 or i % 7 == 0:  # a long all-NULL start: ADBC infers types from it
            rows.append((i, None, None, None, None, None, None, None, None, None))
            continue
        rows.append(
            (
                i,
                i * 0.5,
                i / 4 if i % 3 else i,  # NUMERIC affinity: REAL 1.25 next to INTEGER 3
                f"name-{i}-é",
                i % 2,
                f"2024-0{1 + i % 9}-1{i % 10}",
                f"2024-01-01 10:{i % 60:02d}:00.{i:06d}",
                f"2024-01-01T10:00:00+0{i % 3}:00",
                bytes([i % 256, 0, 1]),
                i * 1000,
            )
        )
    return rows


def expected_sqlite(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        at_tz = None
        if r[7] is not None:
            at_tz = dt.datetime.fromisoformat(r[7]).astimezone(dt.UTC)
        out.append(
            {
                "id": r[0],
                "amount": r[1],
                "price": None
                if r[2] is None
                else decimal.Decimal(str(r[2])).quantize(decimal.Decimal("0.01")),
                "name": r[3],
                "flag": None if r[4] is None else bool(r[4]),
                "day": None if r[5] is None else dt.date.fromisoformat(r[5]),
                "at": None if r[6] is None else dt.datetime.fromisoformat(r[6]),
                "at_tz": at_tz,
                "payload": r[8],
                "n": r[9],
            }
        )
    return out


def test_sqlite_every_type_row_for_row(tmp_path: Path, store: Store) -> None:
    rows = sqlite_rows()
    url = sqlite_db(tmp_path / "src.db", SQLITE_DDL, rows)
    meta = download_table(
        url, table="t", store=store, dataset_uuid="d", chunk_by="id", n_chunks=3
    ).compute()
    assert meta.schema is not None
    assert dict(zip(meta.schema.names, meta.schema.types, strict=True)) == {
        "id": pa.int64(),
        "amount": pa.float64(),
        "price": pa.decimal128(10, 2),
        "name": pa.string(),
        "flag": pa.bool_(),
        "day": pa.date32(),
        "at": pa.timestamp("us"),
        "at_tz": pa.timestamp("us", tz="UTC"),
        "payload": pa.binary(),
        "n": pa.int64(),
    }
    assert read_rows(store, "d") == expected_sqlite(rows)
    assert sum(blob_rows(meta)) == len(rows) and min(blob_rows(meta)) > 0


def test_sqlite_query_with_expressions_and_type_overrides(tmp_path: Path, store: Store) -> None:
    rows = [(i, i * 0.5, f"n{i}") for i in range(50)]
    url = sqlite_db(tmp_path / "q.db", "CREATE TABLE t (id INTEGER, x REAL, s TEXT)", rows)
    meta = download_table(
        url,
        query="SELECT id, x * 2 AS x2, upper(s) AS s, NULL AS blank FROM t WHERE id >= 10;",
        store=store,
        dataset_uuid="q",
        chunk_by="id",
        n_chunks=4,
        types={"id": pa.int32(), "x2": "float32"},
    ).compute()
    assert meta.schema is not None
    assert meta.schema.field("id").type == pa.int32()
    assert meta.schema.field("x2").type == pa.float32()
    assert meta.schema.field("s").type == pa.string()
    got = read_rows(store, "q")
    assert [(r["id"], r["x2"], r["s"], r["blank"]) for r in got] == [
        (i, i * 1.0, f"N{i}", None) for i in range(10, 50)
    ]


@pytest.mark.parametrize("chunking", ["range", "rows"])
@pytest.mark.parametrize(
    ("keys", "n_chunks"),
    [
        pytest.param([], 4, id="empty"),
        pytest.param([7], 4, id="one-row"),
        pytest.param([None, None, 3], 4, id="null-keys"),
        pytest.param([None, None], 3, id="only-null-keys"),
        pytest.param([*range(100), 25, 25, 50, 75, 75, 99], 4, id="range-borders"),
        pytest.param([*range(1000), 10**9, 10**9 + 1], 5, id="skewed"),
        pytest.param([5] * 40, 4, id="one-distinct-key"),
        pytest.param([-(2**62), 2**62], 8, id="huge-span"),
    ],
)
def test_chunking_edge_cases(
    tmp_path: Path, store: Store, keys: list[int | None], n_chunks: int, chunking: Any
) -> None:
    rows = [(k, i) for i, k in enumerate(keys)]
    url = sqlite_db(tmp_path / "e.db", "CREATE TABLE t (k INTEGER, i INTEGER)", rows)
    meta = download_table(
        url,
        table="t",
        store=store,
        dataset_uuid="e",
        chunk_by="k",
        n_chunks=n_chunks,
        chunking=chunking,
    ).compute()
    got = sorted(r["i"] for r in read_rows(store, "e", key="i"))
    assert got == list(range(len(keys)))  # every row exactly once
    assert all(n > 0 for n in blob_rows(meta))  # never an empty file
    assert meta.schema is not None and meta.schema.names == ["k", "i"]
    non_null = [k for k in keys if k is not None]
    state = meta.metadata[STATE_KEY]
    assert state["key"] == "k"
    assert state["high_water"] == (
        None if not non_null else {"type": "int", "value": max(non_null)}
    )


def test_rows_chunking_balances_skewed_keys(tmp_path: Path, store: Store) -> None:
    keys = list(range(900)) + [10**6 + i for i in range(100)]
    url = sqlite_db(tmp_path / "s.db", "CREATE TABLE t (k INTEGER)", [(k,) for k in keys])
    by_range = download_table(
        url, table="t", store=store, dataset_uuid="r", chunk_by="k", n_chunks=4
    ).compute()
    by_rows = download_table(
        url, table="t", store=store, dataset_uuid="q", chunk_by="k", n_chunks=4, chunking="rows"
    ).compute()
    assert blob_rows(by_range) == [100, 900]  # empty middle ranges write nothing
    assert blob_rows(by_rows) == [250, 250, 250, 250]


def test_timestamp_date_and_float_keys_in_sqlite(tmp_path: Path, store: Store) -> None:
    rows = [
        (f"2024-01-{1 + i % 28:02d} 0{i % 10}:00:00", f"2024-02-{1 + i % 28:02d}", i / 3, i)
        for i in range(200)
    ]
    rows.append((None, None, None, 200))
    url = sqlite_db(
        tmp_path / "k.db", "CREATE TABLE t (at TIMESTAMP, day DATE, x REAL, i INTEGER)", rows
    )
    for key in ("at", "day", "x"):
        meta = download_table(
            url, table="t", store=store, dataset_uuid=f"k-{key}", chunk_by=key, n_chunks=6
        ).compute()
        got = sorted(r["i"] for r in read_rows(store, f"k-{key}", key="i"))
        assert got == list(range(201)), key
        assert len(meta.partitions) >= 5, key


def test_partition_on_and_file_size_bound(tmp_path: Path, store: Store) -> None:
    rows = [(i, f"2024-01-0{1 + i % 3}", float(i)) for i in range(2500)]
    url = sqlite_db(tmp_path / "p.db", "CREATE TABLE t (id INTEGER, day DATE, v REAL)", rows)
    meta = download_table(
        url, table="t", store=store, dataset_uuid="one", max_rows_per_file=1000
    ).compute()
    assert blob_rows(meta) == [500, 1000, 1000]
    meta = download_table(
        url,
        table="t",
        store=store,
        dataset_uuid="parts",
        chunk_by="id",
        n_chunks=2,
        partition_on="day",
        max_rows_per_file=600,
    ).compute()
    assert meta.partition_keys == ("day",)
    assert sum(blob_rows(meta)) == 2500 and max(blob_rows(meta)) <= 600
    df = dk.read_table(
        store=store, dataset_uuid="parts", predicates=[[("day", "==", dt.date(2024, 1, 2))]]
    )
    assert sorted(df["id"]) == [i for i in range(2500) if i % 3 == 1]


def test_explicit_chunks_and_modes(tmp_path: Path, store: Store) -> None:
    rows = [(i, "eu" if i % 2 else "us") for i in range(20)]
    url = sqlite_db(tmp_path / "m.db", "CREATE TABLE t (id INTEGER, region TEXT)", rows)
    job = download_table(
        url,
        table="t",
        store=store,
        dataset_uuid="m",
        chunks=["region = 'eu'", "region = 'us'"],
        metadata={"owner": "sales"},
    )
    assert job.tasks == 2
    meta = job.compute()
    assert meta.metadata["owner"] == "sales" and len(meta.partitions) == 2
    with pytest.raises(DatasetExistsError):
        download_table(url, table="t", store=store, dataset_uuid="m")
    meta = download_table(url, table="t", store=store, dataset_uuid="m", mode="append").compute()
    assert len(read_rows(store, "m")) == 40
    download_table(url, table="t", store=store, dataset_uuid="m", mode="overwrite").compute()
    assert len(read_rows(store, "m")) == 20


def test_bad_options_are_refused_before_anything_runs(tmp_path: Path, store: Store) -> None:
    url = sqlite_db(tmp_path / "b.db", "CREATE TABLE t (id INTEGER, s TEXT)", [(1, "a"), (2, "b")])
    bad: list[dict[str, Any]] = [
        {},
        {"table": "t", "query": "SELECT 1"},
        {"table": "t", "chunk_by": "id", "chunks": ["id < 1"]},
        {"table": "t", "incremental": True},
        {"table": "t", "chunk_by": "id", "incremental": True},
        {"table": "t", "job_id": "no/slashes"},
        {"table": "t", "n_chunks": 0},
        {"table": "t", "types": {"nope": pa.int8()}},
        {"table": "t", "types": {"id": "not-a-type"}},
        {"table": "t", "columns": ["nope"]},
        {"table": "t", "chunk_by": "nope"},
        {"table": "t", "chunk_by": "s"},  # text keys need chunking="rows"
        {"table": "t", "partition_on": "nope"},
        {"table": "t", "chunks": []},
        # one throttle for both: a chunk keeps its database lease while it writes (and
        # each write takes a storage lease), so at its limit it waited on itself forever
        {
            "table": "t",
            "db_concurrency": Throttle("io", 1),
            "storage_concurrency": Throttle("io", 1),
        },
    ]
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            download_table(url, store=store, dataset_uuid="b", **kwargs)
    assert not list(store.iter_keys())
    # a text key splits by row counts
    meta = download_table(
        url, table="t", store=store, dataset_uuid="b", chunk_by="s", chunking="rows"
    ).compute()
    assert meta.metadata[STATE_KEY]["high_water"] == {"type": "str", "value": "b"}


def test_sqlite_bad_input_is_typed_and_commits_nothing(tmp_path: Path, store: Store) -> None:
    url = sqlite_db(tmp_path / "x.db", "CREATE TABLE t (id INTEGER, s TEXT)", [(1, "a"), (5, "b")])
    with pytest.raises(SourceQueryError, match="no such table"):
        download_table(url, table="nope", store=store, dataset_uuid="x")
    with pytest.raises(SourceQueryError, match="syntax error"):
        download_table(url, query="SELEC id FROM t", store=store, dataset_uuid="x")
    with pytest.raises(SourceConnectionError, match="no such file"):
        download_table(f"sqlite:///{tmp_path}/missing.db", table="t", store=store, dataset_uuid="x")
    assert not (tmp_path / "missing.db").exists()  # opened read-only: never created
    # a column whose values change type: a clear error when the job runs, nothing committed
    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("INSERT INTO t VALUES (7, 'c'), ('oops', 'd')")
    con.commit()
    con.close()
    job = download_table(url, table="t", store=store, dataset_uuid="x", types={"id": pa.int64()})
    with pytest.raises(SourceQueryError, match="'id'"):
        job.compute()
    assert not list(store.iter_keys())  # no dataset, no leftover blobs


def untyped_db(path: Path, n: int = 100) -> str:
    return sqlite_db(
        path, "CREATE TABLE t (id INTEGER PRIMARY KEY)", [(i,) for i in range(1, n + 1)]
    )


#: An expression without a declared type: integers for id < 50, reals above.
MIXED = "SELECT id, CASE WHEN id < 50 THEN id ELSE id * 1.5 END AS e FROM t"


@pytest.mark.parametrize(
    ("n_chunks", "max_rows_per_file"),
    [(1, 1_000_000), (4, 1_000_000), (1, 10)],
    ids=["one-chunk", "across-chunks", "across-files-of-a-chunk"],
)
def test_untyped_expression_widens_across_chunks_and_files(
    tmp_path: Path, store: Store, n_chunks: int, max_rows_per_file: int
) -> None:
    # int64 in one chunk (or file), double in another: SchemaMismatchError at commit
    url = untyped_db(tmp_path / "e.db")
    meta = download_table(
        url,
        query=MIXED,
        store=store,
        dataset_uuid="e",
        chunk_by="id",
        n_chunks=n_chunks,
        max_rows_per_file=max_rows_per_file,
    ).compute(scheduler="sync")
    assert meta.schema is not None and meta.schema.field("e").type == pa.float64()
    got = read_rows(store, "e")
    assert [r["e"] for r in got] == [i if i < 50 else i * 1.5 for i in range(1, 101)]
    df = dk.read_table(store=store, dataset_uuid="e")
    assert df["e"].dtype == "float64"


def test_untyped_expression_that_does_not_widen_exactly_fails(tmp_path: Path, store: Store) -> None:
    url = untyped_db(tmp_path / "e.db")
    big = "SELECT id, CASE WHEN id < 50 THEN id + 9007199254740992 ELSE id * 1.5 END AS e FROM t"
    job = download_table(url, query=big, store=store, dataset_uuid="big", chunk_by="id", n_chunks=4)
    with pytest.raises(SourceQueryError, match=r"'e'.*(exactly|not in range).*CAST"):
        job.compute(scheduler="sync")
    assert_not_committed(store, "big")
    store = MemoryStore()
    text = "SELECT id, CASE WHEN id < 50 THEN id ELSE 'x' || id END AS e FROM t"
    job = download_table(
        url, query=text, store=store, dataset_uuid="txt", chunk_by="id", n_chunks=4
    )
    with pytest.raises(SourceQueryError, match="no common type"):
        job.compute(scheduler="sync")
    assert_not_committed(store, "txt")


def test_untyped_expression_appended_takes_the_dataset_type(tmp_path: Path, store: Store) -> None:
    url = untyped_db(tmp_path / "e.db")
    download_table(
        url, query=MIXED, store=store, dataset_uuid="e", chunk_by="id", n_chunks=2
    ).compute(scheduler="sync")
    # integers only (an expression: no declared type): appended as the dataset's double
    ints = "SELECT id + 100 AS id, id + 0 AS e FROM t"
    meta = download_table(
        url, query=ints, store=store, dataset_uuid="e", chunk_by="id", n_chunks=2, mode="append"
    ).compute(scheduler="sync")
    assert meta.schema is not None and meta.schema.field("e").type == pa.float64()
    assert [r["e"] for r in read_rows(store, "e")][-3:] == [98.0, 99.0, 100.0]
    # the dataset's schema rules: reals do not go into an integer column
    download_table(
        url, query="SELECT id, id + 0 AS e FROM t", store=store, dataset_uuid="i"
    ).compute(scheduler="sync")
    job = download_table(
        url, query=MIXED, store=store, dataset_uuid="i", chunk_by="id", n_chunks=2, mode="append"
    )
    with pytest.raises(SchemaMismatchError, match="'e'"):
        job.compute(scheduler="sync")
    assert dk.open_dataset(store=store, dataset_uuid="i").version == 0


# --------------------------------------------------------------------------- incremental
def test_incremental_append_sqlite(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "inc.db"
    url = sqlite_db(
        path,
        "CREATE TABLE t (id INTEGER, v TEXT)",
        [(i, f"v{i}") for i in range(10)] + [(None, "n")],
    )

    def run() -> dk.DatasetMetadata:
        return download_table(
            url,
            table="t",
            store=store,
            dataset_uuid="inc",
            chunk_by="id",
            n_chunks=3,
            mode="append",
            incremental=True,
        ).compute()

    first = run()
    assert first.metadata[STATE_KEY]["high_water"] == {"type": "int", "value": 9}
    assert len(read_rows(store, "inc")) == 11
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(10, 25)])
    con.execute("INSERT INTO t VALUES (NULL, 'late-null'), (3, 'late-low-key')")
    con.commit()
    con.close()
    second = run()
    assert second.version == first.version + 1
    assert second.metadata[STATE_KEY]["high_water"] == {"type": "int", "value": 24}
    got = read_rows(store, "inc")
    assert [r["id"] for r in got] == [*range(25), None]  # only keys above the mark
    third = run()  # nothing new: no new version
    assert third.version == second.version


# --------------------------------------------------------------------------- resume
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataset_kit.store import DelegatingStore, LocalStore
    from dataset_kit.pipelines.download import download_table

    class KillAfterRecords(DelegatingStore):
        '''SIGKILLs this process when it is about to record a third finished chunk.'''

        seen = 0

        def _put(self, key, data, *, if_absent, if_match):
            if "/_staging/" in key and "/chunks/" in key:
                KillAfterRecords.seen += 1
                if KillAfterRecords.seen > 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)

    url, root = sys.argv[1], sys.argv[2]
    job = download_table(url, table="t", store=KillAfterRecords(LocalStore(root)),
                         dataset_uuid="r", chunk_by="id", n_chunks=5, job_id="nightly-1")
    job.compute(scheduler="sync")
    print("not killed")
    """
)


def count_logs(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == LOGGER and r.getMessage().endswith(text))


def test_killed_download_resumes_with_the_same_job_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [(i, f"row-{i}", i * 0.25) for i in range(5000)]
    url = sqlite_db(tmp_path / "r.db", "CREATE TABLE t (id INTEGER, s TEXT, x REAL)", rows)
    root = tmp_path / "lake"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run(
        [sys.executable, str(script), url, str(root)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stdout + done.stderr
    store = LocalStore(root)
    prefix = staging_prefix("r", "nightly-1")
    records = sorted(k for k in store.iter_keys(prefix) if "/chunks/" in k)
    assert len(records) == 2 and store.exists(prefix + "plan.json")
    assert "r" not in dk.list_datasets(store=store)

    caplog.set_level(logging.INFO, logger=LOGGER)
    resumed = download_table(
        url, table="t", store=store, dataset_uuid="r", chunk_by="id", n_chunks=5, job_id="nightly-1"
    ).compute()
    assert count_logs(caplog, ": downloading") == 3  # only the chunks that had not finished
    assert sum(1 for r in caplog.records if ": reused (" in r.getMessage()) == 2
    assert not list(store.iter_keys(prefix))  # staging area removed after the commit

    plain = download_table(
        url, table="t", store=store, dataset_uuid="plain", chunk_by="id", n_chunks=5
    ).compute()
    assert read_rows(store, "r") == read_rows(store, "plain")
    assert resumed.schema == plain.schema
    assert blob_rows(resumed) == blob_rows(plain)
    assert resumed.metadata[STATE_KEY]["job_id"] == "nightly-1"

    # the job is done: running it again changes nothing and downloads nothing
    caplog.clear()
    again = download_table(
        url, table="t", store=store, dataset_uuid="r", chunk_by="id", n_chunks=5, job_id="nightly-1"
    )
    assert again.tasks == 0 and again.compute().version == resumed.version
    assert count_logs(caplog, ": downloading") == 0


class _FailAtCommit(DelegatingStore):
    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_versions/" in key:
            raise StoreUnavailableError("the network went down at the commit", key=key)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


class _GcAtCommit(DelegatingStore):
    """Another process's GC, with the default grace period, when the snapshot is written."""

    collected = -1

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_versions/" in key and self.collected < 0:
            self.collected = dk.garbage_collect(store=self.inner, dataset_uuid="r").count
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_a_resume_hours_later_keeps_its_reused_chunks_through_a_gc(tmp_path: Path) -> None:
    """The chunks a failed run finished are unreferenced, and hours old by the time the
    job is resumed: garbage to a GC. The resume touches each blob it reuses, so the GC's
    grace period (checked as it deletes) protects them until the commit."""
    rows = [(i, f"row-{i}", i * 0.25) for i in range(400)]
    url = sqlite_db(tmp_path / "r.db", "CREATE TABLE t (id INTEGER, s TEXT, x REAL)", rows)
    store = LocalStore(tmp_path / "lake")
    dk.write_dataset(
        pa.table({"id": [-1], "s": ["old"], "x": [0.0]}), store=store, dataset_uuid="r"
    )

    def job(target: Store) -> Any:
        return download_table(
            url,
            table="t",
            store=target,
            dataset_uuid="r",
            chunk_by="id",
            n_chunks=4,
            mode="append",
            job_id="nightly-1",
        )

    with pytest.raises(StoreUnavailableError):
        job(_FailAtCommit(store)).compute(scheduler="sync")
    past = time.time() - 8 * 3600  # the next morning
    for key in store.iter_keys("r/"):
        path = store.local_path(key)
        assert path is not None
        os.utime(path, (past, past))
    gc = _GcAtCommit(store)
    meta = job(gc).compute(scheduler="sync")
    assert gc.collected >= 0  # it ran, and deleted only what nothing reuses
    assert len(read_rows(store, "r")) == 401 and meta.version == 1
    assert dk.pipelines.verify("r", store=store).compute().ok


def test_job_id_of_another_download_is_refused(tmp_path: Path, store: Store) -> None:
    url = sqlite_db(tmp_path / "j.db", "CREATE TABLE t (id INTEGER)", [(1,), (2,)])
    job = download_table(url, table="t", store=store, dataset_uuid="j", job_id="a", chunk_by="id")
    assert store.exists(staging_prefix("j", "a") + "plan.json")  # the plan is kept at once
    with pytest.raises(InvalidInputError, match="another download"):
        download_table(url, table="t", store=store, dataset_uuid="j", job_id="a", n_chunks=3)
    job.compute()


# --------------------------------------------------------------------------- PostgreSQL
PG_DDL = """
CREATE TABLE every_type (
    id bigint, i2 smallint, i4 integer, f4 real, f8 double precision,
    dec numeric(12, 3), num numeric, txt text, vc varchar(20), ch char(3),
    ts timestamp, tstz timestamptz, d date, b boolean, raw bytea, u uuid, j jsonb
);
INSERT INTO every_type
SELECT g, (g % 300)::smallint, g * 7, g * 0.5, g / 3.0, g * 1.125, g / 7.0, 'text ' || g || ' é',
       'vc' || g, 'c' || (g % 10), timestamp '2024-01-01 00:00:00.000001' + g * interval '37 min',
       timestamptz '2024-01-01 00:00+02' + g * interval '1 hour', date '2020-02-28' + g,
       g % 2 = 0, decode(lpad(to_hex(g), 8, '0'), 'hex'), md5(g::text)::uuid,
       jsonb_build_object('g', g)
FROM generate_series(1, 2000) g;
INSERT INTO every_type (id) VALUES (NULL), (NULL);
INSERT INTO every_type (id, txt) SELECT g, NULL FROM generate_series(2001, 2005) g;
"""

PG_EXPECTED = """
SELECT id, i2, i4, f4, f8, dec, num::float8, txt, vc, ch, ts, tstz, d, b, raw, u::text, j::text
FROM every_type
"""


@pytest.fixture(scope="module")
def pg(postgres: str) -> str:
    """The session's server with the test tables of this module."""
    pg_exec(postgres, *[s for s in PG_DDL.split(";") if s.strip()])
    pg_exec(
        postgres,
        "CREATE TABLE seq (id integer PRIMARY KEY, v text)",
        "INSERT INTO seq SELECT g, 'v' || g FROM generate_series(1, 400) g",
        # a view that takes ~0.4 s per query: concurrency can be seen server-side
        "CREATE VIEW slow AS SELECT s.* FROM seq s, (SELECT pg_sleep(0.4)) z",
    )
    return postgres


def test_postgres_every_type_row_for_row(pg: str, store: Store) -> None:
    meta = download_table(
        pg, table="every_type", store=store, dataset_uuid="pg", chunk_by="id", n_chunks=4
    ).compute()
    assert meta.schema is not None
    assert dict(zip(meta.schema.names, meta.schema.types, strict=True)) == {
        "id": pa.int64(),
        "i2": pa.int16(),
        "i4": pa.int32(),
        "f4": pa.float32(),
        "f8": pa.float64(),
        "dec": pa.decimal128(12, 3),
        "num": pa.float64(),
        "txt": pa.string(),
        "vc": pa.string(),
        "ch": pa.string(),
        "ts": pa.timestamp("us"),
        "tstz": pa.timestamp("us", tz="UTC"),
        "d": pa.date32(),
        "b": pa.bool_(),
        "raw": pa.binary(),
        "u": pa.string(),
        "j": pa.string(),
    }
    names = meta.schema.names
    source = pg_rows(pg, PG_EXPECTED)
    expected = sorted(
        (dict(zip(names, r, strict=True)) for r in source),
        key=lambda r: (r["id"] is None, r["id"] or 0),
    )
    got = read_rows(store, "pg")
    assert len(got) == len(expected) == 2007
    assert got == expected
    assert meta.metadata[STATE_KEY]["high_water"] == {"type": "int", "value": 2005}


@pytest.mark.parametrize("key", ["ts", "tstz", "d", "dec", "f8", "i2"])
def test_postgres_keys_of_every_kind(pg: str, store: Store, key: str) -> None:
    meta = download_table(
        pg,
        query="SELECT id, ts, tstz, d, dec, f8, i2 FROM every_type WHERE id IS NOT NULL",
        store=store,
        dataset_uuid="k",
        chunk_by=key,
        n_chunks=5,
        chunking="rows" if key == "i2" else "range",
    ).compute()
    ids = sorted(r["id"] for r in read_rows(store, "k"))
    assert ids == list(range(1, 2006))
    assert len(meta.partitions) >= 5  # NULL keys (ids 2001-2005 have them) get their own
    assert min(blob_rows(meta)) > 0


def test_postgres_incremental_append(pg: str, store: Store) -> None:
    pg_exec(
        pg,
        "CREATE TABLE events (id bigserial, at timestamptz, v int)",
        "INSERT INTO events (at, v) SELECT timestamptz '2024-05-01 00:00+00' + g * interval "
        "'1 s', g FROM generate_series(1, 500) g",
    )

    def run() -> dk.DatasetMetadata:
        return download_table(
            pg,
            table="events",
            store=store,
            dataset_uuid="ev",
            chunk_by="at",
            n_chunks=4,
            mode="append",
            incremental=True,
            job_id=f"job-{time.monotonic_ns()}",
        ).compute()

    first = run()
    pg_exec(
        pg,
        "INSERT INTO events (at, v) SELECT timestamptz '2024-05-01 00:00+00' + g * interval "
        "'1 s', g FROM generate_series(501, 800) g",
    )
    second = run()
    assert second.version == first.version + 1
    got = read_rows(store, "ev", key="v")
    assert [r["v"] for r in got] == list(range(1, 801))
    assert second.metadata[STATE_KEY]["high_water"]["value"].startswith("2024-05-01T00:13:20")


def test_postgres_bad_input_is_typed_masked_and_commits_nothing(pg: str, store: Store) -> None:
    secret = password_of(pg)
    wrong = pg.replace(f":{secret}@", ":not-the-password@")
    parts = urllib.parse.urlsplit(pg)
    unreachable = pg.replace(f":{parts.port}/", ":9/")
    cases: list[tuple[str, dict[str, Any], type[SourceError], str]] = [
        (pg, {"table": "no_such_table"}, SourceQueryError, "no_such_table"),
        (pg, {"query": "SELECT nope FROM every_type"}, SourceQueryError, "nope"),
        (pg, {"query": "SELEKT 1"}, SourceQueryError, "syntax"),
        (wrong, {"table": "seq"}, SourceConnectionError, "password authentication failed"),
        (unreachable, {"table": "seq", "retries": 1}, SourceConnectionError, "2 attempts"),
    ]
    for url, kwargs, error, text in cases:
        with pytest.raises(error, match=text) as info:
            download_table(url, store=store, dataset_uuid="bad", **kwargs)
        assert_no_secret(info.value, secret)
        assert_no_secret(info.value, "not-the-password")
        assert "***" in str(info.value)  # the URL is named, masked
    # an error that only shows when the chunks run: nothing is committed, no blob is left
    job = download_table(
        pg,
        query="SELECT id, 100 / (id - 300) AS x FROM seq",
        store=store,
        dataset_uuid="bad",
        chunk_by="id",
        n_chunks=4,
    )
    graph_keys = " ".join(str(k) for k in job.to_delayed().__dask_graph__())
    assert secret not in graph_keys
    with pytest.raises(SourceQueryError, match="division by zero") as info:
        job.compute()
    assert_no_secret(info.value, secret)
    assert_not_committed(store, "bad")


def test_postgres_transient_errors_are_retried(pg: str, store: Store) -> None:
    """A backend killed mid-query (pg_terminate_backend) is retried and the result is whole."""
    stop = threading.Event()
    killed: list[int] = []

    def killer() -> None:
        with psycopg.connect(pg, autocommit=True) as con:
            while not stop.is_set() and not killed:
                row = con.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'dataset_kit' "
                    "AND state = 'active' AND query LIKE '%slow%' AND query NOT LIKE '%MIN(%' "
                    "LIMIT 1"
                ).fetchone()
                if row:
                    con.execute("SELECT pg_terminate_backend(%s)", row)
                    killed.append(row[0])
                time.sleep(0.02)

    job = download_table(pg, table="slow", store=store, dataset_uuid="t", retries=2)
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        meta = job.compute()
    finally:
        stop.set()
        thread.join()
    assert killed
    assert sorted(r["id"] for r in read_rows(store, "t")) == list(range(1, 401))
    assert meta.num_partitions == 1


def test_sqlalchemy_driver_gives_the_same_rows(pg: str, tmp_path: Path, store: Store) -> None:
    via_sa = pg.replace("postgresql://", "postgresql+psycopg://", 1)
    cols = "id, i2, i4, f8, dec, txt, ts, tstz, d, b, raw"
    for uuid, url in (("adbc", pg), ("sa", via_sa)):
        download_table(
            url,
            query=f"SELECT {cols} FROM every_type",
            store=store,
            dataset_uuid=uuid,
            chunk_by="id",
            n_chunks=3,
            types={"i2": pa.int16(), "i4": pa.int32(), "dec": pa.decimal128(12, 3)},
        ).compute()
    assert read_rows(store, "sa") == read_rows(store, "adbc")
    # a table through SQLAlchemy: types reflected
    meta = download_table(via_sa, table="every_type", store=store, dataset_uuid="sat").compute()
    assert meta.schema is not None and meta.schema.field("dec").type == pa.decimal128(12, 3)
    # SQLite through SQLAlchemy's pysqlite
    url = sqlite_db(tmp_path / "sa.db", SQLITE_DDL, sqlite_rows(60))
    download_table(url, table="t", store=store, dataset_uuid="s1").compute()
    download_table(
        url.replace("sqlite:", "sqlite+pysqlite:", 1), table="t", store=store, dataset_uuid="s2"
    ).compute()
    assert read_rows(store, "s1") == read_rows(store, "s2")


# --------------------------------------------------------------------------- cluster
@contextlib.contextmanager
def sample_sessions(url: str, samples: list[int]) -> Iterator[None]:
    """Count our sessions running a statement (pg_stat_activity) every few ms while the
    block runs.

    Only ``active`` ones: a connection the client has just closed (before it released
    its lease) stays listed, idle, until its backend process has exited, a few ms later;
    counted, it made a limit of 2 look like 3 once in many runs.
    """
    stop = threading.Event()

    def sampler() -> None:
        with psycopg.connect(url, autocommit=True) as con:
            while not stop.is_set():
                row = con.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'dataset_kit' AND state = 'active'"
                ).fetchone()
                samples.append(int(row[0]) if row else 0)
                time.sleep(0.005)

    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_db_concurrency_holds_on_a_cluster(pg: str, tmp_path: Path) -> None:
    from dataset_kit.testing.dask_cluster import local_cluster

    store = LocalStore(tmp_path / "lake")
    limited: list[int] = []
    free: list[int] = []
    with local_cluster(n_workers=2, threads_per_worker=2) as client:
        job = download_table(
            pg,
            table="slow",
            store=store,
            dataset_uuid="lim",
            chunk_by="id",
            n_chunks=8,
            db_concurrency=2,
        )
        with sample_sessions(pg, limited):
            meta = job.compute(scheduler=client)
        job = download_table(
            pg, table="slow", store=store, dataset_uuid="free", chunk_by="id", n_chunks=8
        )
        with sample_sessions(pg, free):
            job.compute(scheduler=client)
    assert len(limited) > 50
    assert max(limited) == 2  # reached, never exceeded
    assert max(free) >= 3  # without the limit the 4 worker threads query at once
    assert sorted(r["id"] for r in read_rows(store, "lim")) == list(range(1, 401))
    assert meta.num_partitions == 8


def test_source_spec_pickles_without_leaking(pg: str) -> None:
    from dataset_kit.io.sources import Source

    src = Source(pg)
    secret = password_of(pg)
    assert secret not in repr(src) and secret not in src.url
    clone = pickle.loads(pickle.dumps(src))
    assert clone == src
    with clone.connect() as conn:
        assert conn.fetch("SELECT 1 AS one").column(0).to_pylist() == [1]
    assert os.environ.get("PGPASSWORD") is None


def test_postgres_helper_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataset_kit.testing.postgres import PG_BIN_ENV, PostgresUnavailableError, postgres_server

    monkeypatch.setenv(PG_BIN_ENV, str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match="initdb, pg_ctl"), postgres_server():
        pass


def test_store_once_settles_unknown_outcomes_of_the_plan_write() -> None:
    """The resumable plan is written create-only; a time-out after (or before) the write
    reached the store is settled by reading it back (found by the injected-faults suite:
    one such time-out failed a whole download)."""
    from dataset_kit.exceptions import StoreUnavailableError
    from dataset_kit.pipelines.download import store_once
    from dataset_kit.store import BlobInfo, DelegatingStore, MemoryStore

    class Flaky(DelegatingStore):
        def __init__(self, inner: MemoryStore, *, after: bool, times: int) -> None:
            super().__init__(inner)
            self.after, self.times = after, times

        def _put(
            self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
        ) -> BlobInfo:
            if self.times:
                self.times -= 1
                if self.after:
                    super()._put(key, data, if_absent=if_absent, if_match=if_match)
                raise StoreUnavailableError("503 ServerBusy (injected)")
            return super()._put(key, data, if_absent=if_absent, if_match=if_match)

    for after in (True, False):
        store = Flaky(MemoryStore(), after=after, times=2)
        assert store_once(store, "s/plan.json", b"ours") is True
        assert store.get("s/plan.json") == b"ours"
    other = MemoryStore()
    other.put("s/plan.json", b"theirs")
    assert store_once(other, "s/plan.json", b"ours") is False
    hopeless = Flaky(MemoryStore(), after=False, times=100)
    with pytest.raises(StoreUnavailableError):
        store_once(hopeless, "s/plan.json", b"ours", attempts=3)
