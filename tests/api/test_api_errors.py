"""Every error case of the public API: the typed error, and the dataset left as it was.

Each test reads the dataset before the failing call and checks that a read afterwards gives
the same frame, and (where nothing may be written at all) that the store is byte-identical.
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk
from dataset_kit import exceptions as exc
from dataset_kit.core import naming
from dataset_kit.core.schema import schema_from_b64, schema_to_b64
from dataset_kit.store import LocalStore, Store
from dataset_kit.testing.predicates import pandas_filter

UUID = "ds"


# --------------------------------------------------------------------------- helpers
def _frame(p: list[int], x: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "p": p,
            "x": np.array(x, dtype="int64"),
            "u": np.array(x, dtype="uint32"),
            "s": [f"s{v}" for v in x],
            "ts": pd.to_datetime([dt.datetime(2024, 1, 1) + dt.timedelta(hours=v) for v in x]),
            "tz": pd.to_datetime(
                [dt.datetime(2024, 1, 1) + dt.timedelta(hours=v) for v in x]
            ).tz_localize("UTC"),
            "d": [dt.date(2024, 1, 1) + dt.timedelta(days=v) for v in x],
            "k": [f"k{v % 2}" for v in x],
        }
    )


def _read(store: Store, **kwargs: Any) -> pd.DataFrame:
    return dk.read_table(store=store, dataset_uuid=UUID, **kwargs)


def _state(store: Store) -> dict[str, bytes]:
    return {k: store.get(k) for k in sorted(store.iter_keys(""))}


def _versions(store: Store) -> list[str]:
    return sorted(store.iter_keys(naming.snapshot_prefix(UUID)))


class Seeded:
    """A dataset with two versions, and what it looked like before the test's failure."""

    def __init__(self, store: Store, template: Seeded | None = None) -> None:
        self.store = store
        if template is None:
            dk.write_dataset(
                _frame([1, 1, 2], [1, 2, 3]),
                store=store,
                dataset_uuid=UUID,
                partition_on="p",
                secondary_indices="k",
            )
            dk.update_dataset(_frame([3, 10], [4, 5]), store=store, dataset_uuid=UUID)
            self.before = _read(store)
        else:  # a byte-identical copy of the template's store (fast)
            for key, data in template.state.items():
                store.put(key, data)
            self.before = template.before
        self.state = _state(store)
        assert len(self.before) == 5

    def assert_untouched(self) -> None:
        """Nothing at all was written: every key and byte is as before, reads equal."""
        assert _state(self.store) == self.state
        pd.testing.assert_frame_equal(_read(self.store), self.before)

    def assert_not_committed(self) -> None:
        """No version was committed (garbage blobs allowed); reads equal the old ones."""
        now = _state(self.store)
        for key, data in self.state.items():
            assert now.get(key) == data, key
        new = set(now) - set(self.state)
        assert not [k for k in new if "/_versions/" in k or "/" not in k], new
        pd.testing.assert_frame_equal(_read(self.store), self.before)


@pytest.fixture
def store() -> Store:
    return dk.open_store("memory://")


@pytest.fixture(scope="module")
def template() -> Seeded:
    return Seeded(dk.open_store("memory://"))


@pytest.fixture
def ds(store: Store, template: Seeded) -> Seeded:
    return Seeded(store, template)


def _raises(error: type[Exception], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(error) as info:
        result = fn(*args, **kwargs)
        if inspect.isgenerator(result):
            list(result)
    assert isinstance(info.value, exc.DatasetKitError)
    return info.value


# --------------------------------------------------------------------------- hierarchy
_ERRORS = [
    getattr(exc, name)
    for name in exc.__all__
    if isinstance(getattr(exc, name), type)
    and issubclass(getattr(exc, name), Exception)
    and not issubclass(getattr(exc, name), Warning)
]


@pytest.mark.parametrize("cls", _ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_a_dataset_kit_error(cls: type[Exception]) -> None:
    assert issubclass(cls, exc.DatasetKitError)


def test_warnings_have_their_own_root() -> None:
    assert issubclass(exc.UnsafeCommitWarning, exc.DatasetKitWarning)
    assert issubclass(exc.DatasetKitWarning, UserWarning)
    assert not issubclass(exc.DatasetKitWarning, exc.DatasetKitError)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (exc.DatasetNotFoundError, LookupError),
        (exc.VersionNotFoundError, LookupError),
        (exc.MetadataFormatError, ValueError),
        (exc.SchemaMismatchError, ValueError),
        (exc.InvalidInputError, ValueError),
        (exc.InvalidUUIDError, exc.InvalidInputError),
        (exc.PredicateError, exc.InvalidInputError),
        (exc.PartitionValueError, exc.InvalidInputError),
        (exc.DeleteScopeError, exc.InvalidInputError),
        (exc.KeyNotFoundError, KeyError),
        (exc.DataBlobMissingError, exc.DatasetError),
        (exc.DataBlobCorruptError, exc.DatasetError),
        (exc.DatasetExistsError, exc.DatasetError),
        (exc.CommitConflictError, exc.CommitError),
        (exc.StoreUnavailableError, exc.StoreError),
    ],
)
def test_error_hierarchy(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)


# --------------------------------------------------------------------------- missing dataset
_MISSING_CALLS: list[tuple[str, Callable[[Store, str], Any]]] = [
    ("read_table", lambda s, u: dk.read_table(store=s, dataset_uuid=u)),
    ("read_frames", lambda s, u: dk.read_dataset_as_dataframes(store=s, dataset_uuid=u)),
    ("iter_frames", lambda s, u: dk.iter.read_dataset_as_dataframes(store=s, dataset_uuid=u)),
    ("read_version", lambda s, u: dk.read_table(store=s, dataset_uuid=u, version=0)),
    ("update_no_data", lambda s, u: dk.update_dataset(store=s, dataset_uuid=u)),
    (
        "update_delete_scope",
        lambda s, u: dk.update_dataset(store=s, dataset_uuid=u, delete_scope=[{"p": 1}]),
    ),
    ("delete", lambda s, u: dk.delete_dataset(store=s, dataset_uuid=u)),
    ("open", lambda s, u: dk.open_dataset(store=s, dataset_uuid=u)),
    ("build_indices", lambda s, u: dk.build_dataset_indices(store=s, dataset_uuid=u, columns="x")),
]


@pytest.mark.parametrize("call", [c for _, c in _MISSING_CALLS], ids=[n for n, _ in _MISSING_CALLS])
def test_missing_dataset(ds: Seeded, call: Callable[[Store, str], Any]) -> None:
    error = _raises(exc.DatasetNotFoundError, call, ds.store, "missing")
    assert isinstance(error, LookupError)
    assert "'missing'" in str(error)
    ds.assert_untouched()


