"""The platform's main job end to end on the embedded default: local directory store,
local threaded scheduler, SQLite.

Run with ``make demo`` or ``python -m dataset_kit.demo --store DIR``. It generates a sales
table in an SQLite database, downloads it in parallel chunks into a dataset partitioned
by day, appends a day, replaces a day, computes a revenue dataset partition by partition,
repartitions the sales by store (balanced files, sorted by day), reads with predicates,
travels back to the first version, backs the dataset up and
verifies the copy, expires old versions and collects their garbage, and checks every
figure on the way, so a broken install fails loudly.

The demo never deletes data it did not create: it marks the directory it creates with a
``.dataset-kit-demo`` file, and clears an existing directory only if it carries that file
(an earlier demo's) or is empty; any other existing path is refused.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import dataset_kit as dk
from dataset_kit.exceptions import DatasetKitError, InvalidInputError

logger = logging.getLogger("dataset_kit.demo")

#: The file that marks a directory as the demo's own (and so safe for it to clear).
MARKER = ".dataset-kit-demo"


def make_sales(days: list[str], rows_per_day: int, seed: int) -> pd.DataFrame:
    """A small retail sales frame: day, store_id, product_id, sales, price, label."""
    rng = np.random.default_rng(seed)
    n = len(days) * rows_per_day
    return pd.DataFrame(
        {
            "day": np.repeat(days, rows_per_day),
            "store_id": rng.integers(0, 20, n),
            "product_id": rng.integers(0, 5000, n),
            "sales": rng.random(n) * 100,
            "price": (rng.random(n) * 10).astype("float32"),
            "label": pd.array([f"label_{i}" for i in rng.integers(0, 100, n)], dtype="str"),
        }
    )


def make_database(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` as the table ``sales`` of an SQLite database (the customer's data)."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE sales (id INTEGER PRIMARY KEY, day TEXT, store_id INTEGER, "
            "product_id INTEGER, sales REAL, price REAL, label TEXT)"
        )
        rows = zip(
            range(len(df)),
            df["day"],
            df["store_id"].tolist(),
            df["product_id"].tolist(),
            df["sales"].tolist(),
            df["price"].astype("float64").tolist(),
            df["label"],
            strict=True,
        )
        con.executemany("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()


def with_revenue(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-partition compute step: revenue per row."""
    return frame.assign(revenue=frame["sales"] * frame["price"])


def prepare_directory(store_dir: Path) -> None:
    """Make ``store_dir`` an empty directory that carries the demo's :data:`MARKER`.

    A missing directory is created; an existing one is cleared only if it carries the
    marker (an earlier demo made it) or is empty.

    Raises
    ------
    InvalidInputError
        ``store_dir`` exists and is not a directory, or is a directory with contents and
        without the marker: nothing is deleted.

    Examples
    --------
    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> (tmp / "notes.txt").write_text("mine")
    4
    >>> prepare_directory(tmp)
    Traceback (most recent call last):
    ...
    dataset_kit.exceptions.InvalidInputError: refusing to use ...
    >>> prepare_directory(tmp / "demo")
    >>> sorted(p.name for p in (tmp / "demo").iterdir())
    ['.dataset-kit-demo']
    >>> shutil.rmtree(tmp)
    """
    if store_dir.is_symlink() or store_dir.exists():
        if not store_dir.is_dir():
            raise InvalidInputError(
                f"refusing to use {str(store_dir)!r} for the demo: it exists and is not a "
                "directory; pass a new, empty or earlier demo directory"
            )
        marker = store_dir / MARKER
        entries = [e for e in store_dir.iterdir() if not (e.name == MARKER and e.is_file())]
        if entries and not marker.is_file():
            raise InvalidInputError(
                f"refusing to use {str(store_dir)!r} for the demo: it is not empty and was "
                f"not created by the demo (no {MARKER} file), so the demo would delete data "
                "it does not own; pass a new, empty or earlier demo directory, or remove it "
                "yourself"
            )
        for entry in entries:  # the marker goes last: an interrupted clear stays the demo's
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    else:
        store_dir.mkdir(parents=True)
    (store_dir / MARKER).write_text(
        "Created by the dataset_kit demo, which clears this directory when it runs again.\n"
    )


