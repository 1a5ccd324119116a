"""The iterator API: read partition by partition with bounded memory; write from iterables.

Writing from an iterable needs no separate function: :func:`dataset_kit.write_dataset` and
:func:`dataset_kit.update_dataset` accept an iterable of frames and hold one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from dataset_kit.api._ops import as_list
from dataset_kit.api.eager import Output, _finish, _plan
from dataset_kit.io import read as _read

__all__ = ["read_dataset_as_dataframes"]


def read_dataset_as_dataframes(
    *,
    store: Any,
    dataset_uuid: str,
    columns: Sequence[str] | None = None,
    predicates: Any = None,
    version: int | None = None,
    dispatch_by: str | Sequence[str] | None = None,
    output: Output = "pandas",
    categoricals: Sequence[str] | None = None,
) -> Iterator[Any]:
    """Yield one frame per partition (or ``dispatch_by`` group), reading lazily.

    Only one partition (group) is in memory at a time. The version is pinned when
    iteration starts, so concurrent commits do not change what is yielded. See
    :func:`dataset_kit.read_table` for the parameters.

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"p": [1, 2], "x": [3, 4]}), store=store,
    ...                      dataset_uuid="it", partition_on="p")
    >>> [len(df) for df in dk.iter.read_dataset_as_dataframes(store=store, dataset_uuid="it")]
    [1, 1]
    """
    kv, plan = _plan(store, dataset_uuid, columns, predicates, version)
    dispatch = None if dispatch_by is None else as_list(dispatch_by, "dispatch_by")
    for group in _read.iter_groups(plan, dispatch):
        table = _read.concat(plan, _read.read_partitions(kv, plan, group))
        if table.num_rows:
            yield _finish(plan, table, output, categoricals)
