"""The dataset API over every kind of store a user may already have."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import UnsafeCommitWarning, UnsupportedOperationError
from dataset_kit.store import KVStoreAdapter, LocalStore

FRAME = pd.DataFrame({"p": [1, 2, 2], "x": [1.0, 2.0, 3.0]})


def _minimalkv_memory() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import minimalkv

        return minimalkv.get_store_from_url("hmemory://")


def test_plain_kv_store_refuses_commits_and_writes_nothing_visible() -> None:
    store = KVStoreAdapter(_minimalkv_memory())
    with pytest.raises(UnsupportedOperationError, match="allow_unsafe_commits"):
        dk.write_dataset(FRAME, store=store, dataset_uuid="kv", partition_on="p")
    assert dk.list_datasets(store) == []
    assert list(store.iter_keys("")) == []  # refused before any blob was written


def test_kv_store_with_explicit_opt_in_round_trips() -> None:
    with pytest.warns(UnsafeCommitWarning):
        store = KVStoreAdapter(_minimalkv_memory(), allow_unsafe_commits=True)
    dk.write_dataset(FRAME, store=store, dataset_uuid="kv", partition_on="p")
    dk.update_dataset(FRAME, store=store, dataset_uuid="kv")
    assert len(dk.read_table(store=store, dataset_uuid="kv")) == 6
    assert dk.list_datasets(store) == ["kv"]


def test_hfs_url_and_minimalkv_filesystem_store_share_the_files(tmp_path: Path) -> None:
    dk.write_dataset(FRAME, store=f"hfs://{tmp_path}", dataset_uuid="fs", partition_on="p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import minimalkv

        kv = minimalkv.get_store_from_url(f"hfs://{tmp_path}")
    opened = dk.open_store(kv)
    assert isinstance(opened, LocalStore)
    pd.testing.assert_frame_equal(dk.read_table(store=kv, dataset_uuid="fs"), FRAME)
    assert (tmp_path / "fs.by-dataset-metadata.json").exists()


def test_store_given_as_factory_and_path(tmp_path: Path) -> None:
    dk.write_dataset(FRAME, store=lambda: dk.open_store(str(tmp_path)), dataset_uuid="f")
    assert len(dk.read_table(store=str(tmp_path), dataset_uuid="f")) == 3
    assert len(dk.read_table(store=f"file://{tmp_path}", dataset_uuid="f")) == 3
