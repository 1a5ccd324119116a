"""Interoperability with plateau 4.6 (the maintained Kartothek fork), both directions.

plateau must read what dataset_kit writes, dataset_kit must read what plateau writes, and
each must be able to update a dataset last written by the other.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import dataset_kit as dk
from dataset_kit.testing.frames import all_types_frame

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from plateau.api.dataset import (
        read_table as p_read_table,
    )
    from plateau.api.dataset import (
        store_dataframes_as_dataset,
        update_dataset_from_dataframes,
    )

pytestmark = [
    pytest.mark.compat,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "country": ["DE", "DE", "US", "US"],
            "day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-01"]),
            "sku": ["a", "b", "a", "c"],
            "qty": np.array([1, 2, 3, 4], dtype="int64"),
        }
    )


def row(country: str, day: str, sku: str, qty: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"country": [country], "day": pd.to_datetime([day]), "sku": [sku], "qty": [qty]}
    )


def normalized(df: pd.DataFrame) -> pd.DataFrame:
    """Values only: plateau and dataset_kit may pick different (equivalent) dtypes."""
    out = df[["country", "day", "sku", "qty"]].copy()
    out["country"] = out["country"].astype(object)
    out["sku"] = out["sku"].astype(object)
    out["day"] = out["day"].astype("datetime64[ns]")
    out["qty"] = out["qty"].astype("int64")
    return out.sort_values(["country", "day", "sku"]).reset_index(drop=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


def url(root: Path) -> str:
    return f"hfs://{root}"


def test_plateau_reads_what_we_write(root: Path) -> None:
    df = sales()
    dk.write_dataset(
        df,
        store=str(root),
        dataset_uuid="ours",
        partition_on=["country", "day"],
        secondary_indices=["sku"],
        metadata={"owner": "team-x"},
    )
    theirs = p_read_table("ours", store=url(root))
    assert_frame_equal(normalized(theirs), normalized(df))
    sel = p_read_table("ours", store=url(root), predicates=[[("sku", "==", "a")]])
    assert sorted(sel["qty"]) == [1, 3]


def test_plateau_reads_our_update_and_we_read_plateaus_update(root: Path) -> None:
    dk.write_dataset(
        sales(),
        store=str(root),
        dataset_uuid="ours",
        partition_on=["country", "day"],
        secondary_indices=["sku"],
    )
    update_dataset_from_dataframes(
        [row("FR", "2024-01-03", "d", 5)],
        store=url(root),
        dataset_uuid="ours",
        delete_scope=[{"country": "US"}],
    )
    after_plateau = dk.read_table(store=str(root), dataset_uuid="ours")
    assert sorted(after_plateau["qty"]) == [1, 2, 5]
    by_index = dk.read_table(
        store=str(root), dataset_uuid="ours", predicates=[[("sku", "==", "d")]]
    )
    assert by_index["qty"].tolist() == [5]

    meta = dk.update_dataset(row("IT", "2024-01-04", "e", 6), store=str(root), dataset_uuid="ours")
    history = dk.open_dataset(store=str(root), dataset_uuid="ours").versions()
    assert [h["operation"] for h in history] == ["write", "adopt", "append"]
    assert meta.version == 2
    theirs = p_read_table("ours", store=url(root))
    assert sorted(theirs["qty"]) == [1, 2, 5, 6]
    # the first version stays readable (time travel across the foreign write)
    assert sorted(dk.read_table(store=str(root), dataset_uuid="ours", version=0)["qty"]) == [
        1,
        2,
        3,
        4,
    ]


def test_we_read_and_update_what_plateau_writes(root: Path) -> None:
    df = sales()
    store_dataframes_as_dataset(
        store=url(root),
        dataset_uuid="theirs",
        dfs=[df],
        partition_on=["country", "day"],
        secondary_indices=["sku"],
    )
    ours = dk.read_table(store=str(root), dataset_uuid="theirs")
    assert_frame_equal(normalized(ours), normalized(df))
    sel = dk.read_table(
        store=str(root),
        dataset_uuid="theirs",
        predicates=[[("sku", "==", "a"), ("country", "==", "US")]],
    )
    assert sel["qty"].tolist() == [3]
    ds = dk.open_dataset(store=str(root), dataset_uuid="theirs")
    assert ds.version is None and ds.num_partitions == 3

    dk.update_dataset(
        row("FR", "2024-01-03", "a", 7),
        store=str(root),
        dataset_uuid="theirs",
        delete_scope=[{"sku": "c"}],
    )
    theirs = p_read_table("theirs", store=url(root))
    assert sorted(theirs["qty"]) == [1, 2, 7]
    # plateau's index was kept up to date by our commit
    sel = p_read_table("theirs", store=url(root), predicates=[[("sku", "==", "a")]])
    assert sorted(sel["qty"]) == [1, 7]
    # and plateau can update it again afterwards
    update_dataset_from_dataframes(
        [row("ES", "2024-01-05", "z", 8)], store=url(root), dataset_uuid="theirs"
    )
    assert sorted(dk.read_table(store=str(root), dataset_uuid="theirs")["qty"]) == [1, 2, 7, 8]


def test_msgpack_metadata_is_readable(root: Path) -> None:
    store_dataframes_as_dataset(
        store=url(root),
        dataset_uuid="mp",
        dfs=[sales()],
        partition_on=["country"],
        metadata_storage_format="msgpack",
    )
    assert (root / "mp.by-dataset-metadata.msgpack.zstd").exists()
    assert sorted(dk.read_table(store=str(root), dataset_uuid="mp")["qty"]) == [1, 2, 3, 4]
    dk.update_dataset(row("FR", "2024-01-03", "d", 5), store=str(root), dataset_uuid="mp")
    # our commit writes the JSON pointer (which plateau prefers) and retires the msgpack one
    assert (root / "mp.by-dataset-metadata.json").exists()
    assert not (root / "mp.by-dataset-metadata.msgpack.zstd").exists()
    assert sorted(p_read_table("mp", store=url(root))["qty"]) == [1, 2, 3, 4, 5]


def test_slash_and_unicode_partition_values_are_not_truncated(root: Path) -> None:
    df = pd.DataFrame({"p": ["FR/x y", "é=ü%"], "v": [1, 2]})
    dk.write_dataset(df, store=str(root), dataset_uuid="q", partition_on=["p"])
    theirs = p_read_table("q", store=url(root))
    assert sorted(theirs["p"].astype(object)) == ["FR/x y", "é=ü%"]
    ours = dk.read_table(store=str(root), dataset_uuid="q", predicates=[[("p", "==", "FR/x y")]])
    assert ours["v"].tolist() == [1]


def test_plateau_reads_every_payload_type(root: Path) -> None:
    df = all_types_frame()
    dk.write_dataset(df, store=str(root), dataset_uuid="types")
    theirs = p_read_table("types", store=url(root))
    assert len(theirs) == len(df)
    for col in ["i8", "u64", "f32", "s", "d", "ts", "tz", "bin"]:
        assert list(theirs[col]) == list(df[col]), col


def test_plateau_reads_a_dataset_of_partition_columns_only(root: Path) -> None:
    df = pd.DataFrame({"p": [1, 2, 2], "q": ["x", "y", "y"]})
    dk.write_dataset(df, store=str(root), dataset_uuid="keys", partition_on=["p", "q"])
    assert len(dk.read_table(store=str(root), dataset_uuid="keys")) == 3
    theirs = p_read_table("keys", store=url(root))
    assert sorted(zip(theirs["p"], theirs["q"], strict=True)) == [(1, "x"), (2, "y"), (2, "y")]


def test_index_columns_in_plateau_files_are_ignored(root: Path) -> None:
    df = sales().set_index(pd.Index([10, 11, 12, 13], name="rowid"))
    store_dataframes_as_dataset(
        store=url(root), dataset_uuid="idx", dfs=[df], partition_on=["country"]
    )
    ours = dk.read_table(store=str(root), dataset_uuid="idx")
    assert "rowid" not in ours.columns and "__index_level_0__" not in ours.columns
    assert sorted(ours["qty"]) == [1, 2, 3, 4]
    sel = dk.read_table(store=str(root), dataset_uuid="idx", predicates=[[("qty", ">", 2)]])
    assert sorted(sel["qty"]) == [3, 4]


def test_plateau_write_racing_our_commit_is_kept_not_overwritten(root: Path) -> None:
    from dataset_kit.store import DelegatingStore, LocalStore

    dk.write_dataset(sales(), store=str(root), dataset_uuid="race", partition_on=["country"])

    class PlateauSlipsIn(DelegatingStore):
        """plateau appends right after our snapshot is created, before our pointer update."""

        fired = False

        def _put(self, key, data, *, if_absent, if_match):  # type: ignore[no-untyped-def]
            info = super()._put(key, data, if_absent=if_absent, if_match=if_match)
            if "/_versions/" in key and not self.fired:
                self.fired = True
                update_dataset_from_dataframes(
                    [row("FR", "2024-01-03", "p", 50)], store=url(root), dataset_uuid="race"
                )
            return info

    store = PlateauSlipsIn(LocalStore(root))
    dk.update_dataset(row("IT", "2024-01-04", "d", 60), store=store, dataset_uuid="race")
    # plateau's write (which cannot know about ours) stays the newest state ...
    assert sorted(dk.read_table(store=str(root), dataset_uuid="race")["qty"]) == [1, 2, 3, 4, 50]
    assert sorted(p_read_table("race", store=url(root))["qty"]) == [1, 2, 3, 4, 50]
    # ... and our commit is not lost: it is version 1 of the history
    assert sorted(dk.read_table(store=str(root), dataset_uuid="race", version=1)["qty"]) == [
        1,
        2,
        3,
        4,
        60,
    ]


def test_backups_continue_after_plateau_updated_the_dataset(root: Path, tmp_path: Path) -> None:
    """A backup copies plateau's newest state as the adopting version; the source's own
    adoption of that state later gets the same commit id, so later incremental backups
    recognise it (they were refused as "another dataset" for good)."""

    def frame(v: int) -> pd.DataFrame:
        return pd.DataFrame({"p": [v % 2], "x": [v]})

    lake, vault = str(root), str(tmp_path / "vault")
    dk.write_dataset(frame(1), store=lake, dataset_uuid="t", partition_on="p")
    update_dataset_from_dataframes([frame(2)], store=f"hfs://{lake}", dataset_uuid="t")
    assert dk.pipelines.backup("t", source=lake, target=vault).compute().versions == [0, 1]
    dk.update_dataset(frame(3), store=lake, dataset_uuid="t")  # adopts plateau's state as v1
    report = dk.pipelines.backup("t", source=lake, target=vault).compute()
    assert report.versions == [0, 1, 2] and report.copied == 1
    got = dk.read_table(store=vault, dataset_uuid="t").sort_values("x")["x"].tolist()
    assert got == [1, 2, 3]


def test_a_dataset_plateau_deleted_and_created_again_starts_a_new_history(root: Path) -> None:
    """plateau's delete leaves our snapshots behind (no tombstone); the dataset it then
    creates is a new one, not a continuation of the deleted one's versions. A plateau
    overwrite, which keeps our files, continues the history."""
    from plateau.api.dataset import delete_dataset as p_delete

    def frame(v: int) -> pd.DataFrame:
        return pd.DataFrame({"p": [v % 2], "x": [v]})

    lake = str(root)
    dk.write_dataset(frame(1), store=lake, dataset_uuid="t", partition_on="p")
    dk.update_dataset(frame(2), store=lake, dataset_uuid="t")
    store_dataframes_as_dataset(
        dfs=[frame(3)], store=f"hfs://{lake}", dataset_uuid="t", partition_on=["p"], overwrite=True
    )
    dk.update_dataset(frame(4), store=lake, dataset_uuid="t")  # adopts the overwrite as v2
    assert dk.read_table(store=lake, dataset_uuid="t", version=0)["x"].tolist() == [1]
    p_delete(dataset_uuid="t", store=f"hfs://{lake}")
    store_dataframes_as_dataset(
        dfs=[frame(5)], store=f"hfs://{lake}", dataset_uuid="t", partition_on=["p"]
    )
    assert dk.read_table(store=lake, dataset_uuid="t")["x"].tolist() == [5]
    for version in range(4):
        with pytest.raises(dk.exceptions.VersionNotFoundError):
            dk.read_table(store=lake, dataset_uuid="t", version=version)
    meta = dk.update_dataset(frame(6), store=lake, dataset_uuid="t")
    assert meta.history_start == 4
    versions = dk.open_dataset(store=lake, dataset_uuid="t").versions()
    assert [v["version"] for v in versions] == [4, 5]
    assert dk.pipelines.verify("t", store=lake, versions="all").compute().ok
