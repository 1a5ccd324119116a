"""The W8 per-partition function, in an Arrow and a pandas flavour (identical results).

Module-level functions, so they pickle by reference onto dask workers.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

REVENUE_MIN = 5_000.0
"""Rows with ``revenue = sales * price`` below this are dropped (about 40% of them)."""


def revenue_arrow(table: pa.Table) -> pa.Table:
    """Add ``revenue = sales * price`` (float64) and keep rows with revenue >= REVENUE_MIN."""
    revenue = pc.multiply(table["sales"], pc.cast(table["price"], pa.float64()))
    table = table.append_column("revenue", revenue)
    return table.filter(pc.greater_equal(revenue, REVENUE_MIN))


def revenue_pandas(frame: pd.DataFrame) -> pd.DataFrame:
    """The same on a pandas DataFrame (the result has a fresh RangeIndex)."""
    revenue = frame["sales"].astype("float64") * frame["price"].astype("float64")
    out = frame.assign(revenue=revenue)
    return out[out["revenue"] >= REVENUE_MIN].reset_index(drop=True)
