"""dataset_kit: versioned, Kartothek/plateau-compatible partitioned Parquet datasets.

Importing the package loads neither dask, nor Azure, nor a database driver.
"""

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