def test_missing_dataset_in_empty_store_creates_nothing(store: Store) -> None:
    for _, call in _MISSING_CALLS:
        _raises(exc.DatasetNotFoundError, call, store, UUID)
    assert list(store.iter_keys("")) == []
    assert dk.list_datasets(store) == []


# --------------------------------------------------------------------------- corrupt metadata
_POINTER = naming.pointer_key(UUID)

_READERS: list[Callable[[Store], Any]] = [
    lambda s: dk.read_table(store=s, dataset_uuid=UUID),
    lambda s: dk.open_dataset(store=s, dataset_uuid=UUID),
    lambda s: dk.read_table(store=s, dataset_uuid=UUID, version=0),
    lambda s: dk.update_dataset(_frame([4], [9]), store=s, dataset_uuid=UUID),
    lambda s: dk.update_dataset(store=s, dataset_uuid=UUID, metadata={"a": 1}),
    lambda s: dk.write_dataset(_frame([4], [9]), store=s, dataset_uuid=UUID, mode="overwrite"),
    lambda s: dk.write_dataset(_frame([4], [9]), store=s, dataset_uuid=UUID),
]
_READER_IDS = [
    "read",
    "open",
    "read_v0",
    "append",
    "update_meta",
    "overwrite",
    "write",
]


_CORRUPTIONS = [
    "garbage",
    "truncated",
    "truncated_end",
    "empty",
    "list",
    "null",
    "version5",
    "block_format",
]


