"""``dataset-kit repartition``: ``--bytes-per-file`` sizes with units, bad sizes refused;
``--shuffle`` picks the method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import dataset_kit as dk


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataset_kit.cli", *args], capture_output=True, text=True
    )


def test_bytes_per_file_with_units(tmp_path: Path) -> None:
    lake = str(tmp_path)
    rng = np.random.default_rng(0)
    n = 40_000
    df = pd.DataFrame(
        {"day": rng.integers(0, 3, n), "shop": rng.integers(0, 2, n), "x": rng.random(n)}
    )
    dk.write_dataset(df, store=lake, dataset_uuid="sales", partition_on="day")
    out = cli(
        "--store", lake, "--json", "repartition", "sales", "--target", "by_shop",
        "--partition-on", "shop", "--bytes-per-file", "64KiB",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rows"] == 40_000 and summary["partition_keys"] == ["shop"]
    assert summary["partitions"] > 2  # several files per shop, not one per shop
    both = cli(
        "--store", lake, "repartition", "sales", "--target", "t", "--partition-on", "shop",
        "--bytes-per-file", "1MiB", "--rows-per-file", "10",
    )  # fmt: skip
    assert both.returncode != 0 and "not both" in both.stderr
    bad = cli(
        "--store", lake, "repartition", "sales", "--target", "t", "--partition-on", "shop",
        "--bytes-per-file", "12 parsecs",
    )  # fmt: skip
    assert bad.returncode == 2 and "not a size" in bad.stderr
    assert "t" not in dk.list_datasets(store=lake)


def test_shuffle_method_option(tmp_path: Path) -> None:
    lake = str(tmp_path)
    df = pd.DataFrame({"day": [1, 1, 2, 2], "shop": [1, 2, 1, 2], "x": [1.0, 2.0, 3.0, 4.0]})
    dk.write_dataset(df, store=lake, dataset_uuid="sales", partition_on="day")
    for method in ("staged", "disk"):
        out = cli(
            "--store", lake, "--json", "repartition", "sales", "--target", f"by_{method}",
            "--partition-on", "shop", "--shuffle", method,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        got = dk.read_table(store=lake, dataset_uuid=f"by_{method}")
        assert sorted(got["x"]) == [1.0, 2.0, 3.0, 4.0]
    bad = cli(
        "--store", lake, "repartition", "sales", "--target", "t", "--partition-on", "shop",
        "--shuffle", "magic",
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
