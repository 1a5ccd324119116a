"""dataset_kit through its public API; missing names report "not implemented"."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pandas as pd

from benchmarks import compute
from benchmarks.contenders.base import Contender, Frame, Location, Predicate, as_pandas

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

    def gc(self, path: str, *, lite: bool = False) -> None:
        """``dk.garbage_collect`` keeping the newest version only, with no grace period
        (what deltalake's ``vacuum(retention_hours=0)`` and plateau's GC do); ``lite``:
        ``scan=False, expire=True``, as the docs recommend for routine runs."""
        options = {"scan": False, "expire": True} if lite else {}
        self._api("garbage_collect")(
            store=self._store(path), dataset_uuid=UUID, grace_period=0, keep_versions=1, **options
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

    # Pipelines (W8-W10): ``dk.pipelines``, on the local threaded scheduler unless a
    # cluster client is given.

    def _pipelines(self) -> Any:
        pipelines = getattr(self._dk, "pipelines", None)
        if pipelines is None:
            raise NotImplementedError("dataset_kit.pipelines does not exist yet")
        return pipelines

    def _store_at(self, location: Location) -> Any:
        if location.is_azure:
            return self._api("open_store")(
                f"azure://{location.container}", connection_string=location.connection_string
            )
        return self._store(location.local_path())

    def pipeline_modules(self) -> list[str]:
        """dask, the pipelines and the Azure backend."""
        return ["dask", "dataset_kit.pipelines", "dataset_kit.store.azure", "azure.storage.blob"]

    def compute(
        self, source: str, target: str, *, variant: str, client: Any, func_format: str
    ) -> None:
        """``dk.pipelines.map_partitions(...).compute(scheduler=client or "threads")``."""
        arrow = func_format == "arrow"
        job = self._pipelines().map_partitions(
            compute.revenue_arrow if arrow else compute.revenue_pandas,
            source=UUID,
            target=UUID,
            store=self._store(source),
            target_store=self._store(target),
            partition_on=["part"],
            input="arrow" if arrow else "pandas",
        )
        job.compute(scheduler=client if client is not None else "threads")

    def repartition(self, source: str, target: str, *, variant: str, client: Any) -> None:
        """``dk.pipelines.repartition(partition_on="store_id")`` on the cluster or the
        local threaded scheduler; the default shuffle (staged through the local target
        store), or P2P for ``cluster-p2p``."""
        job = self._pipelines().repartition(
            UUID,
            UUID,
            store=self._store(source),
            target_store=self._store(target),
            partition_on=["store_id"],
            shuffle_method="p2p" if variant == "cluster-p2p" else None,
        )
        job.compute(scheduler=client if client is not None else "threads")

    def gc_at(self, location: Location) -> None:
        """``dk.pipelines.garbage_collect(grace_period=0, keep_versions=1)`` on threads."""
        job = self._pipelines().garbage_collect(
            UUID, store=self._store_at(location), grace_period=0, keep_versions=1
        )
        job.compute(scheduler="threads")

    def count_rows_at(self, location: Location) -> int:
        """Rows of a full ``read_table``."""
        return len(self._api("read_table")(store=self._store_at(location), dataset_uuid=UUID))

    def backup(self, source: Location, target: Location, *, variant: str) -> int:
        """``dk.pipelines.backup(...).compute(scheduler="threads")``; blobs it copied.

        Variant ``link``: ``link=True`` (hard links where both stores are local)."""
        if variant not in ("", "link"):
            raise ValueError(f"unknown variant {variant!r}")
        job = self._pipelines().backup(
            UUID,
            source=self._store_at(source),
            target=self._store_at(target),
            **({"link": True} if variant == "link" else {}),
        )
        copied: int = job.compute(scheduler="threads").copied
        return copied
