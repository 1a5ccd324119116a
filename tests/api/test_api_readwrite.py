"""Behaviour of the read/write API: predicates, projections, order, iteration, versions."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataset_kit as dk
from dataset_kit import exceptions as exc
from dataset_kit.core import naming
from dataset_kit.core.metadata import STUB_MAX_BYTES
from dataset_kit.store import DelegatingStore, MemoryStore, Store
from dataset_kit.testing.predicates import pandas_filter

UUID = "ds"


# --------------------------------------------------------------------------- helpers
class CountingStore(DelegatingStore):
    """A memory store that records every ``get`` (to see which blobs a read touched)."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.gets: list[str] = []
        self._lock = threading.Lock()

    def data_gets(self) -> list[str]:
        with self._lock:
            return [k for k in self.gets if k.endswith(".parquet") and "/indices/" not in k]

    def index_gets(self) -> list[str]:
        with self._lock:
            return [k for k in self.gets if "/indices/" in k]

    def reset(self) -> None:
        with self._lock:
            self.gets.clear()

    def _get(self, key: str) -> bytes:
        with self._lock:
            self.gets.append(key)
        return self.inner.get(key)


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on the memory store, a local directory and Azurite."""
    return any_store


@pytest.fixture
def counting() -> CountingStore:
    return CountingStore()


def _read(store: Store, **kwargs: Any) -> pd.DataFrame:
    return dk.read_table(store=store, dataset_uuid=UUID, **kwargs)


def _data_keys(store: Store, uuid: str = UUID) -> list[str]:
    return sorted(
        k
        for k in store.iter_keys(naming.dataset_prefix(uuid))
        if k.endswith(".parquet") and "/indices/" not in k
    )


def _norm(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _rows(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(_norm(v) for v in row) for row in df.astype(object).itertuples(index=False)),
        key=repr,
    )


# --------------------------------------------------------------------------- predicates
def _predicate_frame() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    n = 120
    ints = rng.integers(-3, 4, n).astype(object)
    ints[rng.random(n) < 0.2] = None
    # zeros of both signs: is_in alone would miss -0.0 and prune row groups of zeros
    floats = rng.choice([-1.5, 0.5, 1.0, 2.5, 0.0, -0.0], n)
    floats[rng.random(n) < 0.2] = np.nan
    strs = rng.choice(["a", "b", "a b", ""], n).astype(object)
    strs[rng.random(n) < 0.2] = None
    return pd.DataFrame(
        {
            "rid": np.arange(n),
            "p": rng.choice([1, 2, 10, -5], n),
            "q": rng.choice(["x", "y", "x/y"], n),
            "i": pd.array(ints, dtype="Int64"),
            "f": floats,
            "s": pd.Series(strs, dtype="string"),
            "j": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        }
    )


_PRED_DF = _predicate_frame()


@pytest.fixture(scope="module")
def predicate_store() -> Store:
    s = dk.open_store("memory://")
    chunks = [_PRED_DF.iloc[i : i + 40] for i in range(0, len(_PRED_DF), 40)]
    dk.write_dataset(
        chunks[0],
        store=s,
        dataset_uuid=UUID,
        partition_on=["p", "q"],
        secondary_indices=["s", "i"],
    )
    for chunk in chunks[1:]:  # several files per partition, indices kept current
        dk.update_dataset(chunk, store=s, dataset_uuid=UUID)
    return s


def _values(col: str) -> st.SearchStrategy[Any]:
    return {
        "p": st.sampled_from([1, 2, 3, 10, -5, 1.5]),
        "q": st.sampled_from(["x", "y", "x/y", "z"]),
        "i": st.integers(-4, 4),
        "f": st.sampled_from([-1.5, 0.0, 0.5, 1.0, 2.0, 2.5]),
        "s": st.sampled_from(["a", "b", "a b", "", "zz"]),
        "j": st.integers(0, 5),
        "rid": st.integers(0, 130),
    }[col]


@st.composite
def _term(draw: st.DrawFn) -> tuple[str, str, Any]:
    col = draw(st.sampled_from(["p", "q", "i", "f", "s", "j", "rid"]))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]))
    if op in ("in", "not in"):
        return col, op, draw(st.lists(st.one_of(_values(col), st.none()), max_size=3))
    if op in ("==", "!=") and draw(st.integers(0, 3)) == 0:
        return col, op, draw(st.sampled_from([None, float("nan")]))
    return col, op, draw(_values(col))


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.lists(_term(), min_size=1, max_size=3), min_size=1, max_size=3))
def test_predicates_match_pandas(predicate_store: Store, predicates: list[Any]) -> None:
    got = _read(predicate_store, predicates=predicates)
    expected = pandas_filter(_PRED_DF, predicates)
    assert _rows(got) == _rows(expected[got.columns])


@pytest.mark.parametrize(
    "predicates",
    [
        [[("s", "==", None)]],
        [[("s", "!=", None)]],
        [[("i", "in", [1, None])]],
        [[("i", "not in", [1, None])]],
        [[("f", "==", np.nan)]],
        [[("f", "!=", 1.0)]],
        [[("f", "<", 1.0)]],
        [[("s", "!=", "a")]],
        [[("p", ">", 1), ("s", "==", "a")], [("q", "==", "x/y")]],
        [[("i", ">=", 2)], [("i", "<", -2)], [("p", "in", [10])]],
        [[("p", "!=", None)]],
        [[("p", "==", None)]],
        [[("rid", "in", [])]],
        [[("rid", "not in", [])]],
    ],
    ids=repr,
)
def test_predicate_examples(predicate_store: Store, predicates: list[Any]) -> None:
    got = _read(predicate_store, predicates=predicates)
    expected = pandas_filter(_PRED_DF, predicates)
    assert _rows(got) == _rows(expected[got.columns])


@pytest.mark.parametrize("values", [[0.0, 0.0], [-0.0]], ids=repr)
def test_in_predicate_on_zero_floats(store: Store, values: list[Any]) -> None:
    dk.write_dataset(
        pd.DataFrame({"f": values, "v": range(len(values))}), store=store, dataset_uuid=UUID
    )
    expected = _read(store, predicates=[[("f", "==", 0.0)]])
    assert len(expected) == sum(v is not None for v in values)
    pd.testing.assert_frame_equal(_read(store, predicates=[[("f", "in", [0.0])]]), expected)


def _timestamp_frame() -> pd.DataFrame:
    ts = pd.to_datetime(
        ["2024-01-01 10:00:00", "2024-01-01 10:00:00.000001", "1500-01-01", "2500-06-01"],
        format="ISO8601",
    ).as_unit("us")
    return pd.DataFrame({"ts": ts, "key": ts, "idx": ts, "x": range(4)})


_NS_AFTER = pd.Timestamp("2024-01-01 10:00:00") + pd.Timedelta(1, "ns")
_TIMESTAMP_PREDICATES = [
    ("==", _NS_AFTER),
    ("in", [_NS_AFTER]),
    ("not in", [_NS_AFTER]),
    ("in", [_NS_AFTER, pd.Timestamp("2500-06-01")]),
    (">", _NS_AFTER),
    ("<=", _NS_AFTER),
    (">", pd.Timestamp("2300-01-01")),
    ("<", dt.datetime(1600, 1, 1)),
    ("in", [pd.Timestamp("1500-01-01"), dt.datetime(2500, 6, 1)]),
]


@pytest.mark.parametrize("column", ["ts", "key", "idx"])
def test_timestamp_predicates_on_every_path(store: Store, column: str) -> None:
    # payload rows, partition values and a secondary index: a ns value on a us column is
    # compared exactly (``in`` agrees with ``==``), years beyond datetime64[ns] work
    df = _timestamp_frame()
    dk.write_dataset(
        df, store=store, dataset_uuid=UUID, partition_on="key", secondary_indices="idx"
    )
    for op, value in _TIMESTAMP_PREDICATES:
        predicates = [[(column, op, value)]]
        got = _read(store, predicates=predicates)
        expected = pandas_filter(df, predicates)
        assert sorted(got["x"]) == sorted(expected["x"]), (op, value)
        assert got["ts"].dtype == df["ts"].dtype


def test_long_float_in_list_reads_the_right_rows(store: Store) -> None:
    # once a left-deep chain of 50,000 ORs: the interpreter crashed (C stack overflow)
    f = np.r_[np.arange(6) * 0.5, -0.0, 1e6, np.nan]
    df = pd.DataFrame({"f": f, "p": np.r_[f[:-1], 0.0], "x": range(9)})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p", secondary_indices="f")
    values = [*np.arange(50_000) * 0.25, float("nan")]
    for column, op in [("f", "in"), ("f", "not in"), ("p", "in")]:
        got = _read(store, predicates=[[(column, op, values)]])
        hit = df[column].isin(values)  # pandas: -0.0 is 0.0, NaN is in a list with NaN
        expected = df[hit if op == "in" else ~hit]
        assert sorted(got["x"]) == sorted(expected["x"]), (column, op)


def test_many_equality_conjunctions_read_the_right_rows(store: Store) -> None:
    # [[("x", "==", v)] for v in ...]: one is_in, not a chain of 20,000 ORs (a crash)
    df = pd.DataFrame({"x": range(100), "y": np.arange(100) % 3})
    dk.write_dataset(df, store=store, dataset_uuid=UUID)
    got = _read(store, predicates=[[("x", "==", v)] for v in range(0, 20_000, 7)])
    assert got["x"].tolist() == list(range(0, 100, 7))
    with pytest.raises(exc.PredicateError, match="at most 1,000"):
        _read(store, predicates=[[("x", "==", v), ("y", "==", v % 3)] for v in range(2_000)])


def test_float16_predicates_with_and_without_index(store: Store) -> None:
    df = pd.DataFrame({"h": np.array([1.5, 2.0, 0.1, np.nan], "float16"), "x": range(4)})
    df["g"] = df["h"]
    dk.write_dataset(df, store=store, dataset_uuid=UUID, secondary_indices="g")
    for column in ("h", "g"):
        for op, value in [(">", 1.6), ("in", [1.5, 0.1]), ("==", np.float16(0.1)), ("!=", 2)]:
            predicates = [[(column, op, value)]]
            got = _read(store, predicates=predicates)
            assert got["x"].tolist() == pandas_filter(df, predicates)["x"].tolist()
            assert got["h"].dtype == np.float16


def test_null_semantics_examples(predicate_store: Store) -> None:
    nulls = _read(predicate_store, predicates=[[("s", "==", None)]])
    assert len(nulls) == _PRED_DF["s"].isna().sum() > 0
    assert nulls["s"].isna().all()
    not_a = _read(predicate_store, predicates=[[("s", "!=", "a")]])
    assert not_a["s"].isna().sum() == _PRED_DF["s"].isna().sum()  # nulls are != "a"
    nan_lt = _read(predicate_store, predicates=[[("f", "<", 100.0)]])
    assert len(nan_lt) == _PRED_DF["f"].notna().sum()  # NaN < x is False


# --------------------------------------------------------------------------- projection / order
def test_columns_projection_and_order(predicate_store: Store) -> None:
    df = _read(predicate_store, columns=["s", "p", "rid"])
    assert df.columns.tolist() == ["s", "p", "rid"]
    full = _read(predicate_store)
    pd.testing.assert_frame_equal(df, full[["s", "p", "rid"]])
    assert _read(predicate_store, columns=[]).columns.tolist() == []


def test_empty_projection_keeps_row_count(predicate_store: Store) -> None:
    assert len(_read(predicate_store, columns=[])) == len(_PRED_DF)
    assert len(_read(predicate_store, columns=["p"])) == len(_PRED_DF)


def test_projection_keeps_exact_dtypes(store: Store) -> None:
    df = pd.DataFrame(
        {
            "p": [1, 2],
            "i8": np.array([1, 2], "int8"),
            "u16": np.array([1, 2], "uint16"),
            "f32": np.array([1.5, 2.5], "float32"),
            "c": pd.Categorical(["a", "b"], categories=["b", "a", "z"]),
            "st": pd.array(["a", None], dtype="string"),
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02"]).as_unit("ns"),
            "tz": pd.to_datetime(["2024-01-01", "2024-01-02"]).tz_localize("Asia/Tokyo"),
        }
    )
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
    got = _read(store)
    pd.testing.assert_frame_equal(got, df)
    assert got["c"].cat.categories.tolist() == ["b", "a", "z"]
    sub = _read(store, columns=["tz", "c"])
    pd.testing.assert_frame_equal(sub, df[["tz", "c"]])


def test_deterministic_order_partitions_sorted_by_value(store: Store) -> None:
    for p in [10, 2, -1, 1]:
        dk.update_dataset(
            pd.DataFrame({"p": [p], "q": ["b"], "n": [p * 100]}),
            store=store,
            dataset_uuid=UUID,
            partition_on=["p", "q"],
        )
    dk.update_dataset(
        pd.DataFrame({"p": [2, 2], "q": ["a", "b"], "n": [7, 8]}), store=store, dataset_uuid=UUID
    )
    first = _read(store)
    # ints sort numerically (-1 < 1 < 2 < 10), then q, then commit order
    assert first["p"].tolist() == [-1, 1, 2, 2, 2, 10]
    assert first["q"].tolist() == ["b", "b", "a", "b", "b", "b"]
    assert first["n"].tolist() == [-100, 100, 7, 200, 8, 1000]
    for _ in range(3):
        pd.testing.assert_frame_equal(_read(store), first)
    frames = dk.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)
    assert [f["n"].tolist() for f in frames] == [[-100], [100], [7], [200], [8], [1000]]


def test_string_partitions_sort_lexicographically(store: Store) -> None:
    df = pd.DataFrame({"p": ["b", "a/x", "B", "a"], "v": [1, 2, 3, 4]})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
    assert _read(store)["p"].tolist() == ["B", "a", "a/x", "b"]


# --------------------------------------------------------------------------- dispatch / iter
def test_dispatch_by(predicate_store: Store) -> None:
    frames = dk.read_dataset_as_dataframes(
        store=predicate_store, dataset_uuid=UUID, dispatch_by=["p"]
    )
    assert [f["p"].unique().tolist() for f in frames] == [[-5], [1], [2], [10]]
    assert sum(len(f) for f in frames) == len(_PRED_DF)
    both = dk.read_dataset_as_dataframes(
        store=predicate_store, dataset_uuid=UUID, dispatch_by=["q", "p"]
    )
    assert len(both) == len(_PRED_DF.groupby(["q", "p"]))
    for f in both:
        assert f[["q", "p"]].drop_duplicates().shape[0] == 1
    (one,) = dk.read_dataset_as_dataframes(store=predicate_store, dataset_uuid=UUID, dispatch_by=[])
    pd.testing.assert_frame_equal(one, _read(predicate_store))
    with pytest.raises(exc.InvalidInputError):
        dk.read_dataset_as_dataframes(store=predicate_store, dataset_uuid=UUID, dispatch_by=["s"])


def test_dispatch_by_with_predicates_omits_empty_groups(predicate_store: Store) -> None:
    frames = dk.read_dataset_as_dataframes(
        store=predicate_store,
        dataset_uuid=UUID,
        dispatch_by="p",
        predicates=[[("p", "in", [1, 10])]],
    )
    assert [f["p"].iloc[0] for f in frames] == [1, 10]
    frames = dk.read_dataset_as_dataframes(
        store=predicate_store, dataset_uuid=UUID, predicates=[[("rid", "==", 5)]]
    )
    assert len(frames) == 1
    assert frames[0]["rid"].tolist() == [5]


def test_iterator_one_frame_per_partition_and_lazy(counting: CountingStore) -> None:
    df = pd.DataFrame({"p": [3, 1, 2, 1], "v": [1, 2, 3, 4]})
    dk.write_dataset(df, store=counting, dataset_uuid=UUID, partition_on="p")
    counting.reset()
    it = dk.iter.read_dataset_as_dataframes(store=counting, dataset_uuid=UUID)
    assert counting.data_gets() == []  # nothing read before the first next()
    first = next(it)
    assert first["p"].tolist() == [1, 1]
    assert len(counting.data_gets()) == 1
    second = next(it)
    assert second["p"].tolist() == [2]
    assert len(counting.data_gets()) == 2
    rest = list(it)
    assert [f["p"].tolist() for f in rest] == [[3]]
    assert len(counting.data_gets()) == 3
    eager = dk.read_dataset_as_dataframes(store=counting, dataset_uuid=UUID)
    for a, b in zip([first, second, *rest], eager, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_iterator_pins_the_version(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1, 2], "v": [1, 2]}), store=store, dataset_uuid=UUID, partition_on="p"
    )
    it = dk.iter.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)
    assert next(it)["v"].tolist() == [1]
    dk.update_dataset(pd.DataFrame({"p": [3], "v": [3]}), store=store, dataset_uuid=UUID)
    assert [f["v"].tolist() for f in it] == [[2]]


def test_write_consumes_generator_lazily(store: Store) -> None:
    pulls: list[int] = []  # number of data blobs in the store when each frame was pulled

    def frames() -> Iterator[pd.DataFrame]:
        for i in range(5):
            pulls.append(len(_data_keys(store)))
            yield pd.DataFrame({"p": [i, i + 100], "v": [i, i]})

    meta = dk.write_dataset(frames(), store=store, dataset_uuid=UUID, partition_on="p")
    # frame k is pulled only after the blobs of frames 0..k-1 were written
    assert pulls == [0, 2, 4, 6, 8]
    assert meta.num_partitions == 10
    assert len(_data_keys(store)) == 10
    assert sorted(_read(store)["v"].tolist()) == sorted([*range(5), *range(5)])


def test_update_consumes_generator_lazily(store: Store) -> None:
    dk.write_dataset(pd.DataFrame({"v": [0]}), store=store, dataset_uuid=UUID)
    pulls: list[int] = []

    def frames() -> Iterator[pa.Table]:
        for i in range(1, 4):
            pulls.append(len(_data_keys(store)))
            yield pa.table({"v": [i]})

    dk.update_dataset(frames(), store=store, dataset_uuid=UUID)
    assert pulls == [1, 2, 3]
    assert _read(store)["v"].tolist() == [0, 1, 2, 3]


def test_categoricals_and_arrow_output(predicate_store: Store) -> None:
    df = _read(predicate_store, categoricals=["q", "s"])
    assert isinstance(df["q"].dtype, pd.CategoricalDtype)
    assert isinstance(df["s"].dtype, pd.CategoricalDtype)
    plain = _read(predicate_store)
    assert df["q"].astype(object).tolist() == plain["q"].astype(object).tolist()
    assert [_norm(v) for v in df["s"].astype(object)] == [_norm(v) for v in plain["s"]]
    table = _read(predicate_store, output="arrow")
    assert isinstance(table, pa.Table)
    assert table.num_rows == len(_PRED_DF)
    assert table.schema.field("p").type == pa.int64()
    assert table.column_names == plain.columns.tolist()
    arrow_cat = _read(predicate_store, output="arrow", categoricals=["q"], columns=["q"])
    assert pa.types.is_dictionary(arrow_cat.schema.field("q").type)
    frames = dk.read_dataset_as_dataframes(
        store=predicate_store, dataset_uuid=UUID, output="arrow", dispatch_by=[]
    )
    assert isinstance(frames[0], pa.Table)


def test_categories_union_across_updates(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1, 2], "c": pd.Categorical(["a", "b"])}),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
    )
    dk.update_dataset(
        pd.DataFrame({"p": [3], "c": pd.Categorical(["z"])}), store=store, dataset_uuid=UUID
    )
    df = _read(store)
    assert isinstance(df["c"].dtype, pd.CategoricalDtype)
    assert df["c"].tolist() == ["a", "b", "z"]
    assert df["c"].cat.categories.tolist() == ["a", "b", "z"]
    assert _read(store, predicates=[[("c", "in", ["z", "a"])]])["p"].tolist() == [1, 3]


def test_plain_strings_appended_to_categorical_column_are_kept(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1], "c": pd.Categorical(["a"])}),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
    )
    dk.update_dataset(pd.DataFrame({"p": [2], "c": ["plain"]}), store=store, dataset_uuid=UUID)
    assert _read(store)["c"].astype(object).tolist() == ["a", "plain"]


def test_categorical_partition_column(store: Store) -> None:
    df = pd.DataFrame({"p": pd.Categorical(["x", "y", "x"]), "v": [1, 2, 3]})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
    got = _read(store)
    assert isinstance(got["p"].dtype, pd.CategoricalDtype)
    assert got["p"].astype(object).tolist() == ["x", "x", "y"]
    assert _read(store, predicates=[[("p", "==", "y")]])["v"].tolist() == [2]
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": "x"}])
    assert _read(store)["v"].tolist() == [2]


# --------------------------------------------------------------------------- partition types
@pytest.mark.parametrize(
    "values",
    [
        [True, False],
        [dt.date(2024, 1, 1), dt.date(1999, 12, 31)],
        ["a/b", "c=d%", "é ü", ""],
        [-0.0, 1.5, float("inf")],
        pd.to_datetime(
            ["2024-01-01 10:00:00", "2024-07-01 02:30:00.123456"], format="ISO8601"
        ).tz_localize("Europe/Berlin"),
        pd.to_datetime(
            ["2024-01-01 10:00:00.000000001", "1970-01-01 00:00:00"], format="ISO8601"
        ).as_unit("ns"),
        np.array([-128, 127], dtype="int8"),
        np.array([0, 2**64 - 1], dtype="uint64"),
        [b"\x00/x", b"abc"],
    ],
    ids=["bool", "date", "str", "float", "tz", "ns", "int8", "uint64", "bytes"],
)
def test_partition_value_types_round_trip(store: Store, values: Any) -> None:
    n = len(values)
    df = pd.DataFrame({"p": values, "v": np.arange(n)})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
    assert dk.open_dataset(store=store, dataset_uuid=UUID).num_partitions == n
    got = _read(store).sort_values("v").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, df)
    # predicates on the partition column find each value
    for i in range(n):
        value = df["p"].iloc[i]
        if isinstance(value, np.generic):
            value = value.item()
        one = _read(store, predicates=[[("p", "==", value)]])
        assert one["v"].tolist() == [i]
        others = _read(store, predicates=[[("p", "!=", value)]])
        assert sorted(others["v"].tolist()) == [j for j in range(n) if j != i]


def test_historic_tz_partition_value_round_trips(store: Store) -> None:
    df = pd.DataFrame(
        {"p": pd.to_datetime(["1850-06-01 12:00"]).tz_localize("Europe/Berlin"), "v": [1]}
    )
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
    pd.testing.assert_frame_equal(_read(store), df)


# --------------------------------------------------------------------------- versions
def test_overwrite_keeps_old_versions_readable(store: Store) -> None:
    v0 = pd.DataFrame({"p": [1, 2], "v": [1, 2]})
    v1 = pd.DataFrame({"p": [3], "v": [3]})
    m0 = dk.write_dataset(v0, store=store, dataset_uuid=UUID, partition_on="p")
    m1 = dk.write_dataset(v1, store=store, dataset_uuid=UUID, partition_on="p", mode="overwrite")
    assert (m0.version, m1.version) == (0, 1)
    pd.testing.assert_frame_equal(_read(store), v1)
    pd.testing.assert_frame_equal(_read(store, version=0), v0)
    pd.testing.assert_frame_equal(_read(store, version=1), v1)
    # the old blobs are kept (for old versions) until garbage collection
    assert len(_data_keys(store)) == 3
    # overwrite may change the layout entirely
    v2 = pd.DataFrame({"a": ["x"]})
    dk.write_dataset(v2, store=store, dataset_uuid=UUID, mode="overwrite")
    pd.testing.assert_frame_equal(_read(store), v2)
    pd.testing.assert_frame_equal(_read(store, version=0), v0)
    assert dk.open_dataset(store=store, dataset_uuid=UUID, version=1).partition_keys == ("p",)
    ops = [v["operation"] for v in dk.open_dataset(store=store, dataset_uuid=UUID).versions()]
    assert ops == ["write", "overwrite", "overwrite"]


def test_delete_scope_on_partition_columns(store: Store) -> None:
    df = pd.DataFrame({"p": [1, 1, 2, 3], "q": ["a", "b", "a", "a"], "v": [1, 2, 3, 4]})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on=["p", "q"])
    meta = dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": 1, "q": "a"}])
    assert _read(store)["v"].tolist() == [2, 3, 4]
    assert meta.commit["operation"] == "update"
    dk.update_dataset(
        pd.DataFrame({"p": [2], "q": ["a"], "v": [30]}),
        store=store,
        dataset_uuid=UUID,
        delete_scope=[{"p": 2}, {"q": "b"}],
    )
    # delete and append in one commit: the new data of p=2 stays
    assert _read(store)["v"].tolist() == [30, 4]
    # a scope that matches nothing changes nothing but still succeeds
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"p": 99}])
    assert _read(store)["v"].tolist() == [30, 4]
    # old versions still hold the deleted partitions
    assert _read(store, version=0)["v"].tolist() == [1, 2, 3, 4]


def test_delete_scope_on_indexed_column(store: Store) -> None:
    frames = [pd.DataFrame({"k": [k, "common"], "v": [i, -i]}) for i, k in enumerate("abc")]
    dk.write_dataset(iter(frames), store=store, dataset_uuid=UUID, secondary_indices="k")
    assert len(_data_keys(store)) == 3
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"k": "b"}])
    assert sorted(_read(store)["v"].tolist()) == [-2, -0, 0, 2]
    dk.update_dataset(store=store, dataset_uuid=UUID, delete_scope=[{"k": "common"}])
    assert _read(store).empty
    # the index no longer names the deleted partitions
    dk.update_dataset(pd.DataFrame({"k": ["b"], "v": [9]}), store=store, dataset_uuid=UUID)
    assert _read(store, predicates=[[("k", "==", "b")]])["v"].tolist() == [9]


def test_metadata_merge(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"a": [1]}), store=store, dataset_uuid=UUID, metadata={"owner": "x", "n": 1}
    )
    meta = dk.update_dataset(store=store, dataset_uuid=UUID, metadata={"n": 2, "new": [1, 2]})
    assert meta.version == 1
    info = dk.open_dataset(store=store, dataset_uuid=UUID).info()
    assert info["metadata"]["owner"] == "x"
    assert info["metadata"]["n"] == 2
    assert info["metadata"]["new"] == [1, 2]
    assert "creation_time" in info["metadata"]
    assert dk.open_dataset(store=store, dataset_uuid=UUID, version=0).meta.metadata["n"] == 1


def test_update_with_nothing_to_do_commits_nothing(store: Store) -> None:
    dk.write_dataset(pd.DataFrame({"a": [1]}), store=store, dataset_uuid=UUID)
    assert dk.update_dataset(store=store, dataset_uuid=UUID).version == 0
    assert len(list(store.iter_keys(naming.snapshot_prefix(UUID)))) == 1


def test_update_with_empty_frame_commits_nothing(store: Store) -> None:
    dk.write_dataset(pd.DataFrame({"a": [1]}), store=store, dataset_uuid=UUID)
    meta = dk.update_dataset(
        pd.DataFrame({"a": pd.Series([], dtype="int64")}), store=store, dataset_uuid=UUID
    )
    assert meta.version == 0
    assert len(list(store.iter_keys(naming.snapshot_prefix(UUID)))) == 1


# --------------------------------------------------------------------------- pruning
def test_secondary_index_prunes_blobs(counting: CountingStore) -> None:
    frames = [pd.DataFrame({"s": [f"v{i}", f"w{i}"], "n": [i, i]}) for i in range(10)]
    dk.write_dataset(iter(frames), store=counting, dataset_uuid=UUID)
    assert len(_data_keys(counting)) == 10
    pred = [[("s", "==", "v3")]]
    counting.reset()
    before = _read(counting, predicates=pred)
    assert len(counting.data_gets()) == 10  # no index: every blob is read
    meta = dk.build_dataset_indices(store=counting, dataset_uuid=UUID, columns=["s"])
    assert meta.secondary_indices == ("s",)
    counting.reset()
    after = _read(counting, predicates=pred)
    pd.testing.assert_frame_equal(before, after)
    assert after["n"].tolist() == [3]
    assert len(counting.data_gets()) == 1
    assert len(counting.index_gets()) == 1
    counting.reset()
    both = _read(counting, predicates=[[("s", "in", ["v1", "w7"])]])
    assert sorted(both["n"].tolist()) == [1, 7]
    assert len(counting.data_gets()) == 2
    # null-including terms cannot use the index
    counting.reset()
    _read(counting, predicates=[[("s", "!=", "v1")]])
    assert len(counting.data_gets()) == 10
    # appends keep the index current
    dk.update_dataset(pd.DataFrame({"s": ["v3"], "n": [33]}), store=counting, dataset_uuid=UUID)
    counting.reset()
    assert sorted(_read(counting, predicates=pred)["n"].tolist()) == [3, 33]
    assert len(counting.data_gets()) == 2


def test_partition_pruning_reads_only_matching_blobs(counting: CountingStore) -> None:
    df = pd.DataFrame({"p": list(range(20)), "v": list(range(20))})
    dk.write_dataset(df, store=counting, dataset_uuid=UUID, partition_on="p")
    counting.reset()
    got = _read(counting, predicates=[[("p", ">=", 18)], [("p", "==", 3)]])
    assert got["v"].tolist() == [3, 18, 19]
    assert len(counting.data_gets()) == 3


def _corrupt_row_groups_except(data: bytes, keep: int) -> bytes:
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    buf = bytearray(data)
    for rg in range(meta.num_row_groups):
        if rg == keep:
            continue
        for c in range(meta.num_columns):
            col = meta.row_group(rg).column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            buf[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    return bytes(buf)


def test_row_group_pruning(store: Store) -> None:
    df = pd.DataFrame({"x": np.arange(100), "y": np.arange(100) * 2.0})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, row_group_size=10)
    (key,) = _data_keys(store)
    data = store.get(key)
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == 10
    # wreck every row group but #5: a read that touches another row group fails
    store.put(key, _corrupt_row_groups_except(data, keep=5))
    with pytest.raises(Exception):  # noqa: B017 - any decoding error proves the damage
        _read(store)
    got = _read(store, predicates=[[("x", "==", 55)]])
    assert got.to_dict("list") == {"x": [55], "y": [110.0]}
    got = _read(store, predicates=[[("x", ">=", 52), ("x", "<", 58)]])
    assert got["x"].tolist() == list(range(52, 58))


def test_sort_partitions_by_makes_row_groups_prunable(store: Store) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.permutation(100), "y": np.zeros(100)})
    dk.write_dataset(df, store=store, dataset_uuid=UUID, row_group_size=10, sort_partitions_by="x")
    (key,) = _data_keys(store)
    store.put(key, _corrupt_row_groups_except(store.get(key), keep=3))
    assert _read(store, predicates=[[("x", "in", [31, 35])]])["x"].tolist() == [31, 35]


# --------------------------------------------------------------------------- datasets
def test_list_datasets(store: Store) -> None:
    assert dk.list_datasets(store) == []
    for name in ["b", "a-1", "C_2", "a"]:
        dk.write_dataset(pd.DataFrame({"v": [1]}), store=store, dataset_uuid=name)
    store.put("unrelated.json", b"{}")
    store.put("x/y.by-dataset-metadata.json", b"{}")
    assert dk.list_datasets(store) == ["C_2", "a", "a-1", "b"]
    dk.delete_dataset(store=store, dataset_uuid="a-1")
    assert dk.list_datasets(store) == ["C_2", "a", "b"]
    assert dk.list_datasets(store.url) == ["C_2", "a", "b"]


def test_delete_dataset_and_fresh_history(store: Store) -> None:
    dk.write_dataset(
        pd.DataFrame({"p": [1, 2], "s": ["a", "b"]}),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
        secondary_indices="s",
    )
    dk.update_dataset(pd.DataFrame({"p": [3], "s": ["c"]}), store=store, dataset_uuid=UUID)
    dk.write_dataset(pd.DataFrame({"v": [1]}), store=store, dataset_uuid="other")
    other = {k: store.get(k) for k in store.iter_keys("other")}
    dk.delete_dataset(store=store, dataset_uuid=UUID)
    tomb = naming.snapshot_key(UUID, 2)
    left = {i.key: i.size for i in store.iter_infos(UUID)}
    # the tombstone, and stubs holding the slots of the deleted versions
    assert sorted(left) == [naming.snapshot_key(UUID, v) for v in (0, 1, 2)]
    assert max(left[naming.snapshot_key(UUID, v)] for v in (0, 1)) <= STUB_MAX_BYTES
    assert left[tomb] > STUB_MAX_BYTES
    assert {k: store.get(k) for k in store.iter_keys("other")} == other
    with pytest.raises(exc.DatasetNotFoundError):
        _read(store)
    with pytest.raises(exc.DatasetNotFoundError):
        dk.delete_dataset(store=store, dataset_uuid=UUID)
    assert dk.list_datasets(store) == ["other"]
    # a new dataset under the same uuid starts a fresh history after the tombstone
    meta = dk.write_dataset(pd.DataFrame({"z": [5]}), store=store, dataset_uuid=UUID)
    assert meta.version == 3
    assert meta.history_start == 3
    assert meta.parent is None
    assert _read(store)["z"].tolist() == [5]
    for old in (0, 1, 2):
        with pytest.raises(exc.VersionNotFoundError):
            _read(store, version=old)
    versions = dk.open_dataset(store=store, dataset_uuid=UUID).versions()
    assert [v["version"] for v in versions] == [3]
    dk.update_dataset(pd.DataFrame({"z": [6]}), store=store, dataset_uuid=UUID)
    assert [v["version"] for v in dk.open_dataset(store=store, dataset_uuid=UUID).versions()] == [
        3,
        4,
    ]


def test_open_dataset_info_and_versions(store: Store) -> None:
    df = pd.DataFrame({"p": [1, 1, 2], "s": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    dk.write_dataset(
        df,
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
        secondary_indices="s",
        metadata={"team": "t"},
    )
    dk.update_dataset(
        pd.DataFrame({"p": [3], "s": ["d"], "x": [4.0]}), store=store, dataset_uuid=UUID
    )
    ds = dk.open_dataset(store=store, dataset_uuid=UUID)
    info = ds.info()
    sizes = sum(store.stat(k).size for k in _data_keys(store))
    assert info["uuid"] == UUID
    assert info["version"] == 1
    assert info["partitions"] == 3 == ds.num_partitions
    assert info["rows"] == 4 == ds.num_rows
    assert info["bytes"] == sizes == ds.nbytes
    assert info["partition_keys"] == ["p"]
    assert info["secondary_indices"] == ["s"]
    assert info["schema"] == {"p": "int64", "s": "large_string", "x": "double"}
    assert info["metadata"]["team"] == "t"
    assert info["commit"]["operation"] == "append"
    versions = ds.versions()
    assert [(v["version"], v["partitions"], v["operation"]) for v in versions] == [
        (0, 2, "write"),
        (1, 3, "append"),
    ]
    assert (versions[1]["rows"], versions[1]["rows_added"]) == (4, 1)  # total, as info()
    old = dk.open_dataset(store=store, dataset_uuid=UUID, version=0)
    assert (old.version, old.num_rows, old.num_partitions) == (0, 3, 2)
    pd.testing.assert_frame_equal(old.read_table(), df)
    assert old.read_table(columns=["x"], predicates=[[("s", "==", "b")]])["x"].tolist() == [2.0]
    assert "rows=3" in repr(old)


def test_empty_frame_write(store: Store) -> None:
    empty = pd.DataFrame(
        {
            "p": pd.Series([], dtype="int64"),
            "x": pd.Series([], dtype="float32"),
            "s": pd.Series([], dtype="str"),
            "t": pd.Series([], dtype="datetime64[ns]"),
        }
    )
    meta = dk.write_dataset(empty, store=store, dataset_uuid=UUID, partition_on="p")
    assert meta.num_partitions == 0
    assert _data_keys(store) == []
    ds = dk.open_dataset(store=store, dataset_uuid=UUID)
    assert ds.schema.names == ["p", "x", "s", "t"]
    assert ds.info()["rows"] == 0
    got = _read(store)
    assert got.empty
    pd.testing.assert_series_equal(got.dtypes, empty.dtypes)
    assert _read(store, predicates=[[("x", ">", 1.0)]]).empty
    assert dk.read_dataset_as_dataframes(store=store, dataset_uuid=UUID) == []
    # appending to it works, and an empty append writes no file either
    dk.update_dataset(
        pd.DataFrame(
            {
                "p": [1],
                "x": np.float32([1.5]),
                "s": ["a"],
                "t": pd.to_datetime(["2024-01-01"]).as_unit("ns"),
            }
        ),
        store=store,
        dataset_uuid=UUID,
    )
    dk.update_dataset(empty, store=store, dataset_uuid=UUID)
    assert len(_data_keys(store)) == 1
    assert _read(store)["s"].tolist() == ["a"]
    for key in store.iter_keys(""):
        assert store.stat(key).size > 0


def test_empty_frames_in_generator_write_no_files(store: Store) -> None:
    frames = [
        pd.DataFrame({"p": [1], "v": [1]}),
        pd.DataFrame({"p": [], "v": []}).astype(int),
        pd.DataFrame({"p": [2], "v": [2]}),
    ]
    meta = dk.write_dataset(iter(frames), store=store, dataset_uuid=UUID, partition_on="p")
    assert meta.num_partitions == 2
    assert len(_data_keys(store)) == 2


def test_every_column_is_a_partition_column(store: Store) -> None:
    df = pd.DataFrame({"p": [1, 2, 2], "q": ["x", "y", "y"]})
    meta = dk.write_dataset(df, store=store, dataset_uuid=UUID, partition_on=["p", "q"])
    assert meta.num_partitions == 2
    assert dk.open_dataset(store=store, dataset_uuid=UUID).num_rows == 3
    pd.testing.assert_frame_equal(_read(store), df)


def test_write_arrow_table_and_record_batch(store: Store) -> None:
    table = pa.table({"a": pa.array([1, 2], pa.int16()), "b": ["x", "y"]})
    dk.write_dataset(table, store=store, dataset_uuid=UUID)
    dk.update_dataset(table.to_batches()[0], store=store, dataset_uuid=UUID)
    got = _read(store, output="arrow")
    assert got.schema.field("a").type == pa.int16()
    assert got.num_rows == 4


def test_pandas_index_is_not_stored(store: Store) -> None:
    df = pd.DataFrame({"a": [1, 2]}, index=pd.Index([10, 20], name="idx"))
    dk.write_dataset(df, store=store, dataset_uuid=UUID)
    got = _read(store)
    assert got.columns.tolist() == ["a"]
    assert got.index.tolist() == [0, 1]


def test_update_creates_missing_dataset(store: Store) -> None:
    meta = dk.update_dataset(
        pd.DataFrame({"p": [1], "v": [1]}),
        store=store,
        dataset_uuid=UUID,
        partition_on="p",
        secondary_indices="v",
    )
    assert meta.version == 0
    assert meta.partition_keys == ("p",)
    assert meta.secondary_indices == ("v",)


def test_store_url_accepted(store: Store) -> None:
    dk.write_dataset(pd.DataFrame({"a": [1]}), store=store.url, dataset_uuid=UUID)
    assert _read(store)["a"].tolist() == [1]


def test_many_updates_row_counts(store: Store) -> None:
    counts: Counter[int] = Counter()
    for i in range(6):
        df = pd.DataFrame({"p": [i % 3] * (i + 1), "v": [i] * (i + 1)})
        dk.update_dataset(df, store=store, dataset_uuid=UUID, partition_on="p")
        counts[i] = i + 1
    got = _read(store)
    assert Counter(got["v"].tolist()) == counts
    assert dk.open_dataset(store=store, dataset_uuid=UUID).num_rows == sum(counts.values())


# --------------------------------------------------------------------------- nulls in ints
BIG = 2**53 + 1  # not a float64


def _arrow_with_nulls_in_the_second_append(store: Store) -> None:
    first = pa.table({"g": ["a", "a"], "k": pa.array([BIG, 2], pa.int64()), "b": [True, False]})
    second = pa.table({"g": ["b", "b"], "k": pa.array([BIG + 2, None]), "b": [None, True]})
    dk.write_dataset(first, store=store, dataset_uuid=UUID, partition_on="g")
    dk.update_dataset(second, store=store, dataset_uuid=UUID)


def test_arrow_nulls_in_int_and_bool_columns_read_back_nullable_everywhere() -> None:
    # Arrow data carries no pandas dtypes: a column with nulls in some blobs read back as
    # int64 from those without nulls and float64 (rounded) / object from the others
    store = MemoryStore()
    _arrow_with_nulls_in_the_second_append(store)
    df = dk.read_table(store=store, dataset_uuid=UUID)
    assert df.dtypes.astype(str).to_dict() == {"g": "str", "k": "Int64", "b": "boolean"}
    assert df["k"].tolist() == [BIG, 2, BIG + 2, pd.NA]
    frames = dk.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)
    lazy = list(dk.iter.read_dataset_as_dataframes(store=store, dataset_uuid=UUID))
    for frame in [*frames, *lazy]:
        assert frame.dtypes.to_dict() == df.dtypes.to_dict()
    # a column that never held nulls keeps its numpy dtype
    plain = pa.table({"k": pa.array([1, 2], pa.int64()), "b": [True, False]})
    dk.write_dataset(plain, store=store, dataset_uuid="plain")
    got = dk.read_table(store=store, dataset_uuid="plain")
    assert got.dtypes.astype(str).to_dict() == {"k": "int64", "b": "bool"}


def test_nulls_in_a_dataset_written_without_nullable_dtypes_read_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a dataset written before the nullable dtype was recorded: reads never round through
    # float64, a partition with nulls reads nullable, one without keeps int64
    store = MemoryStore()
    with monkeypatch.context() as m:
        m.setattr("dataset_kit.io.write.with_null_dtypes", lambda table: table)
        _arrow_with_nulls_in_the_second_append(store)
    assert dk.open_dataset(store=store, dataset_uuid=UUID).schema.metadata is None
    df = dk.read_table(store=store, dataset_uuid=UUID)
    assert df["k"].dtype == "Int64" and df["k"].tolist() == [BIG, 2, BIG + 2, pd.NA]
    assert df["b"].dtype == "boolean"
    frames = dk.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)
    assert [str(f["k"].dtype) for f in frames] == ["int64", "Int64"]
    # appending nulls now records the nullable dtype for every reader
    dk.update_dataset(
        pa.table({"g": ["c"], "k": pa.array([None], pa.int64()), "b": [True]}),
        store=store,
        dataset_uuid=UUID,
    )
    frames = dk.read_dataset_as_dataframes(store=store, dataset_uuid=UUID)
    assert [str(f["k"].dtype) for f in frames] == ["Int64"] * 3
    assert [str(f["b"].dtype) for f in frames] == ["bool", "boolean", "bool"]


def test_object_ints_with_nulls_read_back_exactly() -> None:
    # pandas object integers with None were stored with numpy_type "object", which pyarrow
    # reads as float64: 2**53 + 1 came back as 2**53
    store = MemoryStore()
    df = pd.DataFrame({"k": pd.Series([BIG, None], dtype=object)})
    dk.write_dataset(df, store=store, dataset_uuid=UUID)
    got = dk.read_table(store=store, dataset_uuid=UUID)
    assert got["k"].dtype == "Int64" and got["k"].tolist() == [BIG, pd.NA]


def test_a_nullable_int8_column_widened_by_arrow_data_stays_readable() -> None:
    # the Int8 entry stayed on the column widened to int64: reading failed (ArrowInvalid)
    store = MemoryStore()
    dk.write_dataset(
        pd.DataFrame({"a": pd.array([1, None], "Int8")}), store=store, dataset_uuid=UUID
    )
    dk.update_dataset(
        pa.table({"a": pa.array([2**40], pa.int64())}), store=store, dataset_uuid=UUID
    )
    got = dk.read_table(store=store, dataset_uuid=UUID)
    assert got["a"].dtype == "Int64" and got["a"].tolist() == [1, pd.NA, 2**40]
