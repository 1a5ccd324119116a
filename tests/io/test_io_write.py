"""dataset_kit.io.write: how blobs are written (sequentially or on threads)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

import dataset_kit as dk
from dataset_kit.store import BlobInfo, Capability, DelegatingStore, LocalStore


class _ThreadRecorder(DelegatingStore):
    """Records the names of the threads that put blobs."""

    def __init__(self, inner: LocalStore, *, network: bool) -> None:
        caps = inner.capabilities | {Capability.CONCURRENT_IO} if network else None
        super().__init__(inner, capabilities=caps)
        self.threads: set[str] = set()

    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        if key.endswith(".parquet"):
            self.threads.add(threading.current_thread().name)
        return super()._put(key, data, if_absent=if_absent, if_match=if_match)


def _small_partitions(n: int) -> pd.DataFrame:
    return pd.DataFrame({"p": np.repeat(np.arange(n), 3), "x": np.arange(3 * n, dtype=float)})


def test_small_blobs_on_a_local_store_are_written_sequentially(tmp_path: Path) -> None:
    store = _ThreadRecorder(LocalStore(tmp_path), network=False)
    dk.write_dataset(_small_partitions(40), store=store, dataset_uuid="w", partition_on="p")
    assert store.threads == {threading.current_thread().name}


def test_small_blobs_on_a_network_store_are_written_on_threads(tmp_path: Path) -> None:
    store = _ThreadRecorder(LocalStore(tmp_path), network=True)
    df = _small_partitions(40)
    dk.write_dataset(df, store=store, dataset_uuid="w", partition_on="p")
    assert store.threads and all(name.startswith("dk-write") for name in store.threads)
    back = dk.read_table(store=store, dataset_uuid="w").sort_values("x", ignore_index=True)
    pd.testing.assert_frame_equal(back[["p", "x"]], df, check_dtype=False)
