"""benchmarks.child: what a measurement does before its clock starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dataset_kits_lazy_names_are_imported_before_the_clock() -> None:
    """dataset_kit imports its API on first use; the child imports it untimed, as the
    other contenders' modules do at import time (found when a main run timed it)."""
    code = (
        "import sys, dataset_kit\n"
        "assert 'dataset_kit.api.eager' not in sys.modules\n"
        "from benchmarks.child import _import_lazy_names\n"
        "_import_lazy_names()\n"
        "print(sorted(m for m in ('dataset_kit.api.eager', 'dataset_kit.pipelines')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['dataset_kit.api.eager',", "'dataset_kit.pipelines']"]


def test_nothing_is_imported_for_peers_without_dataset_kit() -> None:
    code = (
        "import sys\n"
        "from benchmarks.child import _import_lazy_names\n"
        "_import_lazy_names()\n"
        "print('dataset_kit' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sigterm_stops_the_runner_its_child_and_removes_the_work_directory(
    tmp_path: Path,
) -> None:
    """A benchmark stopped with kill (SIGTERM) used to leave gigabytes of datasets in its
    work directory; it now ends like after Ctrl-C."""
    work = tmp_path / "work"
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        *("--workloads", "W3", "--contenders", "dataset_kit", "--rows", "20000"),
        *("--reps", "1000", "--prefault-mib", "0", "--quiet", "--workdir", str(work)),
        *("--out", str(tmp_path / "report.md")),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(work.glob("*/runs/*")):  # measuring
        assert proc.poll() is None and time.monotonic() < deadline, "the runner never measured"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(work.iterdir()) == []
    children = subprocess.run(
        ["pgrep", "-f", f"benchmarks.child {work}"], capture_output=True, text=True
    )
    assert children.stdout == ""
    assert not (tmp_path / "report.md").exists()
