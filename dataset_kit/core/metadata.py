"""Dataset metadata: the kartothek v4 document plus dataset_kit's ``dataset_kit`` block.

The same document is the snapshot ``_versions/<v>.json`` and the pointer
``<uuid>.by-dataset-metadata.json``. plateau and kartothek read the v4 keys and ignore (and,
when they rewrite the pointer, drop) the ``dataset_kit`` block; that is how a foreign write
after ours is recognised.
"""

from __future__ import annotations

import base64
import datetime as _dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import orjson
import pyarrow as pa
import zstandard

from dataset_kit.core import naming
from dataset_kit.core.schema import schema_from_b64, schema_to_b64
from dataset_kit.exceptions import MetadataFormatError

__all__ = [
    "BLOCK_FORMAT",
    "STUB_MAX_BYTES",
    "DatasetMetadata",
    "expired_stub",
    "is_expired_stub",
    "parse_json",
    "parse_msgpack_zstd",
]

#: Version of the ``dataset_kit`` block inside the v4 document.
BLOCK_FORMAT = 1
_BLOCK = "dataset_kit"


@dataclass(frozen=True)
class DatasetMetadata:
    """One version of a dataset: partitions, schema, indices, user metadata, commit info.

    Attributes
    ----------
    uuid
        Dataset uuid.
    partitions
        Partition label -> data key, in commit order.
    partition_keys
        Partition columns, in key order.
    table_name
        Name of the (single) table, ``"table"`` by default.
    indices
        Column -> index file key (or, for legacy kartothek datasets, an embedded
        ``{value: [labels]}`` dict).
    metadata
        User metadata (always has ``creation_time``).
    schema
        Exact logical Arrow schema, or None when only ``_common_metadata`` knows it
        (datasets written by other tools).
    version
        Snapshot version, or None for a dataset no dataset_kit commit has touched yet.
    parent
        Version this one was committed on top of (None starts a history).
    history_start
        First version of the current history (versions before it belong to a deleted
        dataset of the same uuid).
    commit
        Commit info: ``id``, ``timestamp``, ``operation``, and what the operation did.
    stats
        Label -> ``(rows, bytes)`` for partitions whose figures are known.
    categories
        Categorical column -> its categories (an Arrow array), in order.
    foreign
        True if this document was not written by dataset_kit (plateau/kartothek).
    tombstone
        True for the snapshot that marks a deleted dataset.
    """

    uuid: str
    partitions: Mapping[str, str] = field(default_factory=dict)
    partition_keys: tuple[str, ...] = ()
    table_name: str = naming.DEFAULT_TABLE
    indices: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema: pa.Schema | None = None
    version: int | None = None
    parent: int | None = None
    history_start: int = 0
    commit: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    categories: Mapping[str, pa.Array] = field(default_factory=dict)
    foreign: bool = False
    tombstone: bool = False

    # ------------------------------------------------------------------ derived
    @property
    def secondary_indices(self) -> tuple[str, ...]:
        """Columns with a secondary index."""
        return tuple(self.indices)

    @property
    def num_partitions(self) -> int:
        """Number of partitions (data files)."""
        return len(self.partitions)

    def evolve(self, **changes: Any) -> DatasetMetadata:
        """A copy with some attributes replaced."""
        return replace(self, **changes)

    def relocated(self, uuid: str) -> DatasetMetadata:
        """The same version under another dataset uuid (keys moved to its prefix).

        Examples
        --------
        >>> meta = DatasetMetadata(uuid="a", partitions={"l": "a/table/l.parquet"})
        >>> meta.relocated("b").partitions["l"]
        'b/table/l.parquet'
        """
        if uuid == self.uuid:
            return self
        naming.validate_uuid(uuid)
        old = naming.dataset_prefix(self.uuid)

        def move(key: str) -> str:
            if not key.startswith(old):
                raise MetadataFormatError(
                    f"dataset {self.uuid!r} references {key!r} outside its prefix {old!r}"
                )
            return naming.dataset_prefix(uuid) + key[len(old) :]

        return replace(
            self,
            uuid=uuid,
            partitions={label: move(key) for label, key in self.partitions.items()},
            indices={c: move(r) if isinstance(r, str) else r for c, r in self.indices.items()},
        )

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """The kartothek v4 document with the ``dataset_kit`` block."""
        doc: dict[str, Any] = {
            "dataset_metadata_version": naming.METADATA_FORMAT_VERSION,
            "dataset_uuid": self.uuid,
        }
        if self.indices:
            doc["indices"] = dict(self.indices)
        doc["metadata"] = dict(self.metadata)
        table = self.table_name
        doc["partitions"] = {
            label: {"files": {table: key}} for label, key in self.partitions.items()
        }
        doc["partition_keys"] = list(self.partition_keys)
        block: dict[str, Any] = {
            "format": BLOCK_FORMAT,
            "version": self.version,
            "parent": self.parent,
            "history_start": self.history_start,
            "table": table,
            "commit": dict(self.commit),
            "stats": {label: list(v) for label, v in self.stats.items()},
        }
        if self.schema is not None:
            block["schema"] = schema_to_b64(self.schema)
        if self.categories:
            block["categories"] = {c: _array_to_b64(a) for c, a in self.categories.items()}
        if self.tombstone:
            block["tombstone"] = True
        doc[_BLOCK] = block
        return doc

    def to_json(self) -> bytes:
        """Serialized :meth:`to_dict` (compact UTF-8 JSON)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(
        cls,
        doc: Any,
        *,
        dataset_uuid: str,
        partitions_from_listing: Mapping[str, str] | None = None,
    ) -> DatasetMetadata:
        """Validate and load a v4 document (with or without the ``dataset_kit`` block).

        Parameters
        ----------
        doc
            The decoded document.
        dataset_uuid
            The uuid the document must belong to.
        partitions_from_listing
            Label -> key found by listing the store, used for documents without
            ``partitions`` (kartothek "implicit" partitions).

        Raises
        ------
        MetadataFormatError
            Wrong format version, wrong uuid, wrong field types, multi-table datasets.
        """
        where = f"metadata of dataset {dataset_uuid!r}"
        if not isinstance(doc, dict):
            raise MetadataFormatError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        version = doc.get("dataset_metadata_version")
        if version != naming.METADATA_FORMAT_VERSION:
            raise MetadataFormatError(
                f"{where}: unsupported dataset_metadata_version {version!r} (only 4 is supported)"
            )
        if doc.get("dataset_uuid") != dataset_uuid:
            raise MetadataFormatError(
                f"{where}: document names dataset {doc.get('dataset_uuid')!r}"
            )
        user_meta = doc.get("metadata", {})
        if not isinstance(user_meta, dict):
            raise MetadataFormatError(f"{where}: 'metadata' must be an object")
        block = doc.get(_BLOCK)
        if block is not None and not isinstance(block, dict):
            raise MetadataFormatError(f"{where}: '{_BLOCK}' must be an object")
        partitions, table = _load_partitions(doc, where, partitions_from_listing, block)
        keys = doc.get("partition_keys")
        if keys is None:
            keys = _keys_from_label(next(iter(partitions), None))
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise MetadataFormatError(f"{where}: 'partition_keys' must be a list of strings")
        indices = doc.get("indices", {})
        if not isinstance(indices, dict) or not all(
            isinstance(v, str | dict) for v in indices.values()
        ):
            raise MetadataFormatError(f"{where}: 'indices' must map columns to index keys")
        result = cls(
            uuid=dataset_uuid,
            partitions=partitions,
            partition_keys=tuple(keys),
            table_name=table,
            indices=indices,
            metadata=user_meta,
            foreign=block is None,
        )
        return result if block is None else _apply_block(result, block, where)

    # ------------------------------------------------------------------ plateau view
    def with_creation_time(self) -> DatasetMetadata:
        """Ensure ``metadata["creation_time"]`` is set (kartothek always writes it)."""
        if "creation_time" in self.metadata:
            return self
        now = _dt.datetime.now(_dt.UTC).isoformat()
        return self.evolve(metadata={"creation_time": now, **self.metadata})


def _load_partitions(
    doc: dict[str, Any],
    where: str,
    from_listing: Mapping[str, str] | None,
    block: dict[str, Any] | None,
) -> tuple[dict[str, str], str]:
    raw = doc.get("partitions")
    table = block.get("table") if block else None
    if table is not None and not isinstance(table, str):
        raise MetadataFormatError(f"{where}: table name {table!r} is not a string")
    if raw is None:
        if from_listing is None:
            raise MetadataFormatError(f"{where}: no 'partitions' and no listing given")
        return dict(from_listing), table or naming.DEFAULT_TABLE
    if not isinstance(raw, dict):
        raise MetadataFormatError(f"{where}: 'partitions' must be an object")
    try:  # the fast path: one comprehension, validated in bulk below
        tables = {t for part in raw.values() for t in part["files"]}
        partitions = {label: next(iter(part["files"].values())) for label, part in raw.items()}
    except (TypeError, KeyError, AttributeError, StopIteration) as exc:
        bad = next(
            (lb for lb, p in raw.items() if not isinstance(p, dict) or not p.get("files")), None
        )
        raise MetadataFormatError(f"{where}: partition {bad!r} has no 'files' object") from exc
    if len(tables) > 1 or any(len(part["files"]) != 1 for part in raw.values()):
        raise MetadataFormatError(
            f"{where}: partitions use several tables {sorted(map(str, tables))}; multi-table "
            "(kartothek 3.x) datasets are not supported"
        )
    if tables:
        (tbl,) = tables
        if not isinstance(tbl, str) or not tbl or "/" in tbl:
            raise MetadataFormatError(f"{where}: invalid table name {tbl!r}")
        if table is not None and tbl != table:
            raise MetadataFormatError(f"{where}: partitions use different tables {table!r}/{tbl!r}")
        table = tbl
    if not all(type(key) is str for key in partitions.values()):
        raise MetadataFormatError(f"{where}: a partition has a non-string file key")
    return partitions, table or naming.DEFAULT_TABLE


def _keys_from_label(label: str | None) -> list[str]:
    if label is None:
        return []
    try:
        pairs, _ = naming.decode_label(label)
    except ValueError:
        return []
    return [col for col, _ in pairs]


def _apply_block(meta: DatasetMetadata, block: dict[str, Any], where: str) -> DatasetMetadata:
    try:
        fmt = block.get("format")
        if not isinstance(fmt, int) or fmt > BLOCK_FORMAT:
            raise MetadataFormatError(
                f"{where}: dataset_kit block format {fmt!r} is newer than this version "
                f"understands ({BLOCK_FORMAT}); upgrade dataset_kit"
            )
        version = block["version"]
        parent = block.get("parent")
        history_start = block.get("history_start", 0)
        for name, value in (("version", version), ("history_start", history_start)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MetadataFormatError(f"{where}: {name} must be a non-negative int")
        if parent is not None and (not isinstance(parent, int) or parent >= version):
            raise MetadataFormatError(f"{where}: invalid parent version {parent!r}")
        commit = block.get("commit", {})
        stats_raw = block.get("stats", {})
        if not isinstance(commit, dict) or not isinstance(stats_raw, dict):
            raise MetadataFormatError(f"{where}: commit/stats must be objects")
        stats = _stats(stats_raw, where)
        schema = None
        if block.get("schema"):
            schema = schema_from_b64(block["schema"], what=f"{where}: schema")
        categories = {c: _array_from_b64(v) for c, v in block.get("categories", {}).items()}
    except MetadataFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MetadataFormatError(f"{where}: invalid dataset_kit block: {exc!r}") from exc
    return meta.evolve(
        version=version,
        parent=parent,
        history_start=history_start,
        commit=commit,
        stats=stats,
        schema=schema,
        categories=categories,
        tombstone=bool(block.get("tombstone", False)),
    )


class _Pairs(Mapping[str, tuple[int, int]]):
    """``label -> (rows, bytes)`` over the parsed ``[rows, bytes]`` lists, converted on access.

    Opening a dataset of 20,000 partitions should not build 20,000 tuples up front.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[str, list[int]]) -> None:
        self._raw = raw

    def __getitem__(self, label: str) -> tuple[int, int]:
        rows, nbytes = self._raw[label]
        return rows, nbytes

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _stats(raw: dict[str, Any], where: str) -> Mapping[str, tuple[int, int]]:
    """``label -> (rows, bytes)``; validated in bulk (this runs on every open)."""
    if not all(
        type(v) is list and len(v) == 2 and type(v[0]) is int and type(v[1]) is int
        for v in raw.values()
    ):
        raise MetadataFormatError(f"{where}: partition stats must be [rows, bytes] pairs")
    return _Pairs(raw)


