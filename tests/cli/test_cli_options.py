"""``dataset-kit`` settings and safety: stores that read-only commands must not create,
schedulers that fail fast, setting precedence, option checks, and a demo that deletes
only what it created."""

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
from dataset_kit.demo import MARKER, prepare_directory
from dataset_kit.exceptions import InvalidInputError


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATASET_KIT_STORE", "DATASET_KIT_SCHEDULER", "DATASET_KIT_CONFIG")
    }
    return subprocess.run(
        [sys.executable, "-m", "dataset_kit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    df = pd.DataFrame({"p": [1, 2], "x": [1.0, 2.0]})
    dk.write_dataset(df, store=str(root), dataset_uuid="sales", partition_on="p")
    return root


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["info", "sales"],
        ["stats", "sales"],
        ["history", "sales"],
        ["query", "sales"],
        ["verify", "sales"],
        ["backup", "sales", "--target", "vault"],
        ["gc", "sales"],
        ["delete", "sales", "--yes"],
    ],
)
def test_read_only_commands_do_not_create_a_missing_store(tmp_path: Path, args: list[str]) -> None:
    out = cli("--store", "lkae", *args, cwd=tmp_path)
    assert out.returncode == 5, out.stderr
    assert "ConfigError: --store: store directory 'lkae'" in out.stderr
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_a_missing_file_url_store_is_not_created_either(tmp_path: Path) -> None:
    out = cli("--store", (tmp_path / "nope").as_uri(), "--json", "ls")
    assert out.returncode == 5 and "--store: store root" in out.stderr, out.stderr
    assert "does not exist" in out.stderr and out.stdout == ""
    assert sorted(os.listdir(tmp_path)) == []


def test_restore_source_must_exist_and_writers_create_their_store(
    lake: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new"
    out = cli("--store", str(new), "restore", "sales", "--source", str(tmp_path / "vaultTYPO"))
    assert out.returncode == 5 and "--source: store directory" in out.stderr, out.stderr
    assert not new.exists() and not (tmp_path / "vaultTYPO").exists()
    vault = tmp_path / "vault"
    out = cli("--store", str(lake), "backup", "sales", "--target", str(vault))
    assert out.returncode == 0, out.stderr
    out = cli("--store", str(new), "restore", "sales", "--source", str(vault))
    assert out.returncode == 0, out.stderr
    assert dk.list_datasets(str(new)) == ["sales"]


def test_ls_on_an_empty_store_prints_nothing(tmp_path: Path) -> None:
    out = cli("--store", str(tmp_path), "ls")
    assert out.returncode == 0 and out.stdout == ""
    out = cli("--store", str(tmp_path), "--json", "ls")
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_delete_of_a_missing_dataset_is_not_found(lake: Path) -> None:
    out = cli("--store", str(lake), "delete", "nope")
    assert out.returncode == 3 and "DatasetNotFoundError" in out.stderr, out.stderr
    assert cli("--store", str(lake), "delete", "nope", "--yes").returncode == 3
    assert cli("--store", str(lake), "delete", "sales").returncode == 7  # exists: refused


def test_log_level_choices(lake: Path) -> None:
    bad = cli("--log-level", "verbose", "--store", str(lake), "ls")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = cli("--log-level", "debug", "--store", str(lake), "ls")
    assert ok.returncode == 0 and ok.stdout.split() == ["sales"]


def test_verify_all_versions_and_version_exclude_each_other(lake: Path) -> None:
    out = cli("--store", str(lake), "verify", "sales", "--all-versions", "--version", "0")
    assert out.returncode == 2 and "not allowed with" in out.stderr


@pytest.mark.parametrize(
    ("scheduler", "says"),
    [
        ("thread", "did you mean 'threads'"),
        ("localhost", "missing port"),
        ("tcp://localhost", "missing port"),
        ("nosuch.json", "scheduler file 'nosuch.json' does not exist"),
    ],
)
def test_bad_scheduler_fails_fast(lake: Path, scheduler: str, says: str) -> None:
    started = time.monotonic()
    out = cli("--store", str(lake), "--scheduler", scheduler, "verify", "sales")
    assert out.returncode == 5, out.stderr
    assert out.stderr.startswith("error: ConfigError") and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "TimeoutError" not in out.stderr
    assert time.monotonic() - started < 20  # was: a 60 s wait in Client.__del__


def test_malformed_scheduler_file_fails_fast(lake: Path, tmp_path: Path) -> None:
    for content in ("{", '{"no": "address"}'):
        sched = tmp_path / "scheduler.json"
        sched.write_text(content)
        out = cli("--store", str(lake), "--scheduler", str(sched), "verify", "sales")
        assert out.returncode == 5 and "scheduler file" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_environment_overrides_the_config_file(lake: Path, tmp_path: Path) -> None:
    config = tmp_path / "dk.toml"
    config.write_text(f'store = "{tmp_path / "missing"}"\nscheduler = "sync"\n')
    env = {"DATASET_KIT_CONFIG": str(config), "DATASET_KIT_STORE": str(lake)}
    assert cli("verify", "sales", env=env).returncode == 0  # the env's store, not the file's
    env["DATASET_KIT_SCHEDULER"] = "nosuch.json"
    out = cli("verify", "sales", env=env)  # the env's scheduler, not the file's
    assert out.returncode == 5 and "nosuch.json" in out.stderr, out.stderr
    out = cli("--scheduler", "sync", "verify", "sales", env=env)  # the command line wins
    assert out.returncode == 0, out.stderr
    out = cli("--store", str(tmp_path / "missing"), "ls", env=env)
    assert out.returncode == 5 and "missing" in out.stderr


def test_demo_refuses_a_directory_it_did_not_create(lake: Path, tmp_path: Path) -> None:
    (lake / "notes.txt").write_text("irreplaceable")
    before = sorted(p.name for p in lake.iterdir())
    out = cli("demo", "--dir", str(lake))
    assert out.returncode == 5, out.stderr
    assert "refusing" in out.stderr and MARKER in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in lake.iterdir()) == before
    assert (lake / "notes.txt").read_text() == "irreplaceable"
    assert dk.list_datasets(str(lake)) == ["sales"]
    (tmp_path / "file").write_text("x")
    out = cli("demo", "--dir", str(tmp_path / "file"))
    assert out.returncode == 5 and (tmp_path / "file").read_text() == "x"
    assert MARKER in cli("demo", "--help").stdout


