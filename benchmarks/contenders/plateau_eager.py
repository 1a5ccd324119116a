"""plateau (Kartothek's successor), eager API on an ``hfs://`` minimalkv store."""

from __future__ import annotations

import functools
import os
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from minimalkv import KeyValueStore, get_store_from_url
from plateau.core.dataset import DatasetMetadata
from plateau.io.eager import (
    garbage_collect_dataset,
    read_table,
    store_dataframes_as_dataset,
    update_dataset_from_dataframes,
)

from benchmarks import compute
from benchmarks.contenders.base import (
    Contender,
    Frame,
    Location,
    Predicate,
    Unsupported,
    as_pandas,
)

UUID = "bench"


def _store(path: str) -> KeyValueStore:
    """A filesystem store with the extended keyspace (keys contain '/')."""
    return get_store_from_url(f"hfs://{os.path.abspath(path)}")


def _store_factory(path: str) -> Any:
    """A picklable factory of :func:`_store` (for dask workers)."""
    return functools.partial(get_store_from_url, f"hfs://{os.path.abspath(path)}")


def _azure_store(location: Location) -> KeyValueStore:
    """minimalkv's Azure block blob store with the extended keyspace, on Azurite."""
    from minimalkv._hstores import HAzureBlockBlobStore

    return HAzureBlockBlobStore(
        conn_string=location.connection_string,
        container=location.container,
        public=False,
        create_if_missing=False,
    )


def _store_at(location: Location) -> KeyValueStore:
    return _azure_store(location) if location.is_azure else _store(location.local_path())


class PlateauContender(Contender):
    """``plateau.io.eager`` functions; opening = ``DatasetMetadata.load_from_store``."""

    name = "plateau"
    native_input = "pandas"

    def write(self, data: Frame, path: str, partition_on: list[str]) -> None:
        """``store_dataframes_as_dataset``."""
        store_dataframes_as_dataset(
            store=_store(path), dataset_uuid=UUID, dfs=[as_pandas(data)], partition_on=partition_on
        )

    def read_all(self, path: str) -> pd.DataFrame:
        """``read_table`` without predicates."""
        return read_table(dataset_uuid=UUID, store=_store(path))

    def read_selective(self, path: str, date: str, store_ids: list[int]) -> pd.DataFrame:
        """``read_table`` with predicates (partition pruning plus pushdown)."""
        predicates = [[("date", "==", date), ("store_id", "in", store_ids)]]
        return read_table(dataset_uuid=UUID, store=_store(path), predicates=predicates)

    def append(self, data: Frame, path: str) -> None:
        """``update_dataset_from_dataframes`` (partition_on taken from the dataset)."""
        update_dataset_from_dataframes([as_pandas(data)], store=_store(path), dataset_uuid=UUID)

    def open(self, path: str) -> object:
        """Load and parse the dataset metadata JSON."""
        return DatasetMetadata.load_from_store(UUID, _store(path))

    def read_one_partition(self, path: str, predicate: Predicate) -> pd.DataFrame:
        """``read_table`` with predicates."""
        return read_table(dataset_uuid=UUID, store=_store(path), predicates=predicate)

    def gc(self, path: str, *, lite: bool = False) -> None:
        """``garbage_collect_dataset`` (it always lists the dataset)."""
        if lite:
            raise Unsupported("plateau's garbage_collect_dataset always lists the dataset")
        garbage_collect_dataset(dataset_uuid=UUID, store=_store(path))

    def make_garbage(self, garbage: Frame, replacement: Frame, path: str, part: str) -> None:
        """Write, then ``overwrite=True``: the old files stay until GC."""
        store = _store(path)
        store_dataframes_as_dataset(
            store=store, dataset_uuid=UUID, dfs=[as_pandas(garbage)], partition_on=[part]
        )
        store_dataframes_as_dataset(
            store=store,
            dataset_uuid=UUID,
            dfs=[as_pandas(replacement)],
            partition_on=[part],
            overwrite=True,
        )

    def count_rows(self, path: str) -> int:
        """Sum of the Parquet footers of the files the metadata references."""
        meta = DatasetMetadata.load_from_store(UUID, _store(path))
        root = os.path.abspath(path)
        return sum(
            pq.read_metadata(os.path.join(root, key)).num_rows
            for partition in meta.partitions.values()
            for key in partition.files.values()
        )

    def count_partitions(self, handle: object) -> int | None:
        """Partitions listed in the metadata."""
        assert isinstance(handle, DatasetMetadata)
        return len(handle.partitions)

    # Pipelines: plateau's dask API for W8, garbage_collect_dataset for W9.

    def pipeline_modules(self) -> list[str]:
        """plateau's dask layer and minimalkv's Azure store."""
        return [
            "dask",
            "plateau.io.dask.delayed",
            "plateau.io.dask.dataframe",
            "minimalkv._hstores",
            "azure.storage.blob",
        ]

    def compute(
        self, source: str, target: str, *, variant: str, client: Any, func_format: str
    ) -> None:
        """``read_dataset_as_delayed`` -> the pandas function per partition ->
        ``store_delayed_as_dataset(partition_on=["part"])``, computed on the cluster
        (``cluster``) or the local threaded scheduler (``threads``)."""
        import dask
        from plateau.io.dask.delayed import read_dataset_as_delayed, store_delayed_as_dataset

        parts = read_dataset_as_delayed(dataset_uuid=UUID, store=_store_factory(source))
        out = [dask.delayed(compute.revenue_pandas)(part) for part in parts]
        job = store_delayed_as_dataset(
            out, store=_store_factory(target), dataset_uuid=UUID, partition_on=["part"]
        )
        if client is not None:
            client.compute(job).result()
        else:
            job.compute(scheduler="threads")

    def repartition(self, source: str, target: str, *, variant: str, client: Any) -> None:
        """``read_dataset_as_ddf`` -> ``update_dataset_from_ddf(shuffle=True,
        partition_on=["store_id"])``, on the cluster (or the threaded scheduler)."""
        from plateau.io.dask.dataframe import read_dataset_as_ddf, update_dataset_from_ddf

        ddf = read_dataset_as_ddf(dataset_uuid=UUID, store=_store_factory(source))
        job = update_dataset_from_ddf(
            ddf,
            store=_store_factory(target),
            dataset_uuid=UUID,
            partition_on=["store_id"],
            shuffle=True,
        )
        if client is not None:
            client.compute(job).result()
        else:
            job.compute(scheduler="threads")

    def gc_at(self, location: Location) -> None:
        """``garbage_collect_dataset`` (one sequential ``store.delete`` per file)."""
        garbage_collect_dataset(dataset_uuid=UUID, store=_store_at(location))

    def count_rows_at(self, location: Location) -> int:
        """Local: :meth:`count_rows`; Azurite: rows of a full ``read_table``."""
        if not location.is_azure:
            return self.count_rows(location.local_path())
        return len(read_table(dataset_uuid=UUID, store=_azure_store(location)))
