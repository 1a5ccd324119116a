"""The notebooks in docs/notebooks run from top to bottom without an error.

Executed with nbclient on a real Jupyter kernel (ipykernel), in a temporary working
directory; each notebook starts and stops its own dask cluster.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _builder() -> object:
    spec = importlib.util.spec_from_file_location("build_notebook", NOTEBOOKS / "build_notebook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebook_matches_its_builder() -> None:
    """The .ipynb is generated from build_notebook.py; an edit to one alone is caught."""
    built = _builder().build()  # type: ignore[attr-defined]
    committed = nbformat.read(NOTEBOOKS / "out_of_core_analysis.ipynb", as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in built.cells]
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


def test_out_of_core_analysis_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / "out_of_core_analysis.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on failure
    nbformat.write(nb, tmp_path / "executed.ipynb")
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "totals match" in text
    assert "peak cluster memory" in text
    kinds = {
        key
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        for key in out.get("data", {})
    }
    assert "image/png" in kinds and "text/html" in kinds  # the plots and the dataset's repr