def _corrupt(good: bytes, how: str) -> bytes:
    doc = json.loads(good)
    return {
        "garbage": b"this is not json",
        "truncated": good[: len(good) // 2],
        "truncated_end": good[:-1],
        "empty": b"",
        "list": b"[]",
        "null": b"null",
        "version5": json.dumps(dict(doc, dataset_metadata_version=5)).encode(),
        "block_format": json.dumps(
            dict(doc, dataset_kit=dict(doc["dataset_kit"], format=99))
        ).encode(),
    }[how]


@pytest.mark.parametrize("how", _CORRUPTIONS)
def test_corrupt_pointer_is_fatal(ds: Seeded, how: str) -> None:
    good = ds.store.get(_POINTER)
    bad = _corrupt(good, how)
    ds.store.put(_POINTER, bad)
    corrupt_state = _state(ds.store)
    # valid snapshots exist, yet a corrupt pointer is never skipped or overwritten
    assert len(_versions(ds.store)) == 2
    for name, reader in zip(_READER_IDS, _READERS, strict=True):
        with pytest.raises(exc.MetadataFormatError):
            reader(ds.store)
        # garbage blobs of a failed write are allowed; pointer and snapshots are not touched
        after = _state(ds.store)
        assert after[_POINTER] == bad, name
        assert {k: v for k, v in after.items() if "/_versions/" in k} == {
            k: v for k, v in corrupt_state.items() if "/_versions/" in k
        }, name
    ds.store.put(_POINTER, good)
    pd.testing.assert_frame_equal(_read(ds.store), ds.before)


def _assert_deleted_and_reusable(store: Store) -> None:
    """Gone for every reader, no data or index blob left, and the uuid free again."""
    assert dk.list_datasets(store) == []
    _raises(exc.DatasetNotFoundError, dk.open_dataset, store=store, dataset_uuid=UUID)
    left = list(store.iter_keys(naming.dataset_prefix(UUID)))
    assert [k for k in left if "/_versions/" not in k] == []
    dk.write_dataset(_frame([7], [7]), store=store, dataset_uuid=UUID)
    assert _read(store)["x"].tolist() == [7]


@pytest.mark.parametrize("how", _CORRUPTIONS)
def test_a_dataset_with_a_corrupt_pointer_can_be_deleted(ds: Seeded, how: str) -> None:
    """Unreadable for everything else, yet an explicit delete removes it (the CLI's
    ``delete --yes``): a tombstone at the next free version, then its blobs."""
    ds.store.put(_POINTER, _corrupt(ds.store.get(_POINTER), how))
    dk.delete_dataset(store=ds.store, dataset_uuid=UUID)
    assert not ds.store.exists(_POINTER)
    tomb = json.loads(ds.store.get(naming.snapshot_key(UUID, 2)))["dataset_kit"]
    assert tomb["tombstone"] is True and tomb["commit"]["operation"] == "delete"
    _assert_deleted_and_reusable(ds.store)


@pytest.mark.parametrize("how", ["garbage", "truncated", "version5"])
def test_a_dataset_with_a_corrupt_newer_snapshot_can_be_deleted(ds: Seeded, how: str) -> None:
    v1_key = naming.snapshot_key(UUID, 1)
    ds.store.put(_POINTER, ds.store.get(naming.snapshot_key(UUID, 0)))
    ds.store.put(v1_key, _corrupt(ds.store.get(v1_key), how))
    dk.delete_dataset(store=ds.store, dataset_uuid=UUID)
    _assert_deleted_and_reusable(ds.store)


def test_deleting_an_unreadable_dataset_spares_blobs_younger_than_its_tombstone(
    local_ds: Seeded,
) -> None:
    """Without readable metadata its blobs are told apart by age: a blob written after the
    tombstone (a new dataset's, under the same uuid) survives."""
    store = local_ds.store
    store.put(_POINTER, b"{broken")
    young = f"{UUID}/table/p=9/theirs.parquet"
    store.put(young, b"a new writer's blob")
    future = time.time() + 3600
    os.utime(store.local_path(young), (future, future))  # type: ignore[arg-type]
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    assert store.exists(young)
    left = [k for k in store.iter_keys(naming.dataset_prefix(UUID)) if "/_versions/" not in k]
    assert left == [young]
    assert dk.list_datasets(store) == []


def test_corrupt_pointer_message_names_dataset(ds: Seeded) -> None:
    ds.store.put(_POINTER, b"{broken")
    error = _raises(exc.MetadataFormatError, _read, ds.store)
    assert repr(UUID) in str(error)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("how", _CORRUPTIONS)
def test_corrupt_newer_snapshot(ds: Seeded, how: str) -> None:
    # the pointer lags at version 0: the reader must probe version 1, which is corrupt
    v0 = ds.store.get(naming.snapshot_key(UUID, 0))
    v1_key = naming.snapshot_key(UUID, 1)
    v1 = ds.store.get(v1_key)
    ds.store.put(_POINTER, v0)
    bad = _corrupt(v1, how)
    ds.store.put(v1_key, bad)
    _raises(exc.MetadataFormatError, _read, ds.store)
    _raises(exc.MetadataFormatError, dk.open_dataset, store=ds.store, dataset_uuid=UUID)
    _raises(
        exc.MetadataFormatError,
        dk.update_dataset,
        _frame([4], [9]),
        store=ds.store,
        dataset_uuid=UUID,
    )
    assert ds.store.get(v1_key) == bad
    assert not ds.store.exists(naming.snapshot_key(UUID, 2))
    ds.store.put(v1_key, v1)
    pd.testing.assert_frame_equal(_read(ds.store), ds.before)


def test_snapshot_claiming_another_version(ds: Seeded) -> None:
    v0 = ds.store.get(naming.snapshot_key(UUID, 0))
    v1 = ds.store.get(naming.snapshot_key(UUID, 1))
    ds.store.put(_POINTER, v0)
    ds.store.put(naming.snapshot_key(UUID, 1), v0)
    error = _raises(exc.MetadataFormatError, _read, ds.store)
    assert "claims" in str(error)
    ds.store.put(naming.snapshot_key(UUID, 1), v1)
    pd.testing.assert_frame_equal(_read(ds.store), ds.before)


def test_corrupt_old_snapshot_only_affects_that_version(ds: Seeded) -> None:
    ds.store.put(naming.snapshot_key(UUID, 0), b"{corrupt")
    pd.testing.assert_frame_equal(_read(ds.store), ds.before)
    _raises(exc.MetadataFormatError, _read, ds.store, version=0)


def test_corrupt_label_in_metadata(ds: Seeded) -> None:
    doc = json.loads(ds.store.get(_POINTER))
    label, part = next(iter(doc["partitions"].items()))
    doc["partitions"]["p=notanint/" + label.split("/")[-1]] = part
    del doc["partitions"][label]
    ds.store.put(_POINTER, json.dumps(doc).encode())
    _raises(exc.MetadataFormatError, _read, ds.store)


@pytest.mark.parametrize(
    "raw", [b"\xfe\xff not json", b"{not json", b"[1, 2]", b'"text"', b'{"columns": 1}'], ids=repr
)
def test_corrupt_pandas_metadata_in_the_schema(ds: Seeded, raw: bytes) -> None:
    # the document parses, but the pandas metadata of its embedded Arrow schema is corrupt
    for key in (_POINTER, naming.snapshot_key(UUID, 1)):
        doc = json.loads(ds.store.get(key))
        schema = schema_from_b64(doc["dataset_kit"]["schema"])
        doc["dataset_kit"]["schema"] = schema_to_b64(schema.with_metadata({b"pandas": raw}))
        ds.store.put(key, json.dumps(doc).encode())
    corrupt_state = _state(ds.store)
    readers = [
        *_READERS,
        lambda s: dk.pipelines.backup(UUID, source=s, target=dk.open_store("memory://")).compute(
            scheduler="sync"
        ),
    ]
    for name, reader in zip([*_READER_IDS, "backup"], readers, strict=True):
        error = _raises(exc.MetadataFormatError, reader, ds.store)
        assert repr(UUID) in str(error), name
        assert "pandas metadata" in str(error), name
        after = _state(ds.store)
        assert {k: v for k, v in after.items() if k == _POINTER or "/_versions/" in k} == {
            k: v for k, v in corrupt_state.items() if k == _POINTER or "/_versions/" in k
        }, name


# --------------------------------------------------------------------------- invalid uuids
_BAD_UUIDS: list[Any] = ["../x", "a/b", "a.b", "", "x y", "ds/../ds", "é", 5, None, b"ds"]
_UUID_CALLS: list[tuple[str, Callable[[Store, Any], Any]]] = [
    ("write", lambda s, u: dk.write_dataset(_frame([1], [1]), store=s, dataset_uuid=u)),
    ("update", lambda s, u: dk.update_dataset(_frame([1], [1]), store=s, dataset_uuid=u)),
    ("read", lambda s, u: dk.read_table(store=s, dataset_uuid=u)),
    ("iter", lambda s, u: dk.iter.read_dataset_as_dataframes(store=s, dataset_uuid=u)),
    ("delete", lambda s, u: dk.delete_dataset(store=s, dataset_uuid=u)),
    ("open", lambda s, u: dk.open_dataset(store=s, dataset_uuid=u)),
]


@pytest.mark.parametrize("uuid", _BAD_UUIDS, ids=repr)
def test_invalid_uuid(ds: Seeded, uuid: Any) -> None:
    for name, call in _UUID_CALLS:
        with pytest.raises(exc.InvalidUUIDError) as info:
            result = call(ds.store, uuid)
            if inspect.isgenerator(result):
                list(result)
        assert isinstance(info.value, exc.InvalidInputError), name
    ds.assert_untouched()


def test_invalid_uuid_on_local_store_writes_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalStore(root)
    _raises(
        exc.InvalidUUIDError,
        dk.write_dataset,
        _frame([1], [1]),
        store=store,
        dataset_uuid="../escape",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert list(store.iter_keys("")) == []


# --------------------------------------------------------------------------- schema mismatch
_MISMATCHES = [
    ("x", lambda df: df.assign(x=df.x.astype(str)), "int64", "string"),
    ("x", lambda df: df.assign(x=df.x.astype("uint64")), "int64", "uint64"),
    ("u", lambda df: df.assign(u=df.u.astype("int64")), "uint32", "int64"),
    ("x", lambda df: df.assign(x=df.x.astype("float64")), "int64", "double"),
    ("ts", lambda df: df.assign(ts=df.ts.dt.tz_localize("UTC")), "timestamp", "tz=UTC"),
    ("tz", lambda df: df.assign(tz=df.tz.dt.tz_localize(None)), "tz=UTC", "timestamp"),
    ("tz", lambda df: df.assign(tz=df.tz.dt.tz_convert("Europe/Berlin")), "UTC", "Berlin"),
    ("d", lambda df: df.assign(d=pd.to_datetime(df.d)), "date32", "timestamp"),
    ("s", lambda df: df.assign(s=[b"x"] * len(df)), "string", "binary"),
]


@pytest.mark.parametrize(
    ("column", "change", "old_type", "new_type"),
    _MISMATCHES,
    ids=[f"{m[0]}:{m[2]}->{m[3]}" for m in _MISMATCHES],
)
def test_schema_mismatch_on_update(
    ds: Seeded,
    column: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    old_type: str,
    new_type: str,
) -> None:
    bad = change(_frame([4, 5], [6, 7]))
    error = _raises(
        exc.SchemaMismatchError, dk.update_dataset, bad, store=ds.store, dataset_uuid=UUID
    )
    msg = str(error)
    assert repr(column) in msg
    assert old_type in msg
    assert new_type in msg
    assert isinstance(error, ValueError)
    ds.assert_untouched()


def test_schema_mismatch_missing_column(ds: Seeded) -> None:
    error = _raises(
        exc.SchemaMismatchError,
        dk.update_dataset,
        _frame([4], [6]).drop(columns="s"),
        store=ds.store,
        dataset_uuid=UUID,
    )
    assert "'s'" in str(error)
    assert "string" in str(error)
    ds.assert_untouched()


def test_schema_mismatch_within_one_write(store: Store) -> None:
    frames = [pd.DataFrame({"a": [1]}), pd.DataFrame({"a": ["x"]})]
    error = _raises(
        exc.SchemaMismatchError, dk.write_dataset, iter(frames), store=store, dataset_uuid=UUID
    )
    assert "'a'" in str(error)
    assert dk.list_datasets(store) == []
    _raises(exc.DatasetNotFoundError, _read, store)


def test_schema_mismatch_in_later_frame_commits_nothing(ds: Seeded) -> None:
    frames = [_frame([4], [6]), _frame([5], [7]).assign(x="oops")]
    _raises(
        exc.SchemaMismatchError, dk.update_dataset, iter(frames), store=ds.store, dataset_uuid=UUID
    )
    ds.assert_not_committed()


# --------------------------------------------------------------------------- evolutions
def test_int8_then_int64_widens(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1], "a": np.array([1], "int8")}),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
    )
    dk.update_dataset(
        pd.DataFrame({"p": [2], "a": np.array([2**40], "int64")}), store=store, dataset_uuid=UUID
    )
    assert dk.open_dataset(store=store, dataset_uuid=UUID).schema.field("a").type == pa.int64()
    df = _read(store)
    assert df["a"].dtype == np.int64
    assert df["a"].tolist() == [1, 2**40]
    # narrower data later is accepted too, and the dataset type stays
    dk.update_dataset(
        pd.DataFrame({"p": [3], "a": np.array([3], "int16")}), store=store, dataset_uuid=UUID
    )
    assert _read(store)["a"].tolist() == [1, 2**40, 3]


