"""dataset_kit.io.write: how blobs are written (sequentially or on threads, sorted)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import InvalidInputError
from dataset_kit.store import LocalStore, Store
from dataset_kit.testing.recording import ThreadRecordingStore


def _small_partitions(n: int) -> pd.DataFrame:
    return pd.DataFrame({"p": np.repeat(np.arange(n), 3), "x": np.arange(3 * n, dtype=float)})


def test_small_blobs_on_a_local_store_are_written_sequentially(tmp_path: Path) -> None:
    store = ThreadRecordingStore(LocalStore(tmp_path), network=False)
    dk.write_dataset(_small_partitions(40), store=store, dataset_uuid="w", partition_on="p")
    assert store.threads == {threading.current_thread().name}


def test_small_blobs_on_a_network_store_are_written_on_threads(tmp_path: Path) -> None:
    store = ThreadRecordingStore(LocalStore(tmp_path), network=True)
    df = _small_partitions(40)
    dk.write_dataset(df, store=store, dataset_uuid="w", partition_on="p")
    assert store.threads and all(name.startswith("dk-write") for name in store.threads)
    back = dk.read_table(store=store, dataset_uuid="w").sort_values("x", ignore_index=True)
    pd.testing.assert_frame_equal(back[["p", "x"]], df, check_dtype=False)


def _file_order(store: Store, column: str) -> list[object]:
    """The rows of the dataset's one blob, in file order."""
    return dk.read_table(store=store, dataset_uuid="s")[column].tolist()


def test_sort_partitions_by_categoricals() -> None:
    # once a bare ArrowNotImplementedError: Arrow cannot sort dictionaries
    cats = ["b", "c", "a"]
    df = pd.DataFrame(
        {
            "u": pd.Categorical(["b", "a", None, "c"], categories=cats),
            "o": pd.Categorical(["b", "a", None, "c"], categories=cats, ordered=True),
            "h": np.array([2.0, -1.0, np.nan, 0.5], "float16"),
            "x": [0, 1, 2, 3],
        }
    )
    for column in ("u", "o", "h"):
        store = dk.open_store("memory://")
        dk.write_dataset(df, store=store, dataset_uuid="s", sort_partitions_by=column)
        # pandas: nulls last; ordered categoricals by category order, the others by value
        key = df[column].astype(str) if column == "u" else df[column]
        expected = df.loc[key.where(df[column].notna()).sort_values().index, "x"].tolist()
        assert _file_order(store, "x") == expected, column


def test_sort_partitions_by_an_unsortable_column_is_an_input_error() -> None:
    df = pd.DataFrame({"l": [[1], [2]], "x": [1, 2]})
    store = dk.open_store("memory://")
    with pytest.raises(InvalidInputError, match=r"'l'.*cannot be sorted"):
        dk.write_dataset(df, store=store, dataset_uuid="s", sort_partitions_by="l")
    assert dk.list_datasets(store) == []
