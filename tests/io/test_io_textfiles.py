"""Text files as a source: splitting at line boundaries, coalescing, parsing, bad lines.

Every file here is real (tmp_path); results are compared with the bytes themselves, with
Python's json/csv modules and with pandas reading the same files.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from dataset_kit.exceptions import (
    InvalidInputError,
    SchemaMismatchError,
    SourceError,
    SourceFormatError,
)
from dataset_kit.io import textfiles as tf

JSONL = tf.TextFormat("jsonl")
CSV = tf.TextFormat("csv")


# --------------------------------------------------------------------------- helpers
def write(path: Path, data: bytes, *, gz: bool = False) -> str:
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def random_lines(
    rng: random.Random, n: int, *, crlf: bool = False, last_newline: bool = True
) -> bytes:
    """``n`` lines of random length (1 to 300 characters, some much longer)."""
    end = b"\r\n" if crlf else b"\n"
    lines = []
    for i in range(n):
        width = rng.choice([0, 1, 2, 5, 40, 300]) if i % 7 else rng.randint(1, 80)
        lines.append(f"{i}:".encode() + b"x" * width)
    data = end.join(lines)
    return data + end if last_newline else data


def all_pieces(
    infos: Sequence[tf.FileInfo], fmt: tf.TextFormat, blocksize: int
) -> list[list[tf.Piece]]:
    return tf.plan_nodes(infos, blocksize=blocksize, splittable=fmt.splittable)


def read_back(nodes: list[list[tf.Piece]], fmt: tf.TextFormat, blocksize: int) -> dict[str, bytes]:
    """Per file, the concatenation (in plan order) of every block its pieces produce."""
    out: dict[str, bytes] = {}
    for node in nodes:
        for piece in node:
            for block in tf.iter_blocks(piece, fmt, blocksize=blocksize):
                out[block.path] = out.get(block.path, b"") + block.data
    return out


# --------------------------------------------------------------------------- splitting
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("last_newline", [True, False], ids=["newline-end", "no-newline-end"])
def test_every_line_is_read_exactly_once_at_any_blocksize(
    tmp_path: Path, crlf: bool, last_newline: bool
) -> None:
    rng = random.Random(7)
    data = random_lines(rng, 150, crlf=crlf, last_newline=last_newline)
    path = write(tmp_path / "f.jsonl", data)
    info = tf.stat_file(path, JSONL)
    assert info.weight == len(data) and not info.gzip
    # blocksizes from one byte (far smaller than a line) to more than the file
    for blocksize in [1, 2, 3, 5, 17, 64, 100, 299, 1000, 4096, 10_007, len(data), 10 * len(data)]:
        nodes = all_pieces([info], JSONL, blocksize)
        pieces = [p for node in nodes for p in node]
        assert pieces[0].start == 0 and pieces[-1].end == len(data)
        assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
        blocks = [tf.read_range(info, p.start, p.end) for p in pieces]
        assert b"".join(d for _, d in blocks) == data, blocksize
        for offset, chunk in blocks:
            if chunk:  # every block is whole lines: starts at a line start, ends at a line end
                assert offset == 0 or data[offset - 1 : offset] == b"\n"
                assert chunk.endswith(b"\n") or offset + len(chunk) == len(data)


def test_blocks_know_their_line_numbers(tmp_path: Path) -> None:
    data = b"".join(f'{{"i": {i}}}\n'.encode() for i in range(1000))
    info = tf.stat_file(write(tmp_path / "f.jsonl", data), JSONL)
    nodes = all_pieces([info], JSONL, 997)
    seen = 0
    for node in nodes:
        for piece in node:
            (block,) = tf.iter_blocks(piece, JSONL, blocksize=997)
            lines = block.data.decode().splitlines()
            if lines:
                assert block.line_number() == json.loads(lines[0])["i"] + 1
            seen += len(lines)
    assert seen == 1000


def test_empty_and_whitespace_files(tmp_path: Path) -> None:
    empty = tf.stat_file(write(tmp_path / "e.jsonl", b""), JSONL)
    assert empty.weight == 0
    assert tf.plan_nodes([empty], blocksize=10) == []
    blank = tf.stat_file(write(tmp_path / "b.jsonl", b"\n\n  \n"), JSONL)
    nodes = tf.plan_nodes([empty, blank], blocksize=2)
    reader = tf.Reader(JSONL, pa.schema([("a", pa.int64())]))
    rows = 0
    for node in nodes:
        for piece in node:
            for block in tf.iter_blocks(piece, JSONL, blocksize=2):
                tables, bad = tf.parse_block(reader, block)
                rows += sum(t.num_rows for t in tables)
                assert not bad
    assert rows == 0


def test_gzip_files_are_whole_pieces_streamed_in_blocks(tmp_path: Path) -> None:
    rng = random.Random(3)
    data = random_lines(rng, 300, last_newline=False)
    path = write(tmp_path / "f.log.gz", data, gz=True)
    info = tf.stat_file(path, JSONL)
    assert info.gzip and info.weight == len(data)  # the gzip trailer gives the size
    nodes = tf.plan_nodes([info], blocksize=100)
    assert nodes == [[tf.Piece(info, 0, info.size, True)]]  # never split
    for blocksize in [1, 7, 100, 5000, 10**7]:
        blocks = list(tf.iter_blocks(nodes[0][0], JSONL, blocksize=blocksize))
        assert b"".join(b.data for b in blocks) == data
        line = 1
        for block in blocks:  # cut at line ends, with their line numbers counted
            assert block.first_line == line
            assert block.data.endswith(b"\n") or block is blocks[-1]
            line += block.data.count(b"\n")


def test_corrupt_gzip_is_a_format_error(tmp_path: Path) -> None:
    rng = random.Random(1)
    good = gzip.compress(b"".join(b'{"a": %d}\n' % rng.getrandbits(64) for _ in range(5000)))
    path = write(tmp_path / "t.jsonl.gz", good[: len(good) // 2])  # truncated
    info = tf.stat_file(path, JSONL)  # its start reads fine: planning does not notice
    with pytest.raises(SourceFormatError, match=r"t\.jsonl\.gz: corrupt or truncated gzip"):
        list(tf.iter_blocks(tf.Piece(info, 0, info.size, True), JSONL, blocksize=1 << 20))


def test_small_files_are_coalesced_into_balanced_nodes(tmp_path: Path) -> None:
    rng = random.Random(5)
    infos = []
    for i in range(200):
        data = random_lines(rng, rng.randint(1, 30))
        infos.append(tf.stat_file(write(tmp_path / f"f{i:03d}.jsonl", data), JSONL))
    total = sum(f.weight for f in infos)
    blocksize = -(-total // 10)
    nodes = tf.plan_nodes(infos, blocksize=blocksize)
    assert len(nodes) == 10  # ceil(total / blocksize)
    weights = [sum(p.end - p.start for p in node) for node in nodes]
    assert sum(weights) == total
    assert max(weights) - min(weights) < len(nodes)  # equal up to rounding
    assert max(len(node) for node in nodes) > 10  # many small files per node
    # and every line still comes back exactly once
    back = read_back(nodes, JSONL, blocksize)
    assert all(back[f.path] == Path(f.path).read_bytes() for f in infos)


def test_gzip_files_are_weighed_by_their_content(tmp_path: Path) -> None:
    data = b'{"level": "INFO", "msg": "same thing again"}\n' * 20_000  # compresses ~100x
    infos = [
        tf.stat_file(write(tmp_path / f"g{i}.jsonl.gz", data, gz=True), JSONL) for i in range(4)
    ]
    assert all(f.size < len(data) // 20 and f.weight == len(data) for f in infos)
    nodes = tf.plan_nodes(infos, blocksize=len(data))
    assert [len(n) for n in nodes] == [1, 1, 1, 1]


def test_csv_pieces_skip_the_header_and_use_it(tmp_path: Path) -> None:
    rows = [f"{i},name {i},{i * 0.5}" for i in range(500)]
    data = ("id,name,x\r\n" + "\r\n".join(rows) + "\r\n").encode()
    path = write(tmp_path / "t.csv", data)
    info = tf.stat_file(path, CSV)
    assert info.columns == ("id", "name", "x") and info.data_start == len("id,name,x\r\n")
    reader = tf.Reader(
        CSV, pa.schema([("id", pa.int64()), ("name", pa.string()), ("x", pa.float64())])
    )
    nodes = tf.plan_nodes([info], blocksize=997)
    assert len(nodes) > 5
    tables = []
    for node in nodes:
        for piece in node:
            for block in tf.iter_blocks(piece, CSV, blocksize=997):
                got, bad = tf.parse_block(reader, block)
                assert not bad
                tables.extend(got)
    table = pa.concat_tables(tables)
    expected = pd.read_csv(path)
    pd.testing.assert_frame_equal(table.to_pandas(), expected)  # no "\r" left in values


def test_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbfa,b\n1,2\n")
    info = tf.stat_file(path, CSV)
    assert info.columns == ("a", "b") and info.data_start == 7
    jpath = write(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"a": 1}\n')
    jinfo = tf.stat_file(jpath, JSONL)
    (block,) = tf.iter_blocks(tf.Piece(jinfo, jinfo.data_start, jinfo.size), JSONL, blocksize=99)
    tables, _ = tf.parse_block(tf.Reader(JSONL, pa.schema([("a", pa.int64())])), block)
    assert tables[0].to_pylist() == [{"a": 1}]


def test_changed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    info = tf.stat_file(str(path), JSONL)
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    with pytest.raises(SourceError, match="changed since the ingest was planned"):
        list(tf.iter_blocks(tf.Piece(info, 0, info.size), JSONL, blocksize=99))


# --------------------------------------------------------------------------- files
def test_resolve_files(tmp_path: Path) -> None:
    for name in ["b.jsonl", "a.jsonl", "c.csv"]:
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jsonl").write_text("")
    got = tf.resolve_files(str(tmp_path / "*.jsonl"))
    assert got == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert len(tf.resolve_files(str(tmp_path / "**" / "*.jsonl"))) == 3
    assert tf.resolve_files([tmp_path / "c.csv", f"file://{tmp_path}/a.jsonl"]) == [
        str(tmp_path / "c.csv"),
        str(tmp_path / "a.jsonl"),
    ]
    with pytest.raises(SourceError, match="does not exist"):
        tf.resolve_files([str(tmp_path / "a.jsonl"), str(tmp_path / "missing.jsonl")])
    with pytest.raises(SourceError, match="no files match"):
        tf.resolve_files(str(tmp_path / "*.parquet"))
    with pytest.raises(InvalidInputError, match="no input files"):
        tf.resolve_files([])
    with pytest.raises(InvalidInputError, match="twice"):
        tf.resolve_files([str(tmp_path / "a.jsonl"), str(tmp_path / "*.jsonl")])
    with pytest.raises(InvalidInputError, match="directory"):
        tf.resolve_files(str(tmp_path / "sub"))
    with pytest.raises(InvalidInputError, match="only local files"):
        tf.resolve_files("s3://bucket/a.jsonl")
    assert tf.detect_kind("x.ndjson.gz") == "jsonl"
    with pytest.raises(InvalidInputError, match="format="):
        tf.detect_kind("x.txt")


# --------------------------------------------------------------------------- bad lines
def one_block(path: str, fmt: tf.TextFormat) -> tf.Block:
    info = tf.stat_file(path, fmt)
    (block,) = tf.iter_blocks(
        tf.Piece(info, info.data_start, info.size, True), fmt, blocksize=1 << 30
    )
    return block


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps({"a": i, "s": f"v{i}"}) for i in range(1000)]
    lines[636] = '{"a": 636, "s": "unterminated}'
    path = write(tmp_path / "app.jsonl", ("\n".join(lines) + "\n").encode())
    reader = tf.Reader(JSONL, pa.schema([("a", pa.int64()), ("s", pa.string())]))
    with pytest.raises(SourceFormatError) as err:
        tf.parse_block(reader, one_block(path, JSONL))
    assert err.value.path == path and err.value.line == 637
    assert f"{path}, line 637: " in str(err.value) and "unterminated" in str(err.value)


@pytest.mark.parametrize("seed", range(6))
def test_quarantine_finds_exactly_the_bad_lines(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 50, 3000])
    lines = [json.dumps({"a": i, "s": f"v{i}"}) for i in range(n)]
    bad_at = set(rng.sample(range(n), k=min(n, rng.choice([1, 2, 10, n // 3 + 1]))))
    kinds = [
        '{"a": 1,}',  # trailing comma
        '{"a": "text"}',  # wrong type
        '{"a": 1} {"a": 2}',  # two values on one line
        "[1, 2]",  # not an object
        '{"a": 1, "s": "\xff"}',  # invalid UTF-8 (written as latin-1 below)
        "nonsense",
    ]
    for i in bad_at:
        lines[i] = rng.choice(kinds)
    if n > 2:
        lines.insert(1, "")  # a blank line is not bad
    data = ("\n".join(lines) + "\n").encode("latin-1")
    path = write(tmp_path / "q.jsonl", data)
    reader = tf.Reader(JSONL, pa.schema([("a", pa.int64()), ("s", pa.string())]))
    tables, bad = tf.parse_block(reader, one_block(path, JSONL), bad_lines="quarantine")
    expected_bad = [i + 1 for i, line in enumerate(lines) if line in kinds or "\xff" in line]
    assert [b.line for b in bad] == expected_bad
    assert all(b.path == path and b.error for b in bad)
    assert [b.text for b in bad] == [
        lines[i - 1].encode("latin-1").decode("utf-8", "backslashreplace") for i in expected_bad
    ]
    good = [json.loads(line) for line in lines if line and line not in kinds and "\xff" not in line]
    got = pa.concat_tables(tables).to_pylist() if tables else []
    assert got == good  # in order, nothing lost, nothing twice


def test_bad_line_numbers_in_a_split_file(tmp_path: Path) -> None:
    lines = [json.dumps({"a": i}) for i in range(5000)]
    for i in (17, 2500, 4999):
        lines[i] = '{"a": oops}'
    path = write(tmp_path / "s.jsonl", ("\n".join(lines)).encode())  # no final newline
    info = tf.stat_file(path, JSONL)
    reader = tf.Reader(JSONL, pa.schema([("a", pa.int64())]))
    found = []
    for node in tf.plan_nodes([info], blocksize=1000):
        for piece in node:
            for block in tf.iter_blocks(piece, JSONL, blocksize=1000):
                _, bad = tf.parse_block(reader, block, bad_lines="quarantine")
                found += [b.line for b in bad]
    assert found == [18, 2501, 5000]


def test_csv_bad_lines(tmp_path: Path) -> None:
    data = 'id,name,x\n1,a,0.5\n2,b\n3,c,not-a-number\n4,d,1.5\n5,"e,2.5\n6,f,3.5\n'
    path = write(tmp_path / "t.csv", data.encode())
    reader = tf.Reader(
        CSV, pa.schema([("id", pa.int64()), ("name", pa.string()), ("x", pa.float64())])
    )
    with pytest.raises(SourceFormatError, match=r"t.csv, line 3: .*Expected 3 columns, got 2"):
        tf.parse_block(reader, one_block(path, CSV))
    tables, bad = tf.parse_block(reader, one_block(path, CSV), bad_lines="quarantine")
    assert [(b.line, b.text) for b in bad] == [(3, "2,b"), (4, "3,c,not-a-number"), (6, '5,"e,2.5')]
    assert "column 'x'" in bad[1].error  # the column's name, not its number
    assert "newlines_in_values=True" in bad[2].error  # the hint for an unbalanced quote
    assert pa.concat_tables(tables).column("id").to_pylist() == [1, 4, 6]


def test_csv_with_newlines_in_values(tmp_path: Path) -> None:
    rows = [[str(i), f"line one {i}\nline two, quoted", str(i / 2)] for i in range(300)]
    rows[200][0] = "not-an-int"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "text", "x"])
    writer.writerows(rows)
    path = write(tmp_path / "m.csv", buf.getvalue().encode())
    fmt = tf.TextFormat("csv", newlines_in_values=True)
    info = tf.stat_file(path, fmt)
    nodes = tf.plan_nodes([info], blocksize=100, splittable=fmt.splittable)
    assert nodes == [[tf.Piece(info, info.data_start, info.size, True)]]  # never split
    reader = tf.Reader(
        fmt, pa.schema([("id", pa.int64()), ("text", pa.string()), ("x", pa.float64())])
    )
    tables, bad = tf.parse_block(reader, one_block(path, fmt), bad_lines="quarantine")
    # record 200 starts on physical line 2 + 2 * 200 (a header, then two lines per record)
    assert [b.line for b in bad] == [402] and bad[0].text.startswith("not-an-int,")
    table = pa.concat_tables(tables)
    expected = pd.read_csv(path).drop(index=200).reset_index(drop=True)
    assert table.column("text").to_pylist() == expected["text"].tolist()
    assert table.column("id").to_pylist() == expected["id"].astype(int).tolist()


def test_unexpected_field_with_an_inferred_schema(tmp_path: Path) -> None:
    path = write(tmp_path / "u.jsonl", b'{"a": 1}\n{"a": 2, "extra": true}\n')
    strict = tf.Reader(JSONL, pa.schema([("a", pa.int64())]), drop_extra=False)
    with pytest.raises(
        SourceFormatError, match=r"line 2: fields \['extra'\] are not in the schema"
    ):
        tf.parse_block(strict, one_block(path, JSONL))
    lenient = tf.Reader(JSONL, pa.schema([("a", pa.int64()), ("b", pa.string())]))
    tables, bad = tf.parse_block(lenient, one_block(path, JSONL))
    assert not bad and tables[0].to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": None}]


def test_types_json_cannot_parse_are_cast(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.jsonl",
        b'{"d": "2024-05-01", "c": "x", "n": 3}\n{"d": "bad", "c": "y", "n": 4}\n',
    )
    schema = pa.schema(
        [
            ("d", pa.date32()),
            ("c", pa.dictionary(pa.int32(), pa.string())),
            ("n", pa.decimal128(6, 2)),
        ]
    )
    tables, bad = tf.parse_block(
        tf.Reader(JSONL, schema), one_block(path, JSONL), bad_lines="quarantine"
    )
    assert [b.line for b in bad] == [2]
    assert (
        tables[0].schema == schema
        and tables[0].column("d").to_pylist()[0].isoformat() == "2024-05-01"
    )


# --------------------------------------------------------------------------- schema
def test_infer_schema_widens_and_types_null_columns(tmp_path: Path) -> None:
    a = tf.stat_file(write(tmp_path / "a.jsonl", b'{"n": 1, "s": "x", "z": null}\n'), JSONL)
    b = tf.stat_file(
        write(tmp_path / "b.jsonl", b'{"n": 1.5, "t": "2024-05-01 10:00:00"}\n'), JSONL
    )
    schema = tf.infer_schema([a, b], JSONL, sample_bytes=1 << 16)
    assert schema == pa.schema(
        [("n", pa.float64()), ("s", pa.string()), ("z", pa.string()), ("t", pa.timestamp("s"))]
    )


def test_infer_schema_names_the_disagreeing_files(tmp_path: Path) -> None:
    a = tf.stat_file(write(tmp_path / "a.jsonl", b'{"id": 1}\n'), JSONL)
    b = tf.stat_file(write(tmp_path / "b.jsonl", b'{"id": "x-1"}\n'), JSONL)
    with pytest.raises(SchemaMismatchError) as err:
        tf.infer_schema([a, b], JSONL, sample_bytes=1 << 16)
    message = str(err.value)
    assert "'id'" in message and "a.jsonl" in message and "b.jsonl" in message
    assert "int64" in message and "string" in message and "schema=" in message


def test_infer_schema_from_csv_headers_and_samples(tmp_path: Path) -> None:
    a = tf.stat_file(write(tmp_path / "a.csv", b"id,when\n1,2024-05-01\n"), CSV)
    b = tf.stat_file(write(tmp_path / "b.csv", b"id,extra\n", gz=True), CSV)  # header only
    schema = tf.infer_schema([a, b], CSV, sample_bytes=1 << 16)
    assert schema == pa.schema([("id", pa.int64()), ("when", pa.date32()), ("extra", pa.string())])
    empty = tf.stat_file(write(tmp_path / "e.jsonl", b""), JSONL)
    with pytest.raises(InvalidInputError, match="every input file is empty"):
        tf.infer_schema([empty], JSONL, sample_bytes=100)


def test_infer_schema_sample_with_a_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", b'{"a": 1}\n{"a": \n{"a": 3}\n')
    info = tf.stat_file(path, JSONL)
    with pytest.raises(SourceFormatError, match=r"a\.jsonl, line 2"):
        tf.infer_schema([info], JSONL, sample_bytes=1 << 16)
    assert tf.infer_schema(
        [info], JSONL, sample_bytes=1 << 16, bad_lines="quarantine"
    ) == pa.schema([("a", pa.int64())])


def test_invalid_utf8_in_a_csv_sample_is_a_bad_line(tmp_path: Path) -> None:
    # type inference made the whole column binary (every good value stored as bytes)
    path = write(tmp_path / "n.csv", b"name,n\nalice,1\n\xff\xfebob,2\ncarol,3\n")
    info = tf.stat_file(path, CSV)
    with pytest.raises(SourceFormatError, match=r"n\.csv, line 3: column 'name': invalid UTF-8"):
        tf.infer_schema([info], CSV, sample_bytes=1 << 16)
    schema = tf.infer_schema([info], CSV, sample_bytes=1 << 16, bad_lines="quarantine")
    assert schema == pa.schema([("name", pa.string()), ("n", pa.int64())])


def test_sample_is_whole_lines(tmp_path: Path) -> None:
    data = b"".join(f'{{"i": {i}, "pad": "{"x" * (i % 50)}"}}\n'.encode() for i in range(2000))
    info = tf.stat_file(write(tmp_path / "s.jsonl", data), JSONL)
    for size in [1, 10, 1000, 50_000]:
        block = tf.read_sample(info, JSONL, size)
        assert block.data.endswith(b"\n") and data.startswith(block.data)
        assert len(block.data) >= min(size, len(data)) - 100


def test_as_schema() -> None:
    assert tf.as_schema({"a": "int32", "b": pa.string()}) == pa.schema(
        [("a", pa.int32()), ("b", pa.string())]
    )
    with pytest.raises(InvalidInputError, match="not an Arrow type"):
        tf.as_schema({"a": "integer-ish"})
    with pytest.raises(InvalidInputError, match="no columns"):
        tf.as_schema({})
    with pytest.raises(InvalidInputError):
        tf.TextFormat("jsonl", newlines_in_values=True)
