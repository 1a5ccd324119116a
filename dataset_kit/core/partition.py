"""Partition values: encoding into and decoding out of partition labels, by Arrow type.

Encoding follows kartothek (``str(value)`` URL-quoted) so both tools produce the same keys,
with the known kartothek defects fixed: ``/`` is quoted, booleans decode correctly and
tz-aware timestamps round-trip. Null (and NaN) partition values are rejected.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dataset_kit.core.naming import quote_bytes, quote_component, unquote_bytes, unquote_component
from dataset_kit.exceptions import PartitionValueError

__all__ = [
    "check_partition_type",
    "decode_value",
    "encode_value",
    "sortable",
    "value_type",
]


def value_type(arrow_type: pa.DataType) -> pa.DataType:
    """The value type of a (possibly dictionary-encoded) Arrow type."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def sortable(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``values`` as an array Arrow's sort kernels accept, in the same order.

    Arrow sorts neither float16 nor dictionaries: float16 becomes float64 (exact), an
    ordered categorical its category codes (pandas' order), any other categorical its
    values.

    Examples
    --------
    >>> cat = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()), ["z", "a"])
    >>> pa.compute.sort_indices(sortable(cat)).to_pylist()
    [1, 0, 2]
    >>> ordered = pa.DictionaryArray.from_arrays(cat.indices, cat.dictionary, ordered=True)
    >>> pa.compute.sort_indices(sortable(ordered)).to_pylist()
    [0, 2, 1]
    """
    t = values.type
    if pa.types.is_dictionary(t):
        if not t.ordered:
            return sortable(values.cast(t.value_type))
        if isinstance(values, pa.ChunkedArray):  # one set of codes for every chunk
            unified = pa.table([values], names=["v"]).unify_dictionaries().column(0)
            return pa.chunked_array([c.indices for c in unified.chunks], t.index_type)
        return values.indices
    if pa.types.is_float16(t):
        return values.cast(pa.float64())
    return values


def check_partition_type(column: str, arrow_type: pa.DataType) -> None:
    """Raise :class:`PartitionValueError` if ``arrow_type`` cannot be a partition column.

    Supported: integers, floats, booleans, strings, binary, dates, timestamps (naive and
    tz-aware), decimals, and categoricals of those.
    """
    t = value_type(arrow_type)
    ok = (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_decimal(t)
    )
    if not ok:
        raise PartitionValueError(
            f"column {column!r} of type {arrow_type} cannot be a partition column"
        )


def encode_value(column: str, scalar: pa.Scalar) -> str:
    """Encode one partition value (an Arrow scalar) as the quoted text of its key part.

    Raises
    ------
    PartitionValueError
        For null or NaN values.

    Examples
    --------
    >>> encode_value("c", pa.scalar("FR/x y"))
    'FR%2Fx%20y'
    >>> encode_value("ts", pa.scalar(pd.Timestamp("2024-01-01 10:00")))
    '2024-01-01%2010%3A00%3A00'
    """
    if pa.types.is_dictionary(scalar.type):
        scalar = scalar.value if scalar.is_valid else pa.scalar(None, scalar.type.value_type)
    if not scalar.is_valid:
        raise PartitionValueError(f"partition column {column!r} contains null values")
    t = scalar.type
    text: str
    if pa.types.is_boolean(t):
        text = "True" if scalar.as_py() else "False"
    elif pa.types.is_integer(t):
        text = str(scalar.as_py())
    elif pa.types.is_floating(t):
        value = scalar.as_py()
        if value != value:  # NaN
            raise PartitionValueError(f"partition column {column!r} contains NaN values")
        text = str(np.float32(value)) if pa.types.is_float32(t) else repr(float(value))
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        return quote_component(scalar.as_py())
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return quote_bytes(scalar.as_py())
    elif pa.types.is_date(t):
        text = scalar.as_py().isoformat()
    elif pa.types.is_timestamp(t):
        text = str(_timestamp_of(column, scalar))
    elif pa.types.is_decimal(t):
        text = str(scalar.as_py())
    else:
        raise PartitionValueError(f"column {column!r} of type {t} cannot be a partition column")
    return quote_component(text)


def _timestamp_of(column: str, scalar: pa.Scalar) -> pd.Timestamp:
    t = scalar.type
    raw = scalar.cast(pa.int64()).as_py()
    try:
        ts = pd.Timestamp(raw, unit=t.unit)
        if t.tz is not None:
            ts = ts.tz_localize("UTC").tz_convert(t.tz)
    except (OverflowError, ValueError) as exc:  # OutOfBoundsDatetime is a ValueError
        raise PartitionValueError(
            f"partition column {column!r}: timestamp {raw} {t.unit} is out of range"
        ) from exc
    if not 1 <= ts.year <= 9999:
        raise PartitionValueError(
            f"partition column {column!r}: timestamp {ts} is outside years 1-9999, which "
            "keys cannot encode"
        )
    return ts


_OFFSET = re.compile(r"^(?P<local>.+?)(?P<sign>[+-])(?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$")


def _parse_timestamp(text: str) -> pd.Timestamp:
    """Parse ``str(pd.Timestamp)`` output, including UTC offsets with seconds (LMT)."""
    try:
        return pd.Timestamp(text)
    except ValueError:
        match = _OFFSET.match(text)
        if not match or " " not in match.group("local"):
            raise
    local = pd.Timestamp(match.group("local"))
    offset = pd.Timedelta(
        hours=int(match.group("h")),
        minutes=int(match.group("m")),
        seconds=int(match.group("s") or 0),
    )
    utc = local - offset if match.group("sign") == "+" else local + offset
    return utc.tz_localize("UTC")


_TRUE = frozenset({"True", "true", "1"})
_FALSE = frozenset({"False", "false", "0"})


def decode_value(quoted: str, arrow_type: pa.DataType) -> Any:
    """Decode the quoted text of a key part into a Python value of ``arrow_type``.

    Raises
    ------
    ValueError
        If the text is not a valid value of the type.

    Examples
    --------
    >>> decode_value("False", pa.bool_())
    False
    >>> decode_value("FR%2Fx%20y", pa.large_string())
    'FR/x y'
    """
    t = value_type(arrow_type)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return unquote_bytes(quoted)
    text = unquote_component(quoted)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return text
    if pa.types.is_boolean(t):
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a boolean")
    if pa.types.is_integer(t):
        return int(text)
    if pa.types.is_floating(t):
        return float(text)
    if pa.types.is_date(t):
        try:
            return _dt.date.fromisoformat(text)
        except ValueError:  # kartothek may have written a timestamp string
            return pd.Timestamp(text).date()
    if pa.types.is_timestamp(t):
        ts = _parse_timestamp(text)
        if t.tz is not None:
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
            return ts.tz_convert(t.tz)
        if ts.tzinfo is not None:
            raise ValueError(f"{text!r} is tz-aware but the column is naive")
        return ts
    if pa.types.is_decimal(t):
        return decimal.Decimal(text)
    raise ValueError(f"cannot decode partition values of type {t}")
