"""End-to-end smoke test of the benchmark runner at tiny sizes (every workload verified).

The Azurite workloads (W9-azure, W10-azure*) need the runner's ``--azurite``; only their
round-trip variants (``--azurite-rtt-ms``, through the latency proxy) are run here, once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ["W1", "W2", "W3", "W4", "W5-write", "W5-open", "W5-read", "W7", "W7-lite"]
PIPELINES = ["W8", "W9-local", "W10-local", "W10-local-incr"]
LABELS = {
    "dataset_kit": "dataset_kit",
    "pyarrow": "pyarrow.dataset (hive)",
    "deltalake": "deltalake",
    "plateau": "plateau",
}
TINY_PIPELINES = (
    *("--w8-partitions", "4", "--w8-rows-per-partition", "400", "--w9-blobs", "20"),
    *("--w9-azure-blobs", "20"),
    *("--w10-partitions", "6", "--w10-rows-per-partition", "20"),
)


def run_bench(
    tmp_path: Path,
    contenders: list[str],
    workloads: list[str] = WORKLOADS,
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, Any], str]:
    """Run ``python -m benchmarks.run`` in a subprocess; return (JSON results, Markdown)."""
    out, results = tmp_path / "report.md", tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        *("--rows", "20000", "--reps", "1", "--w5-partitions", "50", "--w7-blobs", "50"),
        *TINY_PIPELINES,
        *("--workloads", ",".join(workloads)),
        *("--contenders", ",".join(contenders), "--timeout", "120", "--quiet"),
        *("--prefault-mib", "8"),
        *("--out", str(out), "--json", str(results), "--workdir", str(tmp_path / "work")),
        *extra,
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
            if (name, key) in {("pyarrow", "W7"), ("pyarrow", "W7-lite"), ("plateau", "W7-lite")}:
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
        if key.startswith("W7") and not hasattr(dataset_kit, "garbage_collect"):
            assert row["status"] == "not_implemented", row
            continue
        assert row["status"] == "ok", row
        assert row["verified"], row
        assert row["ratio"] == pytest.approx(1.0)
    # every child touched its 8 MiB before the clock started, and the report says so
    assert all(m["prefault_s"] >= 0 for rs in results["raw"].values() for m in rs["dataset_kit"])
    assert "- prefault: 8 MiB per child before the timed operation" in markdown


@pytest.mark.slow
def test_runner_pipelines_end_to_end(tmp_path: Path) -> None:
    """W8-W10 without Azurite: every entry (variant) verified, ratios and targets reported."""
    contenders = ["dataset_kit", "pyarrow", "deltalake", "plateau", "naive"]
    results, markdown = run_bench(tmp_path, contenders, ["W8", "W9", "W10"])
    assert sorted(results["summary"]) == sorted(PIPELINES)  # the Azurite ones are skipped
    assert "pass --azurite" in markdown
    expected_entries = {
        "W8": [
            "dataset_kit:cluster",
            "dataset_kit:threads",
            "pyarrow:loop",
            "pyarrow:loop2",
            "pyarrow:loop2-strdict",
            "plateau:cluster",
            "plateau:threads",
        ],
        "W9-local": ["dataset_kit", "plateau", "deltalake"],
        "W10-local": ["dataset_kit", "dataset_kit:link", "naive:full"],
        "W10-local-incr": ["dataset_kit", "dataset_kit:link", "naive:full", "naive:missing"],
    }
    for key in PIPELINES:
        rows = results["summary"][key]
        assert list(rows) == expected_entries[key]
        assert len(table_rows(markdown, key)) == len(rows)
        for entry, row in rows.items():
            assert row["status"] == "ok", (key, entry, row)
            assert row["verified"], (key, entry, row)
            assert row["ratio"] is not None
        assert rows[expected_entries[key][0]]["ratio"] == pytest.approx(1.0)
    w8 = results["summary"]["W8"]
    assert w8["dataset_kit:cluster"]["notes"]["cluster_startup_s"] > 0
    assert "cluster_startup_s" not in w8["dataset_kit:threads"].get("notes", {})
    for entry in ("dataset_kit", "dataset_kit:link"):
        assert results["summary"]["W10-local-incr"][entry]["notes"]["copied"] == 1
    assert "### Issue targets" in markdown


@pytest.mark.slow
def test_runner_repartition_end_to_end(tmp_path: Path) -> None:
    """W6: every entry verified (rows, product_id sum, 100 store_id partitions), with the
    file-size and worker-memory notes; dataset_kit with its default (staged) shuffle and
    with P2P."""
    contenders = ["dataset_kit", "pyarrow", "deltalake", "plateau"]
    results, markdown = run_bench(tmp_path, contenders, ["W6"])
    rows = results["summary"]["W6"]
    assert list(rows) == [
        "dataset_kit:cluster",
        "dataset_kit:cluster-p2p",
        "pyarrow:dask",
        "plateau:cluster",
        "pyarrow:stream",
        "deltalake:stream",
    ]
    for entry, row in rows.items():
        assert row["status"] == "ok" and row["verified"], (entry, row)
        assert row["notes"]["files"] >= 100 and row["notes"]["file_mib_max"] > 0, row
    assert rows["dataset_kit:cluster"]["notes"]["workers_peak_mib"] > 0
    assert "workers_peak_mib" not in rows["pyarrow:stream"]["notes"]
    assert "W6" in markdown and "### Issue targets" in markdown


@pytest.mark.slow
def test_runner_azure_round_trip_entries(tmp_path: Path) -> None:
    """W9-azure, W10-azure and W10-azure-azure through the latency proxy (2 ms): same
    entries and checks as without it, the round trip stated in the report, the curve and
    the targets listed."""
    contenders = ["dataset_kit", "plateau", "naive"]
    keys = ["W9-azure-rtt2", "W10-azure-rtt2", "W10-azure-azure-rtt2"]
    results, markdown = run_bench(tmp_path, contenders, keys, ("--azurite-rtt-ms", "2"))
    assert list(results["summary"]) == keys  # the direct ones were not selected
    expected = {
        "W9-azure-rtt2": ["dataset_kit", "plateau"],
        "W10-azure-rtt2": ["dataset_kit", "naive:full"],
        "W10-azure-azure-rtt2": ["dataset_kit", "naive:full"],
    }
    for key in keys:
        rows = results["summary"][key]
        assert list(rows) == expected[key]
        for entry, row in rows.items():
            assert row["status"] == "ok" and row["verified"], (key, entry, row)
            assert row["notes"]["rtt_ms"] == 2
            assert row["notes"]["proxy_connections"] >= 1  # timed through the proxy
        assert "through a 2 ms round-trip latency proxy" in markdown.split(f"## {key}: ")[1]
    assert "azurite round-trip proxy: 2 ms" in markdown
    assert "### Azure round-trip curve" in markdown and "| entry | RTT 2 ms |" in markdown
    targets = markdown.split("### Issue targets")[1]
    assert "| W9-azure-rtt2 | dataset_kit | plateau |" in targets
    assert "| W10-azure-rtt2 | dataset_kit |" in targets
    assert "| W10-azure-azure-rtt2 | dataset_kit |" in targets
    azure_to_azure = results["summary"]["W10-azure-azure-rtt2"]["dataset_kit"]["notes"]
    assert azure_to_azure["uploaded"] > 6  # the source dataset was put into Azurite first
    assert "latency_proxy.py" in markdown.split("## Method")[1]
