"""Unit and property tests of ``dataset_kit.core.predicates`` (DNF validation, evaluation)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_kit.core.predicates import (
    OPERATORS,
    Term,
    conjunction_expression,
    dnf_expression,
    parse_predicates,
)
from dataset_kit.exceptions import DatasetKitError, InvalidInputError, PredicateError
from dataset_kit.testing.predicates import pandas_mask

SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("i8", pa.int8()),
        ("u", pa.uint64()),
        ("f", pa.float64()),
        ("s", pa.large_string()),
        ("b", pa.bool_()),
        ("d", pa.date32()),
        ("ts", pa.timestamp("us")),
        ("tz", pa.timestamp("ns", tz="Europe/Berlin")),
        ("bin", pa.binary()),
        ("dec", pa.decimal128(6, 2)),
        ("cat", pa.dictionary(pa.int8(), pa.large_string())),
        ("lst", pa.list_(pa.int64())),
    ]
)


def _err(predicates: Any) -> PredicateError:
    with pytest.raises(PredicateError) as info:
        parse_predicates(predicates, SCHEMA)
    assert isinstance(info.value, InvalidInputError)
    assert isinstance(info.value, DatasetKitError)
    return info.value


# --------------------------------------------------------------------------- structure
def test_none_means_no_predicates() -> None:
    assert parse_predicates(None, SCHEMA) is None


@pytest.mark.parametrize(
    "predicates",
    [[], (), [[]], [[("i", "==", 1)], []], "i == 1", 5, {"i": 1}, [("i", "==", 1)]],
    ids=repr,
)
def test_malformed_structure(predicates: Any) -> None:
    _err(predicates)


def test_unnested_triple_names_the_fix() -> None:
    exc = _err([("i", "==", 1)])
    assert "nested" in str(exc)


@pytest.mark.parametrize("term", [("i", "=="), ("i", "==", 1, 2), "i==1", None, ("i",)], ids=repr)
def test_malformed_terms(term: Any) -> None:
    _err([[term]])


def test_unknown_column_named() -> None:
    exc = _err([[("nope", "==", 1)]])
    assert "'nope'" in str(exc)


@pytest.mark.parametrize("column", [1, None, b"i"])
def test_non_string_column(column: Any) -> None:
    _err([[(column, "==", 1)]])


@pytest.mark.parametrize("op", ["=", "<>", "IN", "like", "is", "", None])
def test_unknown_operator(op: Any) -> None:
    exc = _err([[("i", op, 1)]])
    assert repr(op) in str(exc)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("i", "1"),
        ("i", True),
        ("i", b"1"),
        ("i", dt.date(2024, 1, 1)),
        ("f", "1.5"),
        ("s", 1),
        ("s", b"x"),
        ("b", 1),
        ("b", "True"),
        ("d", dt.datetime(2024, 1, 1)),
        ("d", pd.Timestamp("2024-01-01")),
        ("d", 20240101),
        ("d", "not a date"),
        ("ts", pd.Timestamp("2024-01-01", tz="UTC")),
        ("ts", 5),
        ("tz", dt.datetime(2024, 1, 1)),
        ("tz", pd.Timestamp("2024-01-01")),
        ("tz", "2024-01-01 10:00"),
        ("bin", "x"),
        ("cat", 3),
        ("i", complex(1)),
        ("i", pa.scalar(1)),
        ("u", np.bool_(False)),
        ("f", dt.timedelta(seconds=1)),
        ("f", [1.5]),
    ],
    ids=repr,
)
def test_value_of_wrong_type(column: str, value: Any) -> None:
    exc = _err([[(column, "==", value)]])
    assert repr(column) in str(exc)


@pytest.mark.parametrize("value", [1, "ab", b"ab", None, {1: 2}])
@pytest.mark.parametrize("op", ["in", "not in"])
def test_in_needs_a_list(op: str, value: Any) -> None:
    _err([[("i", op, value)]])


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
@pytest.mark.parametrize("value", [None, float("nan"), pd.NaT])
def test_null_only_with_equality(op: str, value: Any) -> None:
    _err([[("f", op, value)]])


def test_wrong_type_inside_in_list() -> None:
    _err([[("i", "in", [1, "2"])]])


def test_unsupported_column_type() -> None:
    exc = _err([[("lst", "==", [1])]])
    assert "'lst'" in str(exc)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("i", np.int32(3)),
        ("i", 2.0),
        ("f", 2),
        ("f", np.float32(1.5)),
        ("u", 2**64 - 1),
        ("d", "2024-01-01"),
        ("d", dt.date(2024, 1, 1)),
        ("ts", "2024-01-01 10:00"),
        ("ts", np.datetime64("2024-01-01T10:00")),
        ("tz", pd.Timestamp("2024-01-01 10:00", tz="UTC")),
        ("tz", "2024-01-01 10:00+01:00"),
        ("b", np.bool_(True)),
        ("bin", b"x"),
        ("dec", decimal.Decimal("1.25")),
        ("dec", 2),
        ("cat", "x"),
    ],
    ids=repr,
)
def test_accepted_values(column: str, value: Any) -> None:
    ((term,),) = parse_predicates([[(column, "==", value)]], SCHEMA)
    assert term.column == column
    assert term.op == "=="
    assert isinstance(term.value, pa.Scalar)


def test_every_operator_parses() -> None:
    conj = [("i", op, [1, 2] if op in ("in", "not in") else 1) for op in sorted(OPERATORS)]
    (terms,) = parse_predicates([conj], SCHEMA)
    assert [t.op for t in terms] == sorted(OPERATORS)


def test_tuples_are_accepted_for_structure() -> None:
    assert parse_predicates(((("i", "==", 1),),), SCHEMA) is not None


def test_excludes_nulls() -> None:
    def term(op: str, value: Any) -> Term:
        ((t,),) = parse_predicates([[("i", op, value)]], SCHEMA)
        return t

    assert term("==", 1).excludes_nulls
    assert term("<", 1).excludes_nulls
    assert term("in", [1]).excludes_nulls
    assert not term("==", None).excludes_nulls
    assert not term("!=", 1).excludes_nulls
    assert not term("not in", [1]).excludes_nulls
    assert not term("in", [1, None]).excludes_nulls


# --------------------------------------------------------------------------- evaluation
def _frame_strategy() -> st.SearchStrategy[pd.DataFrame]:
    ints = st.one_of(st.none(), st.integers(-3, 3))
    floats = st.one_of(st.none(), st.just(float("nan")), st.sampled_from([-1.5, 0.0, 1.0, 2.5]))
    strs = st.one_of(st.none(), st.sampled_from(["", "a", "b", "a b"]))
    dates = st.one_of(st.none(), st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 5)))
    rows = st.lists(st.tuples(ints, floats, strs, dates), min_size=0, max_size=25)

    def build(rs: list[tuple[Any, ...]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "i": pd.array([r[0] for r in rs], dtype="Int64"),
                "f": pd.array([np.nan if r[1] is None else r[1] for r in rs], dtype="float64"),
                "s": pd.Series([r[2] for r in rs], dtype=object),
                "d": pd.Series([r[3] for r in rs], dtype=object),
            }
        )

    return rows.map(build)


def _value_strategy(col: str) -> st.SearchStrategy[Any]:
    return {
        "i": st.one_of(st.integers(-4, 4), st.sampled_from([0.5, 2.0])),
        "f": st.one_of(st.sampled_from([-1.5, 0.0, 1.0, 2.5, 3.0]), st.integers(-2, 3)),
        "s": st.sampled_from(["", "a", "b", "a b", "c"]),
        "d": st.dates(dt.date(2023, 12, 31), dt.date(2024, 1, 6)),
    }[col]


@st.composite
def _term(draw: st.DrawFn) -> tuple[str, str, Any]:
    col = draw(st.sampled_from(["i", "f", "s", "d"]))
    op = draw(st.sampled_from(sorted(OPERATORS)))
    value_st = _value_strategy(col)
    if op in ("in", "not in"):
        items = draw(st.lists(st.one_of(value_st, st.none()), max_size=4))
        return col, op, items
    if op in ("==", "!=") and draw(st.booleans()) and draw(st.booleans()):
        return col, op, draw(st.sampled_from([None, float("nan")]))
    return col, op, draw(value_st)


_dnf = st.lists(st.lists(_term(), min_size=1, max_size=3), min_size=1, max_size=3)
_EVAL_SCHEMA = pa.schema(
    [("i", pa.int64()), ("f", pa.float64()), ("s", pa.large_string()), ("d", pa.date32())]
)


@settings(max_examples=250, deadline=None)
@given(_frame_strategy(), _dnf)
def test_evaluation_matches_pandas(df: pd.DataFrame, predicates: list[Any]) -> None:
    table = pa.Table.from_pandas(df, schema=_EVAL_SCHEMA, preserve_index=False)
    dnf = parse_predicates(predicates, _EVAL_SCHEMA)
    assert dnf is not None
    got = table.filter(dnf_expression(dnf, _EVAL_SCHEMA))
    expected = df[pandas_mask(df, predicates).to_numpy()]
    assert _rows_of_table(got) == _rows_of_frame(expected)


def _norm(v: Any) -> Any:
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def _rows_of_table(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(_norm(v) for v in row.values()) for row in table.to_pylist()]


def _rows_of_frame(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(_norm(v) for v in row) for row in df.astype(object).itertuples(index=False)]


def _filter(values: list[Any], t: pa.DataType, predicates: list[Any]) -> list[Any]:
    schema = pa.schema([("c", t)])
    table = pa.table({"c": pa.array(values, t)})
    dnf = parse_predicates(predicates, schema)
    assert dnf is not None
    return table.filter(dnf_expression(dnf, schema)).column("c").to_pylist()


def test_null_equality_semantics() -> None:
    values = [1, None, 2]
    assert _filter(values, pa.int64(), [[("c", "==", None)]]) == [None]
    assert _filter(values, pa.int64(), [[("c", "!=", None)]]) == [1, 2]
    assert _filter(values, pa.int64(), [[("c", "!=", 1)]]) == [None, 2]
    assert _filter(values, pa.int64(), [[("c", "==", 1)]]) == [1]
    assert _filter(values, pa.int64(), [[("c", "<", 5)]]) == [1, 2]
    assert _filter(values, pa.int64(), [[("c", "in", [1, None])]]) == [1, None]
    assert _filter(values, pa.int64(), [[("c", "not in", [1])]]) == [None, 2]
    assert _filter(values, pa.int64(), [[("c", "not in", [1, None])]]) == [2]
    assert _filter(values, pa.int64(), [[("c", "in", [])]]) == []
    assert _filter(values, pa.int64(), [[("c", "not in", [])]]) == values


def test_nan_value_is_null() -> None:
    values = [1.0, None, 2.0]
    assert _filter(values, pa.float64(), [[("c", "==", float("nan"))]]) == [None]
    assert _filter(values, pa.float64(), [[("c", "in", [np.nan, 2.0])]]) == [None, 2.0]


def test_or_of_conjunctions() -> None:
    values = list(range(10))
    got = _filter(values, pa.int64(), [[("c", ">", 1), ("c", "<", 4)], [("c", ">=", 8)]])
    assert got == [2, 3, 8, 9]


def test_in_list_value_out_of_column_range_never_matches() -> None:
    assert _filter([1, 2, 100], pa.int8(), [[("c", "in", [1000, 100])]]) == [100]
    assert _filter([1, 2, 100], pa.int8(), [[("c", "==", 1000)]]) == []


def test_in_list_mixed_ints_and_floats() -> None:
    assert _filter([1, 2, 3], pa.int64(), [[("c", "in", [1, 2.5, 3.0])]]) == [1, 3]


def test_large_unsigned_values() -> None:
    big = 2**64 - 1
    assert _filter([1, big], pa.uint64(), [[("c", "==", big)]]) == [big]
    assert _filter([1, big], pa.uint64(), [[("c", ">", 2**63)]]) == [big]


def test_categorical_column() -> None:
    t = pa.dictionary(pa.int8(), pa.large_string())
    schema = pa.schema([("c", t)])
    table = pa.table({"c": pa.array(["x", "y", None, "x"]).dictionary_encode().cast(t)})
    dnf = parse_predicates([[("c", "in", ["x"])]], schema)
    assert dnf is not None
    assert table.filter(dnf_expression(dnf, schema)).num_rows == 2


def test_timestamps_and_dates() -> None:
    ts = [pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-02")]
    assert len(_filter(ts, pa.timestamp("us"), [[("c", ">", "2024-01-01 12:00")]])) == 1
    tz = pa.timestamp("ns", tz="Europe/Berlin")
    aware = [pd.Timestamp("2024-01-01 10:00", tz="Europe/Berlin")]
    # 09:00 UTC is 10:00 in Berlin
    assert _filter(aware, tz, [[("c", "==", pd.Timestamp("2024-01-01 09:00", tz="UTC"))]]) == [
        aware[0]
    ]
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 3)]
    assert _filter(days, pa.date32(), [[("c", ">=", "2024-01-02")]]) == [dt.date(2024, 1, 3)]


def test_empty_conjunction_expression_is_true() -> None:
    table = pa.table({"c": [1, 2]})
    assert table.filter(conjunction_expression([], table.schema)).num_rows == 2
    assert table.filter(dnf_expression([], table.schema)).num_rows == 0


# ------------------------------------------------------- numbers on integer and float columns
def _exact(v: Any) -> Fraction | float:
    """A number's exact value (a Fraction, or +-inf) for the reference comparisons."""
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_infinite() else Fraction(v)
    if isinstance(v, int | np.integer):
        return Fraction(int(v))
    if math.isinf(v):
        return float(v)
    return Fraction(*v.as_integer_ratio())