def _array_to_b64(array: pa.Array) -> str:
    sink = pa.BufferOutputStream()
    table = pa.table({"v": array})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def _array_from_b64(text: str) -> pa.Array:
    try:
        buf = pa.py_buffer(base64.b64decode(text.encode("ascii"), validate=True))
        return pa.ipc.open_stream(buf).read_all().column("v").combine_chunks()
    except Exception as exc:
        raise MetadataFormatError(f"invalid serialized categories: {exc}") from exc


def parse_json(data: bytes, *, what: str) -> Any:
    """Decode a JSON metadata document.

    Raises
    ------
    MetadataFormatError
        If the bytes are not valid JSON (corrupt or truncated).
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MetadataFormatError(
            f"{what} is not valid JSON (corrupt or truncated): {exc}"
        ) from exc


def parse_msgpack_zstd(data: bytes, *, what: str) -> Any:
    """Decode a zstd-compressed msgpack metadata document (kartothek's alternative format)."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise MetadataFormatError(f"{what} is not valid msgpack+zstd: {exc}") from exc


#: Upper bound of a stub's size; every real snapshot is larger (it carries the kartothek
#: keys, a commit id and a timestamp), so a listing tells stubs apart without reads.
STUB_MAX_BYTES = 160


def expired_stub(dataset_uuid: str, version: int) -> bytes:
    """The document that replaces the snapshot of an expired version.

    Expiring a version must not free its snapshot key: whoever *creates* that key commits
    the version, so a writer stalled on an old base would otherwise "commit" into a
    version number the history has long passed (and its data would be in no version of
    the current line). The stub keeps the slot taken; it is a few dozen bytes.

    Examples
    --------
    >>> is_expired_stub(orjson.loads(expired_stub("sales", 3)))
    True
    """
    del dataset_uuid  # not stored: a stub's size must not depend on it (see STUB_MAX_BYTES)
    stamp = _dt.datetime.now(_dt.UTC).isoformat()
    data = orjson.dumps({_BLOCK: {"format": BLOCK_FORMAT, "version": version, "expired": stamp}})
    assert len(data) <= STUB_MAX_BYTES
    return data


def is_expired_stub(doc: Any) -> bool:
    """True if a parsed snapshot document is the stub of an expired version."""
    if not isinstance(doc, dict):
        return False
    block = doc.get(_BLOCK)
    return isinstance(block, dict) and "expired" in block and "partitions" not in doc
