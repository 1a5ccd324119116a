"""Raw ``pyarrow.dataset`` with hive partitioning (directory discovery, no metadata)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks import compute
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

    def gc(self, path: str, *, lite: bool = False) -> None:
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

    def pipeline_modules(self) -> list[str]:
        """dask.dataframe (W6's raw dask variant)."""
        return ["dask", "dask.dataframe", "distributed"]

    def repartition(self, source: str, target: str, *, variant: str, client: Any) -> None:
        """W6. ``stream``: ``ds.write_dataset(ds.dataset(source), partitioning=["store_id"])``
        in this process. ``dask``: raw dask.dataframe, ``read_parquet`` (hive) ->
        ``shuffle("store_id")`` -> ``to_parquet(partition_on=["store_id"])`` on ``client``.
        """
        if variant == "stream":
            ds.write_dataset(
                self._dataset(source),
                target,
                format="parquet",
                partitioning=["store_id"],
                partitioning_flavor="hive",
                basename_template="part-{i}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                max_partitions=MAX_PARTITIONS,
                # tuned: with the default (0) every slice of an incoming batch becomes a
                # row group of its own: 110 s instead of 9.5 s at 1M rows here
                min_rows_per_group=65_536,
            )
        elif variant == "dask":
            import dask.dataframe as dd

            ddf = dd.read_parquet(source).shuffle("store_id")
            written = ddf.to_parquet(
                target, partition_on=["store_id"], write_index=False, compute=False
            )
            if client is not None:
                client.compute(written).result()
            else:
                written.compute(scheduler="threads")
        else:
            raise ValueError(f"unknown variant {variant!r}")

    def compute(
        self, source: str, target: str, *, variant: str, client: Any, func_format: str
    ) -> None:
        """The hand-written loop: per fragment, read it, apply the function and
        ``pq.write_table`` the result into the same ``part=<value>`` directory under
        ``target``; one thread (``loop``) or a ThreadPool of 2 (``loop2``).

        ``loop2-strdict`` is ``loop2`` with dataset_kit's Parquet choice: dictionary
        encoding for the string columns only (``pq.write_table``'s default tries it on
        every column, which makes the write about 2.5x slower on this data).
        """
        fragments = list(self._dataset(source).get_fragments())
        options: dict[str, Any] = {}

        def one(fragment: ds.Fragment) -> None:
            keys = ds.get_partition_keys(fragment.partition_expression)
            table = fragment.to_table()
            if func_format == "arrow":
                out = compute.revenue_arrow(table)
            else:
                frame = compute.revenue_pandas(table.to_pandas())
                out = pa.Table.from_pandas(frame, preserve_index=False)
            if not out.num_rows:
                return
            directory = os.path.join(target, *(f"{k}={v}" for k, v in keys.items()))
            os.makedirs(directory, exist_ok=True)
            pq.write_table(out, os.path.join(directory, "part-0.parquet"), **options)

        if variant == "loop2-strdict":
            schema = self._dataset(source).schema
            text = (pa.types.is_string, pa.types.is_large_string)
            options["use_dictionary"] = [f.name for f in schema if any(t(f.type) for t in text)]
            variant = "loop2"
        if variant == "loop":
            for fragment in fragments:
                one(fragment)
        elif variant == "loop2":
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(one, fragments))
        else:
            raise ValueError(f"unknown variant {variant!r}")
