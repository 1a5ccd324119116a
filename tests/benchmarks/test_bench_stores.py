"""Smoke test of the store benchmark (local vs Azurite) at tiny sizes, so it cannot rot.

It starts its own in-memory Azurite per repetition, as the real run does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


def test_store_benchmark_runs_checks_and_reports(tmp_path: Path) -> None:
    out, raw = tmp_path / "stores.md", tmp_path / "stores.json"
    command = [
        sys.executable,
        *("-m", "benchmarks.stores", "--reps", "2", "--rows", "3000", "--blobs", "3"),
        *("--blob-mib", "0.25", "--small-ops", "8", "--quiet"),
        *("--out", str(out), "--json", str(raw)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(raw.read_text())
    assert len(results["reps"]) == 2
    first = results["reps"][0]
    for store in ("local", "azurite"):
        assert first[store]["S1"]["write_mib_s"] > 0 and first[store]["S2"]["read_s"] > 0
        counts = first[store]["S4"]
        # a new dataset commits with create-only writes; an open reads the pointer
        assert counts["write"]["put_if_absent"] >= 2 and counts["open"]["get"] >= 1
        assert counts["append"]["requests"] < counts["write"]["requests"]
    # the request counts are the same on both stores up to the data reads of the local
    # store (through its local path, not the store API)
    assert first["local"]["S4"]["write"] == first["azurite"]["S4"]["write"]
    text = out.read_text()
    for section in ("S1 blob throughput", "S2 dataset", "S3 small-operation", "S4 store calls"):
        assert section in text