def test_new_column_reads_as_null_in_older_partitions(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1], "a": [1]}), store=store, dataset_uuid=UUID, partition_on="p"
    )
    dk.update_dataset(
        pd.DataFrame({"p": [2], "a": [2], "n": [1.5]}), store=store, dataset_uuid=UUID
    )
    df = _read(store)
    assert df.columns.tolist() == ["p", "a", "n"]
    assert df["n"].isna().tolist() == [True, False]


def test_new_column_reads_as_null_with_predicates_and_projection(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1], "a": [1]}), store=store, dataset_uuid=UUID, partition_on="p"
    )
    dk.update_dataset(
        pd.DataFrame({"p": [2], "a": [2], "n": [1.5]}), store=store, dataset_uuid=UUID
    )
    df = _read(store, predicates=[[("a", ">", 0)]])
    assert df.columns.tolist() == ["p", "a", "n"]
    assert df["n"].isna().tolist() == [True, False]
    assert _read(store, predicates=[[("n", "==", None)]])["a"].tolist() == [1]
    assert _read(store, columns=["p", "a"])["a"].tolist() == [1, 2]


def test_all_null_column_takes_type_later(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1], "a": [None]}), store=store, dataset_uuid=UUID, partition_on="p"
    )
    dk.update_dataset(pd.DataFrame({"p": [2], "a": ["x"]}), store=store, dataset_uuid=UUID)
    df = _read(store)
    assert df["a"].isna().tolist() == [True, False]
    assert df["a"].tolist()[1] == "x"
    assert pa.types.is_large_string(
        dk.open_dataset(store=store, dataset_uuid=UUID).schema.field("a").type
    )


def test_all_null_update_keeps_dataset_type(ds: Seeded) -> None:
    new = _frame([4], [6]).assign(x=[None]).astype({"x": object})
    dk.update_dataset(new, store=ds.store, dataset_uuid=UUID)
    schema = dk.open_dataset(store=ds.store, dataset_uuid=UUID).schema
    assert schema.field("x").type == pa.int64()
    df = _read(ds.store)
    assert len(df) == 6
    assert df["x"].isna().sum() == 1


def _stamps(values: list[str], unit: str) -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.to_datetime(values, format="ISO8601").as_unit(unit)})


@pytest.mark.parametrize(
    ("unit", "values", "new_unit", "new_values"),
    [
        ("us", ["2500-01-01"], "ns", ["2024-01-01 00:00:00.000001"]),
        ("ns", ["2024-01-01"], "us", ["2200-01-01"]),
        ("s", ["2024-01-01"], "ms", ["2024-01-02"]),
    ],
    ids=["us+ns", "ns+us", "s+ms"],
)
def test_timestamps_keep_the_dataset_unit(
    store: Store, unit: str, values: list[str], new_unit: str, new_values: list[str]
) -> None:
    # new data in another unit is converted exactly: every value reads back as written
    old, new = _stamps(values, unit), _stamps(new_values, new_unit)
    dk.write_dataset(old, store=store, dataset_uuid=UUID)
    dk.update_dataset(new, store=store, dataset_uuid=UUID)
    assert dk.open_dataset(store=store, dataset_uuid=UUID).schema.field("ts").type.unit == unit
    df = _read(store)
    assert df["ts"].dtype == f"datetime64[{unit}]"
    assert df["ts"].tolist() == [*old["ts"], *new["ts"]]


@pytest.mark.parametrize(
    ("unit", "values", "new_unit", "new_values", "why"),
    [
        ("us", ["2500-01-01"], "ns", ["2024-01-01 00:00:00.000000001"], "lose data"),
        ("ns", ["2024-01-01"], "us", ["2500-01-01"], "out of bounds"),
        ("s", ["2024-01-01"], "ms", ["2024-01-01 00:00:00.5"], "lose data"),
    ],
    ids=["finer", "out-of-range", "s+ms"],
)
def test_timestamps_that_do_not_fit_the_dataset_unit_are_refused(
    store: Store, unit: str, values: list[str], new_unit: str, new_values: list[str], why: str
) -> None:
    # once accepted (the unit was widened to the finer one): the new version was unreadable
    dk.write_dataset(_stamps(values, unit), store=store, dataset_uuid=UUID)
    before = _read(store)
    state = _state(store)
    error = _raises(
        exc.SchemaMismatchError,
        dk.update_dataset,
        _stamps(new_values, new_unit),
        store=store,
        dataset_uuid=UUID,
    )
    msg = str(error)
    assert "'ts'" in msg and f"timestamp[{unit}]" in msg and f"timestamp[{new_unit}]" in msg
    assert why in msg
    assert _state(store) == state  # refused before any blob was written
    pd.testing.assert_frame_equal(_read(store), before)


