"""End-to-end smoke test of the benchmark runner at tiny sizes (every workload verified)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ["W1", "W2", "W3", "W4", "W5-write", "W5-open", "W5-read", "W7"]
LABELS = {
    "dataset_kit": "dataset_kit",
    "pyarrow": "pyarrow.dataset (hive)",
    "deltalake": "deltalake",
    "plateau": "plateau",
}


def run_bench(tmp_path: Path, contenders: list[str]) -> tuple[dict[str, Any], str]:
    """Run ``python -m benchmarks.run`` in a subprocess; return (JSON results, Markdown)."""
    out, results = tmp_path / "report.md", tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        *("--rows", "20000", "--reps", "1", "--w5-partitions", "50", "--w7-blobs", "50"),
        *("--contenders", ",".join(contenders), "--timeout", "120", "--quiet"),
        *("--out", str(out), "--json", str(results), "--workdir", str(tmp_path / "work")),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(results.read_text()), out.read_text()


def table_rows(markdown: str, key: str) -> list[str]:
    """Table rows of the Markdown section of workload ``key``."""
    section = markdown.split(f"\n## {key}: ", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")][1:]


@pytest.mark.slow
def test_runner_peers_end_to_end(tmp_path: Path) -> None:
    """pyarrow, plateau and deltalake: one row each per workload, all results verified."""
    contenders = ["pyarrow", "plateau", "deltalake"]
    results, markdown = run_bench(tmp_path, contenders)
    assert "load average (1/5/15 min) before" in markdown
    for key in WORKLOADS:
        rows = table_rows(markdown, key)
        assert sorted(r.split(" | ")[0][2:] for r in rows) == sorted(LABELS[c] for c in contenders)
        for name in contenders:
            row = results["summary"][key][name]
            if (name, key) == ("pyarrow", "W7"):
                assert row["status"] == "unsupported", row
            else:
                assert row["status"] == "ok", row
                assert row["verified"], row
                assert row["median_s"] > 0
                assert row["ratio"] is None  # no dataset_kit in this run


@pytest.mark.slow
def test_runner_dataset_kit_end_to_end(tmp_path: Path) -> None:
    """dataset_kit through the runner: every workload is verified (W7 waits for the GC)."""
    import dataset_kit

    results, markdown = run_bench(tmp_path, ["dataset_kit"])
    for key in WORKLOADS:
        assert len(table_rows(markdown, key)) == 1
        row = results["summary"][key]["dataset_kit"]
        if key == "W7" and not hasattr(dataset_kit, "garbage_collect"):
            assert row["status"] == "not_implemented", row
            continue
        assert row["status"] == "ok", row
        assert row["verified"], row
        assert row["ratio"] == pytest.approx(1.0)
