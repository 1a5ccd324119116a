"""W11, database download: ``python -m benchmarks.download [--rows N] [--reps K] [--chunks C]``.

Starts its own PostgreSQL (:func:`dataset_kit.testing.postgres.postgres_server`), loads a
generated table server-side with ``generate_series`` (untimed), then times every entry in
its own subprocess, rotating the order each repetition:

* ``dataset_kit``: ``dk.pipelines.download_table`` with ``--chunks`` chunks by ``id`` on the
  local threaded scheduler, into a local store; the dataset is committed;
* ``dataset_kit:cluster``: the same on a LocalCluster of 2 worker processes x 2 threads
  (start-up and warm-up untimed);
* ``pandas``: ``pandas.read_sql(chunksize=...)`` through SQLAlchemy + psycopg on a
  server-side cursor, each chunk appended to one ``pyarrow.parquet.ParquetWriter``;
* ``adbc``: a single ADBC ``fetch_arrow_table`` (writes nothing: the near-limit reference);
* ``adbc+parquet``: the same plus ``pq.write_table`` (the fair end-to-end reference);
* ``copy``: ``psql``'s ``\\copy (SELECT ...) TO '/dev/null' (FORMAT binary)``, the floor.

Each child imports and sets up untimed, then times one operation with
``time.perf_counter()``; peak RSS is the process's VmHWM, reset just before the
operation (the cluster entry adds its workers'; ``copy`` polls psql's VmHWM). Every
result is read back and checked (rows and sum of ``id``; ``copy``: the rows psql
reports); a wrong result or a failure makes the run exit with status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.child import _hwm_bytes, _reset_peak, _rss_bytes
from benchmarks.report import fmt_mib, fmt_ratio, fmt_s
from benchmarks.run import git_commit, load_text, progress

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "download.md"
MIB = 2**20
TABLE = "bench"
REFERENCE = "dataset_kit"
#: Entries in report order, with what each one times.
ENTRIES: dict[str, str] = {
    "dataset_kit": "`download_table`, {chunks} chunks by `id`, local threaded scheduler, "
    "local store, committed",
    "dataset_kit:cluster": "the same on a LocalCluster, 2 worker processes x 2 threads "
    "(start-up untimed; peak = client + workers)",
    "pandas": "`pd.read_sql(chunksize={pandas_chunksize:,})`, SQLAlchemy + psycopg, "
    "server-side cursor, chunks appended to one `ParquetWriter`",
    "pandas:client-cursor": "the same without `stream_results` (the issue's route): "
    "psycopg's client-side cursor holds the whole result, pandas chunks it afterwards",
    "adbc": "one ADBC `fetch_arrow_table`, writes nothing",
    "adbc+parquet": "one ADBC `fetch_arrow_table` + `pq.write_table`",
    "copy": "`psql \\copy (SELECT * ...) TO '/dev/null' (FORMAT binary)`: the server's floor",
}
PACKAGES = (
    "pyarrow",
    "pandas",
    "numpy",
    "SQLAlchemy",
    "psycopg",
    "adbc-driver-postgresql",
    "dask",
    "distributed",
    "dataset-kit",
)
#: The issue's targets: speed-up of dataset_kit over pandas, and dataset_kit / single fetch.
TARGET_SPEEDUP = 5.0
TARGET_NEAR_ADBC = 1.5
#: "A fraction of its memory": at most half of the pandas route's peak RSS.
TARGET_MEMORY = 0.5

# The generated table: 7 columns, deterministic values, 1 in 97 names NULL.
LOAD_SQL = """
CREATE TABLE {table} AS
SELECT g::bigint                                              AS id,
       (g % 1000)::int                                        AS grp,
       DATE '2020-01-01' + (g % 1461)::int                    AS day,
       TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * INTERVAL '1 second' AS ts,
       ((g % 100003) * 0.25)::float8                          AS amount,
       CASE WHEN g % 97 = 0 THEN NULL ELSE 'name_' || (g % 100000) END AS name,
       g % 3 = 0                                              AS flag
