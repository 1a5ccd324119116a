"""Interoperability with plateau 4.6 (the maintained Kartothek fork), both directions.

plateau must read what dataset_kit writes, dataset_kit must read what plateau writes, and
each must be able to update a dataset last written by the other.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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


# --------------------------------------------------------------- audit: dtypes and indices
def _nullable_frame(p: int, *, nulls: bool) -> pd.DataFrame:
    """Every pandas dtype whose reading differs by nulls: nullable ints/floats/bools, the
    pandas ``string`` (pd.NA) and ``str`` dtypes, numpy columns."""
    na = None if nulls else 2
    return pd.DataFrame(
        {
            "p": [p, p],
            "I": pd.array([1, na], dtype="Int64"),
            "I8": pd.array([1, na], dtype="Int8"),
            "U8": pd.array([1, na], dtype="UInt8"),
            "F": pd.array([1.5, na], dtype="Float64"),
            "F32": pd.array([1.5, na], dtype="Float32"),
            "B": pd.array([True, None if nulls else False], dtype="boolean"),
            "S": pd.array(["a", None if nulls else "b"], dtype="string"),
            "s": ["a", None if nulls else "b"],
            "i": np.array([1, 2], dtype="int32"),
            "f": [1.5, np.nan if nulls else 2.5],
            "b": [True, False],
        }
    )


def _dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {c: str(df[c].dtype) for c in df.columns}


def _same_as_plateau(root: Path, uuid: str, predicates: Any = None) -> None:
    theirs = p_read_table(uuid, store=url(root), predicates=predicates)
    ours = dk.read_table(store=str(root), dataset_uuid=uuid, predicates=predicates)
    assert _dtypes(ours) == _dtypes(theirs)
    key = ["p", "i"]
    assert_frame_equal(
        ours.sort_values(key).reset_index(drop=True),
        theirs.sort_values(key).reset_index(drop=True),
    )


def test_nullable_dtypes_of_plateau_written_data_read_as_plateau_reads_them(root: Path) -> None:
    """plateau's _common_metadata says float64/int64 for Float64/Int8... columns; its data
    files keep the nullable dtypes, and plateau returns them (Float32 -> Float64, UInt8 ->
    UInt64: pd.concat with _common_metadata's types). So do we, for every selection."""
    store_dataframes_as_dataset(
        store=url(root),
        dataset_uuid="theirs",
        dfs=[_nullable_frame(1, nulls=True), _nullable_frame(2, nulls=False)],
        partition_on=["p"],
    )
    _same_as_plateau(root, "theirs")
    _same_as_plateau(root, "theirs", [[("p", "==", 2)]])  # the file without nulls alone
    ours = dk.read_table(store=str(root), dataset_uuid="theirs")
    assert _dtypes(ours)["F"] == "Float64" and _dtypes(ours)["F32"] == "Float64"
    assert _dtypes(ours)["S"] == "string" and ours["F"].isna().sum() == 1
    # our commit adopts the dtypes: they stay, and plateau still reads the same
    dk.update_dataset(_nullable_frame(3, nulls=False), store=str(root), dataset_uuid="theirs")
    _same_as_plateau(root, "theirs")


def test_nullable_dtypes_after_plateau_appended_to_our_dataset(root: Path) -> None:
    dk.write_dataset(
        _nullable_frame(1, nulls=False), store=str(root), dataset_uuid="ours", partition_on="p"
    )
    update_dataset_from_dataframes(
        [_nullable_frame(2, nulls=True)], store=url(root), dataset_uuid="ours"
    )
    _same_as_plateau(root, "ours")
    ours = dk.read_table(store=str(root), dataset_uuid="ours")
    assert ours["F"].dtype == "Float64" and ours["F"].isna().tolist() == [False, False, False, True]
    dk.update_dataset(_nullable_frame(3, nulls=False), store=str(root), dataset_uuid="ours")
    _same_as_plateau(root, "ours")


def _index_file(root: Path, uuid: str, column: str) -> pa.Table:
    ref = json.loads((root / f"{uuid}.by-dataset-metadata.json").read_text())["indices"][column]
    return pq.read_table(root / ref)


def _string_frame(p: int, s: str) -> pd.DataFrame:
    return pd.DataFrame({"p": [p], "S": pd.array([s], dtype="string"), "s": [s]})


def test_index_of_a_pd_na_string_column_has_plateaus_type(root: Path) -> None:
    """plateau types the index of a pandas ``string`` column ``string`` (``str``:
    ``large_string``) and refuses to update an index of the other type."""
    dk.write_dataset(
        _string_frame(1, "a"),
        store=str(root),
        dataset_uuid="ours",
        partition_on="p",
        secondary_indices=["S", "s"],
    )
    assert _index_file(root, "ours", "S").schema.field("S").type == pa.string()
    assert _index_file(root, "ours", "s").schema.field("s").type == pa.large_string()
    update_dataset_from_dataframes([_string_frame(2, "b")], store=url(root), dataset_uuid="ours")
    dk.update_dataset(_string_frame(3, "c"), store=str(root), dataset_uuid="ours")
    update_dataset_from_dataframes([_string_frame(4, "d")], store=url(root), dataset_uuid="ours")
    sel = p_read_table("ours", store=url(root), predicates=[[("S", "in", ["a", "c", "d"])]])
    assert sorted(sel["p"]) == [1, 3, 4]
    sel = dk.read_table(store=str(root), dataset_uuid="ours", predicates=[[("S", "==", "b")]])
    assert sel["p"].tolist() == [2]

    # plateau writes, we append, plateau appends again
    store_dataframes_as_dataset(
        store=url(root),
        dataset_uuid="theirs",
        dfs=[_string_frame(1, "a")],
        partition_on=["p"],
        secondary_indices=["S", "s"],
    )
    dk.update_dataset(_string_frame(2, "b"), store=str(root), dataset_uuid="theirs")
    assert _index_file(root, "theirs", "S").schema.field("S").type == pa.string()
    update_dataset_from_dataframes([_string_frame(3, "c")], store=url(root), dataset_uuid="theirs")
    sel = p_read_table("theirs", store=url(root), predicates=[[("S", "==", "b")]])
    assert sel["p"].tolist() == [2]


def test_a_large_string_index_of_an_older_release_is_merged_into_plateaus_type(
    root: Path,
) -> None:
    dk.write_dataset(
        _string_frame(1, "a"),
        store=str(root),
        dataset_uuid="old",
        partition_on="p",
        secondary_indices=["S"],
    )
    # what releases before the fix wrote: large_string values for a pandas string column
    path = root / json.loads((root / "old.by-dataset-metadata.json").read_text())["indices"]["S"]
    table = pq.read_table(path)
    pq.write_table(table.cast(pa.schema([("S", pa.large_string()), table.schema.field(1)])), path)
    sel = dk.read_table(store=str(root), dataset_uuid="old", predicates=[[("S", "==", "a")]])
    assert sel["p"].tolist() == [1]
    dk.update_dataset(_string_frame(2, "b"), store=str(root), dataset_uuid="old")
    index = _index_file(root, "old", "S")
    assert index.schema.field("S").type == pa.string()
    assert index.column("S").to_pylist() == ["a", "b"]
    update_dataset_from_dataframes([_string_frame(3, "c")], store=url(root), dataset_uuid="old")
    assert sorted(p_read_table("old", store=url(root))["p"]) == [1, 2, 3]


def _zeros() -> pd.DataFrame:
    return pd.DataFrame({"p": [1, 2, 3], "f": [0.0, -0.0, 0.0], "key": [0, 1, 2]})


def _keys(df: pd.DataFrame) -> list[int]:
    return sorted(df["key"].tolist())


def test_zero_and_negative_zero_share_one_index_entry(root: Path) -> None:
    """plateau loads an index into a dict where -0.0 == 0.0: two entries overwrote each
    other there and a predicate lost rows (and a plateau append saved the loss)."""
    pred = [[("f", "==", 0.0)]]
    dk.write_dataset(
        _zeros(), store=str(root), dataset_uuid="ours", partition_on="p", secondary_indices="f"
    )
    assert _index_file(root, "ours", "f").num_rows == 1
    assert _keys(p_read_table("ours", store=url(root), predicates=pred)) == [0, 1, 2]
    update_dataset_from_dataframes(
        [pd.DataFrame({"p": [4], "f": [1.0], "key": [3]})], store=url(root), dataset_uuid="ours"
    )
    assert _keys(dk.read_table(store=str(root), dataset_uuid="ours", predicates=pred)) == [0, 1, 2]
    neg = [[("f", "==", -0.0)]]
    assert _keys(dk.read_table(store=str(root), dataset_uuid="ours", predicates=neg)) == [0, 1, 2]

    # plateau writes the index, we append a -0.0 row
    store_dataframes_as_dataset(
        store=url(root), dataset_uuid="theirs", dfs=[_zeros()], partition_on=["p"],
        secondary_indices=["f"],
    )  # fmt: skip
    dk.update_dataset(
        pd.DataFrame({"p": [4], "f": [-0.0], "key": [3]}), store=str(root), dataset_uuid="theirs"
    )
    assert _index_file(root, "theirs", "f").num_rows == 1
    assert _keys(p_read_table("theirs", store=url(root), predicates=pred)) == [0, 1, 2, 3]


def test_nan_is_not_indexed_as_plateau_does(root: Path) -> None:
    """plateau never indexes NaN (pandas' dropna); Arrow data may hold NaN besides null."""
    table = pa.table(
        {
            "p": [1, 2, 3, 4],
            "f": pa.array([float("nan"), 1.0, float("nan"), None]),
            "key": [0, 1, 2, 3],
        }
    )
    dk.write_dataset(
        table, store=str(root), dataset_uuid="nan", partition_on="p", secondary_indices="f"
    )
    assert _index_file(root, "nan", "f").column("f").to_pylist() == [1.0]
    for pred in ([[("f", "==", 1.0)]], [[("f", ">", 0.0)]], [[("f", "in", [1.0, 2.0])]]):
        assert _keys(p_read_table("nan", store=url(root), predicates=pred)) == [1]
        assert _keys(dk.read_table(store=str(root), dataset_uuid="nan", predicates=pred)) == [1]
    update_dataset_from_dataframes(
        [pd.DataFrame({"p": [5], "f": [np.nan], "key": [4]})], store=url(root), dataset_uuid="nan"
    )
    assert len(dk.read_table(store=str(root), dataset_uuid="nan")) == 5


#: Index types plateau 4.6.2 cannot hold: it refuses to create the index, or every later
#: update of the dataset fails.
_UNINDEXABLE = {
    "decimal": pd.array(
        [decimal.Decimal("1.25"), decimal.Decimal("2.50")], dtype=pd.ArrowDtype(pa.decimal128(5, 2))
    ),
    "time": [dt.time(1, 2), dt.time(3, 4)],
    "duration": pd.to_timedelta([1, 2], unit="s"),
    "large_binary": pd.array([b"a", b"b"], dtype=pd.ArrowDtype(pa.large_binary())),
}


@pytest.mark.parametrize("kind", sorted(_UNINDEXABLE))
def test_index_types_plateau_cannot_hold_are_refused(root: Path, kind: str) -> None:
    df = pd.DataFrame({"p": [1, 2], "x": _UNINDEXABLE[kind], "v": [1, 2]})
    # the oracle: plateau cannot create or maintain such an index
    with pytest.raises((NotImplementedError, TypeError)):
        store_dataframes_as_dataset(
            store=url(root), dataset_uuid="ctl", dfs=[df], partition_on=["p"],
            secondary_indices=["x"],
        )  # fmt: skip
        update_dataset_from_dataframes([df.assign(p=3)], store=url(root), dataset_uuid="ctl")
    ours = root / "ours"
    ours.mkdir()
    with pytest.raises(dk.exceptions.InvalidInputError, match=r"column 'x' of type .*plateau"):
        dk.write_dataset(
            df, store=str(ours), dataset_uuid="x", partition_on="p", secondary_indices="x"
        )
    with pytest.raises(dk.exceptions.InvalidInputError, match=r"column 'x' of type .*plateau"):
        dk.update_dataset(
            df, store=str(ours), dataset_uuid="x", partition_on="p", secondary_indices="x"
        )
    assert [p for p in ours.rglob("*") if p.is_file()] == []  # nothing was written
    dk.write_dataset(df, store=str(ours), dataset_uuid="x", partition_on="p")
    with pytest.raises(dk.exceptions.InvalidInputError, match=r"column 'x' of type .*plateau"):
        dk.build_dataset_indices(store=str(ours), dataset_uuid="x", columns="x")
    ds = dk.open_dataset(store=str(ours), dataset_uuid="x")
    assert ds.secondary_indices == () and ds.version == 0


@pytest.mark.parametrize(
    "values",
    [
        [True, False],
        np.array([1, 2], dtype="int8"),
        np.array([1, 2], dtype="uint16"),
        np.array([1.5, 2.5], dtype="float32"),
        ["a", "b"],
        pd.array(["a", "b"], dtype="string"),
        pd.Categorical(["a", "b"]),
        [b"a", b"b"],
        [dt.date(2024, 1, 1), dt.date(2024, 1, 2)],
    ],
    ids=["bool", "int8", "uint16", "float32", "str", "string", "categorical", "bytes", "date"],
)
def test_index_types_plateau_holds_stay_updatable_by_plateau(root: Path, values: Any) -> None:
    """(Timestamps are indexable too, but plateau 4.6.2 under pandas 3 cannot update even
    its own timestamp indices: timestamp[us] files vs timestamp[ns] values.)"""
    df = pd.DataFrame({"p": [1, 2], "x": values, "v": [1, 2]})
    dk.write_dataset(
        df, store=str(root), dataset_uuid="ok", partition_on="p", secondary_indices="x"
    )
    update_dataset_from_dataframes([df.assign(p=3)], store=url(root), dataset_uuid="ok")
    dk.update_dataset(df.assign(p=4), store=str(root), dataset_uuid="ok")
    update_dataset_from_dataframes([df.assign(p=5)], store=url(root), dataset_uuid="ok")
    first = df["x"].iloc[0]
    sel = p_read_table("ok", store=url(root), predicates=[[("x", "==", first)]])
    assert sorted(sel["p"]) == [1, 3, 4, 5]
