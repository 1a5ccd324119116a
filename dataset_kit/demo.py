"""End-to-end example on the embedded default (a local directory store).

Run with ``make demo`` or ``python -m dataset_kit.demo --store DIR``. It writes a sales
dataset partitioned by day, appends a day, replaces a day, reads with predicates, travels
back to the first version and checks every figure, so a broken install fails loudly.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import dataset_kit as dk

logger = logging.getLogger("dataset_kit.demo")


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


def run(store_dir: Path) -> None:
    """Run the demo against a fresh directory store."""
    if store_dir.exists():
        shutil.rmtree(store_dir)
    store = dk.open_store(str(store_dir))
    days = [f"2024-01-{d:02d}" for d in range(1, 8)]
    df = make_sales(days, 20_000, seed=1)
    t0 = time.perf_counter()
    meta = dk.write_dataset(
        df, store=store, dataset_uuid="sales", partition_on=["day"], secondary_indices=["store_id"]
    )
    logger.info(
        "wrote %d rows in %d partitions (version %s) in %.2fs",
        len(df),
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
    logger.info("demo OK: store at %s", store_dir)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"demo FAILED: {message}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="demo-data", help="directory for the local store")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("dataset_kit").setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    run(Path(args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
