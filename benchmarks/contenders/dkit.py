"""dataset_kit through its public API; missing names report "not implemented"."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pandas as pd

from benchmarks.contenders.base import Contender, Frame, Predicate, as_pandas

UUID = "bench"


class DatasetKitContender(Contender):
    """``dk.open_store`` + ``write_dataset`` / ``update_dataset`` / ``read_table`` / ..."""

    name = "dataset_kit"
    native_input = "pandas"

    def __init__(self) -> None:
        self._dk = importlib.import_module("dataset_kit")

    def _api(self, name: str) -> Callable[..., Any]:
        """The public function ``dataset_kit.<name>`` or NotImplementedError."""
        function = getattr(self._dk, name, None)
        if function is None:
            raise NotImplementedError(f"dataset_kit.{name} does not exist yet")
        return function

    def _store(self, path: str) -> Any:
        return self._api("open_store")(path)

    def _read(self, path: str, predicates: Predicate | None = None) -> pd.DataFrame:
        kwargs: dict[str, Any] = {} if predicates is None else {"predicates": predicates}
        return self._api("read_table")(store=self._store(path), dataset_uuid=UUID, **kwargs)

    def write(self, data: Frame, path: str, partition_on: list[str]) -> None:
        """``dk.write_dataset``."""
        self._api("write_dataset")(
            as_pandas(data), store=self._store(path), dataset_uuid=UUID, partition_on=partition_on
        )

    def read_all(self, path: str) -> pd.DataFrame:
        """``dk.read_table``."""
        return self._read(path)

    def read_selective(self, path: str, date: str, store_ids: list[int]) -> pd.DataFrame:
        """``dk.read_table`` with predicates."""
        return self._read(path, [[("date", "==", date), ("store_id", "in", store_ids)]])

    def append(self, data: Frame, path: str) -> None:
        """``dk.update_dataset``."""
        self._api("update_dataset")(as_pandas(data), store=self._store(path), dataset_uuid=UUID)

    def open(self, path: str) -> object:
        """``dk.open_dataset``."""
        return self._api("open_dataset")(store=self._store(path), dataset_uuid=UUID)

    def read_one_partition(self, path: str, predicate: Predicate) -> pd.DataFrame:
        """``dk.read_table`` with predicates."""
        return self._read(path, predicate)

    def gc(self, path: str) -> None:
        """``dk.garbage_collect`` keeping the newest version only, with no grace period
        (what deltalake's ``vacuum(retention_hours=0)`` and plateau's GC do)."""
        self._api("garbage_collect")(
            store=self._store(path), dataset_uuid=UUID, grace_period=0, keep_versions=1
        )

    def make_garbage(self, garbage: Frame, replacement: Frame, path: str, part: str) -> None:
        """Write, then overwrite (old files stay until GC)."""
        self._api("garbage_collect")  # fail fast, before the untimed setup
        write = self._api("write_dataset")
        write(as_pandas(garbage), store=self._store(path), dataset_uuid=UUID, partition_on=[part])
        write(
            as_pandas(replacement),
            store=self._store(path),
            dataset_uuid=UUID,
            partition_on=[part],
            mode="overwrite",
        )

    def count_rows(self, path: str) -> int:
        """Rows of a full ``read_table``."""
        return len(self._read(path))

    def count_partitions(self, handle: object) -> int | None:
        """``len(handle.partitions)`` if the handle exposes it."""
        for attribute in ("partitions", "num_partitions", "n_partitions"):
            value = getattr(handle, attribute, None)
            if value is not None:
                return value if isinstance(value, int) else len(value)
        return None
