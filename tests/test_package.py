"""Package hygiene: import cost, public names, typing marker, error tree, the demo."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import dataset_kit as dk
from dataset_kit import exceptions
from dataset_kit.io import encoder_processes as ep
from dataset_kit.store import LocalStore


def test_import_loads_no_optional_heavyweights() -> None:
    code = (
        "import sys, dataset_kit\n"
        "bad = [m for m in ('dask', 'distributed', 'azure', 'sqlalchemy', 'adbc_driver_manager',"
        " 'minimalkv', 'simplekv', 'plateau', 'deltalake') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_write_helper_modules_load_neither_pandas_nor_pyarrow_dataset(tmp_path: Path) -> None:
    """A write helper process unpickles a BlobWriter, reads rows from Arrow IPC and writes:
    pandas and pyarrow.dataset (0.35 s of its start-up) must stay out, which is why the
    package's names are imported lazily."""
    from dataset_kit.io.blobs import BlobWriter, WriteOptions

    writer = BlobWriter(
        LocalStore(tmp_path / "lake"), "u", "table", ("p",), WriteOptions(), None, (), []
    )
    (tmp_path / "writer.pickle").write_bytes(pickle.dumps(writer))
    (tmp_path / "rows.arrows").write_bytes(ep._to_ipc(pa.table({"x": [1.0, 2.0]})))
    code = (
        "import pickle, sys\n"
        f"w = pickle.loads(open({str(tmp_path / 'writer.pickle')!r}, 'rb').read())\n"
        "from dataset_kit.io.encoder_processes import _from_ipc\n"
        f"rows = _from_ipc(open({str(tmp_path / 'rows.arrows')!r}, 'rb').read())\n"
        "[part] = w.write_many([(['1'], rows)])\n"
        "print(part.key)\n"
        "print([m for m in ('pandas', 'pyarrow.dataset', 'dataset_kit.api') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    key, loaded = out.stdout.split()
    assert loaded == "[]"
    assert pq.read_table(writer.store.local_path(key)).column("x").to_pylist() == [1.0, 2.0]


def test_public_names_are_exported_and_sorted() -> None:
    assert dk.__all__ == sorted(dk.__all__)
    for name in dk.__all__:
        assert hasattr(dk, name), name
    assert exceptions.__all__ == sorted(exceptions.__all__)


def test_public_names_are_the_objects_of_their_modules() -> None:
    from dataset_kit import pipelines
    from dataset_kit.api import eager, iter
    from dataset_kit.store import open_store

    assert dk.write_dataset is eager.write_dataset and dk.read_table is eager.read_table
    assert dk.pipelines is pipelines and dk.iter is iter and dk.open_store is open_store
    assert sorted([*dk._WHERE, "__version__"]) == dk.__all__
    assert set(dk.__all__) <= set(dir(dk))
    try:
        dk.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
    star: dict[str, object] = {}
    exec("from dataset_kit import *", star)
    assert star["write_dataset"] is eager.write_dataset


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
