"""Text files as a source: line-delimited JSON or CSV (plain or gzip) into Arrow tables.

Planning (:func:`resolve_files`, :func:`stat_file`, :func:`plan_nodes`) cuts the files
into *pieces*: byte ranges of plain files, split at line boundaries, and whole gzip files
(gzip cannot be split); small files are coalesced so that every node reads about
``blocksize`` bytes. A piece owns the lines that *start* in its range: a reader of
``[start, end)`` begins at the first line start at or after ``start`` and reads through
the line holding byte ``end - 1`` (:func:`read_range`). Adjacent ranges therefore hand
every line to exactly one piece, however the ranges fall, and the planner never reads
the data.

Reading (:func:`iter_blocks`, :func:`parse_block`) parses a whole block with
``pyarrow.json`` / ``pyarrow.csv`` and conforms it to the target schema. Only when that
fails is the block cut into lines (CSV records with ``newlines_in_values``) and bisected
(parse halves, recursively) to find the bad lines, which are then reported, with file
and 1-based line number, or returned for quarantine. Line numbers of a block in the
middle of a plain file are counted only then, by reading the file up to the block.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import math
import os
import re
import struct
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from dataset_kit.exceptions import (
    InvalidInputError,
    SchemaMismatchError,
    SourceError,
    SourceFormatError,
)

__all__ = [
    "BadLine",
    "Block",
    "FileInfo",
    "Piece",
    "Reader",
    "TextFormat",
    "as_schema",
    "conform",
    "detect_kind",
    "infer_schema",
    "iter_blocks",
    "line_boundary",
    "parse_block",
    "plan_nodes",
    "read_range",
    "read_sample",
    "resolve_files",
    "stat_file",
    "toward_dataset",
]

Kind = Literal["jsonl", "csv"]
BadLines = Literal["error", "quarantine"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_SCAN = 1 << 16  # bytes read at a time when looking for a line end
_COUNT = 1 << 24  # bytes read at a time when counting lines
_SMALL = 16  # ranges of at most this many lines are checked line by line
_SNIPPET = 200  # characters of a bad line shown in an error message
_JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
_CSV_EXTENSIONS = (".csv", ".tsv")
_ROW_IN = re.compile(r" in row \d+|Row #\d+: ")
_CSV_COLUMN = re.compile(r"In CSV column #(\d+): ")


# --------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class TextFormat:
    """How the files are written.

    Attributes
    ----------
    kind
        ``"jsonl"`` (one JSON object per line) or ``"csv"``.
    delimiter
        CSV field delimiter.
    header
        CSV: the first line of each file holds the column names (else the columns are
        the schema's, in order).
    newlines_in_values
        CSV: quoted values may contain line breaks. Files are then read whole, never
        split, and bad records are located with Python's ``csv`` module.
    """

    kind: Kind
    delimiter: str = ","
    header: bool = True
    newlines_in_values: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("jsonl", "csv"):
            raise InvalidInputError(f"format must be 'jsonl' or 'csv', got {self.kind!r}")
        if len(self.delimiter) != 1 or self.delimiter in '\r\n"':
            raise InvalidInputError(f"delimiter must be one character, got {self.delimiter!r}")
        if self.kind == "jsonl" and self.newlines_in_values:
            raise InvalidInputError(
                "newlines_in_values applies to CSV only: line-delimited JSON has one object "
                "per line (line breaks inside strings are escaped as \\n)"
            )

    @property
    def splittable(self) -> bool:
        """Whether plain files may be split at line boundaries."""
        return not self.newlines_in_values


def detect_kind(path: str) -> Kind:
    """The format a file name suggests (``.gz`` ignored).

    Examples
    --------
    >>> detect_kind("logs/app-1.jsonl.gz"), detect_kind("sales.CSV")
    ('jsonl', 'csv')
    """
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(_JSON_EXTENSIONS):
        return "jsonl"
    if name.endswith(_CSV_EXTENSIONS):
        return "csv"
    raise InvalidInputError(
        f"cannot tell the format of {path!r} from its name (expected .jsonl, .ndjson, .json "
        "or .csv, optionally .gz); pass format='jsonl' or format='csv'"
    )


# --------------------------------------------------------------------------- files
def _local_path(item: str) -> str:
    if "://" in item:
        parsed = urllib.parse.urlsplit(item)
        if parsed.scheme != "file":
            raise InvalidInputError(
                f"{item!r}: only local files (paths or file:// URLs) can be ingested"
            )
        return urllib.parse.unquote(parsed.path)
    return item


def resolve_files(files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of the input files: paths, ``file://`` URLs or glob patterns.

    A pattern (with ``*``, ``?`` or ``[``; ``**`` recurses) expands to its matching
    files, sorted; the other entries keep their order.

    Raises
    ------
    InvalidInputError
        No files given, a duplicate, a directory, or a non-local URL.
    SourceError
        A file does not exist, or a pattern matches nothing.
    """
    if isinstance(files, str | os.PathLike):
        items = [os.fspath(files)]
    elif isinstance(files, Sequence):
        items = []
        for f in files:
            if not isinstance(f, str | os.PathLike):
                raise InvalidInputError(f"files must be paths, got {type(f).__name__}")
            items.append(os.fspath(f))
    else:
        raise InvalidInputError(
            f"files must be a path, a glob pattern or a list of them, got {type(files).__name__}"
        )
    out: list[str] = []
    for item in items:
        path = _local_path(item)
        if any(c in path for c in "*?["):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise SourceError(f"no files match {item!r}")
            out.extend(matches)
            continue
        if os.path.isdir(path):
            raise InvalidInputError(f"{item!r} is a directory; pass a pattern like 'dir/*.jsonl'")
        if not os.path.exists(path):
            raise SourceError(f"input file {item!r} does not exist")
        out.append(path)
    if not out:
        raise InvalidInputError("no input files given")
    paths = [os.path.abspath(p) for p in out]
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise InvalidInputError(f"input file {p!r} is given twice")
        seen.add(p)
    return paths


@dataclass(frozen=True)
class FileInfo:
    """One input file as planned.

    Attributes
    ----------
    path
        Absolute path.
    size, mtime_ns
        On-disk size and modification time at planning (a node refuses a changed file).
    gzip
        Gzip-compressed (detected by its magic bytes): read whole, never split.
    data_start
        Offset of the first data line in the (decompressed) content: after a UTF-8
        byte-order mark and the CSV header line.
    weight
        Bytes of (decompressed) data, for balancing; for gzip the size the trailer
        records (exact below 4 GiB for single-member files).
    columns
        CSV: the column names (header or schema); None for JSON.
    """

    path: str
    size: int
    mtime_ns: int
    gzip: bool
    data_start: int
    weight: int
    columns: tuple[str, ...] | None = None

    def check_unchanged(self) -> None:
        """Raise :class:`SourceError` if the file changed since it was planned."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceError(f"cannot read input file {self.path!r}: {exc}") from exc
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise SourceError(
                f"input file {self.path!r} changed since the ingest was planned (size "
                f"{self.size} -> {st.st_size}); plan the ingest again (with a new job id)"
            )


def _open(path: str, compressed: bool) -> Any:
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _read_first_line(fh: Any) -> bytes:
    """The first line of an open binary file (with its line end), or all of a short file."""
    buf = b""
    while True:
        chunk = fh.read(_SCAN)
        if not chunk:
            return buf
        i = chunk.find(b"\n")
        if i >= 0:
            return buf + chunk[: i + 1]
        buf += chunk


def _header_columns(line: bytes, fmt: TextFormat, path: str) -> tuple[str, ...]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceFormatError(
            f"{path}, line 1: the CSV header is not UTF-8", path=path, line=1
        ) from None
    rows = list(csv.reader([text.rstrip("\r\n")], delimiter=fmt.delimiter))
    names = tuple(rows[0]) if rows else ()
    if not names or names == ("",):
        raise SourceFormatError(f"{path}, line 1: empty CSV header", path=path, line=1)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SourceFormatError(
            f"{path}, line 1: duplicate column names {dup} in the CSV header", path=path, line=1
        )
    return names


def stat_file(path: str, fmt: TextFormat, columns: Sequence[str] | None = None) -> FileInfo:
    """Describe a file for planning: size, gzip or not, where its data starts, header.

    ``columns`` are the CSV column names for files without a header line.

    Raises
    ------
    SourceError
        The file cannot be read.
    SourceFormatError
        A broken gzip file, or a CSV header that is empty, not UTF-8 or has duplicates.
    """
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            compressed = fh.read(2) == _GZIP_MAGIC
            isize = 0
            if compressed and st.st_size >= 18:
                fh.seek(-4, os.SEEK_END)
                isize = struct.unpack("<I", fh.read(4))[0]
        with _open(path, compressed) as fh:
            head = fh.read(3)
            start = len(_BOM) if head == _BOM else 0
            names: tuple[str, ...] | None = None
            if fmt.kind == "csv":
                if fmt.header:
                    fh.seek(start)
                    line = _read_first_line(fh)
                    names = _header_columns(line, fmt, path) if line.strip() else None
                    start += len(line)
                else:
                    names = tuple(columns or ())
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise SourceFormatError(f"{path}: not a readable gzip file ({exc})", path=path) from exc
    except OSError as exc:
        raise SourceError(f"cannot read input file {path!r}: {exc}") from exc
    if compressed:
        weight = max(isize, st.st_size) - start  # ISIZE is mod 2**32 and per last member
    else:
        weight = st.st_size - start
    return FileInfo(path, st.st_size, st.st_mtime_ns, compressed, start, max(weight, 0), names)


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Piece:
    """A part of one file that one node reads: ``[start, end)`` of a plain file (lines
    starting in the range), or a whole file (``whole``: gzip, or unsplittable CSV)."""

    file: FileInfo
    start: int
    end: int
    whole: bool = False


def plan_nodes(
    files: Sequence[FileInfo], *, blocksize: int, splittable: bool = True
) -> list[list[Piece]]:
    """Cut the files into pieces and group them into nodes of about equal weight.

    The target weight of a node is ``total / ceil(total / blocksize)``. The files are
    taken in order: plain files fill the current node exactly, split where it is full
    (their lines go to the piece they start in); a gzip (or unsplittable) file goes
    whole into the current node if it fits, or if the node is less than half full, else
    it starts the next node. A last node less than half full joins the one before it.
    Empty files get no piece.

    Examples
    --------
    >>> f = [FileInfo(f"/f{i}", 100, 0, False, 0, 100) for i in range(10)]
    >>> [len(n) for n in plan_nodes(f, blocksize=250)]     # 1000 bytes: 4 nodes of 250
    [3, 3, 3, 3]
    >>> [(p.start, p.end) for p in plan_nodes(f[:1], blocksize=40)[1]]
    [(34, 68)]
    >>> g = [FileInfo(f"/g{i}", 10, 0, True, 0, 100) for i in range(3)]   # gzip: whole
    >>> [[p.file.path for p in n] for n in plan_nodes([g[0], f[0], g[1], g[2]], blocksize=150)]
    [['/g0', '/f0'], ['/f0', '/g1'], ['/g2']]
    """
    if blocksize < 1:
        raise InvalidInputError(f"blocksize must be >= 1 byte, got {blocksize}")
    total = sum(f.weight for f in files)
    if total == 0:
        return []
    target = -(-total // math.ceil(total / blocksize))
    nodes: list[list[Piece]] = [[]]
    fills = [0]

    def add(piece: Piece, weight: int) -> None:
        nodes[-1].append(piece)
        fills[-1] += weight
        if fills[-1] >= target:
            nodes.append([])
            fills.append(0)

    for f in files:
        if f.weight == 0:
            continue
        if f.gzip or not splittable:
            fill = fills[-1]
            if fill and fill + f.weight > target and 2 * fill >= target:
                nodes.append([])
                fills.append(0)
            add(Piece(f, f.data_start, f.size, True), f.weight)
            continue
        a = f.data_start
        while a < f.size:
            take = min(f.size - a, target - fills[-1])
            add(Piece(f, a, a + take), take)
            a += take
    if not nodes[-1]:
        nodes.pop()
        fills.pop()
    if len(nodes) > 1 and 2 * fills[-1] < target:
        nodes[-2].extend(nodes.pop())
    return nodes


# --------------------------------------------------------------------------- reading
def line_boundary(fh: Any, x: int, data_start: int, size: int) -> int:
    """The first line start at or after ``x`` in an open binary file.

    A line starts at ``data_start`` and after every ``\\n``.

    Examples
    --------
    >>> import io
    >>> f = io.BytesIO(b"ab\\ncd\\nef")
    >>> [line_boundary(f, x, 0, 8) for x in range(9)]
    [0, 3, 3, 3, 6, 6, 6, 8, 8]
    """
    if x <= data_start:
        return data_start
    if x >= size:
        return size
    fh.seek(x - 1)
    pos = x - 1
    while True:
        chunk = fh.read(_SCAN)
        if not chunk:
            return size
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(chunk)


def read_range(info: FileInfo, start: int, end: int) -> tuple[int, bytes]:
    """The lines of a plain file that start in ``[start, end)``: (their offset, bytes).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "f.jsonl")
    >>> _ = open(path, "wb").write(b"a\\nbb\\nccc\\n")
    >>> info = FileInfo(path, 9, 0, False, 0, 9)
    >>> [read_range(info, a, b) for a, b in [(0, 3), (3, 6), (6, 9)]]
    [(0, b'a\\nbb\\n'), (5, b'ccc\\n'), (9, b'')]
    """
    try:
        with open(info.path, "rb") as fh:
            lo = line_boundary(fh, start, info.data_start, info.size)
            hi = line_boundary(fh, end, info.data_start, info.size)
            if hi <= lo:
                return lo, b""
            fh.seek(lo)
            data = fh.read(hi - lo)
    except OSError as exc:
        raise SourceError(f"cannot read input file {info.path!r}: {exc}") from exc
    if len(data) != hi - lo:
        raise SourceError(f"input file {info.path!r} was truncated while it was read")
    return lo, data


def _count_lines(path: str, end: int) -> int:
    """Line breaks in the first ``end`` bytes of a plain file."""
    count = 0
    with open(path, "rb") as fh:
        left = end
        while left > 0:
            chunk = fh.read(min(_COUNT, left))
            if not chunk:
                break
            count += chunk.count(b"\n")
            left -= len(chunk)
    return count


@dataclass
class Block:
    """Lines of one file, parsed at once.

    ``first_line`` (1-based) is counted on demand for blocks of plain files (from
    ``offset``, their byte offset in the file).
    """

    path: str
    data: bytes
    offset: int
    columns: tuple[str, ...] | None
    first_line: int | None = None

    def line_number(self) -> int:
        """The 1-based line number of the block's first line."""
        if self.first_line is None:
            self.first_line = _count_lines(self.path, self.offset) + 1
        return self.first_line


