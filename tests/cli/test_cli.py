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
    # rows and partitions of each version, as info counts them; what the commit wrote
    assert [(h["rows"], h["partitions"], h["rows_added"]) for h in history] == [
        (3, 2, 3),
        (2, 1, 0),
    ]
    assert "sales" in cli("--store", str(store), "info", "sales").stdout


def test_gc_is_a_dry_run_unless_yes(store: Path) -> None:
    """A retention rule expires the versions whose blobs it deletes (by default), so
    history never lists a version that cannot be read."""
    past = time.time() - 7200
    for path in store.rglob("*.parquet"):
        os.utime(path, (past, past))
    dry = json.loads(
        cli("--store", str(store), "--json", "gc", "sales", "--keep-versions", "1").stdout
    )
    assert dry["dry_run"] and dry["count"] == 1 and dry["expired"] == [0]
    assert len(list(store.rglob("*.parquet"))) == 2
    history = json.loads(cli("--store", str(store), "--json", "history", "sales").stdout)
    assert [h["version"] for h in history] == [0, 1]  # a dry run expires nothing either
    done = cli("--store", str(store), "gc", "sales", "--keep-versions", "1", "--yes")
    assert done.returncode == 0 and "deleted 1 blobs" in done.stdout
    assert "expired versions [0]" in done.stdout
    assert len(list(store.rglob("*.parquet"))) == 1
    history = json.loads(cli("--store", str(store), "--json", "history", "sales").stdout)
    assert [h["version"] for h in history] == [1]
    ok = cli("--store", str(store), "verify", "sales", "--all-versions")
    assert ok.returncode == 0 and "0 missing" in ok.stdout
    out = cli(
        "--store", str(store), "--json", "expire-versions", "sales", "--keep-versions", "1", "--yes"
    )
    assert json.loads(out.stdout)["expired"] == []


def test_gc_no_expire_keeps_unreadable_versions_listed(store: Path) -> None:
    args = ("--store", str(store), "gc", "sales", "--keep-versions", "1", "--grace-period", "0s")
    done = json.loads(cli("--json", *args, "--no-expire", "--yes").stdout)
    assert done["count"] == 1 and done["expired"] == []
    history = json.loads(cli("--store", str(store), "--json", "history", "sales").stdout)
    assert [h["version"] for h in history] == [0, 1]
    gone = cli("--store", str(store), "verify", "sales", "--all-versions")
    assert gone.returncode == 8  # version 0 is listed but its blob is gone
    helptext = cli("gc", "--help").stdout
    assert "no retained version references" in helptext and "unreadable" in helptext
    assert "delete unreferenced blobs" not in cli("--help").stdout


def test_gc_without_a_scan_then_expire(store: Path) -> None:
    """Released blobs go without a listing (once older than the grace period); the
    versions they belonged to are expired after (the default with a retention rule)."""
    args = ("--store", str(store), "gc", "sales", "--keep-versions", "1", "--no-scan")
    young = json.loads(cli("--json", *args, "--yes").stdout)  # the default grace period: 1h
    assert young["count"] == 0 and young["too_young"] == 1 and young["expired"] == []
    args = (*args, "--grace-period", "0s")
    dry = json.loads(cli("--json", *args).stdout)
    assert dry["dry_run"] and not dry["scanned"] and dry["count"] == 1 and dry["expired"] == [0]
    assert len(list(store.rglob("*.parquet"))) == 2
    done = cli(*args, "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 blobs" in done.stdout and "expired versions [0]" in done.stdout
    assert len(list(store.rglob("*.parquet"))) == 1
    history = json.loads(cli("--store", str(store), "--json", "history", "sales").stdout)
    assert [h["version"] for h in history] == [1]
    refused = cli("--store", str(store), "gc", "sales", "--no-scan")
    assert refused.returncode != 0 and "keep_versions" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_delete_needs_yes(store: Path) -> None:
    refused = cli("--store", str(store), "delete", "sales")
    assert refused.returncode == 7
    assert dk.list_datasets(str(store)) == ["sales"]
    assert cli("--store", str(store), "delete", "sales", "--yes").returncode == 0
    assert dk.list_datasets(str(store)) == []


def test_delete_yes_removes_a_dataset_whose_pointer_is_corrupt(store: Path) -> None:
    (store / "sales.by-dataset-metadata.json").write_bytes(b"{truncated")
    info = cli("--store", str(store), "info", "sales")
    assert info.returncode == 5 and "MetadataFormatError" in info.stderr
    refused = cli("--store", str(store), "delete", "sales")
    assert refused.returncode == 7 and dk.list_datasets(str(store)) == ["sales"]
    done = cli("--store", str(store), "delete", "sales", "--yes")
    assert done.returncode == 0, done.stderr
    assert dk.list_datasets(str(store)) == [] and not list(store.rglob("*.parquet"))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["info", "missing"], 3),
        (["info", "sales", "--version", "99"], 3),
        (["info", "../x"], 5),
        (["query", "sales", "--where", "nosuch == 1"], 5),
        (["nosuchcommand"], 2),
        # malformed option values are usage errors, whatever the option
        (["gc", "sales", "--grace-period", "-1"], 2),
        (["gc", "sales", "--grace-period", "bogus"], 2),
        (["gc", "sales", "--keep-versions", "0"], 2),
        (["expire-versions", "sales", "--retention", "soon"], 2),
        (["ingest", "logs", "x.jsonl", "--blocksize", "lots"], 2),
        (["ingest", "logs", "x.jsonl", "--schema", "day"], 2),
        (["ingest", "logs", "x.jsonl", "--schema", "n:int65"], 2),
        (["ingest", "logs", "x.jsonl", "--schema", "n:int64,n:string"], 2),
        (["query", "sales", "--limit", "-1"], 2),
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


