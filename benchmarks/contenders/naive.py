"""The naive baseline of the backup workloads: a sequential get/put loop.

It copies a dataset_kit dataset with the same store objects dataset_kit uses
(``LocalStore``, ``AzureBlobStore``), one blob at a time, so the comparison isolates
what ``dk.pipelines.backup`` adds (parallel batches, incremental planning). Data blobs go
first, the pointer last, so the copy is a readable dataset when the loop ends.
"""

from __future__ import annotations

import importlib
from typing import Any

import pandas as pd

from benchmarks.contenders.base import (
    Contender,
    Frame,
    Location,
    Predicate,
    Unsupported,
    as_pandas,
)

UUID = "bench"
POINTER = f"{UUID}.by-dataset-metadata.json"


def _unsupported(*_: Any, **__: Any) -> Any:
    raise Unsupported("the naive loop only takes part in the backup workloads")


class NaiveContender(Contender):
    """``for key in keys: target.put(key, source.get(key))``.

    Variants: ``full`` copies every blob of the dataset; ``missing`` lists the target
    first and copies the data blobs it lacks, plus every metadata blob (snapshots,
    ``_common_metadata``, the pointer), which is the simplest correct incremental loop.
    Datasets for its setup are written with dataset_kit.
    """

    name = "naive"
    native_input = "pandas"

    def __init__(self) -> None:
        self._dk = importlib.import_module("dataset_kit")

    def _store_at(self, location: Location) -> Any:
        if location.is_azure:
            return self._dk.open_store(
                f"azure://{location.container}", connection_string=location.connection_string
            )
        return self._dk.open_store(location.local_path())

    def pipeline_modules(self) -> list[str]:
        """The Azure backend."""
        return ["dataset_kit.store.azure", "azure.storage.blob"]

    def backup(self, source: Location, target: Location, *, variant: str) -> int:
        """Sequential get/put; returns the Parquet blobs copied."""
        if variant not in ("full", "missing"):
            raise ValueError(f"unknown variant {variant!r}")
        src, dst = self._store_at(source), self._store_at(target)
        keys = sorted(k for k in src.iter_keys(UUID) if k == POINTER or k.startswith(UUID + "/"))
        data = [k for k in keys if k.endswith(".parquet")]
        meta = [k for k in keys if not k.endswith(".parquet") and k != POINTER]
        if variant == "missing":
            have = set(dst.iter_keys(UUID + "/"))
            data = [k for k in data if k not in have]
        for key in [*data, *meta, POINTER]:
            dst.put(key, src.get(key))
        return len(data)

    def write(self, data: Frame, path: str, partition_on: list[str]) -> None:
        """``dk.write_dataset`` (setup of the backup source)."""
        self._dk.write_dataset(
            as_pandas(data),
            store=self._dk.open_store(path),
            dataset_uuid=UUID,
            partition_on=partition_on,
        )

    def count_rows(self, path: str) -> int:
        """Rows of a dataset_kit ``read_table``."""
        return len(self._dk.read_table(store=self._dk.open_store(path), dataset_uuid=UUID))

    def read_all(self, path: str) -> pd.DataFrame:
        """Not a reader."""
        return _unsupported()

    def read_selective(self, path: str, date: str, store_ids: list[int]) -> pd.DataFrame:
        """Not a reader."""
        return _unsupported()

    def append(self, data: Frame, path: str) -> None:
        """Not a writer."""
        _unsupported()

    def open(self, path: str) -> object:
        """Not a reader."""
        return _unsupported()

    def read_one_partition(self, path: str, predicate: Predicate) -> pd.DataFrame:
        """Not a reader."""
        return _unsupported()

    def gc(self, path: str, *, lite: bool = False) -> None:
        """No GC."""
        _unsupported()

    def make_garbage(self, garbage: Frame, replacement: Frame, path: str, part: str) -> None:
        """No GC."""
        _unsupported()

    def count_partitions(self, handle: object) -> int | None:
        """Not a reader."""
        return None
