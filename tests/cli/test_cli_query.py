"""``dataset-kit query``: limits, text output to pipes and terminals, exact JSON values,
``--columns`` and ``--output`` checked before anything is read, quoted ``--where``
values."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataset_kit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    big = pd.DataFrame({"k": range(1000), "s": [f"v{i}" for i in range(1000)]})
    dk.write_dataset(big, store=str(root), dataset_uuid="big")
    typed = pd.DataFrame(
        {
            "id": [1, 2],
            "ts": pd.to_datetime(
                ["2024-01-01 00:00:00.123456", "2024-01-01 00:00:01.000001"]
            ).as_unit("us"),
            "ns": pd.to_datetime(["2024-01-01 00:00:00.123456789", None]).as_unit("ns"),
            "tz": pd.to_datetime(["2024-01-01 12:00:00.5", "2024-07-01 12:00:00.0"])
            .as_unit("us")
            .tz_localize("Europe/Berlin"),
            "d": [dt.date(2024, 1, 1), None],
            "b": [b"\x00\xff", b"abc"],
            "bl": [[b"\xfe"], []],
            "day": ["2024-01-01", "2024-01-02"],
        }
    )
    dk.write_dataset(typed, store=str(root), dataset_uuid="typed", partition_on="day")
    return root


def test_limit_must_not_be_negative(lake: Path) -> None:
    for limit in ("-1", "-990", "x"):
        out = cli("--store", str(lake), "query", "big", "--limit", limit)
        assert out.returncode == 2 and "--limit" in out.stderr, out.stderr
    zero = cli("--store", str(lake), "--json", "query", "big", "--limit", "0")
    assert zero.returncode == 0 and json.loads(zero.stdout) == []


def test_text_output_to_a_pipe_has_every_row(lake: Path) -> None:
    out = cli("--store", str(lake), "query", "big")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1001 and "..." not in out.stdout and " v500" in out.stdout
    assert "(1000 rows)" in out.stderr and "showing" not in out.stderr


def _on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run the command with its stdout on a pseudo-terminal: (exit code, stdout, stderr)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataset_kit.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=60), b"".join(chunks).decode(), err


def test_text_output_on_a_terminal_is_capped_and_says_so(lake: Path) -> None:
    code, out, err = _on_a_terminal("--store", str(lake), "query", "big")
    assert code == 0, err
    assert " v500" not in out and " v999" in out and "..." in out
    assert "showing 200 of 1000 rows; use --limit or --output for all" in err
    code, out, err = _on_a_terminal("--store", str(lake), "query", "big", "--limit", "300")
    assert code == 0 and " v299" in out and "..." not in out and "(300 rows)" in err
    assert "200 rows" in cli("query", "--help").stdout


def test_json_keeps_timestamp_precision_and_dates(lake: Path) -> None:
    out = cli("--store", str(lake), "--json", "query", "typed", "--columns", "id,ts,ns,tz,d")
    assert out.returncode == 0, out.stderr
    rows = sorted(json.loads(out.stdout), key=lambda r: r["id"])
    assert [r["ts"] for r in rows] == ["2024-01-01T00:00:00.123456", "2024-01-01T00:00:01.000001"]
    assert [r["ns"] for r in rows] == ["2024-01-01T00:00:00.123456789", None]
    assert [r["tz"] for r in rows] == [
        "2024-01-01T12:00:00.500000+01:00",
        "2024-07-01T12:00:00.000000+02:00",
    ]
    assert [r["d"] for r in rows] == ["2024-01-01", None]


def test_json_binary_as_base64_and_duplicate_columns_refused(lake: Path) -> None:
    out = cli("--store", str(lake), "--json", "query", "typed", "--columns", "id,b,bl,day")
    assert out.returncode == 0, out.stderr
    rows = sorted(json.loads(out.stdout), key=lambda r: r["id"])
    assert [base64.b64decode(r["b"]) for r in rows] == [b"\x00\xff", b"abc"]
    assert [[base64.b64decode(v) for v in r["bl"]] for r in rows] == [[b"\xfe"], []]
    assert [r["day"] for r in rows] == ["2024-01-01", "2024-01-02"]
    assert "base64" in cli("query", "--help").stdout
    for columns in ("day,day", "id,,b"):
        dup = cli("--store", str(lake), "--json", "query", "typed", "--columns", columns)
        assert dup.returncode == 2 and "--columns" in dup.stderr, dup.stderr
        assert "Traceback" not in dup.stderr


def test_output_is_checked_before_reading(lake: Path, tmp_path: Path) -> None:
    base = ("--store", str(lake), "query", "big")
    # the dataset does not exist either: the path is checked first
    missing_dir = cli("--store", str(lake), "query", "nope", "--output", "/nonexistent-dk/x.csv")
    assert missing_dir.returncode == 5, missing_dir.stderr
    assert "InvalidInputError" in missing_dir.stderr and "/nonexistent-dk" in missing_dir.stderr
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "file").write_text("")
    for target in (tmp_path / "dir.csv", tmp_path / "file" / "x.parquet"):
        out = cli(*base, "--output", str(target))
        assert out.returncode == 5 and out.stderr.startswith("error: InvalidInputError"), target
    unwritable = cli(*base, "--output", "/proc/dk-query.csv")  # refused or failing write
    assert unwritable.returncode == 5 and "Traceback" not in unwritable.stderr
    wrong = cli(*base, "--output", str(tmp_path / "x.txt"))
    assert wrong.returncode == 2 and ".csv or .parquet" in wrong.stderr
    for name in ("X.CSV", "Y.Parquet"):
        out = cli(*base, "--limit", "3", "--output", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        path = tmp_path / name
        back = pd.read_csv(path) if name.endswith("CSV") else pd.read_parquet(path)
        assert list(back["k"]) == [0, 1, 2]


def test_where_values_may_be_quoted(lake: Path) -> None:
    base = ("--store", str(lake), "--json", "query", "typed", "--columns", "id")
    for where in ("day == '2024-01-02'", 'day == "2024-01-02"', "day in '2024-01-02',\"x\""):
        out = cli(*base, "--where", where)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"id": 2}], where
    out = cli(*base, "--where", "id == '2'")
    assert json.loads(out.stdout) == [{"id": 2}]


def test_json_floats_keep_every_digit(tmp_path: Path) -> None:
    """Every float reads back as the same float (pandas' to_json kept 10 digits: a
    silent loss of precision); NaN and infinities are null; nullable ints stay ints."""
    values = [0.1 + 0.2, 1 / 3, 123456789.123456789, -1e-300, float("nan"), float("inf")]
    df = pd.DataFrame(
        {
            "x": values,
            "f32": pd.array([1.1, 2.5, 3, 4, 5, 6], dtype="float32"),
            "n": pd.array([1, None, 3, 2**62, 5, 6], dtype="Int64"),
        }
    )
    dk.write_dataset(df, store=str(tmp_path), dataset_uuid="f")
    out = cli("--store", str(tmp_path), "--json", "query", "f")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["x"] for r in rows] == [*values[:4], None, None]
    assert rows[0]["f32"] == float(df["f32"][0])  # the float32 value, exactly
    assert [r["n"] for r in rows] == [1, None, 3, 2**62, 5, 6]


def _strict(text: str) -> object:
    """Parse as strict JSON (RFC 8259): NaN and Infinity are errors, as in jq or JS."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_durations_and_non_finite_floats_inside_containers(tmp_path: Path) -> None:
    """Durations are ISO 8601 (a crash before); NaN and infinities inside lists and
    structs are null like top-level ones (bare NaN tokens before)."""
    import pyarrow as pa

    table = pa.table(
        {
            "dur": pa.array([dt.timedelta(seconds=1), None], pa.duration("us")),
            "lst": pa.array([[1.0, float("nan")], [float("inf")]], pa.list_(pa.float64())),
            "st": pa.array([{"x": float("nan")}, {"x": 2.5}], pa.struct([("x", pa.float64())])),
        }
    )
    dk.write_dataset(table, store=str(tmp_path), dataset_uuid="t")
    out = cli("--store", str(tmp_path), "--json", "query", "t")
    assert out.returncode == 0, out.stderr
    assert _strict(out.stdout) == [
        {"dur": "P0DT0H0M1S", "lst": [1.0, None], "st": {"x": None}},
        {"dur": None, "lst": [None], "st": {"x": 2.5}},
    ]
    assert cli("--store", str(tmp_path), "query", "t").returncode == 0  # text too


