"""Smoke test of the W11 database download benchmark at a tiny size (every entry verified).

Needs PostgreSQL's server binaries, like the download tests (the benchmark starts its own
server).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = [
    "dataset_kit",
    "dataset_kit:cluster",
    "pandas",
    "pandas:client-cursor",
    "adbc",
    "adbc+parquet",
    "copy",
]


@pytest.mark.slow
def test_download_benchmark_end_to_end(tmp_path: Path) -> None:
    out, results = tmp_path / "download.md", tmp_path / "download.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.download",
        *("--rows", "2000", "--reps", "1", "--chunks", "3", "--pandas-chunksize", "500"),
        *("--timeout", "180", "--quiet", "--out", str(out), "--json", str(results)),
        *("--workdir", str(tmp_path / "work")),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(results.read_text())
    assert list(data["summary"]) == ENTRIES
    for entry, row in data["summary"].items():
        assert row["status"] == "ok", (entry, row)
        want = ["rows"] if entry == "copy" else ["id_sum", "rows"]
        assert row["verified"] == want, (entry, row)
        assert row["median_s"] > 0 and row["peak_mib"] > 0, (entry, row)
    raw = data["raw"]["dataset_kit"][0]
    assert raw["check"] == {"rows": 2000, "id_sum": 2000 * 2001 // 2, "version": 0}
    assert [t["status"] for t in data["targets"]][:3] != ["n/a"] * 3
    markdown = out.read_text()
    assert "## Issue targets" in markdown and "speed-up over `pandas`" in markdown
    assert markdown.count("ok (") == len(ENTRIES)
    assert "load average (1/5/15 min) before" in markdown


def test_a_wrong_result_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's check turns a result that does not match the table into an error."""
    from benchmarks import download

    real_popen = subprocess.Popen

    def fake_popen(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        spec = json.loads(Path(command[-1]).read_text())
        record = {"status": "ok", "seconds": 1.0, "peak_mib": 1.0, "check": {"rows": 9}}
        Path(spec["result"]).write_text(json.dumps(record))
        return real_popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(download.subprocess, "Popen", fake_popen)
    args = download.parse_args(["--rows", "10"])
    result = download.spawn(args, "adbc", "postgresql://x", {"rows": 10, "id_sum": 55}, tmp_path, 0)
    assert result["status"] == "error" and result["error_type"] == "WrongResult"
    assert download.summarize([result])["status"] == "error"
