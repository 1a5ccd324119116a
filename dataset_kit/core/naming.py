"""Every store key of a dataset is built and parsed here, and nowhere else.

Layout of a dataset ``<uuid>`` (kartothek/plateau format version 4, plus ``_versions``)::

    <uuid>.by-dataset-metadata.json                       pointer (kartothek v4 metadata)
    <uuid>.by-dataset-metadata.msgpack.zstd               pointer variant (read only)
    <uuid>/<table>/_common_metadata                       plateau-normalized Arrow schema
    <uuid>/<table>/<col>=<val>/.../<hex>.parquet          data blobs (immutable)
    <uuid>/indices/<col>/<ts>.by-dataset-index.parquet    secondary indices (immutable)
    <uuid>/_versions/<version:020d>.json                  snapshots: the commit log
    <uuid>/_staging/<run>/<index:06d>.arrows              a running repartition's shuffle
                                                          shards (deleted after its commit)

Partition values are URL-quoted like kartothek (``urllib.parse.quote``) except that ``/``
is quoted too (kartothek leaves it, which silently truncates such values on read).
"""

from __future__ import annotations

import re
import uuid as _uuid
from urllib.parse import quote, unquote, unquote_to_bytes

from dataset_kit.exceptions import InvalidUUIDError

__all__ = [
    "COMMON_METADATA_FILE",
    "DEFAULT_TABLE",
    "INDEX_SUFFIX",
    "METADATA_FORMAT_VERSION",
    "common_metadata_key",
    "data_key",
    "dataset_prefix",
    "decode_label",
    "index_key",
    "index_prefix",
    "label_from_data_key",
    "make_label",
    "new_blob_name",
    "parse_snapshot_key",
    "pointer_key",
    "pointer_msgpack_key",
    "quote_component",
    "snapshot_key",
    "snapshot_prefix",
    "staging_key",
    "staging_prefix",
    "table_prefix",
    "unquote_component",
    "validate_uuid",
]

METADATA_FORMAT_VERSION = 4
DEFAULT_TABLE = "table"
COMMON_METADATA_FILE = "_common_metadata"
POINTER_SUFFIX = ".by-dataset-metadata.json"
POINTER_MSGPACK_SUFFIX = ".by-dataset-metadata.msgpack.zstd"
INDEX_SUFFIX = ".by-dataset-index.parquet"
DATA_SUFFIX = ".parquet"
VERSIONS_DIR = "_versions"
INDICES_DIR = "indices"
STAGING_DIR = "_staging"

# \Z, not $: "$" also matches before a trailing newline, which let "sales\n" pass as a uuid
_UUID_RE = re.compile(r"^[A-Za-z0-9_+\-]+\Z")
_RUN_RE = re.compile(r"^[0-9a-f]{8,64}\Z")
_SNAPSHOT_RE = re.compile(r"^(\d{20})\.json\Z")
_TABLE_RE = re.compile(r"^[A-Za-z0-9_\-]+\Z")


def validate_uuid(dataset_uuid: object) -> str:
    """Return ``dataset_uuid`` if it is a legal dataset uuid (``[A-Za-z0-9_+-]+``).

    Raises
    ------
    InvalidUUIDError
        For anything else: slashes, dots, path traversal, empty or non-str values.

    Examples
    --------
    >>> validate_uuid("sales_2024")
    'sales_2024'
    >>> validate_uuid("../etc")
    Traceback (most recent call last):
    ...
    dataset_kit.exceptions.InvalidUUIDError: invalid dataset uuid '../etc': only letters, digits, '_', '+' and '-' are allowed
    """  # noqa: E501
    if not isinstance(dataset_uuid, str) or not _UUID_RE.match(dataset_uuid):
        raise InvalidUUIDError(
            f"invalid dataset uuid {dataset_uuid!r}: only letters, digits, '_', '+' and '-' "
            "are allowed"
        )
    return dataset_uuid


def validate_table(table: object) -> str:
    """Return ``table`` if it is a legal table name."""
    if (
        not isinstance(table, str)
        or not _TABLE_RE.match(table)
        or table in (INDICES_DIR, VERSIONS_DIR, STAGING_DIR)
    ):
        raise InvalidUUIDError(f"invalid table name {table!r}")
    return table


def quote_component(text: str) -> str:
    """URL-quote a column name or partition value for use in a key (``/`` quoted too).

    Examples
    --------
    >>> quote_component("FR/x y=1%")
    'FR%2Fx%20y%3D1%25'
    """
    return quote(text, safe="")


def quote_bytes(value: bytes) -> str:
    """URL-quote raw bytes (binary partition values)."""
    return quote(value, safe="")


def unquote_component(text: str) -> str:
    """Inverse of :func:`quote_component` (strict UTF-8)."""
    return unquote(text, errors="strict")


def unquote_bytes(text: str) -> bytes:
    """Inverse of :func:`quote_bytes`."""
    return unquote_to_bytes(text)


# --------------------------------------------------------------------------- keys
def pointer_key(dataset_uuid: str) -> str:
    """``<uuid>.by-dataset-metadata.json``."""
    return dataset_uuid + POINTER_SUFFIX


def pointer_msgpack_key(dataset_uuid: str) -> str:
    """``<uuid>.by-dataset-metadata.msgpack.zstd``."""
    return dataset_uuid + POINTER_MSGPACK_SUFFIX


def dataset_prefix(dataset_uuid: str) -> str:
    """``<uuid>/``: every blob of the dataset except the pointers lives below it."""
    return dataset_uuid + "/"