_CMP = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _expected(values: list[Any], op: str, value: Any) -> list[Any]:
    """The rows pandas keeps, by exact comparison (null: only ``!=``/``not in`` hold)."""
    kept = []
    for x in values:
        if x is None:
            hit = op in ("!=", "not in")
        elif op in ("in", "not in"):
            found = any(_exact(x) == _exact(v) for v in value)
            hit = found if op == "in" else not found
        else:
            hit = _CMP[op](_exact(x), _exact(value))
        if hit:
            kept.append(x)
    return kept


_WIDE = {pa.int8(): pa.int64(), pa.uint8(): pa.uint64(), pa.float32(): pa.float64()}


def _filter_widened(values: list[Any], t: pa.DataType, predicates: list[Any]) -> list[Any]:
    """Terms parsed for a column of type ``t``, evaluated on a wider column (as the
    secondary-index and evolved-file paths do)."""
    wide = _WIDE.get(t, t)
    dnf = parse_predicates(predicates, pa.schema([("c", t)]))
    assert dnf is not None
    table = pa.table({"c": pa.array(values, t).cast(wide)})
    kept = table.filter(dnf_expression(dnf, table.schema)).column("c").cast(t)
    return kept.to_pylist()


_BRIEF_CASES = [
    (pa.int64(), [20_000_000, 5], ">", 1.5),
    (pa.int64(), [20_000_000, 5], "==", 5.0),
    (pa.int64(), [20_000_000, 5], "<", 2**64),
    (pa.int64(), [-(2**40), 7], ">=", -1e3),
    (pa.uint64(), [2**64 - 1, 7], ">", -1),
    (pa.uint64(), [2**64 - 1, 7], "==", -1),
    (pa.uint64(), [2**64 - 1, 7], "!=", -1),
    (pa.uint64(), [2**64 - 1, 7], "<=", -1.5),
    (pa.int64(), [2**62 + 1, 2**62], "==", float(2**62)),
    (pa.int64(), [2**62 + 1, 2**62], ">", float(2**62)),
    (pa.int64(), [2**63 - 1, -(2**63)], ">", 2**63 - 0.5),
    (pa.int64(), [2**63 - 1, -(2**63)], ">=", -(2**63) - 1),
    (pa.int64(), [20_000_000, None, 5], "==", 5.5),
    (pa.int64(), [20_000_000, None, 5], "!=", 5.5),
    (pa.int64(), [20_000_000, None, 5], "<", math.inf),
    (pa.int64(), [20_000_000, None, 5], ">", -math.inf),
    (pa.int64(), [20_000_000, None, 5], ">=", math.inf),
    (pa.int64(), [20_000_000, None, 5], "<=", -math.inf),
    (pa.int8(), [-128, 127, 0], ">", 126.5),
    (pa.int8(), [-128, 127, 0], "<", -127.5),
    (pa.int8(), [-128, 127, 0], ">=", 1e300),
    (pa.int8(), [-128, 127, 0], "<=", 128),
    (pa.int8(), [-128, 127, 0], "==", decimal.Decimal("127.0")),
    (pa.int8(), [-128, 127, 0], "<", decimal.Decimal("-Infinity")),
    (pa.int64(), [20_000_000, 5], "<", np.float32(5.5)),
    (pa.int64(), [20_000_000, 5], "==", np.uint64(2**64 - 1)),
    (pa.float64(), [float(2**53), 1.5, None], "==", 2**53 + 1),
    (pa.float64(), [float(2**53), float(2**53 + 2), None], "<", 2**53 + 1),
    (pa.float64(), [float(2**53), float(2**53 + 2), None], ">=", 2**53 + 1),
    (pa.float64(), [1e308, math.inf, -math.inf], "<", 10**400),
    (pa.float64(), [1e308, math.inf, -math.inf], ">", -(10**400)),
    (pa.float64(), [0.1, 0.5], "==", decimal.Decimal("0.1")),
    (pa.float32(), [float(np.float32(1.1)), 2.0], "==", 1.1),
    (pa.float32(), [float(np.float32(1.1)), 2.0], "==", np.float32(1.1)),
    (pa.float32(), [float(np.float32(1.1)), 2.0], ">", 1.1),
]