def _gzip_blocks(piece: Piece, fmt: TextFormat, blocksize: int) -> Iterator[Block]:
    info = piece.file
    line = 1 + (1 if fmt.kind == "csv" and fmt.header else 0)
    offset = info.data_start
    with gzip.open(info.path, "rb") as fh:
        skipped = fh.read(info.data_start)
        if len(skipped) != info.data_start:
            raise SourceError(f"input file {info.path!r} changed since the ingest was planned")
        if not fmt.splittable:
            yield Block(info.path, fh.read(), offset, info.columns, line)
            return
        carry = b""
        while True:
            chunk = fh.read(blocksize)
            if not chunk:
                if carry:
                    yield Block(info.path, carry, offset, info.columns, line)
                return
            buf = carry + chunk if carry else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            data, carry = buf[: cut + 1], buf[cut + 1 :]
            yield Block(info.path, data, offset, info.columns, line)
            line += data.count(b"\n")
            offset += len(data)


def iter_blocks(piece: Piece, fmt: TextFormat, *, blocksize: int) -> Iterator[Block]:
    """The blocks of one piece: its byte range, or a gzip file streamed ``blocksize``
    (decompressed) bytes at a time, cut at line ends.

    Raises
    ------
    SourceError
        The file changed since it was planned, or cannot be read.
    SourceFormatError
        A corrupt or truncated gzip file.
    """
    info = piece.file
    info.check_unchanged()
    if not piece.whole:
        offset, data = read_range(info, piece.start, piece.end)
        known = 1 + (1 if fmt.kind == "csv" and fmt.header else 0)
        first = known if offset == info.data_start else None
        yield Block(info.path, data, offset, info.columns, first)
        return
    if not info.gzip:
        try:
            with open(info.path, "rb") as fh:
                fh.seek(info.data_start)
                data = fh.read()
        except OSError as exc:
            raise SourceError(f"cannot read input file {info.path!r}: {exc}") from exc
        line = 1 + (1 if fmt.kind == "csv" and fmt.header else 0)
        yield Block(info.path, data, info.data_start, info.columns, line)
        return
    try:
        yield from _gzip_blocks(piece, fmt, blocksize)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise SourceFormatError(
            f"{info.path}: corrupt or truncated gzip file ({exc})", path=info.path
        ) from exc
    except OSError as exc:
        raise SourceError(f"cannot read input file {info.path!r}: {exc}") from exc


