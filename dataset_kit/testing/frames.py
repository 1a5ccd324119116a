"""Test data shared by the suites: a frame with every type dataset_kit round-trips."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

__all__ = ["all_types_frame"]


def all_types_frame() -> pd.DataFrame:
    """Four rows of every supported dtype (ints of all widths, floats, bools, str and
    ``string``, categorical, date, naive/ns/tz-aware timestamps, nullable ``Int64`` and
    ``boolean``, binary); ``key`` is a unique row id."""
    ts = pd.to_datetime(
        ["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-03 00:00:00.000001", "2024-01-04"],
        format="ISO8601",
    )
    berlin = pd.to_datetime(
        ["2024-01-01 10:00", "2024-03-31 03:30", "2024-10-27 02:30", "2024-07-04 00:00"],
        format="ISO8601",
    ).tz_localize("Europe/Berlin", ambiguous=np.array([True, False, True, False]))
    return pd.DataFrame(
        {
            "key": np.arange(4, dtype="int64"),
            "i8": np.array([1, -2, 3, -128], dtype="int8"),
            "i16": np.array([1, 2, 3, 32767], dtype="int16"),
            "i32": np.array([1, 2, 3, -(2**31)], dtype="int32"),
            "i64": np.array([1, 2, 3, 2**40], dtype="int64"),
            "u8": np.array([1, 2, 3, 255], dtype="uint8"),
            "u16": np.array([1, 2, 3, 65535], dtype="uint16"),
            "u32": np.array([1, 2, 3, 2**32 - 1], dtype="uint32"),
            "u64": np.array([1, 2, 3, 2**63], dtype="uint64"),
            "f32": np.array([0.1, 2, 3, 4], dtype="float32"),
            "f64": [0.1, np.nan, 3.0, -0.0],
            "b": [True, False, True, False],
            "s": ["a/b", "x=y", "%20 é", ""],
            "S": pd.array(["é", None, "ü", "a"], dtype="string"),
            "cat": pd.Categorical(["b", "a", "b", "z"], categories=["z", "b", "a", "unused"]),
            "d": [
                dt.date(2024, 1, 1),
                dt.date(2024, 1, 2),
                dt.date(2024, 2, 1),
                dt.date(1970, 1, 1),
            ],
            "ts": ts,
            "tsns": pd.Series(pd.to_datetime(["2024-01-01 10:00:00.000000001"] * 4)).astype(
                "datetime64[ns]"
            ),
            "tz": berlin,
            "I": pd.array([1, None, 3, 4], dtype="Int64"),
            "B": pd.array([True, None, False, True], dtype="boolean"),
            "bin": [b"\x00\xff", b"/", b"", b"a"],
        }
    )