def uuid_from_pointer_key(key: str) -> str | None:
    """The dataset uuid if ``key`` is a pointer key (JSON or msgpack), else None."""
    for suffix in (POINTER_SUFFIX, POINTER_MSGPACK_SUFFIX):
        if key.endswith(suffix) and "/" not in key:
            candidate = key[: -len(suffix)]
            if _UUID_RE.match(candidate):
                return candidate
    return None


def table_prefix(dataset_uuid: str, table: str) -> str:
    """``<uuid>/<table>/``."""
    return f"{dataset_uuid}/{table}/"


def common_metadata_key(dataset_uuid: str, table: str) -> str:
    """``<uuid>/<table>/_common_metadata``."""
    return f"{dataset_uuid}/{table}/{COMMON_METADATA_FILE}"


def snapshot_prefix(dataset_uuid: str) -> str:
    """``<uuid>/_versions/``."""
    return f"{dataset_uuid}/{VERSIONS_DIR}/"


def snapshot_key(dataset_uuid: str, version: int) -> str:
    """``<uuid>/_versions/<version:020d>.json``.

    Examples
    --------
    >>> snapshot_key("sales", 3)
    'sales/_versions/00000000000000000003.json'
    """
    if version < 0:
        raise ValueError(f"negative version {version}")
    return f"{dataset_uuid}/{VERSIONS_DIR}/{version:020d}.json"


def parse_snapshot_key(dataset_uuid: str, key: str) -> int | None:
    """The version of a snapshot key of this dataset, or None for any other key."""
    prefix = snapshot_prefix(dataset_uuid)
    if not key.startswith(prefix):
        return None
    match = _SNAPSHOT_RE.match(key[len(prefix) :])
    return int(match.group(1)) if match else None


def index_prefix(dataset_uuid: str, column: str | None = None) -> str:
    """``<uuid>/indices/`` or ``<uuid>/indices/<quoted col>/``."""
    if column is None:
        return f"{dataset_uuid}/{INDICES_DIR}/"
    return f"{dataset_uuid}/{INDICES_DIR}/{quote_component(column)}/"


def index_key(dataset_uuid: str, column: str, timestamp_iso: str) -> str:
    """``<uuid>/indices/<col>/<ts>.by-dataset-index.parquet`` (both parts quoted)."""
    return index_prefix(dataset_uuid, column) + quote_component(timestamp_iso) + INDEX_SUFFIX


def staging_prefix(dataset_uuid: str, run: str) -> str:
    """``<uuid>/_staging/<run>/``: the shuffle shards of one repartition run.

    Examples
    --------
    >>> staging_prefix("sales", "0123abcd")
    'sales/_staging/0123abcd/'
    """
    if not _RUN_RE.match(run):
        raise ValueError(f"invalid staging run id {run!r}")
    return f"{dataset_uuid}/{STAGING_DIR}/{run}/"


def staging_key(dataset_uuid: str, run: str, index: int) -> str:
    """``<uuid>/_staging/<run>/<index:06d>.arrows``: one map task's shards (Arrow IPC
    streams, one per output, back to back).

    Examples
    --------
    >>> staging_key("sales", "0123abcd", 7)
    'sales/_staging/0123abcd/000007.arrows'
    """
    if index < 0:
        raise ValueError(f"negative staging index {index}")
    return f"{staging_prefix(dataset_uuid, run)}{index:06d}.arrows"


def new_blob_name() -> str:
    """A fresh, never reused blob name (32 hex characters)."""
    return _uuid.uuid4().hex


def make_label(encoded_values: list[tuple[str, str]], name: str) -> str:
    """Build a partition label from already-encoded ``(column, value)`` pairs.

    Examples
    --------
    >>> make_label([("date", "2024-01-01"), ("s", "a%2Fb")], "abc")
    'date=2024-01-01/s=a%2Fb/abc'
    """
    parts = [f"{quote_component(col)}={val}" for col, val in encoded_values]
    parts.append(name)
    return "/".join(parts)


def data_key(dataset_uuid: str, table: str, label: str) -> str:
    """``<uuid>/<table>/<label>.parquet``."""
    return f"{dataset_uuid}/{table}/{label}{DATA_SUFFIX}"


def label_from_data_key(dataset_uuid: str, table: str, key: str) -> str | None:
    """The partition label of a data key, or None if ``key`` is not a data key."""
    prefix = table_prefix(dataset_uuid, table)
    if not key.startswith(prefix) or not key.endswith(DATA_SUFFIX):
        return None
    return key[len(prefix) : -len(DATA_SUFFIX)]


def decode_label(label: str) -> tuple[list[tuple[str, str]], str]:
    """Split a label into its quoted ``(column, value)`` pairs and the blob name.

    Column names are unquoted; values stay quoted (their type decides how to decode).
    Components that are not ``col=value`` (kartothek ignores them silently) make the
    label invalid here: ``ValueError``.

    Examples
    --------
    >>> decode_label("date=2024-01-01/s=a%2Fb/abc")
    ([('date', '2024-01-01'), ('s', 'a%2Fb')], 'abc')
    """
    *parts, name = label.split("/")
    pairs: list[tuple[str, str]] = []
    for part in parts:
        col, sep, value = part.partition("=")
        if not sep or "=" in value:
            raise ValueError(f"partition label {label!r}: component {part!r} is not col=value")
        pairs.append((unquote_component(col), value))
    return pairs, name
