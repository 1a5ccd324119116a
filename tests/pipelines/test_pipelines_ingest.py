"""Ingesting text files: real JSON-lines and CSV files (plain and gzip) on disk, compared
row for row with what pandas reads from the same files."""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import (
    DatasetExistsError,
    InvalidInputError,
    SchemaMismatchError,
    SourceError,
    SourceFormatError,
)
from dataset_kit.pipelines.download import staging_prefix
from dataset_kit.pipelines.ingest import STATE_KEY, ingest_files, read_quarantine
from dataset_kit.store import DelegatingStore, LocalStore, Store
from dataset_kit.throttle import Throttle

LOGGER = "dataset_kit.pipelines.ingest"
LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"]
SERVICES = ["api", "auth", "billing", "search"]


# --------------------------------------------------------------------------- helpers
def log_record(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": i,
        "ts": f"2024-05-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}",
        "level": rng.choice(LEVELS),
        "service": SERVICES[i % len(SERVICES)],
        "latency_ms": round(rng.random() * 250, 3),
        "msg": f"request {rng.randint(0, 10**6)} handled for user {rng.randint(0, 999)}",
    }


def write_logs(
    folder: Path,
    n_files: int,
    lines: int | Sequence[int],
    *,
    gz_every: int = 0,
    seed: int = 0,
    crlf_file: int | None = None,
    no_final_newline: int | None = None,
) -> list[Path]:
    """JSON-lines log files with a global unique ``id``; some gzip, one CRLF, one without
    a final newline, as asked."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, i = [], 0
    for f in range(n_files):
        count = lines if isinstance(lines, int) else lines[f]
        records = [json.dumps(log_record(rng, i + j)) for j in range(count)]
        i += count
        end = "\r\n" if f == crlf_file else "\n"
        text = end.join(records) + ("" if f == no_final_newline or not records else end)
        gz = bool(gz_every) and f % gz_every == 0
        path = folder / f"app-{f:04d}.jsonl{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
        paths.append(path)
    return paths


def pandas_json(paths: Sequence[Path]) -> pd.DataFrame:
    frames = [
        pd.read_json(p, lines=True, dtype=False, precise_float=True)
        for p in paths
        if (gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()).strip()
    ]
    df = pd.concat(frames, ignore_index=True)
    return df.assign(ts=pd.to_datetime(df["ts"]))


def read_sorted(store: Any, uuid: str) -> pd.DataFrame:
    df = dk.read_table(store=store, dataset_uuid=uuid)
    return df.sort_values("id").reset_index(drop=True)


def assert_same_logs(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    expected = expected.sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == expected["id"].tolist()
    for col in ["level", "service", "msg"]:
        assert got[col].astype(str).tolist() == expected[col].tolist(), col
    assert got["latency_ms"].tolist() == expected["latency_ms"].tolist()
    assert (got["ts"].astype("datetime64[ns]") == expected["ts"].astype("datetime64[ns]")).all()


def blob_rows(meta: dk.DatasetMetadata) -> list[int]:
    return sorted(rows for rows, _ in meta.stats.values())


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "lake")


# --------------------------------------------------------------------------- results
@pytest.mark.parametrize(
    ("blocksize", "scheduler"),
    [(500, "sync"), (7_000, "threads"), (60_000, "threads"), ("64MiB", "sync")],
)
def test_json_files_match_pandas(
    tmp_path: Path, store: LocalStore, blocksize: int | str, scheduler: str
) -> None:
    lines = [120, 0, 1, 300, 45, 200, 80, 160, 33, 250]  # one empty file
    paths = write_logs(tmp_path / "in", 10, lines, gz_every=3, crlf_file=4, no_final_newline=5)
    job = ingest_files(
        str(tmp_path / "in" / "*.jsonl*"), store=store, dataset_uuid="logs", blocksize=blocksize
    )
    meta = job.compute(scheduler=scheduler)
    state = meta.metadata[STATE_KEY]
    assert state["files"] == 10 and state["rows"] == sum(lines) and state["bad_lines"] == 0
    assert meta.schema.field("ts").type == pa.timestamp("s")
    assert meta.schema.field("id").type == pa.int64()
    assert 0 not in blob_rows(meta)  # never an empty blob
    assert_same_logs(read_sorted(store, "logs"), pandas_json(paths))


def test_small_files_are_coalesced_into_balanced_blobs(tmp_path: Path, store: LocalStore) -> None:
    paths = write_logs(tmp_path / "in", 200, 20, gz_every=10)
    total = sum(
        len(gzip.decompress(p.read_bytes())) if p.suffix == ".gz" else p.stat().st_size
        for p in paths
    )
    job = ingest_files(
        [str(p) for p in paths], store=store, dataset_uuid="logs", blocksize=-(-total // 8)
    )
    assert job.tasks == 8
    meta = job.compute()
    rows = blob_rows(meta)
    assert len(rows) == 8 and sum(rows) == 4000
    assert max(rows) / min(rows) < 1.25  # 200 files of 20 rows -> 8 blobs of ~500
    assert_same_logs(read_sorted(store, "logs"), pandas_json(paths))


def test_max_rows_per_file_gives_balanced_blobs(tmp_path: Path, store: LocalStore) -> None:
    write_logs(tmp_path / "in", 3, [1000, 1500, 25])
    meta = ingest_files(
        str(tmp_path / "in" / "*.jsonl"), store=store, dataset_uuid="logs", max_rows_per_file=1000
    ).compute()
    assert blob_rows(meta) == [762, 763, 1000]  # not 1000, 1000, 525
    meta = ingest_files(
        str(tmp_path / "in" / "*.jsonl"),
        store=store,
        dataset_uuid="logs",
        max_rows_per_file=300,
        mode="overwrite",
    ).compute()
    rows = blob_rows(meta)
    assert sum(rows) == 2525 and max(rows) <= 300 and min(rows) >= 150


def test_output_is_compressed(tmp_path: Path, store: LocalStore) -> None:
    paths = write_logs(tmp_path / "in", 4, 10_000)
    text_bytes = sum(p.stat().st_size for p in paths)
    meta = ingest_files(
        str(tmp_path / "in" / "*.jsonl"), store=store, dataset_uuid="logs"
    ).compute()
    blob_bytes = sum(b for _, b in meta.stats.values())
    on_disk = sum(p.stat().st_size for p in (tmp_path / "lake" / "logs").rglob("*.parquet"))
    assert blob_bytes == on_disk
    assert on_disk < text_bytes / 3, (on_disk, text_bytes)  # measured: about 1/4.5 here
    for path in (tmp_path / "lake" / "logs").rglob("*.parquet"):
        md = pq.ParquetFile(path).metadata
        codecs = {md.row_group(0).column(c).compression for c in range(md.num_columns)}
        assert codecs == {"ZSTD"}
    snappy = ingest_files(
        str(tmp_path / "in" / "*.jsonl"), store=store, dataset_uuid="snappy", compression="snappy"
    ).compute()
    assert sum(b for _, b in snappy.stats.values()) > blob_bytes


def test_csv_files_match_pandas(tmp_path: Path, store: LocalStore) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for f in range(4):
        df = pd.DataFrame(
            {
                "id": range(f * 1000, (f + 1) * 1000),
                "name": [f'user "{i}", the {i % 7}th' for i in range(1000)],  # quotes, commas
                "score": [i * 0.25 for i in range(1000)],
                "day": [f"2024-05-{1 + i % 9:02d}" for i in range(1000)],
            }
        )
        path = folder / f"part-{f}.csv{'.gz' if f == 2 else ''}"
        df.to_csv(path, index=False, lineterminator="\r\n" if f == 1 else "\n")
        paths.append(path)
    meta = ingest_files(
        str(folder / "*.csv*"), store=store, dataset_uuid="t", blocksize=4000
    ).compute()
    assert meta.schema.field("day").type == pa.date32()
    got = read_sorted(store, "t")
    expected = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    assert got["id"].tolist() == expected["id"].tolist()
    assert got["name"].tolist() == expected["name"].tolist()
    assert got["score"].tolist() == expected["score"].tolist()
    assert [d.isoformat() for d in got["day"]] == expected["day"].tolist()


def test_csv_without_header_and_with_newlines_in_values(tmp_path: Path, store: LocalStore) -> None:
    (tmp_path / "a.csv").write_text('1,"two\nlines"\n2,plain\n')
    with pytest.raises(InvalidInputError, match="header=False: pass schema="):
        ingest_files(str(tmp_path / "a.csv"), store=store, dataset_uuid="t", header=False)
    meta = ingest_files(
        str(tmp_path / "a.csv"),
        store=store,
        dataset_uuid="t",
        header=False,
        newlines_in_values=True,
        schema={"n": "int32", "text": "string"},
    ).compute()
    assert meta.schema == pa.schema([("n", pa.int32()), ("text", pa.string())])
    df = dk.read_table(store=store, dataset_uuid="t")
    assert df.to_dict("records") == [{"n": 1, "text": "two\nlines"}, {"n": 2, "text": "plain"}]


def test_partition_on(tmp_path: Path, store: LocalStore) -> None:
    paths = write_logs(tmp_path / "in", 6, 400, gz_every=2)
    meta = ingest_files(
        str(tmp_path / "in" / "*"),
        store=store,
        dataset_uuid="logs",
        partition_on="service",
        blocksize=20_000,
    ).compute()
    assert list(meta.partition_keys) == ["service"]
    expected = pandas_json(paths)
    for service in SERVICES:
        part = dk.read_table(
            store=store, dataset_uuid="logs", predicates=[[("service", "==", service)]]
        )
        assert sorted(part["id"]) == sorted(expected.loc[expected["service"] == service, "id"])
    assert_same_logs(read_sorted(store, "logs"), expected)


def test_explicit_schema(tmp_path: Path, store: LocalStore) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"id": 1, "latency_ms": 2, "extra": [1], "day": "2024-05-01"}\n'
        '{"id": 2, "latency_ms": "slow", "day": "2024-05-02"}\n'
        '{"id": 3, "day": "2024-05-03"}\n'
    )
    schema = {"id": "int32", "latency_ms": pa.float32(), "day": pa.date32(), "note": "string"}
    with pytest.raises(SourceFormatError, match=r"a\.jsonl, line 2: "):
        ingest_files(str(path), store=store, dataset_uuid="t", schema=schema).compute()
    meta = ingest_files(
        str(path), store=store, dataset_uuid="t", schema=schema, bad_lines="quarantine"
    ).compute()
    assert meta.schema == pa.schema(
        [
            ("id", pa.int32()),
            ("latency_ms", pa.float32()),
            ("day", pa.date32()),
            ("note", pa.string()),
        ]
    )
    df = dk.read_table(store=store, dataset_uuid="t")
    assert df["id"].tolist() == [1, 3]  # "extra" ignored, "note" null, line 2 set aside
    assert df["note"].isna().all() and df["latency_ms"].iloc[0] == 2.0
    assert [q["line"] for q in read_quarantine(store, "t")] == [2]


# --------------------------------------------------------------------------- bad input
def test_malformed_json_names_file_and_line_and_commits_nothing(
    tmp_path: Path, store: LocalStore
) -> None:
    paths = write_logs(tmp_path / "in", 5, 3000)
    lines = paths[3].read_text().splitlines(keepends=True)
    lines[2222] = '{"id": 1, "level": "INFO",, "oops": 1}\n'  # past the schema sample
    paths[3].write_text("".join(lines))
    job = ingest_files(
        str(tmp_path / "in" / "*.jsonl"), store=store, dataset_uuid="logs", blocksize=50_000
    )
    with pytest.raises(SourceFormatError) as err:
        job.compute()
    assert err.value.path == str(paths[3]) and err.value.line == 2223
    assert f"{paths[3]}, line 2223:" in str(err.value)
    assert dk.list_datasets(store) == []
    # a bad line inside the sample fails already at planning
    lines[3] = "not json\n"
    paths[3].write_text("".join(lines))
    with pytest.raises(SourceFormatError, match=r"app-0003\.jsonl, line 4: "):
        ingest_files(str(tmp_path / "in" / "*.jsonl"), store=store, dataset_uuid="logs")


def test_quarantine_keeps_good_rows_and_records_bad_lines(
    tmp_path: Path, store: LocalStore
) -> None:
    paths = write_logs(tmp_path / "in", 6, 2000, gz_every=3)
    bad = {1: [0, 1500], 3: [1999], 4: [700]}  # file -> line indexes (file 3 is gzip)
    texts = ['{"id": ', "garbage", '{"id": "not a number"}', '{"id": 1}{"id": 2}']
    expected_bad = []
    for f, idxs in bad.items():
        raw = paths[f].read_bytes()
        gz = paths[f].suffix == ".gz"
        lines = (gzip.decompress(raw) if gz else raw).decode().splitlines(keepends=True)
        for k, i in enumerate(idxs):
            text = texts[(f + k) % len(texts)]
            lines[i] = text + "\n"
            expected_bad.append((str(paths[f]), i + 1, text))
        data = "".join(lines).encode()
        paths[f].write_bytes(gzip.compress(data) if gz else data)
    meta = ingest_files(
        str(tmp_path / "in" / "*"),
        store=store,
        dataset_uuid="logs",
        bad_lines="quarantine",
        blocksize=100_000,
        job_id="q-1",
    ).compute()
    state = meta.metadata[STATE_KEY]
    assert state["bad_lines"] == 4 and state["rows"] == 12_000 - 4
    assert state["quarantine"] == "logs.quarantine/q-1/"
    records = read_quarantine(store, "logs")
    assert sorted((r["file"], r["line"], r["text"]) for r in records) == sorted(expected_bad)
    assert all(r["run"] == "q-1" and r["error"] for r in records)
    assert read_quarantine(store, "logs", run="q-1") == records
    # the good rows are exactly what pandas reads from the good lines
    good = pandas_json_good_lines(paths, {(p, n) for p, n, _ in expected_bad})
    assert_same_logs(read_sorted(store, "logs"), good)
    # the quarantine is outside the dataset's folder: garbage collection keeps it
    dk.pipelines.garbage_collect("logs", store=store, grace_period=0).compute()
    assert read_quarantine(store, "logs") == records


def pandas_json_good_lines(paths: Sequence[Path], bad: set[tuple[str, int]]) -> pd.DataFrame:
    rows = []
    for p in paths:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for n, line in enumerate(raw.decode().splitlines(), start=1):
            if (str(p), n) not in bad:
                rows.append(line)
    df = pd.read_json(io_text("\n".join(rows)), lines=True, dtype=False, precise_float=True)
    return df.assign(ts=pd.to_datetime(df["ts"]))


def io_text(text: str) -> Any:
    import io

    return io.StringIO(text)


def test_malformed_csv_lines(tmp_path: Path, store: LocalStore) -> None:
    path = tmp_path / "t.csv"
    rows = [f"{i},name-{i},{i / 4}" for i in range(2000)]
    rows[10] = "10,too,many,fields"
    rows[1500] = "1500,name,NaN-ish"
    path.write_text("id,name,x\n" + "\n".join(rows) + "\n")
    schema = {"id": "int64", "name": "string", "x": "float64"}
    with pytest.raises(SourceFormatError) as err:  # one node: the first bad line
        ingest_files(str(path), store=store, dataset_uuid="t", schema=schema).compute()
    assert f"{path}, line 12: CSV parse error: Expected 3 columns, got 4" in str(err.value)
    with pytest.raises(SourceFormatError) as err:  # nodes in parallel: either bad line
        ingest_files(
            str(path), store=store, dataset_uuid="t", schema=schema, blocksize=3000
        ).compute()
    assert err.value.line in (12, 1502)
    if err.value.line == 1502:
        assert f"{path}, line 1502: column 'x': CSV conversion error to double" in str(err.value)
    assert dk.list_datasets(store) == []
    meta = ingest_files(
        str(path),
        store=store,
        dataset_uuid="t",
        schema=schema,
        blocksize=3000,
        bad_lines="quarantine",
    ).compute()
    assert meta.metadata[STATE_KEY]["bad_lines"] == 2
    assert [(q["line"], q["text"]) for q in read_quarantine(store, "t")] == [
        (12, "10,too,many,fields"),
        (1502, "1500,name,NaN-ish"),
    ]
    expected = pd.read_csv(path, on_bad_lines="skip")
    expected = expected[pd.to_numeric(expected["x"], errors="coerce").notna()]
    got = read_sorted(store, "t")
    assert got["id"].tolist() == expected["id"].astype(int).tolist()
    assert got["x"].tolist() == expected["x"].astype(float).tolist()


def test_invalid_utf8_in_the_schema_sample_is_a_bad_line(tmp_path: Path, store: LocalStore) -> None:
    # the sample's type inference made the column binary: no bad line, every name bytes
    path = tmp_path / "names.csv"
    path.write_bytes(b"name,n\nalice,1\n\xff\xfebob,2\ncarol,3\n")
    with pytest.raises(SourceFormatError) as err:
        ingest_files(str(path), store=store, dataset_uuid="strict").compute(scheduler="sync")
    assert err.value.line == 3 and "invalid UTF-8" in str(err.value)
    assert dk.list_datasets(store) == []
    meta = ingest_files(
        str(path), store=store, dataset_uuid="lenient", bad_lines="quarantine"
    ).compute(scheduler="sync")
    assert meta.schema is not None and meta.schema.field("name").type == pa.string()
    assert meta.metadata[STATE_KEY]["bad_lines"] == 1
    assert [q["line"] for q in read_quarantine(store, "lenient")] == [3]
    assert dk.read_table(store=store, dataset_uuid="lenient")["name"].tolist() == [
        "alice",
        "carol",
    ]


def test_csv_ints_with_empty_values_in_some_files_read_back_exactly(
    tmp_path: Path, store: LocalStore
) -> None:
    # one file's node wrote int64, the other's int64 with nulls: read back as float64
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("id,n,ok\n1,9007199254740993,true\n2,5,false\n")
    b.write_text("id,n,ok\n3,,\n4,7,true\n")
    meta = ingest_files([str(a), str(b)], store=store, dataset_uuid="t", blocksize=40).compute(
        scheduler="sync"
    )
    assert meta.num_partitions == 2  # one blob with nulls, one without
    got = read_sorted(store, "t")
    assert got["n"].dtype == "Int64" and got["ok"].dtype == "boolean"
    assert got["n"].tolist() == [2**53 + 1, 5, pd.NA, 7]
    ddf = dk.read_dataset_as_ddf(store=store, dataset_uuid="t")
    assert ddf._meta.dtypes.to_dict() == got.dtypes.to_dict()


def test_append_of_integers_to_a_double_column(tmp_path: Path, store: LocalStore) -> None:
    # the appended file's column inferred int64 was refused by the dataset's double
    (tmp_path / "day1.jsonl").write_text('{"svc": "a", "lat": 12.5}\n')
    (tmp_path / "day2.jsonl").write_text('{"svc": "b", "lat": 13}\n')
    (tmp_path / "day3.jsonl").write_text('{"svc": "c", "lat": "slow"}\n')
    ingest_files(str(tmp_path / "day1.jsonl"), store=store, dataset_uuid="logs").compute()
    meta = ingest_files(
        str(tmp_path / "day2.jsonl"), store=store, dataset_uuid="logs", mode="append"
    ).compute()
    assert meta.schema is not None and meta.schema.field("lat").type == pa.float64()
    assert dk.read_table(store=store, dataset_uuid="logs")["lat"].tolist() == [12.5, 13.0]
    with pytest.raises(SchemaMismatchError, match="'lat'"):  # text does not fit: refused
        ingest_files(str(tmp_path / "day3.jsonl"), store=store, dataset_uuid="logs", mode="append")


def test_schema_mismatch_between_files(tmp_path: Path, store: LocalStore) -> None:
    (tmp_path / "a.jsonl").write_text('{"user": 17, "n": 1}\n')
    (tmp_path / "b.jsonl").write_text('{"user": "u-17", "n": 2.5}\n')
    with pytest.raises(SchemaMismatchError) as err:
        ingest_files(str(tmp_path / "*.jsonl"), store=store, dataset_uuid="t")
    assert (
        "'user'" in str(err.value) and "a.jsonl" in str(err.value) and "b.jsonl" in str(err.value)
    )
    meta = ingest_files(
        str(tmp_path / "*.jsonl"),
        store=store,
        dataset_uuid="t",
        schema={"user": "string", "n": "float64"},
    )
    with pytest.raises(SourceFormatError, match=r"a\.jsonl, line 1: "):  # 17 is no string
        meta.compute()


def test_missing_files_and_bad_options(tmp_path: Path, store: LocalStore) -> None:
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(SourceError, match="does not exist"):
        ingest_files(
            [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], store=store, dataset_uuid="t"
        )
    with pytest.raises(SourceError, match="no files match"):
        ingest_files(str(tmp_path / "*.csv"), store=store, dataset_uuid="t")
    with pytest.raises(InvalidInputError, match="no input files"):
        ingest_files([], store=store, dataset_uuid="t")
    (tmp_path / "c.csv").write_text("a\n1\n")
    with pytest.raises(InvalidInputError, match="mix formats"):
        ingest_files(str(tmp_path / "[ac].*"), store=store, dataset_uuid="t")
    for kwargs in [
        {"mode": "replace"},
        {"bad_lines": "skip"},
        {"blocksize": 0},
        {"blocksize": "lots"},
        {"max_rows_per_file": 0},
        {"job_id": "a/b"},
        {"format": "xml"},
        {"compression": "lzma"},
        {"schema": {"a": "no-such-type"}},
    ]:
        with pytest.raises(InvalidInputError):
            ingest_files(str(tmp_path / "a.jsonl"), store=store, dataset_uuid="t", **kwargs)
    assert dk.list_datasets(store) == []


def test_file_changed_after_planning_is_refused(tmp_path: Path, store: LocalStore) -> None:
    paths = write_logs(tmp_path / "in", 2, 100)
    job = ingest_files([str(p) for p in paths], store=store, dataset_uuid="t")
    time.sleep(0.01)
    with paths[1].open("a") as fh:
        fh.write(json.dumps(log_record(random.Random(1), 100)) + "\n")
    with pytest.raises(SourceError, match="changed since the ingest was planned"):
        job.compute()
    assert dk.list_datasets(store) == []


# --------------------------------------------------------------------------- modes
def test_modes(tmp_path: Path, store: LocalStore) -> None:
    first = write_logs(tmp_path / "a", 2, 100, seed=1)
    second = [
        p.rename(tmp_path / "a" / f"second-{p.name}")
        for p in write_logs(tmp_path / "b", 1, 50, seed=2)
    ]
    ingest_files(str(tmp_path / "a" / "app-*"), store=store, dataset_uuid="logs").compute()
    with pytest.raises(DatasetExistsError):
        ingest_files(str(tmp_path / "a" / "app-*"), store=store, dataset_uuid="logs")
    meta = ingest_files(str(second[0]), store=store, dataset_uuid="logs", mode="append").compute()
    assert meta.version == 1 and len(dk.read_table(store=store, dataset_uuid="logs")) == 250
    meta = ingest_files(
        str(second[0]), store=store, dataset_uuid="logs", mode="overwrite"
    ).compute()
    assert meta.version == 2 and len(dk.read_table(store=store, dataset_uuid="logs")) == 50
    assert first  # written before the second batch
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "text now"}\n')
    with pytest.raises(SchemaMismatchError):  # does not fit the dataset appended to
        ingest_files(str(other), store=store, dataset_uuid="logs", mode="append")


# --------------------------------------------------------------------------- resume
class FailOnThirdRecord(DelegatingStore):
    """Fails when about to record the third finished node of a resumable job."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.records = 0

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        if "/_staging/" in key and "/chunks/" in key:
            self.records += 1
            if self.records == 3:
                raise OSError("injected: the client died")
        return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)


