"""Parquet bytes <-> Arrow tables, for data blobs and ``_common_metadata``."""

from __future__ import annotations

import functools
import logging
import struct
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataset_kit.exceptions import (
    DataBlobCorruptError,
    DataBlobMissingError,
    KeyNotFoundError,
    MetadataFormatError,
)
from dataset_kit.store import Capability, Store

if TYPE_CHECKING:
    import pyarrow.compute as pc

__all__ = [
    "COMPRESSIONS",
    "dictionary_columns",
    "read_blob",
    "read_common_metadata",
    "read_footer",
    "table_to_parquet",
    "write_common_metadata",
]

logger = logging.getLogger(__name__)

COMPRESSIONS = frozenset({"zstd", "snappy", "gzip", "lz4", "brotli", "none"})


@functools.cache
def _scanning() -> tuple[Any, Any]:
    """pyarrow.dataset's Parquet format and the local file system, made once.

    Imported on first use: ``pyarrow.dataset`` imports pandas (0.3 s), and write helper
    processes, which import this module to encode blobs, never scan one.
    """
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    return pads.ParquetFileFormat(), pafs.LocalFileSystem()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: strings, binary, categoricals, booleans.

    Dictionary encoding of high-cardinality numbers costs time and space; for text it is
    the single biggest write-speed and size lever (measured: see docs/performance.md).
    """
    out = []
    for f in schema:
        t = f.type
        if (
            pa.types.is_dictionary(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
        ):
            out.append(f.name)
    return out


def table_to_parquet(
    table: pa.Table,
    *,
    compression: str = "snappy",
    row_group_size: int | None = None,
    use_dictionary: list[str] | None = None,
) -> bytes:
    """Serialize a table as one Parquet file (statistics on, format 2.6: exact timestamps).

    ``use_dictionary`` names the columns to dictionary-encode (default: chosen by
    :func:`dictionary_columns`).
    """
    sink = pa.BufferOutputStream()
    if use_dictionary is None:
        use_dictionary = dictionary_columns(table.schema)
    pq.write_table(
        table,
        sink,
        compression=None if compression == "none" else compression,
        row_group_size=row_group_size,
        use_dictionary=use_dictionary,
        write_statistics=True,
        store_schema=True,
    )
    return sink.getvalue().to_pybytes()


def _source(store: Store, key: str) -> Any:
    if Capability.LOCAL_PATH in store.capabilities:
        path = store.local_path(key)
        if path is not None:
            return path
    return pa.BufferReader(store.get(key))


#: Bytes read from the end of a blob for its footer (one ranged read, as a rule).
FOOTER_PROBE = 65536


def read_footer(store: Store, key: str, *, size: int | None = None) -> pq.FileMetaData:
    """The Parquet footer of blob ``key``, reading only the blob's tail.

    Cost: one file open on a local store; elsewhere a stat (unless ``size`` is given)
    and one ranged read of at most :data:`FOOTER_PROBE` bytes (a second one for a larger
    footer). A store without ranged reads reads the whole blob for each.

    Raises
    ------
    KeyNotFoundError, FileNotFoundError
        If the blob does not exist (the latter on a local store).
    pyarrow.ArrowInvalid
        If it is not a Parquet file.

    Examples
    --------
    >>> from dataset_kit.store import MemoryStore
    >>> store = MemoryStore()
    >>> _ = store.put("t/a.parquet", table_to_parquet(pa.table({"x": [1, 2, 3]})))
    >>> read_footer(store, "t/a.parquet").num_rows
    3
    """
    if Capability.LOCAL_PATH in store.capabilities:
        path = store.local_path(key)
        if path is not None:
            return pq.read_metadata(path)
    if size is None:
        size = store.stat(key).size
    tail = store.get_range(key, max(0, size - FOOTER_PROBE), FOOTER_PROBE)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise pa.ArrowInvalid(f"blob {key!r} is not a Parquet file (no footer)")
    (length,) = struct.unpack("<i", tail[-8:-4])
    if length <= 0 or length + 8 > size - 4:
        raise pa.ArrowInvalid(f"blob {key!r}: a footer of {length} bytes in {size} bytes")
    if length + 8 > len(tail):
        tail = store.get_range(key, size - length - 8, length + 8)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-(length + 8) :]))


def read_blob(
    store: Store,
    key: str,
    *,
    columns: list[str] | None,
    row_filter: pc.Expression | None,
    dataset_uuid: str,
    payload_fields: list[pa.Field] | None = None,
    use_threads: bool = False,
) -> pa.Table:
    """Read one data blob: only ``columns`` (None: all), rows matching ``row_filter``.

    ``row_filter`` also prunes row groups by their statistics before anything is decoded.
    ``use_threads`` decodes columns in parallel (worth it when few blobs are read).

    Raises
    ------
    DataBlobMissingError
        If the blob referenced by the metadata does not exist.
    DataBlobCorruptError
        If it is not readable Parquet (truncated, overwritten, damaged).
    """
    try:
        source = _source(store, key)
        if row_filter is None:
            pf = pq.ParquetFile(source)
            physical = pf.schema_arrow.names
            if columns is None:
                return pf.read(use_threads=use_threads)
            present = [c for c in columns if c in physical]
            if not present:  # keep the row count: a table without columns has rows too
                return pa.table([pa.nulls(pf.metadata.num_rows)], names=["_"]).select([])
            return pf.read(columns=present, use_threads=use_threads)
        parquet_format, local_fs = _scanning()
        if isinstance(source, str):
            fragment = parquet_format.make_fragment(source, filesystem=local_fs)
        else:
            fragment = parquet_format.make_fragment(source)
        physical = fragment.physical_schema
        # columns added by schema evolution after this blob was written read as null
        extra = [f for f in payload_fields or [] if physical.get_field_index(f.name) < 0]
        scan_schema = pa.schema(list(physical) + extra) if extra else physical
        wanted = None if columns is None else [c for c in columns if c in physical.names]
        return fragment.to_table(
            schema=scan_schema, columns=wanted, filter=row_filter, use_threads=use_threads
        )
    except (KeyNotFoundError, FileNotFoundError) as exc:
        raise DataBlobMissingError(
            f"dataset {dataset_uuid!r}: data blob {key!r} is referenced but missing"
        ) from exc
    except (pa.ArrowInvalid, OSError) as exc:  # bad footer, thrift, pages, compression
        raise DataBlobCorruptError(
            f"dataset {dataset_uuid!r}: data blob {key!r} is not readable Parquet ({exc}); "
            "verify(deep=True) lists every such blob, and a backup can restore it"
        ) from exc


def write_common_metadata(schema: pa.Schema) -> bytes:
    """``_common_metadata`` bytes as plateau writes them (empty Parquet file, schema only)."""
    sink = pa.BufferOutputStream()
    pq.write_metadata(schema, sink, version="2.4", coerce_timestamps="us")
    return sink.getvalue().to_pybytes()


def read_common_metadata(data: bytes, *, what: str) -> pa.Schema:
    """Read the schema of a ``_common_metadata`` file.

    Raises
    ------
    MetadataFormatError
        If the bytes are not a Parquet footer.
    """
    try:
        schema = pq.read_schema(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MetadataFormatError(f"{what} is not a valid Parquet schema file: {exc}") from exc
    return schema