@pytest.mark.parametrize(("t", "values", "op", "value"), _BRIEF_CASES, ids=repr)
def test_numbers_compare_with_numeric_columns_by_exact_value(
    t: pa.DataType, values: list[Any], op: str, value: Any
) -> None:
    expected = _expected(values, op, value)
    assert _filter(values, t, [[("c", op, value)]]) == expected
    assert _filter_widened(values, t, [[("c", op, value)]]) == expected


@pytest.mark.parametrize(
    ("t", "values", "items"),
    [
        (pa.int64(), [1, 2, 3, 2**53 + 1], [1, 2.5, 3.0, 2**64, -1.0, 2**53 + 1]),
        (pa.int64(), [1, 2**53, 2**53 + 1], [float(2**53 + 1)]),  # the float is 2**53
        (pa.uint64(), [0, 2**64 - 1], [-1, 2**64 - 1, 0.0, math.inf, -math.inf]),
        (pa.int8(), [1, 2, 100], [1000, 100, 1.5, decimal.Decimal("2")]),
        (pa.float64(), [1.0, float(2**53), None], [2**53 + 1, 1, decimal.Decimal("1.0"), 10**400]),
        (pa.float32(), [float(np.float32(1.1)), 2.0], [1.1, 2, np.float32(1.1)]),
    ],
    ids=repr,
)
@pytest.mark.parametrize("op", ["in", "not in"])
def test_in_lists_of_mixed_numbers_compare_exactly(
    t: pa.DataType, values: list[Any], items: list[Any], op: str
) -> None:
    expected = _expected(values, op, items)
    assert _filter(values, t, [[("c", op, items)]]) == expected
    assert _filter_widened(values, t, [[("c", op, items)]]) == expected
    with_null = [v for v in values if v is not None] + [None]
    got = _filter(with_null, t, [[("c", op, [*items, None])]])
    nulls = [None] if op == "in" else []
    assert got == [v for v in _expected(with_null, op, items) if v is not None] + nulls


