"""Raw ``pyarrow.dataset`` with hive partitioning (directory discovery, no metadata)."""

from __future__ import annotations

import uuid

import pandas as pd
import pyarrow.dataset as ds

from benchmarks.contenders.base import (
    Contender,
    Frame,
    Predicate,
    Unsupported,
    as_arrow,
    to_expression,
)

# pyarrow refuses to write more than 1,024 partitions by default.
MAX_PARTITIONS = 1_000_000


class PyArrowDatasetContender(Contender):
    """``ds.write_dataset`` / ``ds.dataset(path, partitioning="hive")``."""

    name = "pyarrow"
    native_input = "arrow"

    def _write(self, data: Frame, path: str, partition_on: list[str], template: str) -> None:
        ds.write_dataset(
            as_arrow(data),
            path,
            format="parquet",
            partitioning=partition_on,
            partitioning_flavor="hive",
            basename_template=template,
            existing_data_behavior="overwrite_or_ignore",
            max_partitions=MAX_PARTITIONS,
        )

    def _dataset(self, path: str) -> ds.Dataset:
        return ds.dataset(path, format="parquet", partitioning="hive")

    def write(self, data: Frame, path: str, partition_on: list[str]) -> None:
        """Write with one file per partition directory."""
        self._write(data, path, partition_on, "part-{i}.parquet")

    def read_all(self, path: str) -> pd.DataFrame:
        """Discover the directory tree and read everything."""
        return self._dataset(path).to_table().to_pandas()

    def read_selective(self, path: str, date: str, store_ids: list[int]) -> pd.DataFrame:
        """Filter expression (prunes partition directories, then filters rows)."""
        expr = (ds.field("date") == date) & ds.field("store_id").isin(store_ids)
        return self._dataset(path).to_table(filter=expr).to_pandas()

    def append(self, data: Frame, path: str) -> None:
        """Write new files with a unique basename next to the existing ones."""
        template = f"append-{uuid.uuid4().hex}-{{i}}.parquet"
        self._write(data, path, ["date"], template)

    def open(self, path: str) -> object:
        """Directory discovery (lists every partition directory)."""
        return self._dataset(path)

    def read_one_partition(self, path: str, predicate: Predicate) -> pd.DataFrame:
        """Discovery plus a filter expression."""
        return self._dataset(path).to_table(filter=to_expression(predicate)).to_pandas()

    def gc(self, path: str) -> None:
        """No metadata, so nothing is ever unreferenced."""
        raise Unsupported("pyarrow.dataset has no notion of unreferenced files")

    def make_garbage(self, garbage: Frame, replacement: Frame, path: str, part: str) -> None:
        """Not applicable (see :meth:`gc`)."""
        raise Unsupported("pyarrow.dataset has no notion of unreferenced files")

    def count_rows(self, path: str) -> int:
        """Rows from the Parquet footers."""
        return int(self._dataset(path).count_rows())

    def count_partitions(self, handle: object) -> int | None:
        """Distinct partition directories among the discovered files."""
        assert isinstance(handle, ds.FileSystemDataset)
        return len({file.rsplit("/", 1)[0] for file in handle.files})