FROM generate_series(1, {rows}) AS g
"""


# --------------------------------------------------------------------------- parent
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.download", description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000, help="table rows (default 5M)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--chunks", type=int, default=4, help="dataset_kit chunks (default 4)")
    parser.add_argument("--entries", default=",".join(ENTRIES), help=f"from {', '.join(ENTRIES)}")
    parser.add_argument("--pandas-chunksize", type=int, default=100_000)
    parser.add_argument(
        "--max-rows-per-file",
        type=int,
        default=None,
        help="dataset_kit's max_rows_per_file (default: the library's, 1,000,000)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report path")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    parser.add_argument("--timeout", type=float, default=900.0, help="per child, seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and (args.rows < 10 or args.reps < 1 or args.chunks < 1):
        parser.error("need --rows >= 10, --reps >= 1, --chunks >= 1")
    return args


def load_table(url: str, rows: int) -> dict[str, Any]:
    """Create and fill the table server-side (untimed); return its expected check values."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(LOAD_SQL.format(table=TABLE, rows=int(rows)))  # type: ignore[arg-type]
        con.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")  # type: ignore[arg-type]
        # hint bits and statistics now, so that no contender pays for them
        con.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")  # type: ignore[arg-type]
        count, id_sum, size, version = con.execute(
            f"SELECT count(*), sum(id), pg_total_relation_size('{TABLE}'), "  # type: ignore[arg-type]
            "current_setting('server_version')"
            f" FROM {TABLE}"
        ).fetchone()
    if count != rows or id_sum != rows * (rows + 1) // 2:
        raise RuntimeError(f"loading the table went wrong: {count} rows, sum(id) {id_sum}")
    return {
        "rows": int(count),
        "id_sum": int(id_sum),
        "table_mib": size / MIB,
        "server_version": version,
        "load_s": time.perf_counter() - started,
    }


def spawn(
    args: argparse.Namespace,
    entry: str,
    url: str,
    expected: dict[str, Any],
    workdir: Path,
    rep: int,
) -> dict[str, Any]:
    """Run one measurement of ``entry`` in a fresh process; return its checked record."""
    stem = workdir / "specs" / f"{entry.replace(':', '-').replace('+', '-')}-rep{rep}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = workdir / "runs" / stem.name
    result_file, log_file = stem.with_suffix(".result.json"), stem.with_suffix(".log")
    spec = {
        "entry": entry,
        "url": url,
        "table": TABLE,
        "chunks": args.chunks,
        "pandas_chunksize": args.pandas_chunksize,
        "max_rows_per_file": args.max_rows_per_file,
        "path": str(path),
        "result": str(result_file),
    }
    spec_file = stem.with_suffix(".spec.json")
    spec_file.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    try:
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.download", "--child", str(spec_file)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"status": "error", "error_type": "Timeout", "rep": rep}
    finally:
        shutil.rmtree(path, ignore_errors=True)
    wall = time.perf_counter() - start
    if not result_file.exists():
        tail = log_file.read_text(errors="replace")[-1500:]
        kind = f"Signal{-returncode}" if returncode < 0 else f"Exit{returncode}"
        return {"status": "error", "error_type": kind, "error": tail, "rep": rep, "wall_s": wall}
    result: dict[str, Any] = json.loads(result_file.read_text())
    result.update(rep=rep, wall_s=wall)
    if result.get("status") == "ok":
        check = result.get("check") or {}
        want = {k: v for k, v in expected.items() if k in ("rows", "id_sum")}
        if entry == "copy":  # psql reports the rows it copied, nothing about their values
            want = {"rows": expected["rows"]}
        wrong = {k: (check.get(k), v) for k, v in want.items() if check.get(k) != v}
        result["verified"] = sorted(want)
        if wrong:
            result.update(status="error", error_type="WrongResult", error=f"got/expected {wrong}")
    return result


