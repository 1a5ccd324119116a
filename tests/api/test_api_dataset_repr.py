"""The Dataset handle in Jupyter: rich HTML view and the partition-size histogram."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import InvalidInputError
from dataset_kit.store import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    kv = MemoryStore()
    df = pd.DataFrame({"day": [1, 1, 2, 3], "<b>name": ["a", "b", "c", "d"], "x": [1, 2, 3, 4]})
    dk.write_dataset(df, store=kv, dataset_uuid="sales", partition_on="day")
    dk.update_dataset(df.assign(day=4), store=kv, dataset_uuid="sales")
    dk.build_dataset_indices(store=kv, dataset_uuid="sales", columns="x")
    return kv


def test_repr_html_shows_versions_partitions_rows_bytes_schema(store: MemoryStore) -> None:
    ds = dk.open_dataset(store=store, dataset_uuid="sales")
    html = ds._repr_html_()
    assert "<code>sales</code>" in html and "version <strong>2</strong>" in html
    assert "<td>4</td>" in html  # partitions
    assert "<td>8</td>" in html  # rows
    assert "KiB" in html or " B<" in html  # bytes, for people
    assert "rows per file" in html and "min 1 / median 2 / max 4" in html
    assert "versions (3 retained)" in html
    for operation in ("write", "append", "build_indices"):
        assert f"<td>{operation}</td>" in html
    assert "schema (3 columns)" in html
    assert "<td>day</td><td><code>int64</code></td><td>partition</td>" in html
    assert "<td>x</td><td><code>int64</code></td><td>indexed</td>" in html
    assert "&lt;b&gt;name" in html and "<b>name" not in html  # escaped


def test_repr_html_of_an_old_version_lists_versions_up_to_it(store: MemoryStore) -> None:
    html = dk.open_dataset(store=store, dataset_uuid="sales", version=0)._repr_html_()
    assert "version <strong>0</strong>" in html and "versions (1 retained)" in html
    assert "<td>append</td>" not in html


def test_repr_html_of_an_empty_dataset() -> None:
    kv = MemoryStore()
    dk.write_dataset(pd.DataFrame({"a": pd.Series([], dtype="int64")}), store=kv, dataset_uuid="e")
    html = dk.open_dataset(store=kv, dataset_uuid="e")._repr_html_()
    assert "<td>0</td>" in html and "rows per file" not in html


def test_plot_partition_sizes_draws_a_histogram(store: MemoryStore) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = dk.open_dataset(store=store, dataset_uuid="sales")
    ax = ds.plot_partition_sizes(bins=4)
    try:
        counts = [patch.get_height() for patch in ax.patches]
        assert sum(counts) == ds.num_partitions == 4
        assert ax.get_xlabel() == "rows per partition file"
        fig, ax2 = plt.subplots()
        assert ds.plot_partition_sizes(by="bytes", ax=ax2) is ax2
        plt.close(fig)
    finally:
        plt.close(ax.figure)
    with pytest.raises(InvalidInputError):
        ds.plot_partition_sizes(by="files")


def test_plot_without_matplotlib_says_how_to_install(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"dataset-kit\[plot\]"):
        dk.open_dataset(store=store, dataset_uuid="sales").plot_partition_sizes()
