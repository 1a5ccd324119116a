"""dataset_kit.io.write: how blobs are written (sequentially or on threads, sorted)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import InvalidInputError, StoreError
from dataset_kit.io import blobs
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


# --------------------------------------------------------------------------- batches
class _PutLog(LocalStore):
    """Logs each put with the number of blobs encoded by then."""

    def __init__(self, root: Path, encoded: list[int]) -> None:
        super().__init__(root)
        self.encoded = encoded
        self.puts: list[int] = []

    def _put(self, key: str, data: bytes | memoryview, **kw: object) -> object:  # type: ignore[override]
        self.puts.append(self.encoded[0])
        return super()._put(key, data, **kw)  # type: ignore[arg-type]


def _logged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> tuple[_PutLog, list[int]]:
    encoded = [0]
    real = blobs.table_to_parquet

    def counting(*args: object, **kw: object) -> bytes:
        encoded[0] += 1
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(blobs, "table_to_parquet", counting)
    store = _PutLog(tmp_path, encoded)
    dk.write_dataset(_small_partitions(n), store=store, dataset_uuid="b", partition_on="p")
    return store, store.puts


def test_small_blobs_are_encoded_in_batches_before_they_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of BATCH_BLOBS: every blob of a batch is encoded before the first is put."""
    monkeypatch.setattr(blobs, "BATCH_BLOBS", 4)
    store, puts = _logged_write(tmp_path, monkeypatch, 10)
    data_puts = puts[:10]  # then the commit's metadata
    assert data_puts == [4, 4, 4, 4, 8, 8, 8, 8, 10, 10]
    back = dk.read_table(store=store, dataset_uuid="b").sort_values("x", ignore_index=True)
    pd.testing.assert_frame_equal(back[["p", "x"]], _small_partitions(10), check_dtype=False)


def test_a_batch_is_stored_once_its_blobs_reach_batch_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BATCH_BYTES bounds a batch's memory: with a bound below one blob, each is put at once."""
    monkeypatch.setattr(blobs, "BATCH_BYTES", 1)
    _, puts = _logged_write(tmp_path, monkeypatch, 6)
    assert puts[:6] == [1, 2, 3, 4, 5, 6]


class _FullDisk(LocalStore):
    """Refuses the blobs of partition ``p=5``."""

    def _put(self, key: str, data: bytes | memoryview, **kw: object) -> object:  # type: ignore[override]
        if "/p=5/" in key:
            raise StoreError("no space left on device (injected)", key=key)
        return super()._put(key, data, **kw)  # type: ignore[arg-type]


def test_a_failed_put_in_a_batch_fails_the_write_and_keeps_the_last_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "BATCH_BLOBS", 4)
    store = _FullDisk(tmp_path)
    dk.write_dataset(_small_partitions(3), store=store, dataset_uuid="f", partition_on="p")
    with pytest.raises(StoreError, match="injected"):
        dk.update_dataset(_small_partitions(8), store=store, dataset_uuid="f", partition_on="p")
    back = dk.read_table(store=store, dataset_uuid="f")
    assert len(back) == 9 and dk.open_dataset(store=store, dataset_uuid="f").version == 0
    # the blobs stored before the failure are garbage, which GC removes
    assert dk.garbage_collect(store=store, dataset_uuid="f", grace_period=0).count == 5
