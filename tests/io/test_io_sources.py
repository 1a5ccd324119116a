"""Database sources: URL masking, error classification, type mapping, chunk boundaries."""

from __future__ import annotations

import datetime as dt
import decimal
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dataset_kit.exceptions import ConfigError, InvalidInputError, SourceQueryError
from dataset_kit.io import sources
from dataset_kit.io.sources import Source, conform, is_transient, mask_url, sqlite_type


def test_masking_covers_url_password_and_quoted_password() -> None:
    url = "postgresql://me:p%40ss%2Fw0rd@db.example:6432/sales?sslmode=require"
    src = Source(url)
    assert mask_url(url) == "postgresql://me:***@db.example:6432/sales?sslmode=require"
    for text in (url, "p%40ss%2Fw0rd", "p@ss/w0rd"):
        assert "w0rd" not in src.mask(f"error near {text}!")
    assert "w0rd" not in repr(src) and "w0rd" not in src.url
    assert pickle.loads(pickle.dumps(src)) == src
    from dask.base import tokenize

    assert tokenize(src) == tokenize(Source(url.replace("w0rd", "other")))  # keys: no secret
    assert Source("sqlite:///x.db").driver == "sqlite"
    assert Source("postgres://h/db").driver == "postgresql"
    assert Source("mysql+pymysql://u:pw@h/db").driver == "sqlalchemy"
    with pytest.raises(ConfigError):
        Source("not a url")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError("connection refused"), True),
        (OSError("server closed the connection unexpectedly"), True),
        (OSError('FATAL: password authentication failed for user "x"'), False),
        (OSError('relation "t" does not exist'), False),
        (OSError("database is locked"), True),
        (type("E", (Exception,), {"sqlstate": "40001"})("could not serialize access"), True),
        (type("E", (Exception,), {"sqlstate": "57P01"})("terminating connection"), True),
        (type("E", (Exception,), {"sqlstate": "42P01"})("undefined table"), False),
        (ValueError("a bug"), False),
    ],
)
def test_transient_errors_are_told_apart(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retrying_is_bounded_and_keeps_bugs_as_they_are() -> None:
    src = Source("postgresql://me:secret-pw@127.0.0.1:9/db")
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection refused by secret-pw host")
        return 42

    assert src.retrying(flaky, what="testing", retries=2) == 42
    calls.clear()

    def down() -> int:
        calls.append(1)
        raise OSError("connection refused by secret-pw host")

    with pytest.raises(sources.SourceConnectionError, match="3 attempts") as info:
        src.retrying(down, what="testing", retries=2)
    assert len(calls) == 3
    assert "secret-pw" not in str(info.value)

    def bug() -> None:
        raise KeyError("not a database error")

    with pytest.raises(KeyError):
        src.retrying(bug, what="testing", retries=5)


@pytest.mark.parametrize(
    ("declared", "arrow"),
    [
        ("INTEGER", pa.int64()),
        ("BIGINT", pa.int64()),
        ("BOOLEAN", pa.bool_()),
        ("REAL", pa.float64()),
        ("DOUBLE PRECISION", pa.float64()),
        ("NUMERIC(12, 4)", pa.decimal128(12, 4)),
        ("DECIMAL(5)", pa.decimal128(5, 0)),
        ("NUMERIC", pa.float64()),
        ("VARCHAR(20)", pa.string()),
        ("TEXT", pa.string()),
        ("BLOB", pa.binary()),
        ("DATE", pa.date32()),
        ("DATETIME", pa.timestamp("us")),
        ("TIMESTAMP", pa.timestamp("us")),
        ("TIMESTAMPTZ", pa.timestamp("us", tz="UTC")),
        ("", pa.null()),
        ("WHATEVER", pa.null()),
    ],
)
def test_sqlite_declared_types(declared: str, arrow: pa.DataType) -> None:
    assert sqlite_type(declared) == arrow


def test_conform_converts_and_names_the_column_it_cannot() -> None:
    schema = pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("d", pa.decimal128(10, 2)),
            ("n", pa.null()),
            ("b", pa.bool_()),
        ]
    )
    batch = pa.record_batch(
        [
            pa.array(["2024-01-01 10:00:00", "2024-01-01T12:00:00+02:00", None]),
            pa.array([1, None, 3]),
            pa.array([None, None, None], pa.int64()),
            pa.array([1, 0, None]),
        ],
        names=schema.names,
    )
    out = conform(batch, schema)
    assert out.column(0).to_pylist()[0] == out.column(0).to_pylist()[1]
    assert out.column(1).to_pylist() == [decimal.Decimal("1.00"), None, decimal.Decimal("3.00")]
    assert out.schema.field("n").type == pa.null()
    assert out.column(3).to_pylist() == [True, False, None]
    bad = pa.record_batch(
        [pa.array(["x"]), pa.array([1]), pa.array([1]), pa.array([1])], schema.names
    )
    with pytest.raises(SourceQueryError, match="'ts'"):
        conform(bad, schema)


@pytest.mark.parametrize(
    ("low", "high", "n", "expected"),
    [
        (0, 99, 4, [25, 50, 75]),
        (1, 3, 8, [2, 3]),
        (5, 5, 4, []),
        (0.0, 1.0, 4, [0.25, 0.5, 0.75]),
        (decimal.Decimal("0"), decimal.Decimal("1"), 2, [decimal.Decimal("0.5")]),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 4), 2, [dt.date(2024, 1, 3)]),
        (
            dt.datetime(2024, 1, 1),
            dt.datetime(2024, 1, 2),
            2,
            [dt.datetime(2024, 1, 1, 12)],
        ),
        ("2024-01-01", "2024-01-04", 2, ["2024-01-03"]),
        ("2024-01-01 00:00:00", "2024-01-02 00:00:00", 2, ["2024-01-01 12:00:00"]),
    ],
)
def test_range_boundaries(low: Any, high: Any, n: int, expected: list[Any]) -> None:
    assert sources._interpolate(low, high, n) == expected


def test_text_keys_need_row_chunking() -> None:
    with pytest.raises(InvalidInputError, match="chunking='rows'"):
        sources._interpolate("apple", "pear", 3)


def test_key_plans_cover_every_row_once(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (k REAL)")
    values = [0.1 * i for i in range(97)] + [None, 2.5, 2.5]
    con.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    con.commit()
    con.close()
    with Source(f"sqlite:///{path}").connect() as conn:
        for chunking in ("range", "rows"):
            plan = sources.plan_key_chunks(conn, "t", "k", n_chunks=6, chunking=chunking)  # type: ignore[arg-type]
            counts = [
                conn.fetch(f"SELECT COUNT(*) AS n FROM t WHERE {p}").column(0)[0].as_py()
                for p in plan.predicates
            ]
            assert sum(counts) == len(values) and len(counts) == 7, chunking
            assert plan.high == max(v for v in values if v is not None)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        Source("sqlite://").connect()
