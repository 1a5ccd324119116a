"""dataset_kit: versioned, Kartothek/plateau-compatible partitioned Parquet datasets.

Importing the package loads neither dask, nor Azure, nor a database driver, and its
public names are imported on first use: a write helper process or a CLI call that needs
only a part of the package does not pay for pandas and all the rest (0.45 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataset_kit import exceptions, pipelines, throttle
    from dataset_kit.api import iter
    from dataset_kit.api.dataset import Dataset, open_dataset
    from dataset_kit.api.eager import (
        build_dataset_indices,
        delete_dataset,
        expire_versions,
        garbage_collect,
        list_datasets,
        read_dataset_as_dataframes,
        read_table,
        update_dataset,
        write_dataset,
    )
    from dataset_kit.core.metadata import DatasetMetadata
    from dataset_kit.pipelines.ddf import read_dataset_as_ddf
    from dataset_kit.store import open_store

__version__ = "0.1.0"

#: Public name -> the module that defines it (a module itself when the name is the
#: module's own, e.g. ``exceptions``).
_WHERE = {
    "Dataset": "dataset_kit.api.dataset",
    "DatasetMetadata": "dataset_kit.core.metadata",
    "build_dataset_indices": "dataset_kit.api.eager",
    "delete_dataset": "dataset_kit.api.eager",
    "exceptions": "dataset_kit.exceptions",
    "expire_versions": "dataset_kit.api.eager",
    "garbage_collect": "dataset_kit.api.eager",
    "iter": "dataset_kit.api.iter",
    "list_datasets": "dataset_kit.api.eager",
    "open_dataset": "dataset_kit.api.dataset",
    "open_store": "dataset_kit.store",
    "pipelines": "dataset_kit.pipelines",
    "read_dataset_as_dataframes": "dataset_kit.api.eager",
    "read_dataset_as_ddf": "dataset_kit.pipelines.ddf",
    "read_table": "dataset_kit.api.eager",
    "throttle": "dataset_kit.throttle",
    "update_dataset": "dataset_kit.api.eager",
    "write_dataset": "dataset_kit.api.eager",
}

__all__ = [
    "Dataset",
    "DatasetMetadata",
    "__version__",
    "build_dataset_indices",
    "delete_dataset",
    "exceptions",
    "expire_versions",
    "garbage_collect",
    "iter",
    "list_datasets",
    "open_dataset",
    "open_store",
    "pipelines",
    "read_dataset_as_dataframes",
    "read_dataset_as_ddf",
    "read_table",
    "throttle",
    "update_dataset",
    "write_dataset",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it as a module attribute."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(where)
    value = module if where.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
