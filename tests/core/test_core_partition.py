"""Unit and property tests of ``dataset_kit.core.partition``: partition value encoding."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import urllib.parse
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_kit.core.naming import unquote_component
from dataset_kit.core.partition import (
    check_partition_type,
    decode_value,
    encode_value,
    value_type,
)
from dataset_kit.exceptions import InvalidInputError, PartitionValueError

_SETTINGS = settings(max_examples=150, deadline=None)

_INT_TYPES = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
    pa.uint64(),
]


def _int_range(t: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(t.to_pandas_dtype())
    return int(info.min), int(info.max)


def _round_trip(value: Any, t: pa.DataType) -> Any:
    encoded = encode_value("col", pa.scalar(value, t))
    # every encoded value is one key component
    assert "/" not in encoded
    return decode_value(encoded, t)


# --------------------------------------------------------------------------- integers
@pytest.mark.parametrize("t", _INT_TYPES, ids=str)
def test_integer_extremes_round_trip(t: pa.DataType) -> None:
    lo, hi = _int_range(t)
    for value in {lo, hi, 0, 1, lo + 1, hi - 1}:
        decoded = _round_trip(value, t)
        assert decoded == value
        assert type(decoded) is int


@_SETTINGS
@given(st.data())
def test_integer_round_trip(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(_INT_TYPES))
    lo, hi = _int_range(t)
    value = data.draw(st.integers(min_value=lo, max_value=hi))
    assert _round_trip(value, t) == value


# --------------------------------------------------------------------------- floats
@_SETTINGS
@given(st.floats(allow_nan=False, allow_subnormal=True))
def test_float64_round_trip_bit_exact(value: float) -> None:
    decoded = _round_trip(value, pa.float64())
    assert decoded == value
    assert math.copysign(1.0, decoded) == math.copysign(1.0, value)  # -0.0 stays -0.0


@_SETTINGS
@given(st.floats(width=32, allow_nan=False, allow_subnormal=True))
def test_float32_round_trip_bit_exact(value: float) -> None:
    decoded = _round_trip(value, pa.float32())
    assert np.float32(decoded).tobytes() == np.float32(value).tobytes()


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1],
)
def test_float64_special_values(value: float) -> None:
    decoded = _round_trip(value, pa.float64())
    assert decoded == value
    assert math.copysign(1.0, decoded) == math.copysign(1.0, value)


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, -0.0, 0.0, 1e-45, 1.1754944e-38, 3.4028235e38, 0.1, 16777217.0],
)
def test_float32_special_values(value: float) -> None:
    decoded = _round_trip(value, pa.float32())
    stored = pa.scalar(value, pa.float32()).as_py()  # the float32 value actually stored
    assert np.float32(decoded).tobytes() == np.float32(stored).tobytes()


@pytest.mark.parametrize("t", [pa.float16(), pa.float32(), pa.float64()], ids=str)
def test_float_nan_rejected(t: pa.DataType) -> None:
    nan = np.float16("nan") if pa.types.is_float16(t) else math.nan
    with pytest.raises(PartitionValueError, match="NaN"):
        encode_value("col", pa.scalar(nan, t))


# --------------------------------------------------------------------------- other types
@pytest.mark.parametrize("value", [True, False])
def test_bool_round_trip(value: bool) -> None:
    encoded = encode_value("b", pa.scalar(value))
    assert encoded == str(value)  # kartothek writes str(value)
    assert decode_value(encoded, pa.bool_()) is value


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("0", False)])
def test_bool_decodes_lenient_spellings(text: str, value: bool) -> None:
    assert decode_value(text, pa.bool_()) is value


def test_bool_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode_value("yes", pa.bool_())


@_SETTINGS
@given(st.text(max_size=30), st.sampled_from([pa.string(), pa.large_string()]))
def test_string_round_trip(value: str, t: pa.DataType) -> None:
    assert _round_trip(value, t) == value


@pytest.mark.parametrize("value", ["", "/", "=", "%", "a/b=c%d", "é ü", "日本", "%2F", " "])
def test_string_special_round_trip(value: str) -> None:
    assert _round_trip(value, pa.large_string()) == value


@_SETTINGS
@given(st.binary(max_size=30), st.sampled_from([pa.binary(), pa.large_binary()]))
def test_binary_round_trip(value: bytes, t: pa.DataType) -> None:
    decoded = _round_trip(value, t)
    assert decoded == value
    assert isinstance(decoded, bytes)


@_SETTINGS
@given(st.dates(), st.sampled_from([pa.date32(), pa.date64()]))
def test_date_round_trip(value: dt.date, t: pa.DataType) -> None:
    assert _round_trip(value, t) == value


def test_date_decodes_kartothek_timestamp_text() -> None:
    assert decode_value("2024-01-01%2000%3A00%3A00", pa.date32()) == dt.date(2024, 1, 1)


@_SETTINGS
@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**6), max_value=10**6
    )
)
def test_decimal_round_trip(value: decimal.Decimal) -> None:
    t = pa.decimal128(12, 2)
    assert _round_trip(value, t) == value


# --------------------------------------------------------------------------- timestamps
_UNITS = ["s", "ms", "us", "ns"]
_TZS = [None, "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]


def _in_range_datetimes(unit: str) -> st.SearchStrategy[dt.datetime]:
    if unit == "ns":  # the range of int64 nanoseconds
        return st.datetimes(min_value=dt.datetime(1678, 1, 1), max_value=dt.datetime(2261, 12, 31))
    return st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


@_SETTINGS
@given(st.data())
def test_naive_timestamp_round_trip(data: st.DataObject) -> None:
    unit = data.draw(st.sampled_from(_UNITS))
    t = pa.timestamp(unit)
    value = data.draw(_in_range_datetimes(unit))
    scalar = pa.scalar(value, pa.timestamp("us")).cast(t, safe=False)
    expected = pd.Timestamp(scalar.cast(pa.int64()).as_py(), unit=unit)
    decoded = decode_value(encode_value("ts", scalar), t)
    assert isinstance(decoded, pd.Timestamp)
    assert decoded.tzinfo is None
    assert decoded == expected


@_SETTINGS
@given(st.data())
def test_tz_aware_timestamp_round_trip_modern_dates(data: st.DataObject) -> None:
    # dates after 1950: every zone has a whole-minute UTC offset (LMT offsets: tested below)
    unit = data.draw(st.sampled_from(_UNITS))
    tz = data.draw(st.sampled_from([z for z in _TZS if z is not None]))
    t = pa.timestamp(unit, tz=tz)
    value = data.draw(
        st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2200, 1, 1))
    )
    raw = pa.scalar(value, pa.timestamp("us")).cast(pa.timestamp(unit), safe=False)
    scalar = raw.cast(pa.int64()).cast(t)
    expected = pd.Timestamp(raw.cast(pa.int64()).as_py(), unit=unit, tz="UTC").tz_convert(tz)
    decoded = decode_value(encode_value("ts", scalar), t)
    assert decoded == expected
    assert str(decoded.tz) == tz


@pytest.mark.parametrize("unit", _UNITS)
def test_nanosecond_precision_round_trip(unit: str) -> None:
    raw = {"s": 1_700_000_001, "ms": 1_700_000_000_001, "us": 1_700_000_000_000_001}
    value = raw.get(unit, 1_700_000_000_000_000_001)
    t = pa.timestamp(unit)
    decoded = decode_value(encode_value("ts", pa.scalar(value, t)), t)
    assert decoded == pd.Timestamp(value, unit=unit)


def test_tz_aware_timestamp_with_lmt_offset_round_trips() -> None:
    t = pa.timestamp("us", tz="Europe/Berlin")
    value = pd.Timestamp("1850-06-01 12:00", tz="Europe/Berlin")
    scalar = pa.scalar(value, t)
    assert decode_value(encode_value("ts", scalar), t) == value


@pytest.mark.parametrize("unit", ["s", "us"])
def test_out_of_range_timestamp_round_trips_or_is_rejected(unit: str) -> None:
    t = pa.timestamp(unit)
    raw = pa.scalar(dt.datetime(9999, 12, 31), pa.timestamp(unit)).cast(pa.int64()).as_py()
    scalar = pa.scalar(raw * 4, pa.int64()).cast(t)  # year ~40000
    try:
        encoded = encode_value("ts", scalar)
    except PartitionValueError:
        return
    decoded = decode_value(encoded, t)
    assert decoded == pd.Timestamp(scalar.cast(pa.int64()).as_py(), unit=unit)


def test_naive_column_rejects_tz_aware_text() -> None:
    with pytest.raises(ValueError, match="naive"):
        decode_value("2024-01-01%2010%3A00%3A00%2B01%3A00", pa.timestamp("us"))


def test_tz_column_accepts_naive_text_as_utc() -> None:
    decoded = decode_value("2024-01-01%2010%3A00%3A00", pa.timestamp("us", tz="Europe/Berlin"))
    assert decoded == pd.Timestamp("2024-01-01 10:00", tz="UTC")
    assert str(decoded.tz) == "Europe/Berlin"


# --------------------------------------------------------------------------- kartothek
def test_kartothek_encoding_of_naive_timestamp() -> None:
    scalar = pa.scalar(pd.Timestamp("2024-01-01 10:00"))
    assert encode_value("ts", scalar) == "2024-01-01%2010%3A00%3A00"


@pytest.mark.parametrize(
    ("value", "t"),
    [
        (1, pa.int64()),
        (-17, pa.int8()),
        (2.5, pa.float64()),
        (1e20, pa.float64()),
        (dt.date(2024, 2, 29), pa.date32()),
        ("é ü", pa.large_string()),
        ("a b", pa.string()),
    ],
)
def test_kartothek_encoding_is_quoted_str(value: Any, t: pa.DataType) -> None:
    # kartothek: urllib.parse.quote(str(value)) (identical when the value has no "/")
    assert encode_value("c", pa.scalar(value, t)) == urllib.parse.quote(str(value))


def test_slash_is_quoted_unlike_kartothek() -> None:
    encoded = encode_value("c", pa.scalar("FR/x y"))
    assert encoded == "FR%2Fx%20y"
    assert unquote_component(encoded) == "FR/x y"


# --------------------------------------------------------------------------- nulls / types
@pytest.mark.parametrize(
    "t",
    [
        *_INT_TYPES,
        pa.float32(),
        pa.float64(),
        pa.bool_(),
        pa.string(),
        pa.large_string(),
        pa.binary(),
        pa.date32(),
        pa.timestamp("ns"),
        pa.timestamp("us", tz="UTC"),
        pa.decimal128(5, 2),
        pa.dictionary(pa.int8(), pa.string()),
    ],
    ids=str,
)
def test_null_rejected(t: pa.DataType) -> None:
    with pytest.raises(PartitionValueError) as info:
        encode_value("col", pa.scalar(None, t))
    assert isinstance(info.value, InvalidInputError)
    assert "'col'" in str(info.value)


def test_dictionary_scalar_encodes_its_value() -> None:
    arr = pa.array(["b", "a/x"]).dictionary_encode()
    assert encode_value("c", arr[1]) == "a%2Fx"
    assert decode_value("a%2Fx", arr.type) == "a/x"


@pytest.mark.parametrize(
    "t",
    [pa.list_(pa.int64()), pa.struct([("a", pa.int8())]), pa.null(), pa.time64("us")],
    ids=str,
)
def test_unsupported_partition_types(t: pa.DataType) -> None:
    with pytest.raises(PartitionValueError, match="'col'"):
        check_partition_type("col", t)


@pytest.mark.parametrize(
    "t",
    [
        *_INT_TYPES,
        pa.float64(),
        pa.bool_(),
        pa.large_string(),
        pa.binary(),
        pa.date32(),
        pa.timestamp("s", tz="UTC"),
        pa.decimal128(5, 2),
        pa.dictionary(pa.int32(), pa.large_string()),
    ],
    ids=str,
)
def test_supported_partition_types(t: pa.DataType) -> None:
    check_partition_type("col", t)


@pytest.mark.parametrize(
    ("text", "t"),
    [("abc", pa.int64()), ("1.5", pa.int8()), ("x", pa.float64()), ("2024-13-01", pa.date32())],
)
def test_decode_invalid_text_raises_value_error(text: str, t: pa.DataType) -> None:
    with pytest.raises(ValueError):
        decode_value(text, t)


def test_value_type() -> None:
    assert value_type(pa.dictionary(pa.int8(), pa.string())) == pa.string()
    assert value_type(pa.int8()) == pa.int8()