def _term(t: pa.DataType, op: str, value: Any) -> Term:
    ((term,),) = parse_predicates([[("c", op, value)]], pa.schema([("c", t)]))
    return term


@pytest.mark.parametrize(
    ("op", "value", "want_op", "want"),
    [
        (">", 5, ">", 5),  # an integer the column holds stays as given
        (">", 1.5, ">=", 2),
        (">=", 1.5, ">=", 2),
        ("<", 1.5, "<=", 1),
        ("<=", -1.5, "<=", -2),
        ("==", 5.0, "==", 5),
        ("!=", 5.0, "!=", 5),
        ("==", 5.5, "in", []),
        ("!=", 5.5, "not in", []),
        ("==", 2**64, "in", []),
        ("<", 2**64, ">=", -(2**63)),
        (">", -math.inf, ">=", -(2**63)),
        (">", 2**63, "in", []),
        ("<=", -(2**63) - 1, "in", []),
    ],
    ids=repr,
)
def test_non_integer_values_are_rewritten_to_integer_terms(
    op: str, value: Any, want_op: str, want: Any
) -> None:
    term = _term(pa.int64(), op, value)
    assert term.op == want_op
    if isinstance(want, list):
        assert term.value.to_pylist() == want
    else:
        assert term.value.type == pa.int64()
        assert term.value.as_py() == want