def test_demo_with_json_prints_one_document(tmp_path: Path) -> None:
    out = cli("--json", "demo", "--dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "store": str(tmp_path / "demo")}
    assert "demo OK" in out.stderr  # the story goes to stderr


def test_demo_directory_is_cleared_only_with_its_marker(tmp_path: Path) -> None:
    new = tmp_path / "a" / "demo"
    prepare_directory(new)  # created, with the marker
    assert [p.name for p in new.iterdir()] == [MARKER]
    (new / "lake").mkdir()
    (new / "lake" / "x.parquet").write_bytes(b"PAR1")
    (new / "shop.db").write_bytes(b"")
    prepare_directory(new)  # the demo's own: cleared
    assert [p.name for p in new.iterdir()] == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_directory(empty)  # empty: used
    assert [p.name for p in empty.iterdir()] == [MARKER]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data").write_text("keep")
    with pytest.raises(InvalidInputError, match="not created by the demo"):
        prepare_directory(mine)
    assert [p.name for p in mine.iterdir()] == ["data"]
    (mine / MARKER).mkdir()  # a directory by that name is no marker
    with pytest.raises(InvalidInputError):
        prepare_directory(mine)
    assert (mine / "data").read_text() == "keep"


def test_demo_reruns_in_its_own_directory(tmp_path: Path) -> None:
    own = tmp_path / "demo"
    own.mkdir()
    (own / MARKER).write_text("")
    (own / "stale.txt").write_text("from an earlier run")
    out = cli("demo", "--dir", str(own))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "demo OK" in out.stdout + out.stderr
    assert not (own / "stale.txt").exists() and (own / MARKER).is_file()
    assert "sales" in dk.list_datasets(str(own / "lake"))
