"""Relational databases as sources: connect by URL, plan key ranges, stream Arrow batches.

A :class:`Source` is a small picklable spec built from a URL; it travels into dask tasks
and connects there. Drivers, chosen by the URL's scheme and imported only when used:

=================================  ==============================================
URL                                driver
=================================  ==============================================
``postgresql://user:pw@host/db``   ADBC PostgreSQL (``adbc-driver-postgresql``)
``sqlite:///relative.db``,         ADBC SQLite (``adbc-driver-sqlite``), read-only;
``sqlite:////absolute/path.db``    the standard ``sqlite3`` module for chunks whose
                                   column types ADBC cannot infer
anything else, and any             SQLAlchemy (``sqlalchemy`` plus the DBAPI driver
``dialect+driver://`` URL          the URL names, e.g. ``postgresql+psycopg://``)
=================================  ==============================================

Credentials never appear in ``repr``, logs, error messages or dask keys: every text that
could carry them goes through :meth:`Source.mask`.

Types map to what a user expects (:func:`target_schema`): integers keep their width,
``numeric(p, s)`` becomes ``decimal128(p, s)`` (an unconstrained ``numeric`` becomes
``float64``, as pandas does), text and varchar ``string``, ``timestamp`` a naive
``timestamp[us]``, ``timestamptz`` ``timestamp[us, tz=UTC]``, ``date`` ``date32``,
``boolean`` ``bool``, ``bytea``/BLOB ``binary``; uuid, json and other types without an
Arrow equivalent arrive as text. SQLite has no column types, so its declared types
(``INTEGER``, ``REAL``, ``NUMERIC(10,2)``, ``BOOLEAN``, ``DATE``, ``TIMESTAMP``...) decide
the Arrow type and text dates/timestamps are parsed; a column without a declared type
(an expression in a query) is inferred from its values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import itertools
import logging
import math
import random
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from dataset_kit.exceptions import (
    ConfigError,
    InvalidInputError,
    SourceConnectionError,
    SourceError,
    SourceQueryError,
)

__all__ = [
    "ChunkPlan",
    "Source",
    "SourceConnection",
    "conform",
    "mask_url",
    "open_source",
    "plan_key_chunks",
    "select_sql",
    "target_schema",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

Driver = Literal["postgresql", "sqlite", "sqlalchemy"]
Chunking = Literal["range", "rows"]

#: Install hint for the optional database drivers.
INSTALL_HINT = "pip install 'dataset-kit[db]'"
#: ``application_name`` our PostgreSQL sessions report (visible in ``pg_stat_activity``).
APPLICATION_NAME = "dataset_kit"
#: Rows per batch asked of drivers that take a hint (SQLite, SQLAlchemy).
BATCH_ROWS = 65_536
#: Seconds libpq waits for a connection unless the URL says otherwise.
CONNECT_TIMEOUT = 10

# SQLSTATE classes/codes worth retrying: connection exceptions, serialization failures and
# deadlocks, server shutting down or starting up, too many connections / out of resources.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# Message fragments of transient failures that carry no SQLSTATE (libpq connect errors).
_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "database is locked",
    "database table is locked",
    "could not receive data",
    "could not send data",
    "no route to host",
    "broken pipe",
)
# ... and of permanent ones, checked first (a failed login is not retried).
_PERMANENT_TEXT = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "role ",
    "does not exist",
    "permission denied",
    "no such table",
    "syntax error",
)
_CONNECT_TEXT = (
    "failed to connect",
    "failed to open",
    "connection to server",
    "unable to open",
    "connection refused",
    "could not connect",
    "connection reset",
    "connection timed out",
    "server closed the connection",
    "terminating connection",
    "no route to host",
    "broken pipe",
    "password authentication",
    "pg_hba",
)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``.

    Examples
    --------
    >>> mask_url("postgresql://me:s3cret@db:5432/sales")
    'postgresql://me:***@db:5432/sales'
    >>> mask_url("sqlite:///data/sales.db")
    'sqlite:///data/sales.db'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _sqlstate(exc: BaseException) -> str | None:
    for obj in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        code = getattr(obj, "sqlstate", None)
        if isinstance(code, str) and code:
            return code
        code = getattr(obj, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a driver error is worth retrying (dropped connection, serialization failure).

    Examples
    --------
    >>> is_transient(OSError("connection refused"))
    True
    >>> is_transient(OSError('password authentication failed for user "me"'))
    False
    """
    if isinstance(exc, SourceError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, InvalidInputError | ConfigError):
        return False
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy: the link dropped
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in _TRANSIENT_SQLSTATES or state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    text = str(exc).lower()
    if any(p in text for p in _PERMANENT_TEXT):
        return False
    return any(p in text for p in _TRANSIENT_TEXT)