def summarize(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and peak memory of one entry's repetitions (or its first failure)."""
    ok = [m for m in measurements if m.get("status") == "ok"]
    failed = [m for m in measurements if m.get("status") != "ok"]
    if failed or not ok:
        first = failed[0] if failed else {"error_type": "NoResult"}
        return {
            "status": "error",
            "error_type": first.get("error_type"),
            "error": first.get("error"),
            "reps_ok": len(ok),
        }
    row: dict[str, Any] = {
        "status": "ok",
        "verified": ok[0].get("verified", []),
        "median_s": statistics.median(m["seconds"] for m in ok),
        "min_s": min(m["seconds"] for m in ok),
        "reps_ok": len(ok),
    }
    for key in ("peak_mib", "extra_mib", "setup_s", "files"):
        values = [m[key] for m in ok if m.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    return row


def targets(summary: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(target, measured, met/missed) rows of the issue's targets."""

    def median(entry: str) -> float | None:
        row = summary.get(entry, {})
        return row.get("median_s") if row.get("status") == "ok" else None

    def peak(entry: str) -> float | None:
        row = summary.get(entry, {})
        return row.get("peak_mib") if row.get("status") == "ok" else None

    dk, adbc = median(REFERENCE), median("adbc")
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    for entry in ("pandas", "pandas:client-cursor"):
        pandas = median(entry)
        what = f"speed-up over `{entry}` >= {TARGET_SPEEDUP:g}x"
        if dk and pandas:
            speedup = pandas / dk
            measured = f"{speedup:.2f}x ({fmt_s(pandas)} s / {fmt_s(dk)} s)"
            rows.append((what, measured, verdict(speedup >= TARGET_SPEEDUP)))
        elif entry == "pandas":
            rows.append((what, "not measured", "n/a"))
    for entry in ("pandas", "pandas:client-cursor"):
        dk_peak, pandas_peak = peak(REFERENCE), peak(entry)
        if dk_peak and pandas_peak:
            share = dk_peak / pandas_peak
            rows.append(
                (
                    f"memory: a fraction (<= {TARGET_MEMORY:g}) of `{entry}`'s peak RSS",
                    f"{share:.2f} ({fmt_mib(dk_peak)} / {fmt_mib(pandas_peak)} MiB)",
                    verdict(share <= TARGET_MEMORY),
                )
            )
    if dk and adbc:
        near = dk / adbc
        rows.append(
            (
                f"dataset_kit / single ADBC fetch <= {TARGET_NEAR_ADBC:g}x",
                f"{near:.2f}x ({fmt_s(dk)} s / {fmt_s(adbc)} s)",
                verdict(near <= TARGET_NEAR_ADBC),
            )
        )
    else:
        rows.append(
            (f"dataset_kit / single ADBC fetch <= {TARGET_NEAR_ADBC:g}x", "not measured", "n/a")
        )
    fair = median("adbc+parquet")
    if dk and fair:
        rows.append(
            (
                "(context) dataset_kit / ADBC fetch + `pq.write_table`",
                f"{dk / fair:.2f}x ({fmt_s(dk)} s / {fmt_s(fair)} s)",
                "-",
            )
        )
    floor = median("copy")
    if dk and floor:
        rows.append(
            (
                "(context) dataset_kit / server `COPY` to /dev/null",
                f"{dk / floor:.2f}x ({fmt_s(dk)} s / {fmt_s(floor)} s)",
                "-",
            )
        )
    return rows


def markdown(
    meta: dict[str, Any], summary: dict[str, dict[str, Any]], args: argparse.Namespace
) -> str:
    """The report."""
    lines = ["# W11: database download (PostgreSQL -> Parquet)", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += ["", "## Results", ""]
    lines += [
        "Median seconds of the timed operation; ratio = median / dataset_kit's median from "
        "this run (>1: dataset_kit is faster). Peak RSS: the whole process (interpreter and "
        "libraries included) while the operation ran; extra: above its RSS just before.",
        "",
        "| entry | what is timed | median s | min s | rows/s | peak RSS MiB | extra MiB "
        "| ratio to dataset_kit | reps | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = summary.get(REFERENCE, {})
    ref_s = ref.get("median_s") if ref.get("status") == "ok" else None
    errors = []
    rows = args.rows
    for entry, row in summary.items():
        what = ENTRIES[entry].format(chunks=args.chunks, pandas_chunksize=args.pandas_chunksize)
        if row["status"] == "ok":
            ratio = row["median_s"] / ref_s if ref_s else None
            per_s = rows / row["median_s"]
            rate = f"{per_s / 1e6:.2f} M" if per_s >= 1e5 else f"{per_s:,.0f}"
            checked = "+".join(row["verified"]) or "unverified"
            lines.append(
                f"| {entry} | {what} | {fmt_s(row['median_s'])} | {fmt_s(row['min_s'])} "
                f"| {rate} | {fmt_mib(row['peak_mib'])} | {fmt_mib(row['extra_mib'])} "
                f"| {fmt_ratio(ratio)} | {row['reps_ok']} | ok ({checked} checked) |"
            )
        else:
            lines.append(
                f"| {entry} | {what} | n/a | n/a | n/a | n/a | n/a | n/a | {row['reps_ok']} "
                f"| error: {row.get('error_type')} |"
            )
            message = " ".join(str(row.get("error")).split())[:400]
            errors.append(f"- {entry}: {row.get('error_type')}: {message}")
    for entry, row in summary.items():
        if row.get("setup_s") is not None:
            lines += ["", f"{entry}: cluster start-up + warm-up {row['setup_s']:.1f} s (untimed)."]
        if row.get("files") is not None:
            lines += ["", f"{entry}: {row['files']:.0f} Parquet files written."]
    lines += ["", "## Issue targets", "", "| target | measured | status |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {s} |" for t, m, s in targets(summary)]
    if errors:
        lines += ["", "## Failures", "", *errors]
    lines += [
        "",
        "## Method",
        "",
        "- The table is created server-side with `generate_series` (untimed), given a primary "
        "key and `VACUUM (FREEZE, ANALYZE)`, so that no contender sets hint bits. PostgreSQL "
        "runs on this machine, on the same cores as the client.",
        "- Every measurement runs in a fresh subprocess: imports and set-up untimed, "
        "`time.perf_counter()` around the operation (connecting included). The entries "
        "rotate each repetition so machine noise spreads evenly; compare ratios within one "
        "run, not seconds across runs.",
        "- Results are read back after the clock stops: rows and sum of `id` against the "
        "table (`copy`: the row count psql reports). A wrong result is an error.",
        "- Peak RSS: VmHWM of the measuring process, reset via /proc/self/clear_refs before "
        "the operation; `dataset_kit:cluster` adds its workers' VmHWM (reset the same way), "
        "`copy` polls psql's VmHWM every 20 ms. The server's memory is not counted for "
        "anyone.",
        "",
    ]
    return "\n".join(lines)


def versions() -> str:
    """Installed versions of the relevant packages."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (missing)")
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 if any measurement failed)."""
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    entries = [e.strip() for e in args.entries.split(",") if e.strip()]
    unknown = [e for e in entries if e not in ENTRIES]
    if unknown or not entries:
        progress(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
        return 2
    from dataset_kit.testing.postgres import postgres_server

    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dk-bench-download-", dir=args.workdir))
    results: dict[str, list[dict[str, Any]]] = {e: [] for e in entries}
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    try:
        # wal_level=minimal: CREATE TABLE AS writes no WAL for the new table
        settings = ["wal_level=minimal", "max_wal_senders=0", "max_wal_size=4GB"]
        with postgres_server(settings=settings) as url:
            progress(f"workdir {workdir}; loading {args.rows:,} rows (untimed)")
            expected = load_table(url, args.rows)
            progress(
                f"table loaded in {expected['load_s']:.1f} s ({expected['table_mib']:.0f} MiB); "
                f"load average {load_text(os.getloadavg())}"
            )
            load_before = os.getloadavg()
            failed: set[str] = set()
            for rep in range(args.reps):
                shift = rep % len(entries)
                for entry in entries[shift:] + entries[:shift]:
                    if entry in failed:
                        continue
                    result = spawn(args, entry, url, expected, workdir, rep)
                    results[entry].append(result)
                    progress(f"[rep {rep + 1}/{args.reps}] {entry}: {describe(result)}")
                    if result["status"] != "ok":
                        failed.add(entry)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    summary = {e: summarize(results[e]) for e in entries}
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "table": f"{args.rows:,} rows x 7 columns (bigint id, int, date, timestamptz, "
        f"float8, text with 1% NULL, boolean), {expected['table_mib']:.0f} MiB on disk "
        "with its primary key",
        "server": f"PostgreSQL {expected['server_version']} on 127.0.0.1 (this machine), fsync off",
        "reps": args.reps,
        "dataset_kit options": f"n_chunks={args.chunks}, max_rows_per_file="
        + (f"{args.max_rows_per_file:,}" if args.max_rows_per_file else "default (1,000,000)"),
        "git commit": git_commit(),
        "machine": f"{os.cpu_count()} CPUs (nproc), {platform.platform()}, "
        f"Python {platform.python_version()}",
        "versions": versions(),
        "load average (1/5/15 min) before": load_text(load_before),
        "load average (1/5/15 min) after": load_text(load_after),
        "total wall time": f"{time.perf_counter() - t0:.0f} s (table load included)",
    }
    text = markdown(meta, summary, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "meta": meta,
            "expected": expected,
            "targets": [
                dict(zip(("target", "measured", "status"), t, strict=True))
                for t in targets(summary)
            ],
            "summary": summary,
            "raw": results,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    if not args.quiet:
        print(text)
    progress(f"report written to {args.out}")
    return 0 if all(row["status"] == "ok" for row in summary.values()) else 1


def describe(result: dict[str, Any]) -> str:
    """One progress line."""
    if result["status"] == "ok":
        return f"{result['seconds']:.2f} s, peak {result.get('peak_mib', 0):.0f} MiB"
    return f"{result['status']}: {result.get('error_type')}: {str(result.get('error'))[-300:]}"


# --------------------------------------------------------------------------- child
def _id_check(table: Any) -> dict[str, Any]:
    import pyarrow.compute as pc

    return {"rows": table.num_rows, "id_sum": int(pc.sum(table["id"]).as_py() or 0)}


def _reset_worker_peak() -> bool:
    return _reset_peak()


def _worker_peak() -> int | None:
    return _hwm_bytes()


def _warm_worker() -> int:
    import adbc_driver_postgresql.dbapi  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import dataset_kit.pipelines.download  # noqa: F401

    return os.getpid()


class _Measure:
    """One entry's set-up (untimed), operation (timed) and check (untimed)."""

    def __init__(self, spec: dict[str, Any], stack: list[Callable[[], None]]) -> None:
        self.spec = spec
        self.url: str = spec["url"]
        self.query = f"SELECT * FROM {spec['table']}"
        self.path = Path(spec["path"])
        self.path.mkdir(parents=True, exist_ok=True)
        self.cleanup = stack
        self.client: Any = None
        self.notes: dict[str, Any] = {}

    # each prepare_* returns (operation, check)
    def prepare_dataset_kit(self) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        import dask  # noqa: F401

        import dataset_kit as dk
        from dataset_kit.pipelines.download import download_table

        _warm_worker()
        store = dk.open_store(str(self.path / "lake"))

        options = {}
        if self.spec.get("max_rows_per_file"):
            options["max_rows_per_file"] = int(self.spec["max_rows_per_file"])

        def op() -> Any:
            job = download_table(
                self.url,
                table=self.spec["table"],
                store=store,
                dataset_uuid="bench",
                chunk_by="id",
                n_chunks=self.spec["chunks"],
                **options,
            )
            return job.compute(scheduler=self.client if self.client is not None else "threads")

        def check(meta: Any) -> dict[str, Any]:
            table = dk.read_table(store=store, dataset_uuid="bench", columns=["id"], output="arrow")
            self.notes["files"] = meta.num_partitions
            return {**_id_check(table), "version": meta.version}

        return op, check

    def prepare_dataset_kit_cluster(
        self,
    ) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        from dataset_kit.testing.dask_cluster import local_cluster

        started = time.perf_counter()
        context = local_cluster(n_workers=2, threads_per_worker=2)
        self.client = context.__enter__()
        self.cleanup.append(lambda: context.__exit__(None, None, None))
        self.client.run(_warm_worker)
        self.notes["setup_s"] = time.perf_counter() - started
        return self.prepare_dataset_kit()

    def prepare_pandas(
        self, stream: bool = True
    ) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq
        import sqlalchemy as sa

        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.cleanup.append(engine.dispose)
        target = self.path / "pandas.parquet"
        chunksize = int(self.spec["pandas_chunksize"])

        def op() -> Any:
            writer: Any = None
            schema: Any = None
            try:
                with engine.connect() as conn:
                    # a server-side cursor: without it psycopg holds the whole result
                    if stream:
                        conn = conn.execution_options(stream_results=True)
                    for frame in pd.read_sql(sa.text(self.query), conn, chunksize=chunksize):
                        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                        if writer is None:
                            schema = table.schema
                            writer = pq.ParquetWriter(target, schema)
                        writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
            return target

        def check(result: Any) -> dict[str, Any]:
            return _id_check(pq.read_table(result, columns=["id"]))

        return op, check

    def prepare_adbc(
        self, write: bool = False
    ) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        import adbc_driver_postgresql.dbapi as dbapi
        import pyarrow.parquet as pq

        target = self.path / "adbc.parquet"

        def op() -> Any:
            with dbapi.connect(self.url) as conn, conn.cursor() as cur:
                cur.execute(self.query)
                table = cur.fetch_arrow_table()
            if write:
                pq.write_table(table, target)
            return table

        def check(table: Any) -> dict[str, Any]:
            return _id_check(pq.read_table(target, columns=["id"]) if write else table)

        return op, check

    def prepare_copy(self) -> tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]:
        psql = shutil.which("psql")
        if psql is None:
            from dataset_kit.testing.postgres import find_pg_bin

            psql = str(find_pg_bin() / "psql")
        command = [
            psql,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            self.url,
            "-c",
            f"\\copy ({self.query}) TO '/dev/null' WITH (FORMAT binary)",
        ]

        def op() -> Any:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            peak = 0
            status = f"/proc/{proc.pid}/status"
            while proc.poll() is None:
                try:
                    with open(status) as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                peak = max(peak, int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
                time.sleep(0.02)
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"psql failed ({proc.returncode}): {err.strip()[-500:]}")
            self.notes["child_peak"] = peak
            return out

        def check(out: str) -> dict[str, Any]:
            found = re.search(r"COPY (\d+)", out)
            return {"rows": int(found.group(1)) if found else None}

        return op, check


def child_main(spec_file: Path) -> int:
    """Run one measurement described by ``spec_file``; write its result record."""
    spec = json.loads(spec_file.read_text())
    out: dict[str, Any] = {"status": "error", "entry": spec["entry"]}
    cleanup: list[Callable[[], None]] = []
    try:
        measure = _Measure(spec, cleanup)
        prepare: Callable[[], tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]] = {
            "dataset_kit": measure.prepare_dataset_kit,
            "dataset_kit:cluster": measure.prepare_dataset_kit_cluster,
            "pandas": measure.prepare_pandas,
            "pandas:client-cursor": lambda: measure.prepare_pandas(stream=False),
            "adbc": measure.prepare_adbc,
            "adbc+parquet": lambda: measure.prepare_adbc(write=True),
            "copy": measure.prepare_copy,
        }[spec["entry"]]
        op, check = prepare()
        gc.collect()
        client = measure.client
        workers_before: dict[str, int] = {}
        if client is not None:
            client.run(_reset_worker_peak)
            workers_before = client.run(_rss_bytes)
        _reset_peak()
        before = _rss_bytes()
        start = time.perf_counter()
        result = op()
        seconds = time.perf_counter() - start
        peak = _hwm_bytes() or 0
        extra = peak - before
        if client is not None:
            workers = client.run(_worker_peak)
            peak += sum(p or 0 for p in workers.values())
            extra += sum((p or 0) - workers_before.get(w, 0) for w, p in workers.items())
        if "child_peak" in measure.notes:  # copy: psql's own memory
            peak = extra = measure.notes.pop("child_peak")
        out.update(
            status="ok",
            seconds=seconds,
            peak_mib=peak / MIB,
            extra_mib=max(0, extra) / MIB,
            check=check(result),
            **measure.notes,
        )
    except BaseException as exc:  # the parent reports it; never a traceback-only exit
        out.update(error_type=type(exc).__name__, error=traceback.format_exc()[-3000:])
    finally:
        for close in reversed(cleanup):
            try:
                close()
            except Exception:
                traceback.print_exc()
    Path(spec["result"]).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