# --------------------------------------------------------------------------- parsing
class _LineError(ValueError):
    """A block parsed, but not into what its lines say (rows vs lines, extra fields)."""


_PARSE_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, ValueError)


def _native_json_type(t: pa.DataType) -> pa.DataType:
    """The type pyarrow.json reads a column of type ``t`` as (then cast to ``t``)."""
    if pa.types.is_dictionary(t):
        return _native_json_type(t.value_type)
    if pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    return t


@dataclass(frozen=True)
class Reader:
    """How a block's bytes become a table.

    Attributes
    ----------
    fmt
        The file format.
    schema
        The target schema; None infers the types (for planning).
    drop_extra
        Ignore input fields that are not in the schema (an explicit schema); otherwise
        a line with such a field is a bad line.
    """

    fmt: TextFormat
    schema: pa.Schema | None
    drop_extra: bool = True
    _json_schema: pa.Schema | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.schema is not None and self.fmt.kind == "jsonl":
            native = pa.schema([pa.field(f.name, _native_json_type(f.type)) for f in self.schema])
            object.__setattr__(self, "_json_schema", native)

    def empty(self, columns: Sequence[str] | None) -> pa.Table:
        """A table without rows: of the schema, or of null columns named ``columns``."""
        if self.schema is not None:
            return self.schema.empty_table()
        return pa.table({c: pa.array([], pa.null()) for c in columns or ()})

    def parse(self, data: bytes, columns: Sequence[str] | None) -> pa.Table:
        """Parse ``data`` (whole lines); raise one of ``_PARSE_ERRORS`` if it does not."""
        if not data.strip():
            return self.empty(columns)
        block_size = max(1 << 20, len(data) // 4 + 1)
        try:
            table = self._read(data, columns, block_size)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc):
                raise
            table = self._read(data, columns, len(data) + 1)  # a line longer than a block
        if self.fmt.kind == "jsonl":
            _check_json_rows(data, table.num_rows)
            _check_utf8(table)
        if self.schema is None:
            if self.fmt.kind == "csv":
                _check_csv_utf8(table)
            return table
        return conform(table, self.schema, drop_extra=self.drop_extra)

    def _read(self, data: bytes, columns: Sequence[str] | None, block_size: int) -> pa.Table:
        threads = len(data) > (1 << 21)
        source = pa.BufferReader(data)
        if self.fmt.kind == "jsonl":
            parse = pajson.ParseOptions(
                explicit_schema=self._json_schema,
                unexpected_field_behavior="ignore" if self.drop_extra else "error",
            )
            if self._json_schema is None:
                parse = pajson.ParseOptions(unexpected_field_behavior="infer")
            read = pajson.ReadOptions(use_threads=threads, block_size=block_size)
            return pajson.read_json(source, read_options=read, parse_options=parse)
        names = list(columns or ())
        convert = pacsv.ConvertOptions()
        if self.schema is not None:
            convert = pacsv.ConvertOptions(
                column_types={f.name: f.type for f in self.schema if f.name in names},
                include_columns=self.schema.names,
                include_missing_columns=True,
            )
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=threads, block_size=block_size
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.fmt.delimiter, newlines_in_values=self.fmt.newlines_in_values
            ),
            convert_options=convert,
        )


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _check_json_rows(data: bytes, rows: int) -> None:
    lines = _line_count(data)
    if rows == lines:
        return
    blank = sum(1 for line in data.split(b"\n") if not line.strip()) - data.endswith(b"\n")
    if rows != lines - blank:
        raise _LineError("more than one JSON value on a line (expected one object per line)")