def test_rerun_with_job_id_resumes_after_a_failure(
    tmp_path: Path, store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    paths = write_logs(tmp_path / "in", 5, 500, gz_every=2)
    pattern = str(tmp_path / "in" / "*")

    def job(target: Store) -> Any:
        return ingest_files(
            pattern, store=target, dataset_uuid="r", blocksize=40_000, job_id="nightly-1"
        )

    first = job(FailOnThirdRecord(store))
    assert first.tasks >= 4
    with pytest.raises(OSError, match="injected"):
        first.compute(scheduler="sync")
    prefix = staging_prefix("r", "nightly-1")
    assert len([k for k in store.iter_keys(prefix) if "/chunks/" in k]) == 2
    assert "r" not in dk.list_datasets(store)

    caplog.set_level(logging.INFO, logger=LOGGER)
    resumed = job(store)
    assert resumed.tasks == first.tasks  # the stored plan
    meta = resumed.compute()
    assert sum(1 for r in caplog.records if ": reused (" in r.getMessage()) == 2
    assert not list(store.iter_keys(prefix))  # staging removed after the commit
    assert meta.metadata[STATE_KEY]["job_id"] == "nightly-1"
    assert_same_logs(read_sorted(store, "r"), pandas_json(paths))

    again = job(store)  # done: returns the committed dataset, reads nothing
    assert again.tasks == 0 and again.compute().version == meta.version
    with pytest.raises(InvalidInputError, match="another ingest"):
        (tmp_path / "in" / "new.jsonl").write_text('{"id": 1}\n')
        ingest_files(pattern, store=store, dataset_uuid="r2", job_id="j", blocksize=1000)
        ingest_files(pattern, store=store, dataset_uuid="r2", job_id="j", blocksize=2000)


# --------------------------------------------------------------------------- throttle
class _Concurrency(DelegatingStore):
    """Records the most concurrent puts (threaded scheduler: no pickling)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def _put(self, key: str, data: Any, *, if_absent: bool, if_match: str | None) -> Any:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.01)
            return self.inner.put(key, data, if_absent=if_absent, if_match=if_match)
        finally:
            with self.lock:
                self.active -= 1


def test_storage_concurrency_bounds_concurrent_writes(tmp_path: Path, store: LocalStore) -> None:
    import dask

    write_logs(tmp_path / "in", 8, 400)
    counted = _Concurrency(store)
    with dask.config.set(num_workers=8):
        for uuid, limit in (("free", None), ("lim", Throttle("ingest-test", 2))):
            ingest_files(
                str(tmp_path / "in" / "*"),
                store=counted,
                dataset_uuid=uuid,
                blocksize=8_000,
                partition_on="service",
                storage_concurrency=limit,
            ).compute()
            if limit is None:
                unthrottled, counted.peak = counted.peak, 0
    assert counted.peak <= 2 < unthrottled
    assert len(dk.read_table(store=store, dataset_uuid="lim")) == 3200


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_on_a_local_cluster(tmp_path: Path) -> None:
    from dataset_kit.testing.dask_cluster import local_cluster

    paths = write_logs(tmp_path / "in", 12, 700, gz_every=4)
    store = LocalStore(tmp_path / "lake")
    with local_cluster(n_workers=2, threads_per_worker=1) as client:
        meta = ingest_files(
            str(tmp_path / "in" / "*"),
            store=store,
            dataset_uuid="logs",
            blocksize=30_000,
            storage_concurrency=2,
        ).compute(scheduler=client)
    assert meta.metadata[STATE_KEY]["rows"] == 8400
    assert_same_logs(read_sorted(store, "logs"), pandas_json(paths))
