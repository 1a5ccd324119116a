"""Deterministic benchmark data: the W1 frame and the W4/W5/W7 variants."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

DATES: list[str] = [f"2024-01-{day:02d}" for day in range(1, 31)]
"""The 30 values of the ``date`` partition column ('YYYY-MM-DD' strings)."""
APPEND_DATE = "2024-01-31"
"""The date of the W4 append (a new partition)."""
N_STORES = 100
N_LABELS = 1000
LABELS: list[str] = [f"label-{i:04d}" for i in range(N_LABELS)]
W1_COLUMNS: tuple[str, ...] = ("date", "store_id", "product_id", "sales", "price", "label")
W3_DATE = DATES[7]
W3_STORE_IDS: list[int] = [3, 42, 77]


def make_frame(rows: int, seed: int, dates: Sequence[str] = DATES) -> pa.Table:
    """Return ``rows`` rows of the W1 frame (rows in random order, one chunk)."""
    rng = np.random.default_rng(seed)
    date_idx = rng.integers(0, len(dates), rows)
    label_idx = rng.integers(0, N_LABELS, rows)
    return pa.table(
        {
            "date": pa.array(list(dates), pa.string()).take(pa.array(date_idx)),
            "store_id": rng.integers(0, N_STORES, rows, dtype=np.int64),
            "product_id": rng.integers(0, 5_000_000, rows, dtype=np.int64),
            "sales": np.round(rng.gamma(2.0, 50.0, rows), 2),
            "price": rng.uniform(0.5, 200.0, rows).astype(np.float32),
            "label": pa.array(LABELS, pa.string()).take(pa.array(label_idx)),
        }
    )


def make_partitioned(
    partitions: int, rows_per_partition: int, seed: int, first_part: int = 0
) -> pa.Table:
    """Return the W1 columns plus ``part`` (int64) with ``partitions`` values, sorted by it."""
    table = make_frame(partitions * rows_per_partition, seed)
    part = np.repeat(
        np.arange(first_part, first_part + partitions, dtype=np.int64), rows_per_partition
    )
    return table.add_column(0, "part", pa.array(part))


def write_ipc(table: pa.Table, path: Path) -> None:
    """Store ``table`` as an uncompressed Arrow IPC file."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_ipc(path: str | Path) -> pa.Table:
    """Load an Arrow IPC file fully into memory (no memory map)."""
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()
