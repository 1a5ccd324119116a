"""The dataset-kit command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataset_kit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    df = pd.DataFrame({"p": [1, 2, 2], "x": [1.0, 2.0, 3.0]})
    dk.write_dataset(df, store=str(tmp_path), dataset_uuid="sales", partition_on="p")
    dk.update_dataset(store=str(tmp_path), dataset_uuid="sales", delete_scope=[{"p": 1}])
    return tmp_path


def test_ls_info_history(store: Path) -> None:
    out = cli("--store", str(store), "ls")
    assert out.returncode == 0 and out.stdout.split() == ["sales"]
    info = json.loads(cli("--store", str(store), "--json", "info", "sales").stdout)
    assert info["version"] == 1 and info["rows"] == 2 and info["partition_keys"] == ["p"]
    old = json.loads(cli("--store", str(store), "--json", "info", "sales", "--version", "0").stdout)
    assert old["rows"] == 3
    history = json.loads(
        cli("--json", "history", "sales", env={"DATASET_KIT_STORE": str(store)}).stdout
    )
    assert [h["operation"] for h in history] == ["write", "update"]
    assert "sales" in cli("--store", str(store), "info", "sales").stdout


def test_gc_is_a_dry_run_unless_yes(store: Path) -> None:
    past = time.time() - 7200
    for path in store.rglob("*.parquet"):
        os.utime(path, (past, past))
    dry = json.loads(
        cli("--store", str(store), "--json", "gc", "sales", "--keep-versions", "1").stdout
    )
    assert dry["dry_run"] and dry["count"] == 1
    assert len(list(store.rglob("*.parquet"))) == 2
    done = cli("--store", str(store), "gc", "sales", "--keep-versions", "1", "--yes")
    assert done.returncode == 0 and "deleted 1 blobs" in done.stdout
    assert len(list(store.rglob("*.parquet"))) == 1
    out = cli(
        "--store", str(store), "--json", "expire-versions", "sales", "--keep-versions", "1", "--yes"
    )
    assert json.loads(out.stdout)["expired"] == [0]


def test_delete_needs_yes(store: Path) -> None:
    refused = cli("--store", str(store), "delete", "sales")
    assert refused.returncode == 7
    assert dk.list_datasets(str(store)) == ["sales"]
    assert cli("--store", str(store), "delete", "sales", "--yes").returncode == 0
    assert dk.list_datasets(str(store)) == []


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["info", "missing"], 3),
        (["info", "sales", "--version", "99"], 3),
        (["info", "../x"], 5),
        (["gc", "sales", "--grace-period", "-1"], 5),
        (["nosuchcommand"], 2),
    ],
)
def test_exit_codes_map_the_error_hierarchy(store: Path, args: list[str], code: int) -> None:
    out = cli("--store", str(store), *args)
    assert out.returncode == code, out.stderr
    if code != 2:
        assert out.stderr.startswith("error: ")


def test_missing_store_is_a_config_error() -> None:
    out = cli("ls", env={"DATASET_KIT_STORE": ""})
    assert out.returncode == 5 and "--store" in out.stderr
