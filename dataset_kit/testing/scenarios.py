"""Reusable dataset scenarios for reliability tests (fault injection, every store)."""

from __future__ import annotations

from typing import Any

import pandas as pd

import dataset_kit as dk
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.store import Store

__all__ = ["UUID", "compare_results", "roll_back", "run_scenario"]

UUID = "faulty"


def frame(day: int, n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [f"2024-01-{day:02d}"] * n,
            "store_id": [i % 5 for i in range(n)],
            "sales": [float(day * 100 + i) for i in range(n)],
        }
    )


def run_scenario(store: Store) -> list[Any]:
    """Run a realistic sequence of operations; return what each read saw."""
    seen: list[Any] = []
    dk.write_dataset(
        pd.concat([frame(1), frame(2)]),
        store=store,
        dataset_uuid=UUID,
        partition_on="day",
        secondary_indices="store_id",
    )
    for day in (3, 4, 5):
        dk.update_dataset(frame(day), store=store, dataset_uuid=UUID)
    dk.update_dataset(
        frame(2, 5), store=store, dataset_uuid=UUID, delete_scope=[{"day": "2024-01-02"}]
    )
    seen.append(dk.read_table(store=store, dataset_uuid=UUID))
    seen.append(
        dk.read_table(
            store=store,
            dataset_uuid=UUID,
            predicates=[[("store_id", "==", 3)], [("day", ">=", "2024-01-05")]],
        )
    )
    seen.append(dk.read_table(store=store, dataset_uuid=UUID, version=0))
    seen.append(
        [len(f) for f in dk.iter.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)]
    )
    seen.append(
        # the count itself may differ: failed attempts leave extra garbage behind
        dk.garbage_collect(store=store, dataset_uuid=UUID, grace_period=0, keep_versions=1).count
        > 0
    )
    seen.append(dk.read_table(store=store, dataset_uuid=UUID))
    seen.append(dk.list_datasets(store))
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    seen.append(dk.list_datasets(store))
    return seen


def compare_results(got: list[Any], expected: list[Any]) -> None:
    """Assert two :func:`run_scenario` results are identical (frames compared exactly)."""
    from pandas.testing import assert_frame_equal

    if len(got) != len(expected):
        raise AssertionError(f"{len(got)} results, expected {len(expected)}")
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, pd.DataFrame):
            assert_frame_equal(a, b)
        elif a != b:
            raise AssertionError(f"{a!r} != {b!r}")


def roll_back(store: Store, dataset_uuid: str, version: int) -> DatasetMetadata:
    """Commit the partitions of an older ``version`` again as the next version: the kind
    of commit that references blobs a garbage collection may have planned to delete."""
    from dataset_kit.io import commit as _commit

    old = _commit.load_version(store, dataset_uuid, version)
    return _commit.commit(
        store,
        dataset_uuid,
        base=_commit.resolve(store, dataset_uuid),
        build=lambda cur: cur.evolve(partitions=old.partitions, stats=old.stats) if cur else old,
        on_conflict=lambda base, new: None,
        operation="rollback",
    )