def test_a_reader_that_stops_early_ends_the_query_quietly(tmp_path: Path) -> None:
    """``query | head``: exit code 141 like other tools killed by SIGPIPE, no traceback."""
    rows = pd.DataFrame({"k": range(50_000), "s": [f"value-{i}" for i in range(50_000)]})
    dk.write_dataset(rows, store=str(tmp_path), dataset_uuid="big")  # > a pipe's 64 KiB
    for json_flag in ((), ("--json",)):
        command = [sys.executable, "-m", "dataset_kit.cli", "--store", str(tmp_path), *json_flag]
        proc = subprocess.Popen(
            [*command, "query", "big"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(10)
        proc.stdout.close()  # the reader is gone
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, err
        assert "Traceback" not in err


def test_csv_and_text_show_binary_as_base64_and_lists_as_json(lake: Path, tmp_path: Path) -> None:
    """Never Python reprs (b'..', [b'..'], None inside lists): the text --json gives."""
    target = tmp_path / "typed.csv"
    out = cli(
        "--store", str(lake), "query", "typed", "--columns", "id,b,bl", "--output", str(target)
    )
    assert out.returncode == 0, out.stderr
    back = pd.read_csv(target, keep_default_na=False).sort_values("id")
    assert back["b"].tolist() == [base64.b64encode(v).decode() for v in (b"\x00\xff", b"abc")]
    assert back["bl"].tolist() == [json.dumps([base64.b64encode(b"\xfe").decode()]), "[]"]
    text = cli("--store", str(lake), "query", "typed", "--columns", "id,b,bl")
    assert text.returncode == 0, text.stderr
    assert "b'" not in text.stdout and "AP8=" in text.stdout and '["/g=="]' in text.stdout


def test_csv_nulls_inside_lists_are_json_null(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": [1, 2, 3], "xs": [[1.5, None], None, [float("nan")]]})
    dk.write_dataset(df, store=str(tmp_path / "lake"), dataset_uuid="l")
    target = tmp_path / "l.csv"
    out = cli("--store", str(tmp_path / "lake"), "query", "l", "--output", str(target))
    assert out.returncode == 0, out.stderr
    back = pd.read_csv(target, keep_default_na=False).sort_values("id")
    assert back["xs"].tolist() == ["[1.5,null]", "", "[null]"]


def test_where_takes_binary_values_in_base64(lake: Path) -> None:
    """The form --json and CSV print, so a value can be copied from the output."""
    base = ("--store", str(lake), "--json", "query", "typed", "--columns", "id")
    out = cli(*base, "--where", "b == AP8=")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"id": 1}]
    both = cli(*base, "--where", "b in AP8=,YWJj")
    assert sorted(r["id"] for r in json.loads(both.stdout)) == [1, 2]
    bad = cli(*base, "--where", "b == abc!")
    assert bad.returncode == 5 and "given in base64" in bad.stderr, bad.stderr