def test_categorical_timestamps_keep_the_dataset_unit(store: Store) -> None:
    old = _stamps(["2500-01-01"], "us").astype("category")
    new = _stamps(["2024-01-01", "2024-01-01"], "ns").astype("category")
    dk.write_dataset(old, store=store, dataset_uuid=UUID)
    dk.update_dataset(new, store=store, dataset_uuid=UUID)
    df = _read(store)
    assert df["ts"].cat.categories.dtype == "datetime64[us]"
    assert df["ts"].tolist() == [*old["ts"], *new["ts"]]
    finer = _stamps(["2024-01-01 00:00:00.000000001"], "ns").astype("category")
    _raises(exc.SchemaMismatchError, dk.update_dataset, finer, store=store, dataset_uuid=UUID)


def test_blob_values_the_dataset_type_cannot_hold_raise_a_typed_error(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # datasets written by older releases, which widened a us column to ns over values
    # beyond 2262: reading them raises SchemaMismatchError, never a bare ArrowInvalid
    from dataset_kit.core import schema as schema_module

    dk.write_dataset(_stamps(["2500-01-01"], "us"), store=store, dataset_uuid=UUID)
    monkeypatch.setattr(schema_module, "_wider", lambda current, new: new)
    dk.update_dataset(_stamps(["2024-01-01"], "ns"), store=store, dataset_uuid=UUID)
    monkeypatch.undo()
    assert dk.open_dataset(store=store, dataset_uuid=UUID).schema.field("ts").type.unit == "ns"
    for predicates in (None, [[("ts", ">", dt.datetime(2000, 1, 1))]]):
        error = _raises(exc.SchemaMismatchError, _read, store, predicates=predicates)
        assert "'ts'" in str(error) and "timestamp[us]" in str(error)
        assert "timestamp[ns]" in str(error)


def test_list_elements_widen(store: Store) -> None:
    # list<int8> + list<int64> kept list<int8>: the new version was unreadable
    dk.write_dataset(
        pa.table({"l": pa.array([[1]], pa.list_(pa.int8()))}), store=store, dataset_uuid=UUID
    )
    dk.update_dataset(
        pa.table({"l": pa.array([[2**40, None]], pa.list_(pa.int64()))}),
        store=store,
        dataset_uuid=UUID,
    )
    out = _read(store, output="arrow")
    assert out.schema.field("l").type == pa.list_(pa.int64())
    assert out["l"].to_pylist() == [[1], [2**40, None]]


# --------------------------------------------------------------------------- predicates
_BAD_PREDICATES: list[tuple[str, Any]] = [
    ("unknown_column", [[("nope", "==", 1)]]),
    ("unknown_operator", [[("x", "=", 1)]]),
    ("unknown_operator_like", [[("s", "like", "s%")]]),
    ("str_for_int", [[("x", "==", "1")]]),
    ("str_for_int_partition", [[("p", "==", "1")]]),
    ("int_for_str", [[("s", "==", 1)]]),
    ("datetime_for_date", [[("d", "==", dt.datetime(2024, 1, 2))]]),
    ("timestamp_for_date", [[("d", ">", pd.Timestamp("2024-01-02"))]]),
    ("naive_for_tz", [[("tz", "<", dt.datetime(2024, 1, 1, 3))]]),
    ("naive_ts_for_tz", [[("tz", "<", pd.Timestamp("2024-01-01 03:00"))]]),
    ("aware_for_naive", [[("ts", "<", pd.Timestamp("2024-01-01 03:00", tz="UTC"))]]),
    ("in_non_list", [[("x", "in", 1)]]),
    ("in_string", [[("s", "in", "s1")]]),
    ("not_in_non_list", [[("x", "not in", 1)]]),
    ("empty_list", []),
    ("empty_conjunction", [[]]),
    ("one_empty_conjunction", [[("x", "==", 1)], []]),
    ("unnested", [("x", "==", 1)]),
    ("not_a_list", "x == 1"),
    ("null_ordering", [[("x", "<", None)]]),
    ("bad_triple", [[("x", "==")]]),
]


@pytest.mark.parametrize(
    "predicates", [p for _, p in _BAD_PREDICATES], ids=[n for n, _ in _BAD_PREDICATES]
)
def test_predicate_errors(ds: Seeded, predicates: Any) -> None:
    for fn in (dk.read_table, dk.read_dataset_as_dataframes, dk.iter.read_dataset_as_dataframes):
        error = _raises(
            exc.PredicateError, fn, store=ds.store, dataset_uuid=UUID, predicates=predicates
        )
        assert isinstance(error, exc.InvalidInputError)
    ds.assert_untouched()


_NUMBERS_FRAME = pd.DataFrame(
    {
        "p": np.array([5, 20_000_000, 20_000_000, -(2**40)], dtype="int64"),
        "k": np.array([2**62 + 1, 7, 2**62, 7], dtype="int64"),
        "u": np.array([2**64 - 1, 7, 0, 2**53 + 1], dtype="uint64"),
        "i8": np.array([-128, 127, 0, 5], dtype="int8"),
        "f": np.array([2.0**53, 1.5, 2.0**53 + 2, -1e300], dtype="float64"),
        "n": [0, 1, 2, 3],
    }
)


@pytest.mark.parametrize(
    "predicates",
    [
        [[("p", ">", 1.5)]],
        [[("p", "==", 5.0)]],
        [[("p", "==", 5.5)]],
        [[("p", "!=", 5.5)]],
        [[("p", "<", 2**64)]],
        [[("p", ">=", -1e3)]],
        [[("p", "in", [5.0, 2.5, 2**64, -(2**40)])]],
        [[("p", "not in", [20_000_000.0, -1.5])]],
        [[("k", "==", float(2**62))]],
        [[("k", ">", float(2**62))]],
        [[("k", "in", [7.0, 2**62 + 0.5, 2**70])]],
        [[("k", "<", -math.inf)]],
        [[("u", ">", -1)]],
        [[("u", "==", -1)]],
        [[("u", "<=", 2**64 - 1.5)]],
        [[("u", "in", [-1, 2**64 - 1, 2**53 + 1.0])]],
        [[("i8", ">", 126.5)], [("i8", "<", -1e30)]],
        [[("i8", "in", [1000, 127.0, decimal.Decimal("5")])]],
        [[("f", "==", 2**53 + 1)]],
        [[("f", "<", 2**53 + 1)], [("f", ">", 10**400)]],
        [[("f", ">=", -(10**400)), ("p", "<", math.inf), ("k", "!=", 7.5)]],
    ],
    ids=repr,
)
def test_numeric_predicates_compare_exactly_on_every_path(predicates: Any) -> None:
    """Floats and out-of-range numbers on integer columns: partition pruning ("p"), index
    pruning ("k") and row filters ("u", "i8", "f") all give pandas' exact result."""
    store = dk.open_store("memory://")
    for part in ([0, 1], [2, 3]):
        dk.update_dataset(
            _NUMBERS_FRAME.iloc[part],
            store=store,
            dataset_uuid=UUID,
            partition_on="p",
            secondary_indices="k",
        )
    got = _read(store, predicates=predicates)
    expected = pandas_filter(_NUMBERS_FRAME, predicates)
    assert sorted(got["n"]) == sorted(expected["n"])


# --------------------------------------------------------------------------- delete_scope
@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ([{"nope": 1}], ["'nope'", "unknown column"]),
        ([{"x": 1}], ["'x'", "without a secondary index"]),
        ([{"p": 1}, {"s": "s1"}], ["'s'", "without a secondary index"]),
        ([{"p": 1, "nope": 2}], ["'nope'"]),
        ({"p": 1}, ["list"]),
        ([{}], ["non-empty"]),
        ([{"p": [1, 2]}], ["scalar"]),
        (["p"], ["dict"]),
        ("p", ["dict"]),
    ],
    ids=repr,
)
@pytest.mark.parametrize("with_data", [False, True])
def test_delete_scope_errors(ds: Seeded, scope: Any, words: list[str], with_data: bool) -> None:
    data = _frame([7], [8]) if with_data else None
    error = _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        data,
        store=ds.store,
        dataset_uuid=UUID,
        delete_scope=scope,
    )
    for word in words:
        assert word in str(error)
    ds.assert_untouched()