def test_rewritten_terms_keep_null_semantics_for_pruning() -> None:
    assert _term(pa.int64(), "==", 5.5).excludes_nulls  # matches nothing: prunes everything
    assert _term(pa.int64(), "<", 2**64).excludes_nulls  # every non-null row
    assert not _term(pa.int64(), "!=", 5.5).excludes_nulls  # every row, null included
    assert _filter([1, None], pa.int64(), [[("c", "!=", 5.5)]]) == [1, None]
    assert _filter([1, None], pa.int64(), [[("c", "<", 2**64)]]) == [1]


@pytest.mark.parametrize("value", [decimal.Decimal("NaN"), np.float32("nan")], ids=repr)
def test_nan_numbers_are_null(value: Any) -> None:
    assert _filter([1, None], pa.int64(), [[("c", "==", value)]]) == [None]
    assert _filter([1.5, None], pa.float64(), [[("c", "in", [value, 1.5])]]) == [1.5, None]
    _err([[("i", "<", value)]])


_NUMERIC_TYPES = [pa.int8(), pa.uint8(), pa.int64(), pa.uint64(), pa.float32(), pa.float64()]


def _column_values(t: pa.DataType) -> st.SearchStrategy[list[Any]]:
    if pa.types.is_integer(t):
        info = np.iinfo(t.to_pandas_dtype())
        lo, hi = int(info.min), int(info.max)
        edges = st.sampled_from([lo, lo + 1, -1, 0, 1, 2**24 + 1, 2**53 + 1, hi - 1, hi])
        value = st.one_of(st.integers(lo, hi), edges.filter(lambda v: lo <= v <= hi))
    else:
        width = 32 if t == pa.float32() else 64
        value = st.floats(allow_nan=False, width=width)
    return st.lists(st.one_of(st.none(), value), max_size=12)


