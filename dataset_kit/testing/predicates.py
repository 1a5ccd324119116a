"""A reference evaluation of DNF predicates with pandas: the oracle for predicate tests.

dataset_kit promises pandas' null semantics; tests compare its results with this plain,
row-by-row evaluation of the same predicates on the original frame.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["pandas_filter", "pandas_mask"]

_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def pandas_mask(df: pd.DataFrame, predicates: list[list[tuple[str, str, Any]]]) -> pd.Series:
    """Evaluate DNF predicates with pandas (NaN/None semantics of pandas comparisons).

    ``== None`` selects nulls, ``!= None`` non-nulls, a None inside ``in`` matches nulls;
    any other comparison with a null is False except ``!=`` and ``not in`` (True).
    """
    result = pd.Series(False, index=df.index)
    for conj in predicates:
        mask = pd.Series(True, index=df.index)
        for col, op, value in conj:
            s = df[col]
            null = s.isna()
            if op in ("in", "not in"):
                items = list(value)
                has_null = any(_is_null(v) for v in items)
                vals = [v for v in items if not _is_null(v)]
                hit = s.astype(object).where(~null).map(lambda x, vals=vals: x in vals)
                hit = hit.where(~null, False).astype(bool) | (null & has_null)
                m = hit if op == "in" else ~hit
            elif _is_null(value):
                m = null if op == "==" else ~null
            else:
                cmp = (
                    s.astype(object)
                    .where(~null)
                    .map(
                        lambda x, op=op, value=value: (
                            bool(_OPS[op](x, value)) if not _is_null(x) else False
                        )
                    )
                )
                # pandas: NaN != x is True, every other comparison with NaN is False
                m = cmp.astype(bool) | (null & (op == "!="))
            mask &= m
        result |= mask
    return result


def pandas_filter(df: pd.DataFrame, predicates: list[list[tuple[str, str, Any]]]) -> pd.DataFrame:
    """The rows of ``df`` that :func:`pandas_mask` selects."""
    return df[pandas_mask(df, predicates).to_numpy(dtype=bool)]
