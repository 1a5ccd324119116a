"""Schema rules: the exact logical schema, compatibility and evolution, plateau's view.

dataset_kit keeps the *exact* logical Arrow schema of a dataset (with its pandas metadata)
in every snapshot, so every type round-trips exactly (int8 stays int8, ``string`` stays
``string``, categoricals stay categorical). ``_common_metadata`` gets the schema normalized
the way plateau does it, so plateau can read and update our datasets.

Compatibility of new data with a dataset (:func:`merge_schemas`):

* same column, same type family -> accepted; integers/floats widen to the wider type
  (also as list elements); ``string``/``large_string``/legacy object strings are one
  family, and so are a categorical and its value type;
* timestamps keep the dataset's unit: a finer unit holds a shorter range (``ns`` ends in
  1677 and 2262) and a coarser one drops digits, so neither can be assumed to hold the
  existing values. New data in another unit is converted to the dataset's unit when that is
  exact, else the write raises :class:`SchemaMismatchError` (see
  :func:`dataset_kit.io.write.conform_timestamps`);
* a nullable pandas dtype (``Int64``, ``boolean``, ``Float64``...) in the dataset or in the
  new data makes the column read back with the nullable dtype (as ``pd.concat`` does), so
  nulls never turn integers into floats; data without pandas dtypes (Arrow) gets the
  nullable dtype for integer/boolean columns that hold nulls when it is written
  (:func:`with_nullable_dtypes`), so a dataset decides its pandas dtypes once and every
  reader converts alike;
* a column that is all-null in the new data takes the dataset type;
* a new column is added (schema evolution; older partitions read it as null);
* anything else (signed vs unsigned, int vs float, naive vs tz-aware, a missing column)
  raises :class:`SchemaMismatchError` naming the column and both types.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Container, Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

from dataset_kit.exceptions import MetadataFormatError, SchemaMismatchError

__all__ = [
    "column_entry",
    "file_schema_metadata",
    "may_take_nullable",
    "merge_schemas",
    "null_columns",
    "pandas_metadata",
    "plateau_schema",
    "plateau_type",
    "schema_from_b64",
    "schema_to_b64",
    "type_family",
    "with_column_type",
    "with_nullable_dtypes",
    "with_nullable_from",
    "with_pandas_metadata",
]

_PANDAS = b"pandas"


def type_family(t: pa.DataType) -> str:
    """A coarse name of the family an Arrow type belongs to, for compatibility checks.

    Examples
    --------
    >>> type_family(pa.int8()) == type_family(pa.int64())
    True
    >>> type_family(pa.string()) == type_family(pa.dictionary(pa.int8(), pa.large_string()))
    True
    >>> type_family(pa.uint8()) == type_family(pa.int8())
    False
    """
    if pa.types.is_dictionary(t):
        return type_family(t.value_type)
    if pa.types.is_signed_integer(t):
        return "int"
    if pa.types.is_unsigned_integer(t):
        return "uint"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return f"timestamp[tz={t.tz}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_family(t.value_type)}>"
    return str(t)


def _wider(current: pa.DataType, new: pa.DataType) -> pa.DataType:
    """The type of a column of type ``current`` after adding data of type ``new`` (same
    family): numbers widen, everything else keeps the dataset's type.

    Timestamps keep the dataset's unit (the new data is converted to it when exact).
    """
    if pa.types.is_dictionary(current) or pa.types.is_dictionary(new):
        return current  # the dataset's choice (categorical or plain) wins
    if pa.types.is_integer(current) or pa.types.is_floating(current):
        return new if new.bit_width > current.bit_width else current
    if pa.types.is_list(current) or pa.types.is_large_list(current):
        element = _wider(current.value_type, new.value_type)
        if element == current.value_type:
            return current
        field = current.value_field.with_type(element)
        return pa.list_(field) if pa.types.is_list(current) else pa.large_list(field)
    return current


#: The nullable pandas dtype of each Arrow type that has one.
_NULLABLE_DTYPES = {
    pa.int8(): "Int8",
    pa.int16(): "Int16",
    pa.int32(): "Int32",
    pa.int64(): "Int64",
    pa.uint8(): "UInt8",
    pa.uint16(): "UInt16",
    pa.uint32(): "UInt32",
    pa.uint64(): "UInt64",
    pa.bool_(): "boolean",
    pa.float32(): "Float32",
    pa.float64(): "Float64",
}


def _is_nullable(entry: dict[str, Any] | None) -> bool:
    return entry is not None and entry.get("numpy_type") in _NULLABLE_DTYPES.values()


#: numpy dtypes that hold no nulls: pyarrow reads an integer column with nulls as float64
#: (rounding values above 2**53) and a boolean one as object, whatever they say.
_NON_NULL_NUMPY = frozenset(
    ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
)


def _takes_nullable(t: pa.DataType, entry: dict[str, Any] | None) -> str | None:
    """The nullable pandas dtype an integer or boolean column of type ``t`` holding nulls
    must read back as, given its pandas entry (None: the entry is fine as it is).

    No entry (Arrow data), or a numpy dtype that cannot hold nulls, reads nulls as
    float64/object: the nullable dtype instead. ``object`` integers too (pyarrow reads them
    as float64); ``object`` booleans read back exactly, as written.
    """
    if not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return None
    nullable = _NULLABLE_DTYPES.get(t)
    if nullable is None or _is_nullable(entry):
        return None
    if entry is None:
        return nullable
    numpy_type = entry.get("numpy_type")
    if numpy_type in _NON_NULL_NUMPY or (numpy_type == "object" and pa.types.is_integer(t)):
        return nullable
    return None


def with_nullable_dtypes(
    schema: pa.Schema, columns: Iterable[str], *, complete: bool = True
) -> pa.Schema:
    """``schema`` whose pandas metadata gives ``columns`` that are integer or boolean
    columns with nulls their nullable pandas dtype (``Int64``, ``UInt8``, ``boolean``...).

    Called with the columns that hold nulls: a dataset decides the pandas dtype of such a
    column once, when the data is written, so that every reader (the whole table, one
    partition, a dask partition) converts it alike and exactly. Other columns and
    entries are kept; a schema without pandas metadata gets the default entries (what it
    reads back as without metadata) for its other columns, or (``complete=False``, for a
    conversion, not for storing) none. Returns ``schema`` itself when nothing changes.

    Examples
    --------
    >>> s = with_nullable_dtypes(pa.schema([("k", pa.int64()), ("x", pa.float64())]), ["k", "x"])
    >>> [c["numpy_type"] for c in pandas_metadata(s)["columns"]]
    ['Int64', 'float64']
    """
    meta = pandas_metadata(schema)
    entries = _column_entries(meta)
    wanted: dict[str, str] = {}
    for name in columns:
        idx = schema.get_field_index(name)
        if idx < 0:
            continue
        nullable = _takes_nullable(schema.field(idx).type, entries.get(name))
        if nullable is not None:
            wanted[name] = nullable
    return _with_numpy_types(schema, meta, wanted, complete=complete)


def _with_numpy_types(
    schema: pa.Schema, meta: dict[str, Any] | None, wanted: dict[str, str], *, complete: bool
) -> pa.Schema:
    """``schema`` whose pandas entries of the ``wanted`` columns say the given numpy_type
    (entries are added for columns the metadata does not describe); see
    :func:`with_nullable_dtypes` for ``complete``."""
    if not wanted:
        return schema
    if meta is None:
        meta = _default_meta(schema) if complete else {"index_columns": [], "column_indexes": []}
    entries = _column_entries(meta)
    meta = dict(meta)
    columns_meta = [
        {**c, "numpy_type": wanted[c["name"]]} if c.get("name") in wanted else c
        for c in meta.get("columns", [])
    ]
    for name, nullable in wanted.items():
        if name not in entries:  # metadata that does not describe every column
            t = schema.field(name).type
            pandas_type = (  # as pyarrow writes it
                "bool"
                if pa.types.is_boolean(t)
                else f"float{t.bit_width}"
                if pa.types.is_floating(t)
                else str(t)
            )
            columns_meta.append(
                {
                    "name": name,
                    "field_name": name,
                    "pandas_type": pandas_type,
                    "numpy_type": nullable,
                    "metadata": None,
                }
            )
    meta["columns"] = columns_meta
    return with_pandas_metadata(schema, meta)


def may_take_nullable(schema: pa.Schema, *, skip: Container[str] = ()) -> bool:
    """True if a column of ``schema`` (not in ``skip``) is an integer, float or boolean
    column whose pandas dtype is not a nullable one (:func:`with_nullable_from` may change it).

    Examples
    --------
    >>> may_take_nullable(pa.schema([("s", pa.string())]))
    False
    >>> may_take_nullable(pa.schema([("p", pa.int64()), ("x", pa.float64())]), skip=["p"])
    True
    """
    entries = _column_entries(pandas_metadata(schema))
    for f in schema:
        if f.name in skip or f.type not in _NULLABLE_DTYPES:
            continue
        if not _is_nullable(entries.get(f.name)):
            return True
    return False


def with_nullable_from(schema: pa.Schema, hints: Iterable[pa.Schema]) -> pa.Schema:
    """``schema`` whose integer, float and boolean columns take their nullable pandas
    dtype (``Int64``, ``UInt64``, ``Float64``, ``boolean``: that of ``schema``'s type) where
    one of ``hints`` names a nullable dtype for the column.

    For the schema of a dataset another tool wrote: plateau normalizes the pandas dtypes
    in ``_common_metadata`` (a ``Float64`` or ``Int8`` column says ``float64``/``int64``
    there) but keeps them in the data files, and returns what ``pd.concat`` makes of the
    files' dtypes and ``_common_metadata``'s: the nullable dtype of the normalized type as
    soon as one file has a nullable dtype. ``hints`` are such file schemas (or an earlier
    schema of the dataset). Hints whose pandas metadata is unreadable are ignored (they
    only decide dtypes, never values). Returns ``schema`` itself when nothing changes.

    Examples
    --------
    >>> cm = pa.schema([("f", pa.float64()), ("i", pa.int64()), ("s", pa.large_string())])
    >>> cm = with_pandas_metadata(cm, _default_meta(cm))
    >>> data_file = pa.Schema.from_pandas(pd.DataFrame({"f": pd.array([0.5], "Float32"),
    ...     "i": pd.array([1], "Int8"), "s": ["x"]}), preserve_index=False)
    >>> [c["numpy_type"] for c in pandas_metadata(with_nullable_from(cm, [data_file]))["columns"]]
    ['Float64', 'Int64', 'str']
    """
    meta = pandas_metadata(schema)
    entries = _column_entries(meta)
    wanted: dict[str, str] = {}
    for hint in hints:
        try:
            hint_entries = _column_entries(pandas_metadata(hint))
        except MetadataFormatError:
            continue
        for name, entry in hint_entries.items():
            idx = schema.get_field_index(name)
            if idx < 0 or not _is_nullable(entry):
                continue
            nullable = _NULLABLE_DTYPES.get(schema.field(idx).type)
            if nullable is not None and not _is_nullable(entries.get(name)):
                wanted[name] = nullable
    return _with_numpy_types(schema, meta, wanted, complete=True)


def with_column_type(schema: pa.Schema, name: str, t: pa.DataType) -> pa.Schema:
    """``schema`` with column ``name`` of type ``t``; its pandas entry (if the schema has
    pandas metadata) becomes the default one of ``t`` (an ``Int64`` entry must not stay on
    a column that became double)."""
    idx = schema.get_field_index(name)
    field = schema.field(idx).with_type(t)
    meta = pandas_metadata(schema)
    out = schema.set(idx, field)
    if meta is None:
        return out
    entry = _default_entry(field)
    meta = dict(meta)
    meta["columns"] = [entry if c.get("name") == name else c for c in meta.get("columns", [])]
    return with_pandas_metadata(out, meta)


def null_columns(table: pa.Table) -> list[str]:
    """The columns of ``table`` that hold nulls (null counts are known: no scan)."""
    return [f.name for f, col in zip(table.schema, table.columns, strict=True) if col.null_count]


def _with_nullable(
    fields: list[pa.Field],
    cur_entries: dict[str, dict[str, Any]],
    new_entries: dict[str, dict[str, Any]],
    changed: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """``changed`` (column -> merged pandas entry) plus the columns whose merged entry
    must take the nullable dtype: one side has it (reading a numpy dtype would turn nulls
    into floats, or booleans into objects). The nullable dtype is the merged type's: an
    ``Int8`` column widened to int64 reads as ``Int64`` (``Int8`` would not hold the new
    values).
    """
    out = dict(changed)
    for field in fields:
        entry = changed.get(field.name, cur_entries.get(field.name))
        nullable = _NULLABLE_DTYPES.get(field.type)
        if entry is None or nullable is None or entry.get("numpy_type") == nullable:
            continue
        if (
            _is_nullable(entry)
            or _is_nullable(cur_entries.get(field.name))
            or _is_nullable(new_entries.get(field.name))
        ):
            out[field.name] = {**entry, "numpy_type": nullable}
    return out


def pandas_metadata(schema: pa.Schema, *, what: str = "schema") -> dict[str, Any] | None:
    """The decoded ``b"pandas"`` metadata of a schema, or None.

    Parameters
    ----------
    schema
        The schema.
    what
        What the schema belongs to, for the error message.

    Raises
    ------
    MetadataFormatError
        If the metadata is not a JSON object, or its ``columns``, ``index_columns`` or
        ``column_indexes`` are not lists (of objects, for the columns).
    """
    raw = (schema.metadata or {}).get(_PANDAS)
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MetadataFormatError(f"{what}: pandas metadata is not valid JSON: {exc}") from exc
    problem = _pandas_metadata_problem(meta)
    if problem:
        raise MetadataFormatError(f"{what}: invalid pandas metadata: {problem}")
    return meta


def _pandas_metadata_problem(meta: Any) -> str | None:
    """What is wrong with decoded pandas metadata, as far as dataset_kit relies on it."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    for key in ("columns", "index_columns", "column_indexes"):
        if not isinstance(meta.get(key, []), list):
            return f"{key!r} must be a list"
    for entry in meta.get("columns", []):
        if not isinstance(entry, dict):
            return f"column entry {entry!r} is not an object"
        if not isinstance(entry.get("name"), str | None):
            return f"column entry {entry!r} has a name that is not a string"
    return None


def with_pandas_metadata(schema: pa.Schema, meta: dict[str, Any] | None) -> pa.Schema:
    """``schema`` with its pandas metadata replaced (removed when ``meta`` is None)."""
    other = {k: v for k, v in (schema.metadata or {}).items() if k != _PANDAS}
    if meta is not None:
        other[_PANDAS] = json.dumps(meta).encode()
    return schema.with_metadata(other) if other else schema.remove_metadata()


def _column_entries(meta: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not meta:
        return {}
    return {c["name"]: c for c in meta.get("columns", []) if c.get("name") is not None}


def merge_schemas(
    current: pa.Schema | None, incoming: pa.Schema, *, dataset_uuid: str = "?"
) -> pa.Schema:
    """Merge the schema of new data into a dataset's logical schema.

    Raises
    ------
    SchemaMismatchError
        Names the column and both types.

    Examples
    --------
    >>> cur = pa.schema([("a", pa.int8()), ("s", pa.large_string())])
    >>> merge_schemas(cur, pa.schema([("a", pa.int64()), ("s", pa.string()), ("n", pa.float64())]))
    a: int64
    s: large_string
    n: double
    """
    incoming = _drop_index_fields(incoming)
    if current is None:
        return incoming
    cur_meta = pandas_metadata(current)
    new_meta = pandas_metadata(incoming)
    cur_entries = _column_entries(cur_meta)
    new_entries = _column_entries(new_meta)
    fields: list[pa.Field] = []
    changed_entries: dict[str, dict[str, Any]] = {}
    for field in current:
        idx = incoming.get_field_index(field.name)
        if idx < 0:
            raise SchemaMismatchError(
                f"dataset {dataset_uuid!r}: column {field.name!r} ({field.type}) is missing "
                "from the new data"
            )
        new_type = incoming.field(idx).type
        cur_type = field.type
        if pa.types.is_null(new_type) or cur_type == new_type:
            fields.append(field)
            continue
        if pa.types.is_null(cur_type):
            fields.append(field.with_type(new_type))
            if field.name in new_entries:
                changed_entries[field.name] = new_entries[field.name]
            continue
        if type_family(cur_type) != type_family(new_type):
            raise SchemaMismatchError(
                f"dataset {dataset_uuid!r}: column {field.name!r} has type {cur_type} in the "
                f"dataset but {new_type} in the new data"
            )
        wider = _wider(cur_type, new_type)
        fields.append(field.with_type(wider))
        if wider != cur_type and field.name in new_entries:
            changed_entries[field.name] = new_entries[field.name]
    changed_entries = _with_nullable(fields, cur_entries, new_entries, changed_entries)
    added = [f for f in incoming if current.get_field_index(f.name) < 0]
    fields.extend(f.with_nullable(True) for f in added)
    merged = pa.schema(fields)
    if cur_meta is None:
        # a dataset without pandas metadata (written from Arrow): the new data's nullable
        # integer/boolean dtypes still win (else its nulls would read back as floats)
        return with_nullable_dtypes(
            merged, [f.name for f in merged if _is_nullable(new_entries.get(f.name))]
        )
    meta = dict(cur_meta)
    columns = [changed_entries.get(c.get("name"), c) for c in meta.get("columns", [])]
    for f in added:
        entry = new_entries.get(f.name) or _default_entry(f)
        columns.append(entry)
    meta["columns"] = columns
    return with_pandas_metadata(merged, meta)


def _default_entry(field: pa.Field) -> dict[str, Any]:
    return _column_entries(_default_meta(pa.schema([field])))[field.name]


def _default_meta(schema: pa.Schema) -> dict[str, Any]:
    """The pandas metadata of what ``schema`` reads back as without any (same dtypes)."""
    empty = schema.empty_table().to_pandas()
    meta = pandas_metadata(pa.Schema.from_pandas(empty, preserve_index=False))
    assert meta is not None  # from_pandas always writes it
    return meta


def _drop_index_fields(schema: pa.Schema) -> pa.Schema:
    meta = pandas_metadata(schema)
    names = [n for n in (meta or {}).get("index_columns", []) if isinstance(n, str)]
    for name in names:
        idx = schema.get_field_index(name)
        if idx >= 0:
            schema = schema.remove(idx)
    if meta is not None and names:
        meta = dict(meta)
        meta["index_columns"] = []
        meta["columns"] = [c for c in meta["columns"] if c.get("field_name") not in names]
        schema = with_pandas_metadata(schema, meta)
    return schema


def file_schema_metadata(schema: pa.Schema, drop: list[str]) -> dict[bytes, bytes] | None:
    """Schema metadata for a data file that holds ``schema`` minus the ``drop`` columns."""
    meta = pandas_metadata(schema)
    if meta is None:
        return None
    meta = dict(meta)
    meta["columns"] = [c for c in meta.get("columns", []) if c.get("name") not in drop]
    return {_PANDAS: json.dumps(meta).encode()}


def _normalize_type(
    t: pa.DataType, entry: dict[str, Any] | None
) -> tuple[pa.DataType, dict[str, Any] | None]:
    """plateau's ``normalize_type`` (so plateau accepts our ``_common_metadata``)."""
    entry = dict(entry) if entry is not None else None
    if pa.types.is_dictionary(t):
        if entry is not None and entry.get("pandas_type") == "categorical":
            value_entry = {**entry, "pandas_type": None, "numpy_type": None}
            if pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type):
                value_entry = {**entry, "pandas_type": "object", "numpy_type": "str"}
                return pa.large_string(), {**value_entry, "metadata": None}
            nt, _ = _normalize_type(t.value_type, None)
            return nt, {**entry, "pandas_type": str(nt), "numpy_type": str(nt), "metadata": None}
        return _normalize_type(t.value_type, entry)
    if pa.types.is_signed_integer(t):
        return pa.int64(), _set(entry, "int64", "int64")
    if pa.types.is_unsigned_integer(t):
        return pa.uint64(), _set(entry, "uint64", "uint64")
    if pa.types.is_floating(t):
        return pa.float64(), _set(entry, "float64", "float64")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        np_type = entry.get("numpy_type") if entry else "str"
        if np_type == "string":
            return pa.string(), _set(entry, "unicode", "string")
        return pa.large_string(), _set(entry, "object", "str")
    return t, entry


def column_entry(schema: pa.Schema, name: str) -> dict[str, Any] | None:
    """The pandas metadata entry :func:`plateau_schema` normalizes column ``name`` with
    (the default entry of its type when the schema has no pandas metadata).

    Examples
    --------
    >>> s = pa.Schema.from_pandas(pd.DataFrame({"s": pd.array(["a"], "string")}))
    >>> column_entry(s, "s")["numpy_type"]
    'string'
    """
    meta = pandas_metadata(schema)
    if meta is None:
        return _default_entry(schema.field(name))
    return _column_entries(meta).get(name)


def plateau_type(t: pa.DataType, entry: dict[str, Any] | None) -> pa.DataType:
    """The type plateau gives a column of type ``t`` with pandas entry ``entry`` (see
    :func:`column_entry`): its type in ``_common_metadata``, and in index files.

    Strings are ``string`` for the pandas ``string`` dtype (``pd.NA``), else
    ``large_string``; numbers are widened to 64 bits; categoricals are their value type.

    Examples
    --------
    >>> plateau_type(pa.large_string(), {"numpy_type": "string", "pandas_type": "unicode"})
    DataType(string)
    >>> plateau_type(pa.string(), None), plateau_type(pa.int8(), None)
    (DataType(large_string), DataType(int64))
    """
    return _normalize_type(t, entry)[0]


def _set(entry: dict[str, Any] | None, pd_type: str, np_type: str) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {**entry, "pandas_type": pd_type, "numpy_type": np_type, "metadata": None}


def plateau_schema(schema: pa.Schema, partition_keys: list[str]) -> pa.Schema:
    """The schema plateau writes to ``_common_metadata`` for a dataset of ``schema``.

    Types are normalized (ints -> int64, floats -> float64, categoricals -> value type,
    strings -> ``large_string``/``string`` by pandas dtype), columns ordered as partition
    keys, then the rest alphabetically, and pandas metadata is always present.
    """
    meta = pandas_metadata(schema)
    if meta is None:
        meta = _default_meta(schema)
    entries = _column_entries(meta)
    fields: dict[str, pa.Field] = {}
    new_entries: dict[str, dict[str, Any]] = {}
    for field in schema:
        t, entry = _normalize_type(field.type, entries.get(field.name))
        fields[field.name] = pa.field(field.name, t)
        if entry is not None:
            new_entries[field.name] = entry
    order = [k for k in partition_keys if k in fields]
    order += sorted(n for n in fields if n not in partition_keys)
    meta = dict(meta)
    meta["columns"] = [new_entries[n] for n in order if n in new_entries]
    meta["index_columns"] = [{"kind": "range", "name": None, "start": 0, "step": 1, "stop": 0}]
    meta["column_indexes"] = meta.get("column_indexes") or []
    return pa.schema([fields[n] for n in order], {_PANDAS: json.dumps(meta).encode()})


def schema_to_b64(schema: pa.Schema) -> str:
    """Serialize a schema (Arrow IPC) as base64 text for the snapshot JSON."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: str, *, what: str = "schema") -> pa.Schema:
    """Inverse of :func:`schema_to_b64`; the pandas metadata is checked here, once.

    Parameters
    ----------
    text
        The base64 text.
    what
        Where the text comes from, for error messages.

    Raises
    ------
    MetadataFormatError
        If the text is not a serialized schema, or its pandas metadata is corrupt (see
        :func:`pandas_metadata`).
    """
    try:
        schema = pa.ipc.read_schema(
            pa.py_buffer(base64.b64decode(text.encode("ascii"), validate=True))
        )
    except Exception as exc:
        raise MetadataFormatError(f"{what}: invalid serialized schema: {exc}") from exc
    pandas_metadata(schema, what=what)  # every later use then gets valid metadata
    return schema


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    """An empty pandas frame with the dtypes the schema reads back as."""
    return schema.empty_table().to_pandas()
