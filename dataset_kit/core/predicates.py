"""DNF predicates: validation against a schema, and evaluation as Arrow expressions.

A predicate is a list of conjunctions ``[[(col, op, value), ...], ...]``: the inner lists are
AND-ed, the outer list is OR-ed. Operators: ``== != < <= > >= in not in``.

Null semantics are pandas' (so results equal a pandas evaluation of the same predicate):
a comparison with a null row is False, except ``!=`` and ``not in``, which are True for null
rows. ``("c", "==", None)`` selects null rows, ``("c", "!=", None)`` non-null rows, and a
``None`` inside an ``in`` list matches null rows. A float NaN (or a decimal NaN) value is a
null.

Numbers are compared with integer and float columns by their exact mathematical value, as
pandas compares them: ``("i", ">", 1.5)`` on an int64 column is ``i >= 2``, ``("i", "==",
5.5)`` matches no row, ``("u", ">", -1)`` on a uint64 column matches every non-null row.
Timestamps are compared the same way, by their exact instant in the column's unit: a value
finer than the unit equals no row (and is dropped from an ``in`` list), and values outside
the ``datetime64[ns]`` range compare correctly with ``s``/``ms``/``us`` columns.

Arrow evaluates a chain of ORs (or ANDs) recursively, and crashes the interpreter (C stack
overflow) beyond a few thousand operands. So ``in`` lists are one ``is_in`` (of any
length), conjunctions that only test one column for equality are merged into one ``in``
term, and a filter that would still OR (or AND) more than :data:`MAX_OPERANDS`
expressions raises :class:`PredicateError`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dataset_kit.core.partition import value_type
from dataset_kit.exceptions import PredicateError

__all__ = [
    "MAX_OPERANDS",
    "OPERATORS",
    "Term",
    "all_of",
    "any_of",
    "conjunction_expression",
    "dnf_expression",
    "merge_equalities",
    "parse_predicates",
]

OPERATORS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"})
#: The most expressions one filter ORs or ANDs (Arrow overflows the C stack at ~9,000).
MAX_OPERANDS = 1000
_LIST_OPS = frozenset({"in", "not in"})
_NULL_OK_OPS = frozenset({"==", "!="})


@dataclass(frozen=True)
class Term:
    """One validated ``(column, op, value)`` predicate.

    ``value`` is an Arrow scalar (or an Arrow array for ``in``/``not in``) of the column's
    value type, or None for a null comparison; ``has_null`` tells whether an ``in`` list
    contained a null.
    """

    column: str
    op: str
    value: Any
    has_null: bool = False

    @property
    def excludes_nulls(self) -> bool:
        """True if null rows never satisfy this term (so value indices can prune)."""
        if self.op in ("!=", "not in"):
            return False
        if self.op == "==" and self.value is None:
            return False
        return not (self.op == "in" and self.has_null)


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    if isinstance(value, float | np.floating):
        return bool(value != value)  # NaN (np.isnan is slow on scalars: long in lists)
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    return False


def _misfit(column: str, op: str, value: Any, t: pa.DataType, why: str = "") -> PredicateError:
    return PredicateError(
        f"predicate ({column!r}, {op!r}, {value!r}): value of type {type(value).__name__} "
        f"does not fit column type {t}{': ' + why if why else ''}"
    )


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool | np.bool_) and isinstance(
        value, int | float | np.integer | np.floating | decimal.Decimal
    )


def _is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


# --------------------------------------------------------------- integer and float columns
# A number compared with an integer or float column is compared by its exact mathematical
# value (as pandas does), never through a cast: Arrow would cast an int64 column to float64
# for a float value (a checked cast, failing beyond 2**24/2**53) and would round the value.
# Each term is rewritten into an equivalent term whose value has the column's own type
# (integers) or is a float64 (floats, exact for every float column), or into a constant:
# "never" is ``in []`` (False for every row), "always" is ``not in []`` (True for every
# row, null included, as pandas' ``!=``) and "every non-null row" is ``>= min``.

_Exact = Fraction | float  # a finite value as a Fraction, or +-inf


def _exact(value: Any) -> _Exact:
    """The exact value of a number (a non-null one: NaN was taken as null before)."""
    if isinstance(value, decimal.Decimal):
        return (math.inf if value > 0 else -math.inf) if value.is_infinite() else Fraction(value)
    if isinstance(value, int | np.integer):
        return Fraction(int(value))
    if np.isinf(value):
        return math.inf if value > 0 else -math.inf
    return Fraction(*value.as_integer_ratio())


def _int_range(t: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(t.to_pandas_dtype())
    return int(info.min), int(info.max)


def _floor_ceil(v: _Exact, lo: int, hi: int) -> tuple[int, int]:
    """``floor(v), ceil(v)``, with +-inf as ``hi + 1``/``lo - 1`` (beyond every value)."""
    if isinstance(v, float):
        edge = hi + 1 if v > 0 else lo - 1
        return edge, edge
    return math.floor(v), math.ceil(v)


def _integer_term(column: str, op: str, v: _Exact, t: pa.DataType) -> Term:
    """``column op v`` on an integer column of type ``t``, with an exact value ``v``."""
    lo, hi = _int_range(t)
    floor, ceil = _floor_ceil(v, lo, hi)
    if floor == ceil and lo <= floor <= hi:  # an integer the column can hold: as given
        return Term(column, op, pa.scalar(floor, t))
    never, always = Term(column, "in", pa.array([], t)), Term(column, "not in", pa.array([], t))
    if op in ("==", "!="):  # a fraction or a value out of range equals no row
        return never if op == "==" else always
    every_valid = Term(column, ">=", pa.scalar(lo, t))
    if op in (">", ">="):  # x > v <=> x >= floor(v) + 1; x >= v <=> x >= ceil(v)
        bound = floor + 1 if op == ">" else ceil
        if bound <= lo:
            return every_valid
        return never if bound > hi else Term(column, ">=", pa.scalar(bound, t))
    bound = ceil - 1 if op == "<" else floor  # x < v <=> x <= ceil(v) - 1
    if bound >= hi:
        return every_valid
    return never if bound < lo else Term(column, "<=", pa.scalar(bound, t))


def _float_neighbours(v: Fraction) -> tuple[float, float]:
    """The floats ``a < v < b`` next to a ``v`` that is not a float."""
    try:
        f = float(v)
    except OverflowError:
        big = sys.float_info.max
        return (big, math.inf) if v > 0 else (-math.inf, -big)
    return (f, math.nextafter(f, math.inf)) if f < v else (math.nextafter(f, -math.inf), f)


def _as_float(value: Any) -> float | None:
    """The float equal to a number, or None if no float is."""
    if isinstance(value, float | np.float32 | np.float16):  # exact as float64
        return float(value)
    if isinstance(value, int | np.integer) and -(2**53) <= value <= 2**53:
        return float(value)
    v = _exact(value)
    if isinstance(v, float):  # +-inf
        return v
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if Fraction(f) == v else None


def _as_int(value: Any) -> int | None:
    """The integer equal to a number, or None if no integer is."""
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    v = _exact(value)
    return int(v) if isinstance(v, Fraction) and v.denominator == 1 else None


def _float_term(column: str, op: str, value: Any) -> Term:
    """``column op value`` on a float column (compared as float64: exact for every float
    column type)."""
    f = _as_float(value)
    if f is not None:
        return Term(column, op, pa.scalar(f, pa.float64()))
    v = _exact(value)
    assert isinstance(v, Fraction)  # +-inf are floats
    below, above = _float_neighbours(v)
    if op in ("==", "!="):  # no float equals v
        return Term(column, "in" if op == "==" else "not in", pa.array([], pa.float64()))
    if op in ("<", "<="):
        return Term(column, "<=", pa.scalar(below, pa.float64()))
    return Term(column, ">=", pa.scalar(above, pa.float64()))


def _numeric_term(column: str, op: str, value: Any, t: pa.DataType) -> Term:
    if not _is_number(value):
        raise _misfit(column, op, value, t)
    if pa.types.is_integer(t):
        return _integer_term(column, op, _exact(value), t)
    return _float_term(column, op, value)


def _numeric_values(column: str, op: str, items: list[Any], t: pa.DataType) -> pa.Array:
    """The values of an ``in`` list a column of type ``t`` can hold (others match no row)."""
    bad = next((v for v in items if not _is_number(v)), None)
    if bad is not None:
        raise _misfit(column, op, bad, t)
    if pa.types.is_integer(t):
        lo, hi = _int_range(t)
        ints = [_as_int(v) for v in items]
        return pa.array([v for v in ints if v is not None and lo <= v <= hi], t)
    floats = [_as_float(v) for v in items]
    return pa.array([v for v in floats if v is not None], pa.float64())


# --------------------------------------------------------------------------- timestamp columns
# A timestamp column holds int64 ticks of its unit since the epoch (UTC for tz-aware ones).
# A value is turned into its exact tick count as a Fraction (never through datetime64[ns],
# whose range ends in 1677 and 2262, nor through a cast, which would truncate a finer
# value) and then rewritten like a number on an int64 column: a value between two ticks
# equals no row, ``<``/``>`` move to the neighbouring tick, out-of-range values become
# constants.

_NS_PER_TICK = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def _timestamp(column: str, op: str, value: Any, t: pa.TimestampType) -> pd.Timestamp:
    """The user value as a timestamp comparable with a column of type ``t``."""
    if not isinstance(value, str | _dt.datetime | np.datetime64 | pd.Timestamp):
        raise _misfit(column, op, value, t)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:  # OutOfBoundsDatetime: ValueError
        raise _misfit(column, op, value, t, str(exc)) from exc
    if ts is pd.NaT:
        raise _misfit(column, op, value, t, "not a timestamp")
    if (ts.tzinfo is None) != (t.tz is None):
        raise _misfit(column, op, value, t, "tz-aware and naive timestamps cannot be compared")
    return ts


def _ticks(ts: pd.Timestamp, unit: str) -> Fraction:
    """The exact number of ``unit`` ticks from the epoch to ``ts`` (UTC for tz-aware)."""
    raw = int(ts.asm8.view(np.int64))  # ticks of ts.unit; asm8 of a tz-aware value is UTC
    return Fraction(raw * _NS_PER_TICK[ts.unit], _NS_PER_TICK[unit])


def _timestamp_term(column: str, op: str, value: Any, t: pa.TimestampType) -> Term:
    """``column op value`` on a timestamp column, compared by the exact instant."""
    ticks = _ticks(_timestamp(column, op, value, t), t.unit)
    term = _integer_term(column, op, ticks, pa.int64())
    return Term(column, term.op, term.value.cast(t))


def _timestamp_values(column: str, op: str, items: list[Any], t: pa.TimestampType) -> pa.Array:
    """The values of an ``in`` list that are ticks of the column (others match no row)."""
    lo, hi = _int_range(pa.int64())
    ticks = [_ticks(_timestamp(column, op, v, t), t.unit) for v in items]
    kept = [int(v) for v in ticks if v.denominator == 1 and lo <= v <= hi]
    return pa.array(kept, pa.int64()).cast(t)


def _coerce(column: str, op: str, value: Any, t: pa.DataType) -> pa.Scalar:
    """Turn a user value into an Arrow scalar comparable with a column of type ``t``.

    Integer, float and timestamp columns are handled by :func:`_numeric_term` and
    :func:`_timestamp_term` instead.
    """

    def fail(why: str = "") -> PredicateError:
        return _misfit(column, op, value, t, why)

    try:
        if pa.types.is_boolean(t):
            if not isinstance(value, bool | np.bool_):
                raise fail()
            return pa.scalar(bool(value))
        if pa.types.is_decimal(t):
            if not _is_number(value):
                raise fail()
            return pa.scalar(decimal.Decimal(str(value)), t)
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            if not isinstance(value, str):
                raise fail()
            return pa.scalar(value, pa.large_string())
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            if not isinstance(value, bytes):
                raise fail()
            return pa.scalar(value, pa.large_binary())
        if pa.types.is_date(t):
            if isinstance(value, str):
                value = _dt.date.fromisoformat(value)
            if isinstance(value, _dt.datetime | pd.Timestamp) or not isinstance(value, _dt.date):
                raise fail("use a datetime.date or an ISO date string")
            return pa.scalar(value, pa.date32())
    except PredicateError:
        raise
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        raise fail(str(exc)) from exc
    raise PredicateError(f"predicates on column {column!r} of type {t} are not supported")


def _parse_term(raw: Any, schema: pa.Schema) -> Term:
    if not isinstance(raw, tuple | list) or len(raw) != 3:
        raise PredicateError(f"predicate {raw!r} is not a (column, op, value) triple")
    column, op, value = raw
    if not isinstance(column, str) or schema.get_field_index(column) < 0:
        raise PredicateError(
            f"predicate {tuple(raw)!r}: unknown column {column!r}; columns: {schema.names}"
        )
    if op not in OPERATORS:
        raise PredicateError(
            f"predicate {tuple(raw)!r}: unknown operator {op!r}; use one of {sorted(OPERATORS)}"
        )
    t = value_type(schema.field(column).type)
    if op in _LIST_OPS:
        if isinstance(value, str | bytes) or not isinstance(
            value, Sequence | set | frozenset | np.ndarray | pd.Series | pd.Index
        ):
            raise PredicateError(f"predicate {tuple(raw)!r}: {op!r} needs a list of values")
        items = [v for v in value if not _is_null(v)]
        has_null = len(items) < len(value)
        if _is_numeric_type(t):
            arr = _numeric_values(column, op, items, t)
        elif pa.types.is_timestamp(t):
            arr = _timestamp_values(column, op, items, t)
        else:
            arr = _scalars_to_array([_coerce(column, op, v, t) for v in items])
        return Term(column, op, arr, has_null)
    if _is_null(value):
        if op not in _NULL_OK_OPS:
            raise PredicateError(f"predicate {tuple(raw)!r}: null only works with == and !=")
        return Term(column, op, None)
    if _is_numeric_type(t):
        return _numeric_term(column, op, value, t)
    if pa.types.is_timestamp(t):
        return _timestamp_term(column, op, value, t)
    return Term(column, op, _coerce(column, op, value, t))


def _scalars_to_array(scalars: list[pa.Scalar]) -> pa.Array:
    if not scalars:
        return pa.array([], pa.null())
    # one type: _coerce gives every value for a column the same type
    return pa.array([s.as_py() for s in scalars], scalars[0].type)


def parse_predicates(predicates: Any, schema: pa.Schema) -> list[list[Term]] | None:
    """Validate DNF predicates against ``schema`` and coerce their values.

    Raises
    ------
    PredicateError
        Empty lists, malformed triples, unknown columns or operators, values of the
        wrong type.

    Examples
    --------
    >>> schema = pa.schema([("a", pa.int64()), ("s", pa.large_string())])
    >>> [[t.op for t in c] for c in parse_predicates([[("a", ">", 1), ("s", "in", ["x"])]], schema)]
    [['>', 'in']]
    """
    if predicates is None:
        return None
    if not isinstance(predicates, list | tuple) or not predicates:
        raise PredicateError("predicates must be a non-empty list of conjunctions (DNF)")
    result = []
    for conj in predicates:
        if not isinstance(conj, list | tuple) or not conj:
            raise PredicateError(f"conjunction {conj!r} must be a non-empty list of triples")
        if len(conj) == 3 and isinstance(conj[0], str) and isinstance(conj[1], str):
            raise PredicateError(
                f"predicates must be nested: [[{tuple(conj)!r}]], not [{tuple(conj)!r}]"
            )
        result.append([_parse_term(raw, schema) for raw in conj])
    return merge_equalities(result)


def _equality_values(term: Term) -> pa.Array | None:
    """The values a lone ``==``/``in`` term matches (nulls aside), or None for other terms."""
    if term.op == "in":
        values: pa.Array = term.value
        return values
    if term.op == "==":
        return pa.array([], pa.null()) if term.value is None else pa.repeat(term.value, 1)
    return None


def merge_equalities(dnf: list[list[Term]]) -> list[list[Term]]:
    """``dnf`` with the conjunctions that test one column for equality (a lone ``==`` or
    ``in`` term) merged into one ``in`` term per column: the same rows, and one ``is_in``
    instead of a chain of thousands of ORs.

    Examples
    --------
    >>> schema = pa.schema([("a", pa.int64()), ("s", pa.large_string())])
    >>> raw = [[("a", "==", 1)], [("s", "==", "x")], [("a", "in", [2, 3])]]
    >>> dnf = parse_predicates(raw, schema)
    >>> [[(t.column, t.op) for t in conj] for conj in dnf]
    [[('a', 'in')], [('s', '==')]]
    >>> dnf[0][0].value.to_pylist()
    [1, 2, 3]
    """
    positions: dict[str, list[int]] = {}  # column -> positions of its equality tests
    for i, conj in enumerate(dnf):
        if len(conj) == 1 and _equality_values(conj[0]) is not None:
            positions.setdefault(conj[0].column, []).append(i)
    merged: dict[int, list[Term]] = {}  # first position -> merged conjunction
    dropped: set[int] = set()
    for found in positions.values():
        if len(found) > 1:
            merged[found[0]] = [_merged([dnf[i][0] for i in found])]
            dropped.update(found[1:])
    return [merged.get(i, conj) for i, conj in enumerate(dnf) if i not in dropped]


def _merged(terms: list[Term]) -> Term:
    """One ``in`` term matching the rows of any of the equality ``terms`` (one column)."""
    arrays = [a for a in (_equality_values(term) for term in terms) if a is not None]
    typed = [a for a in arrays if not pa.types.is_null(a.type)]
    t = typed[0].type if typed else pa.null()
    values = pa.concat_arrays([a.cast(t) for a in arrays])
    has_null = any(term.has_null or (term.op == "==" and term.value is None) for term in terms)
    return Term(terms[0].column, "in", values, has_null)


def _field(term: Term, schema: pa.Schema) -> pc.Expression:
    """The column as an expression of its value type (float16 widened to float64).

    Arrow has no comparison kernels for float16; float64 holds every float16 exactly.
    """
    field = pc.field(term.column)
    t = schema.field(term.column).type
    vt = value_type(t)
    if pa.types.is_float16(vt):
        return field.cast(pa.float64())
    if pa.types.is_dictionary(t):
        return field.cast(vt)
    return field


def _value_set(term: Term, schema: pa.Schema) -> pa.Array:
    """The ``in`` list cast to the column's value type (is_in needs equal types).

    Values the column cannot hold (a cast that is not exact) can never match and are
    dropped. Float lists (float64) are cast to the column's float type the same way, except
    for float16 columns, which are compared as float64 (see :func:`_field`).
    """
    values: pa.Array = term.value
    target = value_type(schema.field(term.column).type)
    if pa.types.is_floating(values.type):
        if pa.types.is_float16(target) or target == values.type:
            return values
        # is_in would cast the list to the column's type, rounding a value to one it holds
        narrow = values.cast(target, safe=False)
        return narrow.filter(pc.equal(narrow.cast(values.type), values))
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        keep = pa.array([_fits(v, target) for v in values], pa.bool_())
        return values.filter(keep).cast(target)


def _fits(value: pa.Scalar, target: pa.DataType) -> bool:
    """True if the Arrow scalar converts to ``target`` exactly (a safe cast)."""
    try:
        value.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _joined(
    exprs: Sequence[pc.Expression], join: Callable[..., pc.Expression], what: str
) -> pc.Expression:
    """``exprs`` joined by ``join`` (a balanced tree).

    Raises
    ------
    PredicateError
        For more than :data:`MAX_OPERANDS` expressions: Arrow flattens the tree into one
        chain and evaluates it recursively, which overflows the C stack (a segfault).
    """
    if len(exprs) > MAX_OPERANDS:
        raise PredicateError(
            f"predicates too large: {len(exprs):,} {what} in one filter (at most "
            f"{MAX_OPERANDS:,}); test many values of one column with one 'in' list"
        )
    level = list(exprs)
    while len(level) > 1:
        paired = [join(a, b) for a, b in zip(level[::2], level[1::2], strict=False)]
        level = paired + level[len(paired) * 2 :]
    return level[0]


def any_of(exprs: Sequence[pc.Expression]) -> pc.Expression:
    """OR of expressions (``False`` for none).

    Raises
    ------
    PredicateError
        For more than :data:`MAX_OPERANDS` expressions.

    Examples
    --------
    >>> table = pa.table({"x": range(5)})
    >>> table.filter(any_of([pc.field("x") == v for v in (1, 3)]))["x"].to_pylist()
    [1, 3]
    """
    if not exprs:
        return pc.scalar(False)
    return _joined(exprs, pc.Expression.__or__, "alternatives (conjunctions)")


def all_of(exprs: Sequence[pc.Expression]) -> pc.Expression:
    """AND of expressions (``True`` for none).

    Raises
    ------
    PredicateError
        For more than :data:`MAX_OPERANDS` expressions.
    """
    if not exprs:
        return pc.scalar(True)
    return _joined(exprs, pc.Expression.__and__, "terms in one conjunction")


def _float_hits(f: pc.Expression, values: pa.Array) -> pc.Expression:
    """Rows equal to one of the float64 ``values`` (a non-empty list without NaN).

    ``is_in`` hashes floats, so -0.0 and 0.0 would differ (pandas and ``==`` treat them as
    equal), and it prunes row groups with min=-0.0/max=0.0 statistics wrongly: zeros are
    matched by ``== 0.0`` instead, every other value by ``is_in``.
    """
    zero = pc.equal(values, 0.0)
    hits = []
    others = values.filter(pc.invert(zero))
    if len(others):
        hits.append(f.isin(pc.unique(others)))
    if pc.any(zero).as_py():
        hits.append(f == pc.scalar(0.0))
    return any_of(hits)


def _list_expression(term: Term, f: pc.Expression, schema: pa.Schema) -> pc.Expression:
    """``in``/``not in`` with pandas null semantics."""
    values = _value_set(term, schema)
    if not len(values):
        hit = pc.scalar(False)
    elif pa.types.is_floating(values.type):
        hit = _float_hits(f, values)
    else:
        hit = f.isin(values)
    if term.has_null:
        hit = hit | f.is_null()
    if term.op == "in":
        return hit
    if term.has_null:
        return ~hit
    # null rows are "not in" any list of non-null values (pandas semantics); the
    # ``== 0.0`` used for float zeros yields null there, so add them explicitly
    return (~hit | f.is_null()) if len(values) else pc.scalar(True)


def term_expression(term: Term, schema: pa.Schema) -> pc.Expression:
    """The Arrow expression of one term, with pandas null semantics."""
    f = _field(term, schema)
    if term.op in _LIST_OPS:
        return _list_expression(term, f, schema)
    if term.value is None:
        return f.is_null() if term.op == "==" else f.is_valid()
    v = pc.scalar(term.value)
    if term.op == "==":
        return f == v
    if term.op == "!=":
        return (f != v) | f.is_null()
    if term.op == "<":
        return f < v
    if term.op == "<=":
        return f <= v
    if term.op == ">":
        return f > v
    return f >= v


def conjunction_expression(terms: Iterable[Term], schema: pa.Schema) -> pc.Expression:
    """AND of the terms (``True`` for no terms)."""
    return all_of([term_expression(term, schema) for term in terms])


def dnf_expression(dnf: list[list[Term]], schema: pa.Schema) -> pc.Expression:
    """OR of the conjunctions (``False`` for none)."""
    return any_of([conjunction_expression(conj, schema) for conj in dnf])