def test_stats_summarizes_partition_balance(store: Path) -> None:
    dk.update_dataset(
        pd.DataFrame({"p": [3] * 8, "x": [0.5] * 8}), store=str(store), dataset_uuid="sales"
    )
    stats = json.loads(cli("--store", str(store), "--json", "stats", "sales").stdout)
    summary = stats["summary"]
    assert summary["partitions"] == 2 and summary["rows"]["total"] == 10
    assert summary["rows"]["max"] == 8 and summary["rows"]["max_over_median"] == 1.0
    text = cli("--store", str(store), "stats", "sales").stdout
    assert "2 partitions" in text and "max/median" in text


def test_backup_verify_restore(store: Path, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    out = cli("--store", str(store), "--json", "backup", "sales", "--target", str(vault))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["versions"] == [0, 1]
    again = json.loads(
        cli("--store", str(store), "--json", "backup", "sales", "--target", str(vault)).stdout
    )
    # the newest version's one blob is found in place; the versions the target holds
    # whole are not planned again
    assert (again["copied"], again["skipped"], again["versions"]) == (0, 1, [0, 1])
    ok = cli("--store", str(vault), "verify", "sales", "--all-versions", "--deep")
    assert ok.returncode == 0 and "0 missing, 0 corrupt" in ok.stdout
    dk.delete_dataset(store=str(store), dataset_uuid="sales")
    back = cli("--store", str(store), "--json", "restore", "sales", "--source", str(vault))
    assert back.returncode == 0, back.stderr
    assert len(dk.read_table(store=str(store), dataset_uuid="sales")) == 2


def test_backup_and_restore_by_hard_links(store: Path, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    out = cli("--store", str(store), "backup", "sales", "--target", str(vault), "--link")
    assert out.returncode == 0, out.stderr
    assert "copied 2 blobs" in out.stdout and "2 of them hard links" in out.stdout
    blob = next(store.rglob("*.parquet"))
    assert (vault / blob.relative_to(store)).stat().st_ino == blob.stat().st_ino
    dk.delete_dataset(store=str(store), dataset_uuid="sales")
    back = cli(
        "--store", str(store), "--json", "restore", "sales", "--source", str(vault), "--link"
    )
    assert back.returncode == 0, back.stderr
    restored = json.loads(back.stdout)
    assert restored["linked"] == restored["copied"] >= 1
    assert len(dk.read_table(store=str(store), dataset_uuid="sales")) == 2


def test_info_json_is_strict_and_keeps_the_schema_order(tmp_path: Path) -> None:
    df = pd.DataFrame({"day": ["d1"], "store_id": [1], "sales": [float("nan")]})
    dk.write_dataset(df, store=str(tmp_path), dataset_uuid="s")
    out = cli("--store", str(tmp_path), "--json", "info", "s")
    assert out.returncode == 0, out.stderr
    assert "NaN" not in out.stdout
    assert list(json.loads(out.stdout)["schema"]) == ["day", "store_id", "sales"]


def test_json_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever a command reports (metadata written by other tools included): NaN and
    infinities become null, bytes base64, sets lists; never a Python repr."""
    import argparse

    from dataset_kit.cli import _emit

    data = {"n": float("nan"), "i": float("-inf"), "b": b"\x00\x01", "s": {3}, "k": [1.5]}
    _emit(argparse.Namespace(json=True), data, "")
    text = capsys.readouterr().out
    assert json.loads(text, parse_constant=lambda t: pytest.fail(f"not JSON: {t}")) == {
        "n": None,
        "i": None,
        "b": "AAE=",
        "s": [3],
        "k": [1.5],
    }


def test_a_failed_backup_creates_no_target(store: Path, tmp_path: Path) -> None:
    for dataset, code in (("nope", 3), ("../x", 5)):
        target = tmp_path / f"vault-{code}"
        out = cli("--store", str(store), "backup", dataset, "--target", str(target))
        assert out.returncode == code, out.stderr
        assert not target.exists()


def test_verify_failure_exit_code(store: Path) -> None:
    victim = next(store.rglob("*.parquet"))
    victim.unlink()
    out = cli("--store", str(store), "--json", "verify", "sales")
    assert out.returncode == 8
    assert json.loads(out.stdout)["missing"] == [str(victim.relative_to(store))]


def test_progress_goes_to_stderr_and_json_stays_clean(store: Path) -> None:
    out = cli("--store", str(store), "--json", "--progress", "verify", "sales")
    assert out.returncode == 0
    assert json.loads(out.stdout)["ok"] is True
    assert "100%" in out.stderr


def test_unreachable_scheduler_is_a_config_error(store: Path) -> None:
    fast = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}  # the default waits 30 s
    out = cli(
        "--store", str(store), "--scheduler", "tcp://127.0.0.1:9", "verify", "sales", env=fast
    )
    assert out.returncode == 5 and "scheduler" in out.stderr


@pytest.fixture
def typed(tmp_path: Path) -> Path:
    df = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).date,
            "shop": [1, 2, 3],
            "name": ["a", "b", "c"],
            "ok": [True, False, True],
            "price": [1.5, 2.5, 3.5],
        }
    )
    dk.write_dataset(df, store=str(tmp_path), dataset_uuid="t", partition_on="day")
    return tmp_path


def test_query_where_parses_values_by_column_type(typed: Path) -> None:
    base = ["--store", str(typed), "--json", "query", "t", "--columns", "shop,name"]
    rows = json.loads(cli(*base, "--where", "shop >= 2", "--where", "ok == true").stdout)
    assert rows == [{"shop": 3, "name": "c"}]
    rows = json.loads(cli(*base, "--where", "day in 2024-01-01,2024-01-03").stdout)
    assert [r["shop"] for r in rows] == [1, 3]
    rows = json.loads(cli(*base, "--where", "name not in a,b", "--where", "price < 4").stdout)
    assert [r["name"] for r in rows] == ["c"]
    rows = json.loads(cli(*base, "--filter", '[[["shop", "==", 1]], [["shop", "==", 2]]]').stdout)
    assert [r["shop"] for r in rows] == [1, 2]
    text = cli("--store", str(typed), "query", "t", "--limit", "1")
    assert text.returncode == 0 and "price" in text.stdout and "(1 rows)" in text.stderr


def test_query_to_files(typed: Path, tmp_path: Path) -> None:
    for name in ("out.csv", "out.parquet"):
        target = tmp_path / name
        out = cli(
            "--store", str(typed), "query", "t", "--where", "shop != 2", "--output", str(target)
        )
        assert out.returncode == 0, out.stderr
        back = pd.read_csv(target) if name.endswith(".csv") else pd.read_parquet(target)
        assert sorted(back["shop"]) == [1, 3]


@pytest.mark.parametrize(
    "where",
    ["shop >= two", "nosuch == 1", "shop ~ 1", "ok == maybe", "day == 2024-13-01"],
)
def test_query_bad_predicates_are_typed_errors(typed: Path, where: str) -> None:
    out = cli("--store", str(typed), "query", "t", "--where", where)
    assert out.returncode == 5 and out.stderr.startswith("error: PredicateError"), out.stderr


def test_download_and_repartition_commands(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, day TEXT, shop INTEGER, qty REAL)")
        con.executemany(
            "INSERT INTO sales VALUES (?, ?, ?, ?)",
            [(i, f"2024-01-0{1 + i % 3}", i % 5, float(i)) for i in range(300)],
        )
    con.close()
    lake = str(tmp_path / "lake")
    out = cli(
        "--store",
        lake,
        "--json",
        "download",
        "sales",
        "--url",
        f"sqlite:///{db}",
        "--table",
        "sales",
        "--chunk-by",
        "id",
        "--n-chunks",
        "3",
        "--partition-on",
        "day",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rows"] == 300 and summary["partition_keys"] == ["day"]
    out = cli(
        "--store",
        lake,
        "--json",
        "repartition",
        "sales",
        "--target",
        "by_shop",
        "--partition-on",
        "shop",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["partition_keys"] == ["shop"]
    back = dk.read_table(store=lake, dataset_uuid="by_shop")
    assert len(back) == 300 and sorted(back["qty"]) == [float(i) for i in range(300)]
    bad = cli("--store", lake, "download", "x", "--url", f"sqlite:///{db}", "--table", "nope")
    assert bad.returncode == 9, bad.stderr
    assert "nope" in bad.stderr


def test_config_file_gives_store_and_scheduler(store: Path, tmp_path: Path) -> None:
    config = tmp_path / "dk.toml"
    config.write_text(f'store = "{store}"\nscheduler = "sync"\n')
    out = cli("--config", str(config), "ls", env={"DATASET_KIT_STORE": ""})
    assert out.returncode == 0 and out.stdout.split() == ["sales"]
    out = cli("verify", "sales", env={"DATASET_KIT_CONFIG": str(config), "DATASET_KIT_STORE": ""})
    assert out.returncode == 0, out.stderr
    config.write_text('stor = "typo"\n')
    bad = cli("--config", str(config), "ls", env={"DATASET_KIT_STORE": ""})
    assert bad.returncode == 5 and "unknown keys ['stor']" in bad.stderr
    config.write_text("store = [\n")
    assert cli("--config", str(config), "ls").returncode == 5


@pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_delete_asks_on_a_terminal(store: Path, answer: str, deleted: bool) -> None:
    import pty

    leader, follower = pty.openpty()  # the command's stdin is a real terminal
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataset_kit.cli", "--store", str(store), "delete", "sales"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    os.write(leader, answer.encode())
    _, err = proc.communicate(timeout=60)
    os.close(leader)
    assert "delete dataset 'sales'" in err and "[y/N]" in err
    assert proc.returncode == (0 if deleted else 7)
    assert (dk.list_datasets(str(store)) == []) is deleted


def test_ingest_command(tmp_path: Path) -> None:
    import gzip

    logs = tmp_path / "logs"
    logs.mkdir()
    for day in range(3):
        lines = [json.dumps({"day": day, "n": i, "msg": f"m{i}"}) for i in range(100)]
        data = ("\n".join(lines) + "\n").encode()
        (logs / f"app-{day}.jsonl.gz").write_bytes(gzip.compress(data))
    lake = str(tmp_path / "lake")
    out = cli(
        "--store",
        lake,
        "--json",
        "ingest",
        "logs",
        str(logs / "*.jsonl.gz"),
        "--partition-on",
        "day",
        "--blocksize",
        "4KiB",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rows"] == 300 and summary["files"] == 3 and summary["bad_lines"] == 0
    assert summary["partition_keys"] == ["day"]
    back = dk.read_table(store=lake, dataset_uuid="logs")
    assert sorted(back["n"]) == sorted(list(range(100)) * 3)

    bad = tmp_path / "bad.csv"
    bad.write_text("id,x\n1,0.5\n2,oops\n3,1.5\n")
    out = cli("--store", lake, "ingest", "t", str(bad), "--schema", "id:int64,x:float64")
    assert out.returncode == 9, out.stderr
    assert f"SourceFormatError: {bad}, line 3: " in out.stderr
    assert dk.list_datasets(lake) == ["logs"]
    out = cli(
        "--store",
        lake,
        "ingest",
        "t",
        str(bad),
        "--schema",
        "id:int64,x:float64",
        "--bad-lines",
        "quarantine",
    )
    assert out.returncode == 0, out.stderr
    assert "2 rows" in out.stdout and "1 bad lines set aside under t.quarantine/" in out.stdout
    out = cli("--store", lake, "ingest", "u", str(bad), "--schema", "id")
    assert out.returncode == 2 and "--schema: expected 'column:type'" in out.stderr
    out = cli("--store", lake, "ingest", "u", str(bad), "--schema", "id:int65")
    assert out.returncode == 2 and "'int65' (column 'id') is not an Arrow type" in out.stderr
    out = cli("--store", lake, "ingest", "u", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 9 and "does not exist" in out.stderr


def test_gc_prune_dirs(store: Path) -> None:
    """``gc`` leaves the partition directories it empties; ``--prune-dirs`` removes them."""
    args = ("--store", str(store), "gc", "sales", "--keep-versions", "1", "--grace-period", "0s")
    table = store / "sales" / "table"

    def dirs() -> list[str]:
        return sorted(p.name for p in table.iterdir() if p.is_dir())

    assert dirs() == ["p=1", "p=2"]
    assert json.loads(cli("--json", *args, "--yes").stdout)["count"] == 1
    assert dirs() == ["p=1", "p=2"] and not list((table / "p=1").iterdir())
    done = cli(*args, "--prune-dirs", "--yes")
    assert done.returncode == 0, done.stderr
    assert dirs() == ["p=2"]
    assert "--prune-dirs" in cli("gc", "--help").stdout
