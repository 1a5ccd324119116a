"""A read-only handle on one version of a dataset, for notebooks and tools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.io import commit as _commit
from dataset_kit.io import read as _read
from dataset_kit.store import Store, open_store

__all__ = ["Dataset", "open_dataset"]


class Dataset:
    """One version of a dataset: metadata, figures and reads pinned to that version.

    Obtain it with :func:`open_dataset`.
    """

    def __init__(self, store: Store, meta: DatasetMetadata) -> None:
        self.store = store
        self.meta = meta

    @property
    def uuid(self) -> str:
        """The dataset uuid."""
        return self.meta.uuid

    @property
    def version(self) -> int | None:
        """The version this handle reads (None: written by another tool, not yet adopted)."""
        return self.meta.version

    @property
    def schema(self) -> pa.Schema:
        """The exact logical schema."""
        return _read.logical_schema(self.meta)

    @property
    def partition_keys(self) -> tuple[str, ...]:
        """Partition columns."""
        return self.meta.partition_keys

    @property
    def secondary_indices(self) -> tuple[str, ...]:
        """Columns with a secondary index."""
        return self.meta.secondary_indices

    @property
    def num_partitions(self) -> int:
        """Number of partitions (data blobs)."""
        return self.meta.num_partitions

    @property
    def num_rows(self) -> int | None:
        """Total rows, if every partition's count is recorded (None otherwise)."""
        if len(self.meta.stats) != len(self.meta.partitions):
            return None
        return sum(r for r, _ in self.meta.stats.values())

    @property
    def nbytes(self) -> int | None:
        """Total size of the data blobs, if recorded (None otherwise)."""
        if len(self.meta.stats) != len(self.meta.partitions):
            return None
        return sum(b for _, b in self.meta.stats.values())

    def versions(self) -> list[dict[str, Any]]:
        """The retained versions of the current history, oldest first, with commit info."""
        return [
            {"version": m.version, "partitions": m.num_partitions, **dict(m.commit)}
            for m in _commit.iter_snapshots(self.store, self.uuid)
        ]

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary: version, partitions, rows, bytes, schema, indices."""
        return {
            "uuid": self.uuid,
            "version": self.version,
            "partition_keys": list(self.partition_keys),
            "secondary_indices": list(self.secondary_indices),
            "partitions": self.num_partitions,
            "rows": self.num_rows,
            "bytes": self.nbytes,
            "schema": {f.name: str(f.type) for f in self.schema},
            "metadata": dict(self.meta.metadata),
            "commit": dict(self.meta.commit),
        }

    def read_table(
        self,
        *,
        columns: Sequence[str] | None = None,
        predicates: Any = None,
        output: str = "pandas",
    ) -> Any:
        """Read this version (see :func:`dataset_kit.read_table`)."""
        from dataset_kit.api.eager import _finish

        plan = _read.plan_read(self.store, self.meta, columns=columns, predicates=predicates)
        table = _read.concat(plan, _read.read_partitions(self.store, plan))
        return _finish(plan, table, output, None)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"<Dataset {self.uuid!r} version={self.version} partitions={self.num_partitions} "
            f"rows={self.num_rows}>"
        )


def open_dataset(*, store: Any, dataset_uuid: str, version: int | None = None) -> Dataset:
    """Open a dataset (the newest version, or ``version``) for inspection and reads.

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError, MetadataFormatError

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"a": [1, 2]}), store=store, dataset_uuid="d")
    >>> ds = dk.open_dataset(store=store, dataset_uuid="d")
    >>> ds.version, ds.num_rows
    (0, 2)
    """
    kv = open_store(store)
    return Dataset(kv, _commit.load_version(kv, dataset_uuid, version))