# --------------------------------------------------------------------------- missing blobs
@pytest.fixture
def local_ds(tmp_path: Path) -> Seeded:
    return Seeded(LocalStore(tmp_path))


@pytest.mark.parametrize("predicates", [None, [[("x", ">", 0)]]], ids=["plain", "filtered"])
@pytest.mark.parametrize("backend", ["local", "memory"])
def test_missing_data_blob(tmp_path: Path, backend: str, predicates: Any) -> None:
    store = LocalStore(tmp_path) if backend == "local" else dk.open_store("memory://")
    ds = Seeded(store)
    (victim,) = [k for k in store.iter_keys(f"{UUID}/table/p=2/") if k.endswith(".parquet")]
    if backend == "local":
        (tmp_path / victim).unlink()
    else:
        store.delete(victim)
    error = _raises(exc.DataBlobMissingError, _read, store, predicates=predicates)
    assert victim in str(error)
    _raises(exc.DataBlobMissingError, dk.read_dataset_as_dataframes, store=store, dataset_uuid=UUID)
    # everything else of the last version is still readable
    expected = ds.before[ds.before.p != 2].reset_index(drop=True)
    pd.testing.assert_frame_equal(_read(store, predicates=[[("p", "!=", 2)]]), expected)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
@pytest.mark.parametrize("predicates", [None, [[("x", ">", 0)]]], ids=["plain", "filtered"])
@pytest.mark.parametrize("backend", ["local", "memory"])
def test_corrupt_data_blob(tmp_path: Path, backend: str, predicates: Any, damage: str) -> None:
    """A data blob that is not readable Parquet any more is a DataBlobCorruptError naming
    it (it was pyarrow's bare ArrowInvalid); the other partitions still read."""
    store = LocalStore(tmp_path) if backend == "local" else dk.open_store("memory://")
    ds = Seeded(store)
    (victim,) = [k for k in store.iter_keys(f"{UUID}/table/p=2/") if k.endswith(".parquet")]
    data = store.get(victim)
    if damage == "truncated":
        broken = data[: len(data) // 2]
    elif damage == "garbage":
        broken = b"not parquet at all" * 20
    else:  # the footer's length field points outside the file
        broken = data[:-8] + (len(data) * 4).to_bytes(4, "little") + data[-4:]
    store.put(victim, broken)
    error = _raises(exc.DataBlobCorruptError, _read, store, predicates=predicates)
    assert victim in str(error) and "verify(deep=True)" in str(error)
    expected = ds.before[ds.before.p != 2].reset_index(drop=True)
    pd.testing.assert_frame_equal(_read(store, predicates=[[("p", "!=", 2)]]), expected)
    report = dk.pipelines.verify(UUID, store=store, deep=True).compute()
    assert victim in report.corrupt


def test_missing_index_blob(ds: Seeded) -> None:
    index_key = json.loads(ds.store.get(_POINTER))["indices"]["k"]
    ds.store.delete(index_key)
    _raises(exc.DataBlobMissingError, _read, ds.store, predicates=[[("k", "==", "k1")]])
    pd.testing.assert_frame_equal(_read(ds.store), ds.before)


# --------------------------------------------------------------------------- partition values
@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"p": [1.0, None], "x": [1, 2]}),
        pd.DataFrame({"p": [1.0, np.nan], "x": [1, 2]}),
        pd.DataFrame({"p": ["a", None], "x": [1, 2]}),
        pd.DataFrame({"p": pd.array([1, None], dtype="Int64"), "x": [1, 2]}),
        pd.DataFrame({"p": [pd.Timestamp("2024-01-01"), pd.NaT], "x": [1, 2]}),
        pd.DataFrame({"p": [None, None], "x": [1, 2]}),
    ],
    ids=["float_none", "float_nan", "str_none", "Int64_na", "nat", "all_none"],
)
def test_null_partition_value_on_write(store: Store, frame: pd.DataFrame) -> None:
    error = _raises(
        exc.PartitionValueError,
        dk.write_dataset,
        frame,
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
    )
    assert "'p'" in str(error)
    assert list(store.iter_keys("")) == []
    _raises(exc.DatasetNotFoundError, _read, store)


def test_nan_partition_value_on_update(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1.5], "x": [1]}), store=store, dataset_uuid=UUID, partition_on="p"
    )
    before, state = _read(store), _state(store)
    for value in (None, np.nan):
        _raises(
            exc.PartitionValueError,
            dk.update_dataset,
            pd.DataFrame({"p": [2.5, value], "x": [2, 3]}),
            store=store,
            dataset_uuid=UUID,
        )
    assert _state(store) == state
    pd.testing.assert_frame_equal(_read(store), before)


def test_null_partition_value_in_second_frame_commits_nothing(ds: Seeded) -> None:
    good = _frame([4], [6])
    bad = _frame([4, 5], [7, 8]).assign(p=pd.array([4, None], dtype="Int64"))
    _raises(
        exc.PartitionValueError,
        dk.update_dataset,
        iter([good, bad]),
        store=ds.store,
        dataset_uuid=UUID,
    )
    ds.assert_not_committed()


