"""dataset_kit.io.write: how blobs are written (sequentially or on threads)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

import dataset_kit as dk
from dataset_kit.store import LocalStore
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
