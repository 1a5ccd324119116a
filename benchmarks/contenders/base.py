"""The interface every contender implements, plus small shared helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

Frame: TypeAlias = pd.DataFrame | pa.Table
"""Input data: a pandas DataFrame or an Arrow table (the contender's native format)."""
Predicate: TypeAlias = list[list[tuple[str, str, Any]]]
"""Disjunctive normal form, plateau style: ``[[("col", "==", v), ...], ...]``."""


class Unsupported(NotImplementedError):
    """The library has no such feature (reported as ``n/a``, not as missing code)."""


@dataclass(frozen=True)
class Location:
    """Where a dataset lives: a local directory, or a container of the run's Azurite."""

    path: str | None = None
    container: str | None = None
    connection_string: str | None = None

    @property
    def is_azure(self) -> bool:
        """True for an Azurite container."""
        return self.container is not None

    def local_path(self) -> str:
        """The directory (Unsupported for a container)."""
        if self.path is None:
            raise Unsupported("this contender runs on the local store only")
        return self.path


class Contender(ABC):
    """One library under test. Timed methods take a dataset directory ``path``.

    Reads return pandas DataFrames for every contender, so W2/W3/W5-read all
    measure "dataset to pandas".
    """

    name: ClassVar[str]
    native_input: ClassVar[str]

    @abstractmethod
    def write(self, data: Frame, path: str, partition_on: list[str]) -> None:
        """Write a new dataset at ``path`` partitioned on ``partition_on``."""

    @abstractmethod
    def read_all(self, path: str) -> pd.DataFrame:
        """Read the whole dataset."""

    @abstractmethod
    def read_selective(self, path: str, date: str, store_ids: list[int]) -> pd.DataFrame:
        """Read rows with ``date == date`` and ``store_id in store_ids``."""

    @abstractmethod
    def append(self, data: Frame, path: str) -> None:
        """Append ``data`` (one new date) to the dataset."""

    @abstractmethod
    def open(self, path: str) -> object:
        """Load the dataset's metadata so it can be queried; return the handle."""

    @abstractmethod
    def read_one_partition(self, path: str, predicate: Predicate) -> pd.DataFrame:
        """Read the rows matching ``predicate`` (one partition)."""

    @abstractmethod
    def gc(self, path: str, *, lite: bool = False) -> None:
        """Delete unreferenced data files (raise :class:`Unsupported` if impossible).

        Default: the library's GC that lists the dataset, so it also finds the files of
        writers that died before committing. ``lite``: only what the metadata says the
        newest version no longer needs, without a listing (W7-lite).
        """

    # Untimed helpers used for setup and verification.

    @abstractmethod
    def make_garbage(self, garbage: Frame, replacement: Frame, path: str, part: str) -> None:
        """Write ``garbage`` partitioned on ``part``, then overwrite it with ``replacement``."""

    @abstractmethod
    def count_rows(self, path: str) -> int:
        """Number of rows the dataset at ``path`` holds."""

    @abstractmethod
    def count_partitions(self, handle: object) -> int | None:
        """Partitions known to an :meth:`open` handle (None: cannot tell)."""

    # Pipeline workloads (W8-W10). Not every library has them: the defaults say so.

    def pipeline_modules(self) -> list[str]:
        """Modules the pipeline methods import lazily; imported before timing (and on
        cluster workers), like every other import."""
        return []

    def compute(
        self, source: str, target: str, *, variant: str, client: Any, func_format: str
    ) -> None:
        """W8: apply the :mod:`benchmarks.compute` function to every partition of the
        dataset at ``source``, writing a dataset partitioned on ``part`` at ``target``.

        ``client`` is a ``distributed.Client`` for the ``cluster`` variant, else None;
        ``func_format`` is ``"arrow"`` or ``"pandas"`` (which function flavour to use).
        """
        raise Unsupported(f"{self.name} has no per-partition compute")

    def repartition(self, source: str, target: str, *, variant: str, client: Any) -> None:
        """W6: rewrite the W1 dataset at ``source`` partitioned on ``store_id`` at
        ``target`` (``client``: a ``distributed.Client`` for cluster variants, else None)."""
        raise Unsupported(f"{self.name} has no repartition")

    def gc_at(self, location: Location) -> None:
        """W9: delete the unreferenced data files at ``location`` (default: :meth:`gc`)."""
        self.gc(location.local_path())

    def count_rows_at(self, location: Location) -> int:
        """Rows of the dataset at ``location`` (default: :meth:`count_rows`)."""
        return self.count_rows(location.local_path())

    def backup(self, source: Location, target: Location, *, variant: str) -> int:
        """W10: copy the dataset_kit dataset at ``source`` to ``target``; return the number
        of Parquet data blobs copied."""
        raise Unsupported(f"{self.name} has no backup")


def as_arrow(data: Frame) -> pa.Table:
    """Arrow table of ``data`` (converts pandas input, without the index)."""
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def as_pandas(data: Frame) -> pd.DataFrame:
    """pandas DataFrame of ``data``."""
    if isinstance(data, pd.DataFrame):
        return data
    return data.to_pandas()


_OPS = {"==": "__eq__", "=": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__"}
_OPS |= {">": "__gt__", ">=": "__ge__"}


def to_expression(predicate: Predicate) -> ds.Expression:
    """Convert a DNF predicate into a pyarrow dataset expression."""
    disjunction: ds.Expression | None = None
    for conjunction in predicate:
        expr: ds.Expression | None = None
        for column, op, value in conjunction:
            field = ds.field(column)
            term = field.isin(list(value)) if op == "in" else getattr(field, _OPS[op])(value)
            expr = term if expr is None else expr & term
        if expr is None:
            raise ValueError("empty conjunction")
        disjunction = expr if disjunction is None else disjunction | expr
    if disjunction is None:
        raise ValueError("empty predicate")
    return disjunction