# --------------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({1: [1], "a": [2]}),
        pd.DataFrame({("a", "b"): [1]}),
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
        pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]),
    ],
    ids=["int_name", "tuple_name", "dup_pandas", "dup_arrow"],
)
def test_bad_column_names(ds: Seeded, frame: Any) -> None:
    _raises(exc.InvalidInputError, dk.write_dataset, frame, store=ds.store, dataset_uuid="other")
    _raises(exc.InvalidInputError, dk.update_dataset, frame, store=ds.store, dataset_uuid=UUID)
    ds.assert_untouched()


@pytest.mark.parametrize("data", ["a string", 5, None, [1, 2], {"a": [1]}], ids=repr)
def test_bad_data(ds: Seeded, data: Any) -> None:
    _raises(exc.InvalidInputError, dk.write_dataset, data, store=ds.store, dataset_uuid="other")
    ds.assert_untouched()


def test_no_frames_at_all(store: Store) -> None:
    _raises(exc.InvalidInputError, dk.write_dataset, iter([]), store=store, dataset_uuid=UUID)
    assert list(store.iter_keys("")) == []


def test_write_mode_error_on_existing(ds: Seeded) -> None:
    error = _raises(
        exc.DatasetExistsError,
        dk.write_dataset,
        _frame([9], [9]),
        store=ds.store,
        dataset_uuid=UUID,
    )
    assert repr(UUID) in str(error)
    _raises(
        exc.DatasetExistsError,
        dk.write_dataset,
        _frame([9], [9]),
        store=ds.store,
        dataset_uuid=UUID,
        mode="error",
    )
    ds.assert_untouched()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "append"},
        {"partition_on": ["nope"]},
        {"partition_on": ["p", "p"]},
        {"partition_on": 5},
        {"secondary_indices": ["nope"]},
        {"secondary_indices": ["p"], "partition_on": ["p"]},
        {"sort_partitions_by": ["p"], "partition_on": ["p"]},
        {"compression": "lzma"},
        {"row_group_size": 0},
        {"metadata": [1, 2]},
    ],
    ids=repr,
)
def test_bad_write_options(ds: Seeded, kwargs: dict[str, Any]) -> None:
    _raises(
        exc.InvalidInputError,
        dk.write_dataset,
        _frame([9], [9]),
        store=ds.store,
        dataset_uuid="other",
        **kwargs,
    )
    ds.assert_untouched()


@pytest.mark.parametrize("columns", [["nope"], ["x", "nope"], "x", 5, 1.5, b"x", [1]], ids=repr)
def test_unknown_columns(ds: Seeded, columns: Any) -> None:
    """Unknown names, and columns of the wrong type (a bare TypeError once)."""
    error = _raises(exc.InvalidInputError, _read, ds.store, columns=columns)
    if isinstance(columns, list) and "nope" in columns:
        assert "'nope'" in str(error)
    _raises(
        exc.InvalidInputError,
        dk.read_dataset_as_dataframes,
        store=ds.store,
        dataset_uuid=UUID,
        columns=columns,
    )
    ds.assert_untouched()


@pytest.mark.parametrize("partition_on", [["s"], ["p", "s"], [], "x"], ids=repr)
def test_update_with_other_partition_on(ds: Seeded, partition_on: Any) -> None:
    error = _raises(
        exc.InvalidInputError,
        dk.update_dataset,
        _frame([9], [9]),
        store=ds.store,
        dataset_uuid=UUID,
        partition_on=partition_on,
    )
    assert "['p']" in str(error)
    ds.assert_untouched()


def test_update_with_unknown_secondary_index(ds: Seeded) -> None:
    _raises(
        exc.InvalidInputError,
        dk.update_dataset,
        _frame([9], [9]),
        store=ds.store,
        dataset_uuid=UUID,
        secondary_indices=["s"],
    )
    ds.assert_untouched()


@pytest.mark.parametrize("columns", [["nope"], ["p"]], ids=repr)
def test_build_indices_bad_columns(ds: Seeded, columns: list[str]) -> None:
    _raises(
        exc.InvalidInputError,
        dk.build_dataset_indices,
        store=ds.store,
        dataset_uuid=UUID,
        columns=columns,
    )
    ds.assert_untouched()


def test_bad_output_and_categoricals(ds: Seeded) -> None:
    _raises(exc.InvalidInputError, _read, ds.store, output="polars")
    _raises(exc.InvalidInputError, _read, ds.store, categoricals=["nope"])
    _raises(exc.InvalidInputError, _read, ds.store, columns=["x"], categoricals=["s"])
    ds.assert_untouched()


def test_dispatch_by_non_partition_column(ds: Seeded) -> None:
    _raises(
        exc.InvalidInputError,
        dk.read_dataset_as_dataframes,
        store=ds.store,
        dataset_uuid=UUID,
        dispatch_by=["x"],
    )
    _raises(
        exc.InvalidInputError,
        dk.iter.read_dataset_as_dataframes,
        store=ds.store,
        dataset_uuid=UUID,
        dispatch_by="x",
    )
    ds.assert_untouched()


# --------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version", [2, 3, 1000, -1, "0", 1.5], ids=repr)
def test_version_not_found(ds: Seeded, version: Any) -> None:
    error = _raises(exc.VersionNotFoundError, _read, ds.store, version=version)
    assert isinstance(error, LookupError)
    _raises(
        exc.VersionNotFoundError,
        dk.open_dataset,
        store=ds.store,
        dataset_uuid=UUID,
        version=version,
    )
    _raises(
        exc.VersionNotFoundError,
        dk.read_dataset_as_dataframes,
        store=ds.store,
        dataset_uuid=UUID,
        version=version,
    )
    _raises(
        exc.VersionNotFoundError,
        dk.iter.read_dataset_as_dataframes,
        store=ds.store,
        dataset_uuid=UUID,
        version=version,
    )
    ds.assert_untouched()


def test_bool_version_rejected(ds: Seeded) -> None:
    _raises(exc.VersionNotFoundError, _read, ds.store, version=True)


def test_expired_version(ds: Seeded) -> None:
    ds.store.delete(naming.snapshot_key(UUID, 0))
    error = _raises(exc.VersionNotFoundError, _read, ds.store, version=0)
    assert "expired" in str(error)
    pd.testing.assert_frame_equal(_read(ds.store, version=1), ds.before)


def test_old_versions_stay_readable(ds: Seeded) -> None:
    assert len(_read(ds.store, version=0)) == 3
    pd.testing.assert_frame_equal(_read(ds.store, version=1), ds.before)


