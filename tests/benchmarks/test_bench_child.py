"""benchmarks.child: what a measurement does before its clock starts."""

from __future__ import annotations

import subprocess
import sys


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
