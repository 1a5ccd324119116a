"""Sizes of the reliability suite: small by default, bigger under ``make soak``.

Every reliability test reads its figures (processes, iterations, seconds, hypothesis
examples) through :func:`scaled` or :func:`scaled_seconds`, so one environment variable
turns the quick suite that ``make test`` runs into a soak run::

    DK_SOAK=1 pytest tests/reliability      # every figure at its soak value

A single figure can be set on its own with ``DK_<NAME>=<value>``, e.g.
``DK_GC_RACE_SECONDS=300``; that wins over ``DK_SOAK``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SOAK_ENV", "scaled", "scaled_seconds", "soak_enabled"]

#: Environment variable that switches every figure to its soak value.
SOAK_ENV = "DK_SOAK"

_TRUE = frozenset({"1", "true", "yes", "on"})


def soak_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``DK_SOAK`` (in ``environ``, default ``os.environ``) asks for soak figures.

    Examples
    --------
    >>> soak_enabled({"DK_SOAK": "1"}), soak_enabled({"DK_SOAK": "0"}), soak_enabled({})
    (True, False, False)
    """
    env = os.environ if environ is None else environ
    return env.get(SOAK_ENV, "").strip().lower() in _TRUE


def _figure(
    name: str, default: float, soak: float, environ: Mapping[str, str] | None
) -> float | None:
    env = os.environ if environ is None else environ
    variable = "DK_" + name.upper()
    text = env.get(variable, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"${variable} must be a number, not {text!r}") from None


def scaled(name: str, default: int, soak: int, *, environ: Mapping[str, str] | None = None) -> int:
    """The whole-number figure ``name``: ``$DK_<NAME>``, else the soak or default value.

    Parameters
    ----------
    name
        The figure's name, e.g. ``"gc_race_writers"`` (read from ``DK_GC_RACE_WRITERS``).
    default, soak
        Its value in the quick suite and under ``DK_SOAK``.
    environ
        Where to look (default ``os.environ``).

    Raises
    ------
    ValueError
        If ``$DK_<NAME>`` is set but not a number.

    Examples
    --------
    >>> scaled("runs", 3, 30, environ={})
    3
    >>> scaled("runs", 3, 30, environ={"DK_SOAK": "1"})
    30
    >>> scaled("runs", 3, 30, environ={"DK_SOAK": "1", "DK_RUNS": "7"})
    7
    """
    value = _figure(name, default, soak, environ)
    if value is None:
        return soak if soak_enabled(environ) else default
    return int(value)


def scaled_seconds(
    name: str, default: float, soak: float, *, environ: Mapping[str, str] | None = None
) -> float:
    """Like :func:`scaled`, for a duration in seconds (fractions allowed).

    Examples
    --------
    >>> scaled_seconds("race_seconds", 2.5, 60, environ={"DK_RACE_SECONDS": "0.5"})
    0.5
    """
    value = _figure(name, default, soak, environ)
    if value is None:
        return soak if soak_enabled(environ) else default
    return value
