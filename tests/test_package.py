"""Package hygiene: import cost, public names, typing marker, error tree, the demo."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import dataset_kit as dk
from dataset_kit import exceptions


def test_import_loads_no_optional_heavyweights() -> None:
    code = (
        "import sys, dataset_kit\n"
        "bad = [m for m in ('dask', 'distributed', 'azure', 'sqlalchemy', 'adbc_driver_manager',"
        " 'minimalkv', 'simplekv', 'plateau', 'deltalake') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported_and_sorted() -> None:
    assert dk.__all__ == sorted(dk.__all__)
    for name in dk.__all__:
        assert hasattr(dk, name), name
    assert exceptions.__all__ == sorted(exceptions.__all__)


def test_py_typed_marker_ships() -> None:
    assert (Path(dk.__file__).parent / "py.typed").exists()


def test_every_error_is_rooted() -> None:
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        assert inspect.isclass(obj), name
        if issubclass(obj, Warning):
            assert issubclass(obj, exceptions.DatasetKitWarning), name
        else:
            assert issubclass(obj, exceptions.DatasetKitError), name
    assert issubclass(exceptions.KeyNotFoundError, KeyError)
    assert issubclass(exceptions.DatasetNotFoundError, LookupError)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dataset_kit.demo", "--store", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo OK" in out.stdout