_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([-(2**63) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**53 + 1, -(10**400)]),
    st.floats(allow_nan=False),
    st.integers(-300, 300).map(lambda v: v / 2),
    st.sampled_from([decimal.Decimal("2.5"), decimal.Decimal("-Infinity"), np.float32(1.1)]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_NUMERIC_TYPES).flatmap(lambda t: st.tuples(st.just(t), _column_values(t))),
    st.sampled_from(sorted(OPERATORS)),
    st.lists(_NUMBERS, min_size=1, max_size=4),
)
def test_numeric_predicates_match_exact_comparison(
    column: tuple[pa.DataType, list[Any]], op: str, numbers: list[Any]
) -> None:
    t, values = column
    values = [None if v is None else pa.scalar(v, t).as_py() for v in values]
    value = numbers if op in ("in", "not in") else numbers[0]
    expected = _expected(values, op, value)
    assert _filter(values, t, [[("c", op, value)]]) == expected
    assert _filter_widened(values, t, [[("c", op, value)]]) == expected


# ------------------------------------------------------- timestamps, by their exact instant
_NS = pd.Timedelta(1, "ns")
_TS_VALUES = [
    pd.Timestamp("2024-01-01 10:00:00"),
    pd.Timestamp("2024-01-01 10:00:01"),
    pd.Timestamp("1500-01-01"),
    pd.Timestamp("2500-06-01"),
    None,
]


def _ts_filter(unit: str, tz: str | None, predicates: list[Any]) -> list[Any]:
    t = pa.timestamp(unit, tz=tz)
    values = [None if v is None else v.as_unit(unit) for v in _TS_VALUES]
    if tz is not None:
        values = [None if v is None else v.tz_localize(tz) for v in values]
    return _filter(values, t, predicates)


