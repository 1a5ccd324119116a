"""Contenders: one module per library, all implementing :class:`Contender`."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from benchmarks.contenders.base import Contender, Location, Predicate, Unsupported

__all__ = [
    "CONTENDERS",
    "Contender",
    "ContenderInfo",
    "Location",
    "Predicate",
    "Unsupported",
    "load",
]


@dataclass(frozen=True)
class ContenderInfo:
    """Where a contender lives and which input format it takes natively."""

    name: str
    target: str
    native_input: str
    label: str


CONTENDERS: dict[str, ContenderInfo] = {
    info.name: info
    for info in (
        ContenderInfo(
            "dataset_kit", "benchmarks.contenders.dkit:DatasetKitContender", "pandas", "dataset_kit"
        ),
        ContenderInfo(
            "pyarrow",
            "benchmarks.contenders.pyarrow_dataset:PyArrowDatasetContender",
            "arrow",
            "pyarrow.dataset (hive)",
        ),
        ContenderInfo(
            "deltalake", "benchmarks.contenders.delta:DeltaLakeContender", "arrow", "deltalake"
        ),
        ContenderInfo(
            "plateau", "benchmarks.contenders.plateau_eager:PlateauContender", "pandas", "plateau"
        ),
        ContenderInfo(
            "naive", "benchmarks.contenders.naive:NaiveContender", "pandas", "naive loop"
        ),
    )
}


def load(name: str) -> Contender:
    """Import and instantiate the contender ``name`` (imports its library)."""
    module_name, _, class_name = CONTENDERS[name].target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    instance: Contender = cls()
    return instance