def run(store_dir: Path) -> None:
    """Run the demo in ``store_dir`` (see :func:`prepare_directory`)."""
    from dataset_kit.pipelines.download import download_table

    prepare_directory(store_dir)
    store = dk.open_store(str(store_dir / "lake"))
    days = [f"2024-01-{d:02d}" for d in range(1, 8)]
    df = make_sales(days, 20_000, seed=1)
    database = store_dir / "shop.db"
    make_database(database, df)
    t0 = time.perf_counter()
    meta = download_table(
        f"sqlite:///{database}",
        table="sales",
        store=store,
        dataset_uuid="sales",
        columns=["day", "store_id", "product_id", "sales", "price", "label"],
        chunk_by="id",
        n_chunks=4,
        partition_on="day",
        secondary_indices="store_id",
        db_concurrency=2,
    ).compute()
    rows = sum(r for r, _ in meta.stats.values())
    _check(rows == len(df), f"download: {rows} rows, not {len(df)}")
    logger.info(
        "downloaded %d rows from SQLite in 4 parallel chunks into %d files (version %s) in %.2fs",
        rows,
        meta.num_partitions,
        meta.version,
        time.perf_counter() - t0,
    )

    extra = make_sales(["2024-01-08"], 20_000, seed=2)
    dk.update_dataset(extra, store=store, dataset_uuid="sales")
    fixed = make_sales(["2024-01-03"], 5_000, seed=3)
    dk.update_dataset(
        fixed, store=store, dataset_uuid="sales", delete_scope=[{"day": "2024-01-03"}]
    )

    ds = dk.open_dataset(store=store, dataset_uuid="sales")
    expected_rows = 7 * 20_000 + 20_000 - 20_000 + 5_000
    _check(ds.num_rows == expected_rows, f"rows {ds.num_rows} != {expected_rows}")
    logger.info(
        "now version %s: %d partitions, %d rows, %.1f MiB",
        ds.version,
        ds.num_partitions,
        ds.num_rows,
        (ds.nbytes or 0) / 2**20,
    )

    sel = dk.read_table(
        store=store,
        dataset_uuid="sales",
        columns=["day", "store_id", "sales"],
        predicates=[[("day", "==", "2024-01-08"), ("store_id", "in", [1, 2, 3])]],
    )
    want = extra[extra.store_id.isin([1, 2, 3])]
    _check(len(sel) == len(want), f"selective read {len(sel)} != {len(want)}")
    _check(np.isclose(sel.sales.sum(), want.sales.sum()), "selective read sums differ")

    first = dk.read_table(store=store, dataset_uuid="sales", version=0)
    _check(len(first) == len(df), "time travel to version 0 failed")
    for v in ds.versions():
        logger.info("version %s: %s, %s partitions", v["version"], v["operation"], v["partitions"])

    t0 = time.perf_counter()
    revenue = dk.pipelines.map_partitions(
        with_revenue, source="sales", target="revenue", store=store, partition_on=["day"]
    ).compute()
    total = dk.read_table(store=store, dataset_uuid="revenue", columns=["revenue"])["revenue"]
    current = dk.read_table(store=store, dataset_uuid="sales")
    want_total = float((current["sales"] * current["price"]).sum())
    _check(bool(np.isclose(total.sum(), want_total, rtol=1e-6)), "revenue totals differ")
    logger.info(
        "computed revenue partition by partition: %d partitions in %.2fs",
        revenue.num_partitions,
        time.perf_counter() - t0,
    )

    t0 = time.perf_counter()
    job = dk.pipelines.repartition(
        "sales",
        "sales_by_store",
        store=store,
        partition_on=["store_id"],
        sort_by=["day"],
        target_rows_per_file=2_000,
    )
    by_store = job.compute()
    moved = dk.read_table(store=store, dataset_uuid="sales_by_store", columns=["sales"])
    _check(len(moved) == expected_rows, "repartition lost or duplicated rows")
    _check(bool(np.isclose(moved["sales"].sum(), current["sales"].sum())), "repartition sums")
    logger.info(
        "repartitioned by store_id (%s shuffle): %d files in %d partitions in %.2fs",
        job.shuffle_method,  # type: ignore[attr-defined]
        by_store.num_partitions,
        len({label.rsplit("/", 1)[0] for label in by_store.partitions}),
        time.perf_counter() - t0,
    )

    vault = dk.open_store(str(store_dir / "backup"))
    copy = dk.pipelines.backup("sales", source=store, target=vault).compute()
    check = dk.pipelines.verify("sales", store=vault, versions="all", deep=True).compute()
    _check(check.ok and copy.versions == [0, 1, 2], "backup or its verification failed")
    again = dk.pipelines.backup("sales", source=store, target=vault).compute()
    _check(again.copied == 0, "an unchanged dataset's second backup copied blobs")
    logger.info(
        "backed up versions %s (%d blobs, %.1f MiB), verified every blob; a second backup "
        "copied nothing",
        copy.versions,
        copy.copied,
        copy.copied_bytes / 2**20,
    )

    expired = dk.expire_versions(store=store, dataset_uuid="sales", keep_versions=1)
    garbage = dk.pipelines.garbage_collect(
        "sales", store=store, grace_period=0, keep_versions=1
    ).compute()
    _check(len(dk.read_table(store=store, dataset_uuid="sales")) == expected_rows, "GC broke data")
    logger.info(
        "expired versions %s and collected %d unreferenced blobs (%.1f MiB)",
        expired,
        garbage.count,
        garbage.nbytes / 2**20,
    )
    logger.info("demo OK: store at %s", store_dir)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"demo FAILED: {message}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the demo.

    Raises
    ------
    InvalidInputError
        The directory is not the demo's to clear (see :func:`prepare_directory`).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        default="demo-data",
        help=f"directory for the local store (default demo-data): created with a {MARKER} "
        "file; an existing one is cleared only if it carries that file or is empty",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("dataset_kit").setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    run(Path(args.store))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except DatasetKitError as error:
        sys.exit(f"error: {type(error).__name__}: {error}")
    sys.exit(code)