def _ts_expected(unit: str, tz: str | None, predicates: list[Any]) -> list[Any]:
    s = pd.Series([pd.NaT if v is None else v for v in _TS_VALUES], dtype=f"datetime64[{unit}]")
    if tz is not None:
        s = s.dt.tz_localize(tz)
    mask = pandas_mask(pd.DataFrame({"c": s}), predicates)
    return [None if v is pd.NaT else v for v in s[mask.to_numpy()]]


@pytest.mark.parametrize("tz", [None, "Europe/Berlin"])
@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("op", sorted(OPERATORS))
@pytest.mark.parametrize(
    "value",
    [
        pd.Timestamp("2024-01-01 10:00:00") + _NS,  # between two ticks of every unit
        pd.Timestamp("2024-01-01 10:00:00") - _NS,
        pd.Timestamp("2024-01-01 10:00:01"),
        pd.Timestamp("2300-01-01"),  # beyond datetime64[ns]
        pd.Timestamp("1600-01-01"),
        pd.Timestamp("2500-06-01"),
    ],
    ids=str,
)
def test_timestamp_predicates_compare_the_exact_instant(
    unit: str, tz: str | None, op: str, value: pd.Timestamp
) -> None:
    if tz is not None:
        value = value.tz_localize(tz)
    predicates = [[("c", op, [value, None] if op == "not in" else [value])]]
    if op not in ("in", "not in"):
        predicates = [[("c", op, value)]]
    assert _ts_filter(unit, tz, predicates) == _ts_expected(unit, tz, predicates)


def test_timestamp_in_list_agrees_with_equality() -> None:
    # a value finer than the column's unit equals no row: ``in`` drops it, as ``==`` does
    v = pd.Timestamp("2024-01-01 10:00:00") + _NS
    assert _ts_filter("us", None, [[("c", "==", v)]]) == []
    assert _ts_filter("us", None, [[("c", "in", [v])]]) == []
    assert _ts_filter("us", None, [[("c", "not in", [v])]]) == _TS_VALUES
    assert _ts_filter("us", None, [[("c", "!=", v)]]) == _TS_VALUES
    exact = [pd.Timestamp("2500-06-01"), v, dt.datetime(2024, 1, 1, 10)]
    assert _ts_filter("us", None, [[("c", "in", exact)]]) == [_TS_VALUES[0], _TS_VALUES[3]]


def test_timestamp_terms_keep_the_column_type() -> None:
    schema = pa.schema([("c", pa.timestamp("s", tz="UTC"))])
    for op, value in [(">", "2300-01-01 00:00:00.5+00:00"), ("in", ["1500-01-01T00:00Z"])]:
        ((term,),) = parse_predicates([[("c", op, value)]], schema)
        assert term.value.type == pa.timestamp("s", tz="UTC")
    ((term,),) = parse_predicates([[("c", ">", "2300-01-01 00:00:00.5+00:00")]], schema)
    next_second = pa.scalar(pd.Timestamp("2300-01-01 00:00:01Z"), pa.timestamp("s", tz="UTC"))
    assert (term.op, term.value) == (">=", next_second)


def test_values_beyond_the_range_of_a_ns_column() -> None:
    values = [pd.Timestamp("2024-01-01"), None]
    t = pa.timestamp("ns")
    late, early = pd.Timestamp("2300-01-01"), dt.datetime(1600, 1, 1)
    assert _filter(values, t, [[("c", "<", late)]]) == values[:1]
    assert _filter(values, t, [[("c", ">", late)]]) == []
    assert _filter(values, t, [[("c", ">=", early)]]) == values[:1]
    assert _filter(values, t, [[("c", "==", late)]]) == []
    assert _filter(values, t, [[("c", "!=", early)]]) == values
    assert _filter(values, t, [[("c", "in", [late, early, values[0]])]]) == values[:1]
    assert _filter(values, t, [[("c", "not in", [late])]]) == values


@pytest.mark.parametrize("value", [np.datetime64("NaT"), np.datetime64("NaT", "ns")], ids=repr)
def test_numpy_nat_is_null(value: Any) -> None:
    assert _ts_filter("us", None, [[("c", "==", value)]]) == [None]
    assert _ts_filter("us", None, [[("c", "in", [value])]]) == [None]


