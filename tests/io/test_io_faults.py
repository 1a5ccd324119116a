"""Every dataset operation completes with identical results under injected store faults.

The stack is ``RetryingStore(FaultInjectingStore(LocalStore))``: transient failures of
idempotent operations are retried by the store layer; failed conditional writes (commit
snapshots, pointer CAS), including writes that happened but reported failure, are resolved
by the commit protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_kit.exceptions import CommitStateUnknownError, StoreUnavailableError
from dataset_kit.store import DelegatingStore, FaultInjectingStore, LocalStore, RetryingStore
from dataset_kit.testing.scenarios import compare_results, run_scenario


@pytest.mark.parametrize(("fail_rate", "seed"), [(0.1, 1), (0.2, 2), (0.3, 3)])
def test_results_are_identical_under_injected_faults(
    tmp_path: Path, fail_rate: float, seed: int
) -> None:
    clean = run_scenario(LocalStore(tmp_path / "clean"))
    faulty = FaultInjectingStore(
        LocalStore(tmp_path / "faulty"),
        fail_rate=fail_rate,
        fail_after_write_rate=fail_rate / 4,
        seed=seed,
    )
    store = RetryingStore(faulty, attempts=25, base_delay=0.0005, max_delay=0.01)
    compare_results(run_scenario(store), clean)
    injected = sum(s.faults + s.unknown_outcome for s in faulty.stats.values())
    calls = sum(s.calls for s in faulty.stats.values())
    assert injected >= max(5, calls * fail_rate / 2), faulty.stats  # they really happened


def test_conditional_writes_are_not_retried_blindly(tmp_path: Path) -> None:
    faulty = FaultInjectingStore(
        LocalStore(tmp_path), fail_after_write_rate=1.0, seed=0, operations=frozenset({"put"})
    )
    store = RetryingStore(faulty, attempts=5, base_delay=0)
    with pytest.raises(StoreUnavailableError):
        store.put("snap", b"1", if_absent=True)  # happened, but reported failure
    # a blind retry would now report KeyExistsError and hide that the write was ours
    assert faulty.stats["put"].calls == 1
    assert store.get("snap") == b"1"


class _PointerDown(DelegatingStore):
    """Every write of the dataset pointer fails (before it happens)."""

    def _put(self, key, data, *, if_absent, if_match):  # type: ignore[no-untyped-def]
        if key.endswith(".by-dataset-metadata.json"):
            raise StoreUnavailableError("injected: pointer unwritable", key=key)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def test_unwritable_pointer_of_a_new_dataset_is_reported(tmp_path: Path) -> None:
    import pandas as pd

    import dataset_kit as dk

    store = _PointerDown(LocalStore(tmp_path))
    with pytest.raises(CommitStateUnknownError, match="not visible"):
        dk.write_dataset(pd.DataFrame({"a": [1]}), store=store, dataset_uuid="new")
    assert dk.list_datasets(store) == []


def test_unwritable_pointer_of_an_existing_dataset_only_lags(tmp_path: Path) -> None:
    import pandas as pd

    import dataset_kit as dk

    dk.write_dataset(pd.DataFrame({"a": [1]}), store=str(tmp_path), dataset_uuid="old")
    meta = dk.update_dataset(
        pd.DataFrame({"a": [2]}), store=_PointerDown(LocalStore(tmp_path)), dataset_uuid="old"
    )
    assert meta.version == 1
    # readers probe past the lagging pointer; the next commit repairs it
    assert dk.read_table(store=str(tmp_path), dataset_uuid="old")["a"].tolist() == [1, 2]
    dk.update_dataset(pd.DataFrame({"a": [3]}), store=str(tmp_path), dataset_uuid="old")
    assert dk.read_table(store=str(tmp_path), dataset_uuid="old")["a"].tolist() == [1, 2, 3]