# --------------------------------------------------------------------------- generators
def test_failing_input_generator_commits_nothing(ds: Seeded) -> None:
    def frames() -> Iterator[pd.DataFrame]:
        yield _frame([4], [6])
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        dk.update_dataset(frames(), store=ds.store, dataset_uuid=UUID)
    ds.assert_not_committed()


# --------------------------------------------------------------------------- column names
_PATH_LIKE_NAMES = [".x", "..", ".", ".hidden.name", "a.b", "a..b", "x.", "[0]", "a b", "__pos"]


@pytest.mark.parametrize("role", ["partition_on", "secondary_indices", "sort_partitions_by"])
@pytest.mark.parametrize("column", _PATH_LIKE_NAMES, ids=repr)
@pytest.mark.parametrize("backend", ["memory", "local"])
def test_column_names_pyarrow_could_parse_as_field_paths(
    tmp_path: Path, backend: str, column: str, role: str
) -> None:
    """pyarrow reads a string name starting with "." as a nested field path: such names
    (and names of the read planner's own columns) round-trip in every role."""
    store = dk.open_store("memory://") if backend == "memory" else LocalStore(tmp_path)
    df = pd.DataFrame({column: ["w", "v"], "i": [2, 1]})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, **{role: column})
    update = {} if role == "sort_partitions_by" else {role: column}
    dk.update_dataset(df.iloc[:1], store=store, dataset_uuid=UUID, **update)
    assert _read(store, predicates=[[(column, "==", "v")]])["i"].tolist() == [1]
    got = _read(store, predicates=[[(column, "in", ["w"])]], columns=[column, "i"])
    assert got.to_dict("list") == {column: ["w", "w"], "i": [2, 2]}
    if role == "sort_partitions_by":
        assert _read(store)[column].tolist() == ["v", "w", "w"]
    if role == "secondary_indices":
        dk.build_dataset_indices(store=store, dataset_uuid=UUID, columns=[column])
        assert _read(store, predicates=[[(column, "!=", "w")]])["i"].tolist() == [1]


# --------------------------------------------------------------------------- argument types
@pytest.mark.parametrize(
    "kwargs",
    [
        {"metadata": {"n": np.int64(3)}},
        {"metadata": {1: "a"}},
        {"metadata": {"when": pd.Timestamp("2024-01-01")}},
        {"row_group_size": "10"},
        {"row_group_size": 1.5},
        {"row_group_size": True},
        {"compression": ["zstd"]},
        {"compression": {"zstd": 1}},
    ],
    ids=repr,
)
def test_bad_write_options_are_typed_and_write_nothing(ds: Seeded, kwargs: dict[str, Any]) -> None:
    """Checked before any blob is written (metadata that is not JSON failed in the commit,
    after the data, with a bare TypeError, leaving orphan blobs)."""
    _raises(
        exc.InvalidInputError,
        dk.update_dataset,
        _frame([7], [7]),
        store=ds.store,
        dataset_uuid=UUID,
        **kwargs,
    )
    ds.assert_untouched()
    fresh = dk.open_store("memory://")
    _raises(
        exc.InvalidInputError,
        dk.write_dataset,
        _frame([7], [7]),
        store=fresh,
        dataset_uuid="new",
        **kwargs,
    )
    assert list(fresh.iter_keys("")) == []


def test_gc_arguments_of_the_wrong_type_are_typed(ds: Seeded) -> None:
    for kwargs in ({"keep_versions": "1"}, {"keep_versions": 1.0}, {"grace_period": None}):
        _raises(
            exc.InvalidInputError, dk.garbage_collect, store=ds.store, dataset_uuid=UUID, **kwargs
        )
    _raises(
        exc.InvalidInputError,
        dk.expire_versions,
        store=ds.store,
        dataset_uuid=UUID,
        keep_versions="1",
    )
    ds.assert_untouched()


def test_version_accepts_numpy_integers_and_types_the_rest(ds: Seeded) -> None:
    assert len(_read(ds.store, version=np.int64(0))) == 3
    for bad in ("0", 0.0, True):
        _raises(exc.VersionNotFoundError, _read, ds.store, version=bad)


def test_build_indices_needs_columns(ds: Seeded) -> None:
    for columns in (None, [], ()):
        _raises(
            exc.InvalidInputError,
            dk.build_dataset_indices,
            store=ds.store,
            dataset_uuid=UUID,
            columns=columns,
        )
    ds.assert_untouched()


@pytest.mark.parametrize(
    "scope",
    ["garbage", 5, [{}], [{"nope": 1}], [{"p": None}], [{"p": [1, 2]}]],
    ids=repr,
)
def test_delete_scope_of_a_new_dataset_is_checked_too(scope: Any) -> None:
    """update_dataset creating a dataset checked nothing of delete_scope."""
    store = dk.open_store("memory://")
    _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        _frame([1], [1]),
        store=store,
        dataset_uuid="new",
        partition_on="p",
        delete_scope=scope,
    )
    assert dk.list_datasets(store) == []
    meta = dk.update_dataset(
        _frame([1], [1]), store=store, dataset_uuid="new", partition_on="p", delete_scope=[{"p": 1}]
    )
    assert meta.version == 0


@pytest.mark.parametrize(
    "value",
    [None, float("nan"), np.float32("nan"), pd.NaT, pd.NA, np.datetime64("NaT")],
    ids=repr,
)
def test_null_delete_scope_values_are_refused_alike(ds: Seeded, value: Any) -> None:
    """pd.NaT and np.float32('nan') were accepted and deleted nothing; pd.NA got a
    misleading type error."""
    error = _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        store=ds.store,
        dataset_uuid=UUID,
        delete_scope=[{"p": value}],
    )
    assert "null" in str(error)
    ds.assert_untouched()


def test_delete_scope_column_errors_say_the_same_for_new_and_existing_datasets(
    ds: Seeded,
) -> None:
    """One message, from one place: what the column is and which columns can select."""
    unknown = _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        store=ds.store,
        dataset_uuid=UUID,
        delete_scope=[{"nope": 1}],
    )
    plain = _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        store=ds.store,
        dataset_uuid=UUID,
        delete_scope=[{"x": 1.0}],
    )
    new = _raises(
        exc.DeleteScopeError,
        dk.update_dataset,
        _frame([1], [1]),
        store=dk.open_store("memory://"),
        dataset_uuid="new",
        partition_on="p",
        delete_scope=[{"x": 1}],
    )
    assert f"'nope' of dataset {UUID!r}: unknown column" in str(unknown)
    assert "'x' of" in str(plain) and "a column without a secondary index" in str(plain)
    assert "'x' of the new dataset 'new': not a partition column nor an indexed" in str(new)
    for error in (unknown, plain, new):
        assert "only partition columns ['p'] and indexed columns" in str(error)
    ds.assert_untouched()