# --------------------------------------------------------------------------- float16 columns
@pytest.mark.parametrize("op", sorted(OPERATORS))
@pytest.mark.parametrize("value", [1.5, 1.6, 0.0, -0.0, 2, 0.0999755859375, 0.1, 70000.0])
def test_float16_columns_compare_exactly(op: str, value: Any) -> None:
    values = [1.5, 2.0, None, -0.0, 0.1, 65504.0, float("-inf")]
    arr = np.array([np.nan if v is None else v for v in values], "float16")
    column = [None if np.isnan(v) else float(v) for v in arr]
    predicate = [[("c", op, [value] if op in ("in", "not in") else value)]]
    expected = pd.DataFrame({"c": arr})[pandas_mask(pd.DataFrame({"c": arr}), predicate)]
    got = _filter(column, pa.float16(), predicate)
    assert got == [None if np.isnan(v) else float(v) for v in expected["c"]]


def test_float16_categorical_column() -> None:
    t = pa.dictionary(pa.int8(), pa.float16())
    schema = pa.schema([("c", t)])
    table = pa.table({"c": pa.array(np.array([1.5, 2.0, 1.5], "float16")).dictionary_encode()})
    dnf = parse_predicates([[("c", ">=", 1.5), ("c", "in", [1.5, 3])]], schema)
    assert dnf is not None
    assert table.cast(schema).filter(dnf_expression(dnf, schema)).num_rows == 2


# -------------------------------------------------- long in lists, thousands of conjunctions
def test_long_float_in_list_is_one_lookup() -> None:
    # 50,000 floats once built a chain of 50,000 ORs: Arrow overflowed the C stack
    values = [1.0, -0.0, 0.0, 0.25, 7.75, None, 2.6]
    items = [v * 0.25 for v in range(50_000)] + [-0.0, float("nan")]
    df = pd.DataFrame({"c": values}, dtype="float64")
    for op in ("in", "not in"):
        expected = df[pandas_mask(df, [[("c", op, items)]])]["c"].tolist()
        got = _filter(values, pa.float64(), [[("c", op, items)]])
        assert [_norm(v) for v in got] == [_norm(v) for v in expected]


@pytest.mark.parametrize("values", [[-0.0], [0.0], [0.0, -0.0, 1.5]], ids=repr)
def test_float_in_list_zero_matches_both_zeros(values: list[float]) -> None:
    column = [0.0, -0.0, 1.5, None]
    got = _filter(column, pa.float64(), [[("c", "in", values)]])
    assert [math.copysign(1, v) for v in got[:2]] == [1.0, -1.0]
    assert _filter(column, pa.float64(), [[("c", "not in", values)]]) == [
        v for v in column if v is None or (v != 0 and v not in values)
    ]


def test_equality_conjunctions_on_one_column_merge_into_one_in() -> None:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64())])
    raw = [[("i", "==", v)] for v in range(20_000)] + [[("i", "==", None)], [("f", "==", 1.5)]]
    raw += [[("i", "in", [-1, 2.5])], [("i", "==", 0.5)]]
    dnf = parse_predicates(raw, schema)
    assert dnf is not None
    assert [[(t.column, t.op) for t in conj] for conj in dnf] == [[("i", "in")], [("f", "==")]]
    assert dnf[0][0].has_null and dnf[0][0].value.to_pylist() == [*range(20_000), -1]
    table = pa.table({"i": [5, None, -1, 20_000, 7], "f": [0.0, 0.0, 0.0, 0.0, 1.5]})
    assert table.filter(dnf_expression(dnf, schema))["i"].to_pylist() == [5, None, -1, 7]


def test_too_many_conjunctions_raise_a_predicate_error() -> None:
    schema = pa.schema([("i", pa.int64()), ("j", pa.int64())])
    dnf = parse_predicates([[("i", "==", v), ("j", "==", v)] for v in range(5_000)], schema)
    assert dnf is not None
    with pytest.raises(PredicateError, match="5,000 alternatives"):
        dnf_expression(dnf, schema)
    wide = parse_predicates([[("i", ">", v) for v in range(2_000)]], schema)
    assert wide is not None
    with pytest.raises(PredicateError, match="2,000 terms in one conjunction"):
        dnf_expression(wide, schema)
