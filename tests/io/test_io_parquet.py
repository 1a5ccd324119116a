"""io.parquet's footer reader: one ranged read from a blob's tail, as a rule."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dataset_kit.exceptions import KeyNotFoundError
from dataset_kit.io.parquet import FOOTER_PROBE, read_footer, table_to_parquet
from dataset_kit.store import CountingStore, MemoryStore


def test_a_footer_is_one_ranged_read_or_two_when_larger_than_the_probe() -> None:
    store = CountingStore(MemoryStore())
    store.put("t/small.parquet", table_to_parquet(pa.table({"x": list(range(1000))})))
    # many columns with long names: a footer larger than the probe
    wide = pa.table({f"column_{i:04d}_" + "n" * 200: [i] for i in range(300)})
    store.put("t/wide.parquet", table_to_parquet(wide))
    store.reset()

    assert read_footer(store, "t/small.parquet").num_rows == 1000
    assert store.counts["get_range"] == 1 and store.counts["stat"] == 1
    size = store.stat("t/wide.parquet").size
    store.reset()
    footer = read_footer(store, "t/wide.parquet", size=size)
    assert footer.num_columns == 300 and footer.num_rows == 1
    assert store.counts["get_range"] == 2 and store.counts["stat"] == 0
    assert store.counts["bytes_read"] < size + FOOTER_PROBE


@pytest.mark.parametrize(
    "blob", [b"", b"not parquet at all", b"PAR1" + b"\0" * 20 + b"\xff\xff\xff\x7fPAR1"]
)
def test_what_is_no_parquet_file_raises_arrow_invalid(blob: bytes) -> None:
    store = MemoryStore()
    store.put("t/bad.parquet", blob)
    with pytest.raises(pa.ArrowInvalid):
        read_footer(store, "t/bad.parquet")


def test_a_missing_blob_is_not_found() -> None:
    with pytest.raises(KeyNotFoundError):
        read_footer(MemoryStore(), "t/missing.parquet")