def _check_utf8(table: pa.Table) -> None:
    for column in table.columns:
        t = column.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise _LineError("invalid UTF-8 in a string") from exc


def _check_csv_utf8(table: pa.Table) -> None:
    """Type inference reads a CSV column holding invalid UTF-8 as binary (CSV has no
    binary values): that is a bad line, as it is when the schema is given."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            raise _LineError(f"column {name!r}: invalid UTF-8 in a string")


def conform(table: pa.Table, schema: pa.Schema, *, drop_extra: bool) -> pa.Table:
    """``table`` with exactly the columns and types of ``schema`` (missing: nulls).

    Raises
    ------
    ValueError
        Extra columns (unless ``drop_extra``), or values that do not cast.

    Examples
    --------
    >>> t = pa.table({"b": ["2024-01-02"], "x": [1]})
    >>> conform(t, pa.schema([("a", pa.int64()), ("b", pa.date32())]), drop_extra=True)
    pyarrow.Table
    a: int64
    b: date32[day]
    ----
    a: [[null]]
    b: [[2024-01-02]]
    """
    extra = [n for n in table.column_names if schema.get_field_index(n) < 0]
    if extra and not drop_extra:
        raise _LineError(f"fields {extra} are not in the schema")
    arrays = []
    for f in schema:
        i = table.schema.get_field_index(f.name)
        if i < 0:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(i)
        arrays.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- bad lines
@dataclass(frozen=True)
class BadLine:
    """A line that could not be read: where, why, and its text."""

    path: str
    line: int
    error: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "line": self.line, "error": self.error, "text": self.text}


def _split_lines(data: bytes) -> list[tuple[int, bytes]]:
    """``(line offset, line with its end)`` for every line of ``data``."""
    parts = data.split(b"\n")
    out = [(i, p + b"\n") for i, p in enumerate(parts[:-1])]
    if parts[-1]:
        out.append((len(parts) - 1, parts[-1]))
    return out


def _split_records(data: bytes, fmt: TextFormat) -> list[tuple[int, bytes]]:
    """``(line offset, raw text)`` of every CSV record (quoted values may span lines)."""
    lines = [line for _, line in _split_lines(data)]
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line.decode("latin-1")  # bytes <-> str one to one; quotes are ASCII

    reader = csv.reader(feed(), delimiter=fmt.delimiter)
    out: list[tuple[int, bytes]] = []
    start = 0
    while start < len(lines):
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error:  # e.g. a quote never closed: the rest is one bad record
            consumed = len(lines)
        out.append((start, b"".join(lines[start:consumed])))
        start = consumed
    if start < len(lines):
        out.append((start, b"".join(lines[start:])))
    return out


def _describe(
    exc: BaseException, unit: bytes, reader: Reader, columns: Sequence[str] | None
) -> str:
    text = str(exc).removeprefix("JSON parse error: ")
    text = _ROW_IN.sub("", text)
    if columns:
        match = _CSV_COLUMN.search(text)
        if match and int(match.group(1)) < len(columns):
            name = columns[int(match.group(1))]
            text = text.replace(match.group(0), f"column {name!r}: ")
    if reader.fmt.kind == "jsonl" and "unexpected field" in text and reader.schema is not None:
        try:
            keys = list(json.loads(unit))
        except (ValueError, TypeError):
            keys = []
        extra = [k for k in keys if reader.schema.get_field_index(k) < 0]
        text = (
            f"fields {extra} are not in the schema (it was inferred from a sample of each "
            "file; pass schema= to give it, or include them)"
        )
    if reader.fmt.kind == "csv" and not reader.fmt.newlines_in_values and unit.count(b'"') % 2 == 1:
        text += " (a quoted value spanning lines? pass newlines_in_values=True)"
    return text


def _raise_bad(bad: BadLine) -> None:
    snippet = bad.text if len(bad.text) <= _SNIPPET else bad.text[:_SNIPPET] + "..."
    raise SourceFormatError(
        f"{bad.path}, line {bad.line}: {bad.error}; the line: {snippet!r} (pass "
        "bad_lines='quarantine' to set such lines aside instead)",
        path=bad.path,
        line=bad.line,
    )


def parse_block(
    reader: Reader, block: Block, *, bad_lines: BadLines = "error"
) -> tuple[list[pa.Table], list[BadLine]]:
    """Parse a block: its tables (in line order) and its bad lines.

    The whole block is parsed at once; only if that fails are its lines (CSV records
    with ``newlines_in_values``) bisected to find the bad ones.

    Raises
    ------
    SourceFormatError
        ``bad_lines="error"`` and a line is bad: names the file, the line and the error.
    InvalidInputError
        The schema asks for a type the reader cannot produce.
    """
    try:
        return _parse_block(reader, block, bad_lines)
    except pa.ArrowNotImplementedError as exc:
        raise InvalidInputError(f"cannot read {block.path}: {exc}") from exc


def _parse_block(
    reader: Reader, block: Block, bad_lines: BadLines
) -> tuple[list[pa.Table], list[BadLine]]:
    try:
        return [reader.parse(block.data, block.columns)], []
    except _PARSE_ERRORS as exc:
        first_error: BaseException = exc
    if reader.fmt.splittable:
        units = _split_lines(block.data)
    else:  # a CSV record may span lines
        units = _split_records(block.data, reader.fmt)
    tables: list[pa.Table] = []
    bad: list[BadLine] = []

    def fail(i: int, exc: BaseException) -> None:
        offset, raw = units[i]
        line = block.line_number() + offset
        text = raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
        found = BadLine(block.path, line, _describe(exc, raw, reader, block.columns), text)
        if bad_lines == "error":
            _raise_bad(found)
        bad.append(found)

    def visit(lo: int, hi: int, known: BaseException | None) -> None:
        if known is None:
            try:
                tables.append(reader.parse(b"".join(u for _, u in units[lo:hi]), block.columns))
                return
            except _PARSE_ERRORS as exc:
                known = exc
        if hi - lo == 1:
            fail(lo, known)
        elif hi - lo <= _SMALL:
            for i in range(lo, hi):
                visit(i, i + 1, None)
        else:
            mid = (lo + hi) // 2
            visit(lo, mid, None)
            visit(mid, hi, None)

    if not units:  # pragma: no cover - an empty block parses
        raise first_error
    visit(0, len(units), first_error)
    return tables, bad


# --------------------------------------------------------------------------- schema
def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type values of ``a`` and ``b`` both fit in, or None."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        if pa.types.is_integer(a) and pa.types.is_integer(b):
            if pa.types.is_signed_integer(a) != pa.types.is_signed_integer(b):
                return pa.int64()
            return a if a.bit_width >= b.bit_width else b
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        units = ["s", "ms", "us", "ns"]
        return a if units.index(a.unit) >= units.index(b.unit) else b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields: dict[str, pa.DataType] = {f.name: f.type for f in a}
        for f in b:
            if f.name in fields:
                common = _common_type(fields[f.name], f.type)
                if common is None:
                    return None
                fields[f.name] = common
            else:
                fields[f.name] = f.type
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        common = _common_type(a.value_type, b.value_type)
        return None if common is None else pa.list_(common)
    return None


def _final_type(t: pa.DataType) -> pa.DataType:
    """Columns null in every sample are read as strings."""
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _final_type(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_final_type(t.value_type))
    return t


def read_sample(info: FileInfo, fmt: TextFormat, sample_bytes: int) -> Block:
    """The first whole lines (records) of a file, about ``sample_bytes`` of them."""
    try:
        with _open(info.path, info.gzip) as fh:
            fh.seek(info.data_start)
            data = fh.read(sample_bytes)
            more = fh.read(1)
            if more:
                data += more
                cut = data.rfind(b"\n")
                if cut < 0:  # not one whole line yet: read through the first line end
                    data += _read_first_line(fh)
                    cut = len(data) - 1
                data = data[: cut + 1]
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise SourceFormatError(
            f"{info.path}: corrupt or truncated gzip file ({exc})", path=info.path
        ) from exc
    except OSError as exc:
        raise SourceError(f"cannot read input file {info.path!r}: {exc}") from exc
    if more and not fmt.splittable:  # drop a record the sample may have cut
        records = _split_records(data, fmt)
        if len(records) > 1:
            data = data[: -len(records[-1][1])]
    line = 1 + (1 if fmt.kind == "csv" and fmt.header else 0)
    return Block(info.path, data, info.data_start, info.columns, line)


def infer_schema(
    files: Sequence[FileInfo],
    fmt: TextFormat,
    *,
    sample_bytes: int,
    bad_lines: BadLines = "error",
) -> pa.Schema:
    """The schema of the files, from a sample of each (its first ``sample_bytes``).

    Columns are ordered by first appearance; integer and float columns widen to float,
    timestamps to the finer unit; columns that are null in every sample become strings.

    Raises
    ------
    SchemaMismatchError
        Two files (or two lines of one sample) give a column incompatible types: names
        the column, the files and the types.
    SourceFormatError
        ``bad_lines="error"`` and a sample holds a bad line.
    InvalidInputError
        No column was found (every file is empty).
    """
    reader = Reader(fmt, None)
    types: dict[str, tuple[pa.DataType, str]] = {}
    for info in files:
        if fmt.kind == "csv":  # the header gives the columns, even without rows
            for name in info.columns or ():
                types.setdefault(name, (pa.null(), info.path))
        if info.weight == 0:
            continue
        tables, _ = parse_block(reader, read_sample(info, fmt, sample_bytes), bad_lines=bad_lines)
        for table in tables:
            for f in table.schema:
                have, where = types.get(f.name, (pa.null(), info.path))
                common = _common_type(have, f.type)
                if common is None:
                    place = f"in {where}" if where == info.path else f"in {where} but"
                    raise SchemaMismatchError(
                        f"column {f.name!r} is {have} {place} {f.type} in {info.path}; pass "
                        "schema= to choose its type (values that do not fit are bad lines)"
                    )
                types[f.name] = (common, where if not pa.types.is_null(have) else info.path)
    if not types:
        raise InvalidInputError(
            "no columns found: every input file is empty (pass schema= to ingest them anyway)"
        )
    return pa.schema([pa.field(name, _final_type(t)) for name, (t, _) in types.items()])


def toward_dataset(inferred: pa.Schema, dataset: pa.Schema) -> pa.Schema:
    """``inferred`` with the ``dataset``'s type for every column whose inferred values that
    type holds the way inference widens across files (integers appended to a double
    column); other differences are left for the schema check to refuse.

    Examples
    --------
    >>> toward_dataset(pa.schema([("x", pa.int64()), ("s", pa.string())]),
    ...                pa.schema([("x", pa.float64()), ("s", pa.int64())]))
    x: double
    s: string
    """
    fields = []
    for f in inferred:
        idx = dataset.get_field_index(f.name)
        if idx >= 0:
            want = dataset.field(idx).type
            if f.type != want and _common_type(f.type, want) == want:
                f = f.with_type(want)
        fields.append(f)
    return pa.schema(fields, inferred.metadata)


def as_schema(schema: pa.Schema | Mapping[str, pa.DataType | str]) -> pa.Schema:
    """A schema from a ``pa.Schema`` or a mapping of column -> type (or type alias).

    Examples
    --------
    >>> as_schema({"n": "int32", "ts": pa.timestamp("ms")})
    n: int32
    ts: timestamp[ms]
    """
    if isinstance(schema, pa.Schema):
        out = schema
    elif isinstance(schema, Mapping):
        fields = []
        for name, t in schema.items():
            if not isinstance(name, str):
                raise InvalidInputError(f"schema column names must be strings, got {name!r}")
            if isinstance(t, pa.DataType):
                fields.append(pa.field(name, t))
                continue
            try:
                fields.append(pa.field(name, pa.type_for_alias(str(t))))
            except ValueError:
                raise InvalidInputError(
                    f"schema[{name!r}]: {t!r} is not an Arrow type (pass e.g. pa.int64() or "
                    "'float64')"
                ) from None
        out = pa.schema(fields)
    else:
        raise InvalidInputError(
            f"schema must be a pyarrow.Schema or a dict of column -> type, got "
            f"{type(schema).__name__}"
        )
    if not len(out):
        raise InvalidInputError("schema has no columns")
    if len(set(out.names)) != len(out.names):
        raise InvalidInputError(f"schema has duplicate column names: {out.names}")
    return out
