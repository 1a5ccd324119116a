"""Durations given as seconds, ``timedelta`` or text such as ``"90s"``, ``"1h"``, ``"7d"``."""

from __future__ import annotations

import datetime as _dt
import math
import re

from dataset_kit.exceptions import InvalidInputError

__all__ = ["Duration", "parse_duration", "required_duration"]

Duration = float | int | str | _dt.timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h|d|w)?\s*$")


def parse_duration(value: Duration | None, *, name: str) -> float | None:
    """Seconds in ``value`` (None stays None).

    Raises
    ------
    InvalidInputError
        For negative, non-finite or unparseable values (naming the option ``name``).

    Examples
    --------
    >>> parse_duration("1h", name="retention"), parse_duration(90, name="grace_period")
    (3600.0, 90.0)
    >>> parse_duration("1.5d", name="retention")
    129600.0
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a duration, got {value!r}")
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise InvalidInputError(
                f"{name} {value!r} is not a duration such as '30s', '15min', '1h', '7d'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise InvalidInputError(f"{name} must be a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(f"{name} must be a non-negative duration, got {value!r}")
    return seconds


def required_duration(value: Duration, *, name: str) -> float:
    """Seconds in ``value``, which must be given (``None`` is an error, not "no limit").

    Raises
    ------
    InvalidInputError
        For None, and as :func:`parse_duration`.

    Examples
    --------
    >>> required_duration("30min", name="grace_period")
    1800.0
    """
    seconds = parse_duration(value, name=name)
    if seconds is None:
        raise InvalidInputError(f"{name} must be a duration such as '1h' or 0, got None")
    return seconds