def _is_connect_error(exc: BaseException) -> bool:
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(("08", "28", "3D", "57P", "53300"))
    text = str(exc).lower()
    return any(p in text for p in _CONNECT_TEXT)


_DRIVER_MODULES = ("adbc_driver", "sqlite3", "sqlalchemy", "psycopg", "pyarrow", "_sqlite3")


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a database driver (else it is a bug: never masked)."""
    if isinstance(exc, OSError):
        return True
    return any(
        cls.__module__.split(".")[0].startswith(_DRIVER_MODULES) for cls in type(exc).__mro__
    )


def _backoff(attempt: int) -> None:
    time.sleep(min(5.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2))


# --------------------------------------------------------------------------- the spec
class Source:
    """A database described by a URL: a picklable spec that connects where it is used.

    Parameters
    ----------
    url
        ``postgresql://user:password@host:port/database``, ``sqlite:///path.db`` or any
        SQLAlchemy URL (``dialect+driver://...``).
    connect_args
        Extra driver options: ADBC database options (PostgreSQL, SQLite) or keyword
        arguments of ``sqlalchemy.create_engine``.

    Raises
    ------
    ConfigError
        If the URL is not a string with a scheme.

    Examples
    --------
    >>> src = Source("postgresql://me:s3cret@db.example:5432/sales")
    >>> src
    Source('postgresql://me:***@db.example:5432/sales')
    >>> src.driver
    'postgresql'
    >>> "s3cret" in src.mask("failed: postgresql://me:s3cret@db.example:5432/sales")
    False
    """

    __slots__ = ("_connect_args", "_driver", "_masked", "_secrets", "_url")

    def __init__(self, url: str, *, connect_args: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or ("://" not in url and not url.startswith("sqlite:")):
            raise ConfigError(
                "a database source is a URL like postgresql://user@host/db or "
                f"sqlite:///path.db, got {mask_url(str(url))!r}"
            )
        self._url = url
        self._masked = mask_url(url)
        self._connect_args = dict(connect_args or {})
        scheme = url.split(":", 1)[0].lower()
        self._driver: Driver
        if scheme in ("postgresql", "postgres"):
            self._driver = "postgresql"
        elif scheme == "sqlite":
            self._driver = "sqlite"
        else:
            self._driver = "sqlalchemy"
        secrets: list[str] = []
        try:
            password = urllib.parse.urlsplit(url).password
        except ValueError:
            password = None
        if password:
            secrets += [password, urllib.parse.unquote(password)]
        for key, value in self._connect_args.items():
            if "pass" in key.lower() or "secret" in key.lower() or "token" in key.lower():
                secrets.append(str(value))
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @property
    def driver(self) -> Driver:
        """``"postgresql"`` or ``"sqlite"`` (ADBC), or ``"sqlalchemy"``."""
        return self._driver

    @property
    def url(self) -> str:
        """The URL with its password masked (safe to log)."""
        return self._masked

    def mask(self, text: str) -> str:
        """``text`` with the URL and every known secret replaced."""
        text = text.replace(self._url, self._masked)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"Source({self._masked!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Source):
            return NotImplemented
        return (self._url, self._connect_args) == (other._url, other._connect_args)

    def __hash__(self) -> int:
        return hash((Source, self._url))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_source, (self._url, self._connect_args))

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("dataset_kit.io.sources.Source", self._masked)

    # ------------------------------------------------------------------ connections
    def connect(self) -> SourceConnection:
        """Open a connection (close it, or use it as a context manager).

        Raises
        ------
        SourceConnectionError
            If the database cannot be reached or refuses the credentials.
        ConfigError
            If the driver is not installed (with the install hint).
        """
        cls: type[SourceConnection]
        if self._driver == "postgresql":
            cls = _PostgresConnection
        elif self._driver == "sqlite":
            cls = _SQLiteConnection
        else:
            cls = _SQLAlchemyConnection
        try:
            return cls(self)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise self.error(exc, "connecting") from None

    def error(self, exc: BaseException, what: str, *, attempts: int = 1) -> SourceError:
        """Our error for a driver error, masked; typed by what went wrong."""
        if isinstance(exc, SourceError):
            return exc
        detail = " ".join(self.mask(str(exc)).split())[:1500] or type(exc).__name__
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        message = f"{what} {self._masked} failed{tries}: {type(exc).__name__}: {detail}"
        error: SourceError
        if what == "connecting" or _is_connect_error(exc):
            error = SourceConnectionError(message)
        else:
            error = SourceQueryError(message)
        vars(error)["transient"] = is_transient(exc)  # retried by :meth:`retrying`
        return error

    def retrying(self, fn: Callable[[], T], *, what: str, retries: int) -> T:
        """``fn()``, retried up to ``retries`` times on transient driver errors.

        Raises
        ------
        SourceError
            The last error, masked and typed (:class:`SourceConnectionError`,
            :class:`SourceQueryError`).
        """
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc) or attempt >= retries:
                    if not isinstance(exc, SourceError) and not is_driver_error(exc):
                        raise  # ours or a bug: as it is
                    if isinstance(exc, SourceError):
                        if attempt == 0:
                            raise
                        raise type(exc)(f"{exc} (after {attempt + 1} attempts)") from None
                    raise self.error(exc, what, attempts=attempt + 1) from None
                logger.info(
                    "%s %s: transient error, retry %d/%d: %s",
                    what,
                    self._masked,
                    attempt + 1,
                    retries,
                    self.mask(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                _backoff(attempt)
                attempt += 1


def _rebuild_source(url: str, connect_args: dict[str, Any]) -> Source:
    return Source(url, connect_args=connect_args)


def open_source(source: str | Source, *, connect_args: Mapping[str, Any] | None = None) -> Source:
    """A :class:`Source` from a URL (a :class:`Source` is returned as is)."""
    if isinstance(source, Source):
        return source
    return Source(source, connect_args=connect_args)


# --------------------------------------------------------------------------- connections
class SourceConnection:
    """An open connection: SQL dialect helpers, probing, planning queries, streaming.

    Use as a context manager, or call :meth:`close`.
    """

    dialect: str = "sql"

    def __init__(self, source: Source) -> None:
        self.source = source

    def __enter__(self) -> SourceConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""

    # ------------------------------------------------------------------ SQL text
    def quote(self, name: str) -> str:
        """A quoted identifier."""
        return '"' + name.replace('"', '""') + '"'

    def relation(self, table: str) -> str:
        """SQL naming ``table``: plain ``[schema.]name`` stays as written, else quoted."""
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*", table):
            return table
        if '"' in table or "`" in table or "[" in table:
            return table  # already quoted by the caller
        return ".".join(self.quote(p) for p in table.split("."))

    def literal(self, value: Any) -> str:
        """``value`` as an SQL literal of this dialect."""
        return _generic_literal(value)

    def column_expression(self, name: str, source_type: pa.DataType) -> str:
        """SQL selecting column ``name`` (a server-side conversion where one is needed)."""
        return self.quote(name)

    # ------------------------------------------------------------------ queries
    def probe(self, relation: str) -> pa.Schema:
        """Column names and source types of ``SELECT * FROM relation`` (no rows fetched)."""
        raise NotImplementedError

    def declared_types(
        self, relation: str, probed: pa.Schema, names: Sequence[str]
    ) -> dict[str, pa.DataType]:
        """The Arrow type of each column from the source's type information.

        ``pa.null()`` means "unknown: infer from the values".
        """
        raise NotImplementedError

    def fetch(self, sql: str) -> pa.Table:
        """The (small) result of a query."""
        return pa.Table.from_batches(list(self.stream(sql)))

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        """Stream the rows of a query as Arrow record batches (source types)."""
        raise NotImplementedError


def _generic_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"cannot use {value!r} as a chunk boundary")
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidInputError(f"cannot use {value!r} as a chunk boundary")
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        kind = "TIMESTAMP" if value.tzinfo is None else "TIMESTAMP WITH TIME ZONE"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    raise InvalidInputError(f"cannot write {type(value).__name__} value {value!r} as SQL")


def _strip(t: pa.DataType) -> pa.DataType:
    """Extension types (opaque, json, uuid) as their storage type."""
    if isinstance(t, pa.BaseExtensionType):
        return _strip(t.storage_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _strip(t.value_type)
        return pa.list_(inner) if pa.types.is_list(t) else pa.large_list(inner)
    return t


def _import(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs the {module} package: {INSTALL_HINT}") from exc


# --------------------------------------------------------------------------- PostgreSQL
def _pg_numeric(field: pa.Field) -> pa.DataType:
    """``numeric(p, s)`` -> decimal; unconstrained ``numeric`` -> float64."""
    meta = field.metadata or {}
    try:
        typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
    except ValueError:
        typmod = -1
    if typmod < 4:
        return pa.float64()
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    if precision <= 38:
        return pa.decimal128(precision, scale)
    return pa.decimal256(min(precision, 76), scale)


class _PostgresConnection(SourceConnection):
    dialect = "postgresql"

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        dbapi = _import("adbc_driver_postgresql.dbapi", "a postgresql:// source")
        uri = _with_query_defaults(
            source._url,
            {
                "connect_timeout": str(CONNECT_TIMEOUT),
                "application_name": APPLICATION_NAME,
                # read-only transactions: a download never changes the source
                "options": "-c default_transaction_read_only=on",
            },
        )
        self._conn = dbapi.connect(uri, db_kwargs=dict(source._connect_args) or None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        self._conn.close()

    def literal(self, value: Any) -> str:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return f"TIMESTAMPTZ '{value.isoformat(sep=' ')}'"
        if isinstance(value, float):
            return f"{_generic_literal(value)}::float8"
        return _generic_literal(value)

    def column_expression(self, name: str, source_type: pa.DataType) -> str:
        quoted = self.quote(name)
        if isinstance(source_type, pa.BaseExtensionType):
            if "numeric" in str(source_type):
                return quoted  # decimal text, converted exactly on the client
            return f"{quoted}::text AS {quoted}"  # uuid, json, other types without Arrow twin
        if pa.types.is_interval(source_type):
            return f"{quoted}::text AS {quoted}"  # Parquet has no month-day-nano interval
        return quoted

    def probe(self, relation: str) -> pa.Schema:
        with self._conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {relation} WHERE 1 = 0")
            reader = cur.fetch_record_batch()
            schema: pa.Schema = reader.schema
            reader.read_all()
        return schema

    def declared_types(
        self, relation: str, probed: pa.Schema, names: Sequence[str]
    ) -> dict[str, pa.DataType]:
        out: dict[str, pa.DataType] = {}
        for f in probed:
            if f.name not in names:
                continue
            if isinstance(f.type, pa.BaseExtensionType) and "numeric" in str(f.type):
                out[f.name] = _pg_numeric(f)
            elif isinstance(f.type, pa.BaseExtensionType) or pa.types.is_interval(f.type):
                out[f.name] = pa.string()
            else:
                out[f.name] = _strip(f.type)
        return out

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        with self._conn.cursor() as cur:
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            yield from reader


def _with_query_defaults(url: str, defaults: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, v) for k, v in defaults.items() if k not in have]
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


# --------------------------------------------------------------------------- SQLite
_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def sqlite_type(declared: str) -> pa.DataType:
    """The Arrow type for an SQLite declared column type (``pa.null()``: infer).

    Examples
    --------
    >>> sqlite_type("NUMERIC(10,2)")
    Decimal128Type(decimal128(10, 2))
    >>> sqlite_type("TIMESTAMP WITH TIME ZONE")
    TimestampType(timestamp[us, tz=UTC])
    >>> sqlite_type("")
    DataType(null)
    """
    d = declared.upper().strip()
    if not d:
        return pa.null()
    match = _DECIMAL.search(d)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.float64()
    if "BOOL" in d:
        return pa.bool_()
    if "INT" in d:
        return pa.int64()
    if "DATETIME" in d or "TIMESTAMP" in d:
        tz = "UTC" if ("TIME ZONE" in d and "WITHOUT" not in d) or "TZ" in d else None
        return pa.timestamp("us", tz=tz)
    if d == "DATE":
        return pa.date32()
    if any(t in d for t in ("CHAR", "CLOB", "TEXT", "JSON", "UUID")):
        return pa.string()
    if "BLOB" in d or "BINARY" in d:
        return pa.binary()
    if any(t in d for t in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return pa.float64()
    return pa.null()


def _sqlite_literal(value: Any) -> str:
    """SQLite keeps dates and timestamps as text: compare with text literals."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        return _generic_literal(value.isoformat(sep=" "))
    if isinstance(value, dt.date):
        return _generic_literal(value.isoformat())
    return _generic_literal(value)


class _TypeInferenceError(Exception):
    """ADBC SQLite fixed a column type from the first batch and a later value differs."""


def _sqlite_path(url: str) -> str:
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        path = rest[3:]
    elif rest.startswith("//"):
        path = rest[2:]
    else:
        path = rest
    path = urllib.parse.unquote(path.split("?", 1)[0])
    if not path or path == ":memory:":
        raise ConfigError(
            "an in-memory SQLite database cannot be shared with download tasks; use a file"
        )
    return path


class _SQLiteConnection(SourceConnection):
    dialect = "sqlite"

    def __init__(self, source: Source) -> None:
        super().__init__(source)
        import os
        import sqlite3

        path = _sqlite_path(source._url)
        if not os.path.isfile(path):
            raise SourceConnectionError(f"connecting {source.url} failed: no such file {path!r}")
        self._uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        self._sqlite = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        self._adbc: Any = None
        self.use_adbc = True

    def _adbc_conn(self) -> Any:
        if self._adbc is None:
            dbapi = _import("adbc_driver_sqlite.dbapi", "a sqlite:// source")
            self._adbc = dbapi.connect(self._uri, **self.source._connect_args)
        return self._adbc

    def close(self) -> None:
        if self._adbc is not None:
            self._adbc.close()
        self._sqlite.close()

    def literal(self, value: Any) -> str:
        return _sqlite_literal(value)

    def _declared(self, relation: str) -> list[tuple[str, str]]:
        view = f"dk_probe_{uuid.uuid4().hex}"
        cur = self._sqlite.cursor()
        try:
            cur.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {relation}")
            try:
                rows = cur.execute(f"PRAGMA table_info({view})").fetchall()
            finally:
                cur.execute(f"DROP VIEW {view}")
        finally:
            cur.close()
        return [(str(r[1]), str(r[2] or "")) for r in rows]

    def probe(self, relation: str) -> pa.Schema:
        return pa.schema([(name, pa.null()) for name, _ in self._declared(relation)])

    def declared_types(
        self, relation: str, probed: pa.Schema, names: Sequence[str]
    ) -> dict[str, pa.DataType]:
        return {n: sqlite_type(d) for n, d in self._declared(relation) if n in names}

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        if self.use_adbc:
            yield from self._stream_adbc(sql)
        else:
            yield from self._stream_stdlib(sql)

    def _stream_adbc(self, sql: str) -> Iterator[pa.RecordBatch]:
        conn = self._adbc_conn()
        with conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            try:
                yield from reader
            except OSError as exc:
                if "type mismatch" in str(exc).lower():
                    raise _TypeInferenceError(str(exc)) from exc
                raise

    def _stream_stdlib(self, sql: str) -> Iterator[pa.RecordBatch]:
        cur = self._sqlite.cursor()
        try:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            while True:
                rows = cur.fetchmany(BATCH_ROWS)
                if not rows:
                    break
                yield _rows_to_batch(rows, names)
        finally:
            cur.close()


def _rows_to_batch(rows: Sequence[Sequence[Any]], names: Sequence[str]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = []
    for name, values in zip(names, columns, strict=True):
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise SourceQueryError(
                f"column {name!r} mixes values of types {kinds} ({exc}); CAST it in the "
                "query or pass types={...} for it"
            ) from None
    return pa.record_batch(arrays, names=list(names))


# --------------------------------------------------------------------------- SQLAlchemy
def _sqlalchemy_type(sa_type: Any) -> pa.DataType:
    import sqlalchemy as sa

    checks: list[tuple[Any, pa.DataType]] = [
        (sa.Boolean, pa.bool_()),
        (sa.SmallInteger, pa.int16()),
        (sa.BigInteger, pa.int64()),
        (sa.Integer, pa.int64()),
        (sa.LargeBinary, pa.binary()),
        (sa.Date, pa.date32()),
        (sa.Time, pa.time64("us")),
        (sa.Interval, pa.duration("us")),
        (sa.String, pa.string()),
    ]
    if isinstance(sa_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sa_type.timezone else None)
    if isinstance(sa_type, sa.Float):
        return pa.float32() if getattr(sa_type, "precision", None) == 24 else pa.float64()
    if isinstance(sa_type, sa.Numeric):
        precision, scale = sa_type.precision, sa_type.scale
        if precision is None or precision > 38:
            return pa.float64()
        return pa.decimal128(precision, scale or 0)
    for cls, arrow in checks:
        if isinstance(sa_type, cls):
            return arrow
    return pa.null()


class _SQLAlchemyConnection(SourceConnection):
    def __init__(self, source: Source) -> None:
        super().__init__(source)
        sa = _import("sqlalchemy", "a SQLAlchemy source")
        try:
            self._engine = sa.create_engine(
                source._url, poolclass=sa.pool.NullPool, **source._connect_args
            )
        except sa.exc.NoSuchModuleError as exc:
            raise ConfigError(
                f"no SQLAlchemy dialect/driver for {source.url}: {exc}; install it"
            ) from None
        except ImportError as exc:
            raise ConfigError(
                f"the DBAPI driver of {source.url} is not installed ({exc}); install it"
            ) from None
        self.dialect = str(self._engine.dialect.name)
        self._conn = self._engine.connect()

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._engine.dispose()

    def quote(self, name: str) -> str:
        preparer = self._engine.dialect.identifier_preparer
        return str(preparer.quote_identifier(name))

    def literal(self, value: Any) -> str:
        import sqlalchemy as sa

        if self.dialect == "sqlite":
            return _sqlite_literal(value)
        try:
            compiled = sa.literal(value).compile(
                dialect=self._engine.dialect, compile_kwargs={"literal_binds": True}
            )
            return str(compiled)
        except Exception:  # dialects that cannot render some literals
            return _generic_literal(value)

    def probe(self, relation: str) -> pa.Schema:
        import sqlalchemy as sa

        result = self._conn.execute(sa.text(f"SELECT * FROM {relation} WHERE 1 = 0"))
        try:
            names = list(result.keys())
        finally:
            result.close()
        return pa.schema([(str(n), pa.null()) for n in names])

    def declared_types(
        self, relation: str, probed: pa.Schema, names: Sequence[str]
    ) -> dict[str, pa.DataType]:
        import sqlalchemy as sa

        out: dict[str, pa.DataType] = {n: pa.null() for n in names}
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", relation):
            return out  # a query or a quoted name: infer from the values
        schema, _, table = relation.rpartition(".")
        try:
            columns = sa.inspect(self._conn).get_columns(table, schema=schema or None)
        except Exception:  # reflection is best effort: values still decide
            return out
        for col in columns:
            if col["name"] in out:
                out[col["name"]] = _sqlalchemy_type(col["type"])
        return out

    def stream(self, sql: str) -> Iterator[pa.RecordBatch]:
        import sqlalchemy as sa

        conn = self._conn.execution_options(stream_results=True, yield_per=BATCH_ROWS)
        result = conn.execute(sa.text(sql))
        try:
            names = [str(k) for k in result.keys()]
            for part in result.partitions(BATCH_ROWS):
                yield _rows_to_batch([tuple(r) for r in part], names)
        finally:
            result.close()


# --------------------------------------------------------------------------- schema
def target_schema(
    conn: SourceConnection,
    relation: str,
    columns: Sequence[str] | None,
    types: Mapping[str, pa.DataType],
) -> tuple[pa.Schema, list[str]]:
    """The Arrow schema a download produces, and the SQL select list that produces it.

    ``pa.null()`` fields are inferred from the values of each chunk.

    Raises
    ------
    InvalidInputError
        For ``columns`` or ``types`` naming unknown columns.
    """
    probed = conn.probe(relation)
    names = list(probed.names)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"the query returns duplicate column names {dup}; alias them")
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InvalidInputError(f"columns {missing} are not columns of {relation} ({names})")
        names = list(columns)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise InvalidInputError(f"types names unknown columns {unknown} (columns: {names})")
    declared = conn.declared_types(relation, probed, names)
    fields = [pa.field(n, types.get(n, declared.get(n, pa.null()))) for n in names]
    select = [conn.column_expression(n, probed.field(n).type) for n in names]
    return pa.schema(fields), select


def select_sql(select: Sequence[str], relation: str, predicate: str | None) -> str:
    """``SELECT <select> FROM <relation> [WHERE <predicate>]``."""
    sql = f"SELECT {', '.join(select)} FROM {relation}"
    return sql if predicate is None else f"{sql} WHERE {predicate}"


_TZ_SUFFIX = r"(Z|[+-]\d\d(:?\d\d)?)$"


def _convert(col: pa.Array, target: pa.DataType) -> pa.Array:
    source = col.type
    if pa.types.is_null(source) or col.null_count == len(col):  # ADBC SQLite says int64
        return pa.nulls(len(col), target)
    if (pa.types.is_string(source) or pa.types.is_large_string(source)) and (
        pa.types.is_timestamp(target) and target.tz is not None
    ):
        has_offset = pc.match_substring_regex(col, _TZ_SUFFIX)
        col = pc.if_else(has_offset, col, pc.binary_join_element_wise(col, pa.scalar("Z"), ""))
    if pa.types.is_decimal(target) and pa.types.is_integer(source):
        col = col.cast(pa.string())
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        if (source.tz is None) != (target.tz is None):
            raise pa.ArrowInvalid("naive and time-zone-aware timestamps do not convert")
    return col.cast(target)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` converted to ``schema`` (``pa.null()`` fields: kept as the values say).

    Raises
    ------
    SourceQueryError
        If a column cannot be converted; names the column and both types.
    """
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for i, field in enumerate(schema):
        col = batch.column(i)
        if isinstance(col.type, pa.BaseExtensionType):
            col = col.storage
        target = field.type
        if pa.types.is_null(target):  # infer: the values' own type, all-null -> null
            if col.null_count == len(col) and len(col):
                col = pa.nulls(len(col))
            else:
                col = col.cast(_strip(col.type))
            arrays.append(col)
            fields.append(pa.field(field.name, col.type))
            continue
        if col.type != target:
            try:
                col = _convert(col, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SourceQueryError(
                    f"column {field.name!r}: cannot convert {col.type} values to {target} "
                    f"({' '.join(str(exc).split())[:300]}); pass types={{{field.name!r}: ...}} "
                    "or CAST it in the query"
                ) from None
        arrays.append(col)
        fields.append(pa.field(field.name, target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# --------------------------------------------------------------------------- chunk plans
@dataclass(frozen=True)
class ChunkPlan:
    """The WHERE clauses of a key-range download.

    Attributes
    ----------
    predicates
        One SQL predicate per chunk; together they select every row with a key in
        ``(low, high]`` (plus NULL keys when ``null_chunk``), each row exactly once.
    high
        The largest key at planning time (None: no non-NULL key), the next high-water mark.
    """

    predicates: tuple[str, ...]
    high: Any


def _key_value(scalar: pa.Scalar) -> Any:
    if isinstance(scalar.type, pa.BaseExtensionType):
        value = scalar.cast(scalar.type.storage_type).as_py() if scalar.is_valid else None
        if isinstance(value, str) and "numeric" in str(scalar.type):
            return decimal.Decimal(value)
        return value
    return scalar.as_py()


def _parse_text_time(text: str) -> dt.datetime | dt.date | None:
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _interpolate(low: Any, high: Any, n: int) -> list[Any]:
    """``n - 1`` increasing inner boundaries strictly inside ``(low, high]``."""
    if n <= 1 or low is None or high is None or not low < high:
        return []
    if isinstance(low, bool):
        return []
    out: list[Any] = []
    if isinstance(low, int) and isinstance(high, int):
        span = high - low + 1
        out = [low + -(-span * j // n) for j in range(1, n)]
    elif isinstance(low, float | decimal.Decimal | int) and isinstance(
        high, float | decimal.Decimal | int
    ):
        if isinstance(low, decimal.Decimal) or isinstance(high, decimal.Decimal):
            lo, hi = decimal.Decimal(low), decimal.Decimal(high)
            out = [lo + (hi - lo) * j / n for j in range(1, n)]
        else:
            out = [float(low) + (float(high) - float(low)) * j / n for j in range(1, n)]
    elif isinstance(low, dt.datetime) and isinstance(high, dt.datetime):
        span_us = (high - low) // dt.timedelta(microseconds=1)
        out = [low + dt.timedelta(microseconds=span_us * j // n) for j in range(1, n)]
    elif isinstance(low, dt.date) and isinstance(high, dt.date):
        days = high.toordinal() - low.toordinal() + 1
        out = [dt.date.fromordinal(low.toordinal() + -(-days * j // n)) for j in range(1, n)]
    elif isinstance(low, str) and isinstance(high, str):
        lo_t, hi_t = _parse_text_time(low), _parse_text_time(high)
        if lo_t is None or hi_t is None or type(lo_t) is not type(hi_t):
            raise InvalidInputError(
                f"chunk_by: text keys ({low!r}...) are not dates or timestamps; use "
                "chunking='rows' to split them by row counts"
            )
        sep = "T" if "T" in low else " "
        inner = _interpolate(lo_t, hi_t, n)
        out = [v.isoformat(sep=sep) if isinstance(v, dt.datetime) else v.isoformat() for v in inner]
    else:
        raise InvalidInputError(
            f"chunk_by: cannot split keys of type {type(low).__name__} into ranges; use a "
            "numeric, date or timestamp column, or chunking='rows'"
        )
    bounds: list[Any] = []
    for v in out:
        if low < v <= high and (not bounds or v > bounds[-1]):
            bounds.append(v)
    return bounds


def plan_key_chunks(
    conn: SourceConnection,
    relation: str,
    key: str,
    *,
    n_chunks: int,
    chunking: Chunking = "range",
    after: Any = None,
    include_nulls: bool = True,
) -> ChunkPlan:
    """Split the rows of ``relation`` into about ``n_chunks`` ranges of column ``key``.

    ``"range"`` cuts ``[min, max]`` into equal widths (one cheap MIN/MAX query; skewed
    keys give unequal chunks); ``"rows"`` cuts at row-count quantiles (one ``NTILE``
    window query over the key). Rows with a NULL key get a chunk of their own; with
    ``after`` (an incremental download) only keys above it are selected, NULLs never.
    Keys inserted after planning above the planned maximum are left out (the next
    incremental run gets them).

    Raises
    ------
    InvalidInputError
        For keys that cannot be split (e.g. text keys with ``"range"``).
    """
    k = conn.quote(key)
    lower = None if after is None else f"{k} > {conn.literal(after)}"
    where = f"WHERE {k} IS NOT NULL" + ("" if lower is None else f" AND {lower}")
    stats = conn.fetch(f"SELECT MIN({k}) AS lo, MAX({k}) AS hi FROM {relation} {where}")
    low, high = _key_value(stats.column(0)[0]), _key_value(stats.column(1)[0])
    predicates: list[str] = []
    if high is not None:
        if chunking == "rows" and n_chunks > 1:
            sql = (
                f"SELECT MIN(dk_key) AS lo FROM (SELECT {k} AS dk_key, NTILE({n_chunks}) OVER "
                f"(ORDER BY {k}) AS dk_tile FROM {relation} {where} AND {k} <= "
                f"{conn.literal(high)}) dk_tiles GROUP BY dk_tile ORDER BY lo"
            )
            starts = [_key_value(s) for s in conn.fetch(sql).column(0)]
            bounds: list[Any] = []
            for v in starts[1:]:
                if v is not None and (not bounds or v > bounds[-1]) and v > low:
                    bounds.append(v)
        elif chunking == "range":
            bounds = _interpolate(low, high, n_chunks)
        else:
            bounds = []
        top = f"{k} <= {conn.literal(high)}"
        edges = [None, *bounds, None]
        for lo_b, hi_b in itertools.pairwise(edges):
            parts = [] if lower is None else [lower]
            if lo_b is not None:
                parts.append(f"{k} >= {conn.literal(lo_b)}")
            parts.append(f"{k} < {conn.literal(hi_b)}" if hi_b is not None else top)
            predicates.append(" AND ".join(parts))
    if include_nulls and after is None:
        nulls = conn.fetch(
            f"SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM {relation} WHERE {k} IS NULL "
            "LIMIT 1) dk_n"
        )
        if int(nulls.column(0)[0].as_py() or 0):
            predicates.append(f"{k} IS NULL")
    return ChunkPlan(tuple(predicates), high)
