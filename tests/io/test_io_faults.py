"""Every dataset operation completes with identical results under injected store faults.

The stack is ``RetryingStore(FaultInjectingStore(LocalStore))``: transient failures of
idempotent operations are retried by the store layer; failed conditional writes (commit
snapshots, pointer CAS), including writes that happened but reported failure, are resolved
by the commit protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.store import FaultInjectingStore, LocalStore, RetryingStore, Store

UUID = "faulty"


def frame(day: int, n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [f"2024-01-{day:02d}"] * n,
            "store_id": [i % 5 for i in range(n)],
            "sales": [float(day * 100 + i) for i in range(n)],
        }
    )


def scenario(store: Store) -> list[Any]:
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


@pytest.mark.parametrize(("fail_rate", "seed"), [(0.1, 1), (0.2, 2), (0.3, 3)])
def test_results_are_identical_under_injected_faults(
    tmp_path: Path, fail_rate: float, seed: int
) -> None:
    clean = scenario(LocalStore(tmp_path / "clean"))
    faulty = FaultInjectingStore(
        LocalStore(tmp_path / "faulty"),
        fail_rate=fail_rate,
        fail_after_write_rate=fail_rate / 4,
        seed=seed,
    )
    store = RetryingStore(faulty, attempts=25, base_delay=0.0005, max_delay=0.01)
    got = scenario(store)
    assert len(got) == len(clean)
    for a, b in zip(got, clean, strict=True):
        if isinstance(a, pd.DataFrame):
            assert_frame_equal(a, b)
        else:
            assert a == b
    injected = sum(s.faults + s.unknown_outcome for s in faulty.stats.values())
    calls = sum(s.calls for s in faulty.stats.values())
    assert injected >= max(5, calls * fail_rate / 2), faulty.stats  # they really happened


def test_conditional_writes_are_not_retried_blindly(tmp_path: Path) -> None:
    faulty = FaultInjectingStore(
        LocalStore(tmp_path), fail_after_write_rate=1.0, seed=0, operations=frozenset({"put"})
    )
    store = RetryingStore(faulty, attempts=5, base_delay=0)
    from dataset_kit.exceptions import StoreUnavailableError

    with pytest.raises(StoreUnavailableError):
        store.put("snap", b"1", if_absent=True)  # happened, but reported failure
    # a blind retry would now report KeyExistsError and hide that the write was ours
    assert faulty.stats["put"].calls == 1
    assert store.get("snap") == b"1"
