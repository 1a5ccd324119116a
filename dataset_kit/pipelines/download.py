"""Database download: a table or query into a dataset, in parallel, throttled, resumable.

The graph: planning on the client (the source's columns and Arrow types, and chunks: key
ranges from the key's min/max or row-count quantiles, or explicit WHERE clauses), one node
per chunk that streams the chunk's rows as Arrow record batches and writes them as blobs
(split by ``partition_on``, at most ``max_rows_per_file`` rows each, never an empty file)
and returns a small descriptor, and one commit node that makes them visible as one new
version. A failed run commits nothing.

Resumable runs (``job_id=``) keep their plan and a record of every finished chunk's blobs in
a staging area of the target, ``<uuid>/_staging/<job_id>/``; a rerun with the same job id
reuses the plan and the finished chunks and downloads only the rest, so its result equals
an uninterrupted run's. The staging area is removed after the commit; an abandoned one is
garbage that :func:`~dataset_kit.pipelines.garbage_collect` removes after its grace period.

The dataset's user metadata records the download under ``"dataset_kit.download"``: the job
id, the key and the largest key downloaded (the high-water mark that ``incremental=True``
starts from).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from dataset_kit.api._ops import (
    as_list,
    commit_update,
    commit_write,
    resolve_or_none,
    union_categories,
)
from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.schema import (
    merge_schemas,
    schema_from_b64,
    schema_to_b64,
    type_family,
    with_column_type,
)
from dataset_kit.exceptions import (
    CommitConflictError,
    InvalidInputError,
    KeyExistsError,
    KeyNotFoundError,
    MetadataFormatError,
    SourceQueryError,
    StoreUnavailableError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io import sources as _src
from dataset_kit.io.parquet import read_blob
from dataset_kit.io.write import WriteOptions, WrittenPartition, validate_write_columns
from dataset_kit.pipelines._job import Job, final_node, task_key
from dataset_kit.pipelines._stores import renew_reused
from dataset_kit.pipelines.compute import (
    NodeResult,
    WriteTarget,
    resolve_target,
    stage_results,
    write_result,
)
from dataset_kit.store import Store, open_store
from dataset_kit.throttle import Throttle, as_throttle, throttled

__all__ = ["STATE_KEY", "download_table"]

logger = logging.getLogger(__name__)

Mode = Literal["error", "overwrite", "append"]

#: User-metadata key recording the last download (job id, key, high-water mark).
STATE_KEY = "dataset_kit.download"
#: Folder of a dataset holding the staging areas of resumable downloads.
STAGING_DIR = "_staging"
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FORMAT = 1


# --------------------------------------------------------------------------- encoding
def encode_value(value: Any) -> dict[str, Any] | None:
    """A key value as JSON (for the high-water mark).

    Examples
    --------
    >>> encode_value(dt.date(2024, 5, 1))
    {'type': 'date', 'value': '2024-05-01'}
    >>> decode_value(encode_value(dt.date(2024, 5, 1)))
    datetime.date(2024, 5, 1)
    """
    if value is None:
        return None
    kinds: list[tuple[type, str, Any]] = [
        (bool, "bool", bool),
        (int, "int", int),
        (float, "float", repr),
        (decimal.Decimal, "decimal", str),
        (dt.datetime, "timestamp", dt.datetime.isoformat),
        (dt.date, "date", dt.date.isoformat),
        (str, "str", str),
    ]
    for cls, name, conv in kinds:
        if isinstance(value, cls):
            return {"type": name, "value": conv(value)}
    raise InvalidInputError(f"cannot record a key of type {type(value).__name__}")


def decode_value(data: Mapping[str, Any] | None) -> Any:
    """Inverse of :func:`encode_value`."""
    if data is None:
        return None
    kind, value = data.get("type"), data.get("value")
    decoders: dict[Any, Any] = {
        "bool": bool,
        "int": int,
        "float": float,
        "decimal": decimal.Decimal,
        "timestamp": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "str": str,
    }
    if kind not in decoders or value is None:
        raise MetadataFormatError(f"unreadable recorded key value {data!r}")
    return decoders[kind](value)


def _array_to_b64(array: pa.Array) -> str:
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([array], names=["v"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def _array_from_b64(text: str) -> pa.Array:
    with pa.ipc.open_stream(pa.py_buffer(base64.b64decode(text))) as reader:
        table = reader.read_all()
    return table.column(0).combine_chunks()


def _result_to_json(result: NodeResult) -> bytes:
    doc = {
        "format": _FORMAT,
        "rows": result.rows,
        "schema": schema_to_b64(result.schema),
        "categories": {c: _array_to_b64(a) for c, a in result.categories.items()},
        "parts": [
            {
                "label": p.label,
                "key": p.key,
                "rows": p.rows,
                "nbytes": p.nbytes,
                "index_values": {c: _array_to_b64(a) for c, a in p.index_values.items()},
            }
            for p in result.parts
        ],
    }
    return json.dumps(doc).encode()


def _result_from_json(data: bytes) -> NodeResult:
    doc = json.loads(data)
    if doc.get("format") != _FORMAT:
        raise MetadataFormatError(f"unknown staging record format {doc.get('format')!r}")
    parts = tuple(
        WrittenPartition(
            p["label"],
            p["key"],
            int(p["rows"]),
            int(p["nbytes"]),
            {c: _array_from_b64(a) for c, a in p["index_values"].items()},
        )
        for p in doc["parts"]
    )
    categories = {c: _array_from_b64(a) for c, a in doc["categories"].items()}
    return NodeResult(parts, schema_from_b64(doc["schema"]), categories, int(doc["rows"]))


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class _Plan:
    """What a download does; stored in the staging area of a resumable job."""

    fingerprint: str
    chunks: tuple[str, ...]  # one SELECT per chunk
    schema: pa.Schema  # pa.null() fields: inferred per chunk
    key: str | None
    after: Any  # the high-water mark the download starts above (incremental)
    high: Any  # the largest key at planning time

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "fingerprint": self.fingerprint,
                "chunks": list(self.chunks),
                "schema": schema_to_b64(self.schema),
                "key": self.key,
                "after": encode_value(self.after),
                "high": encode_value(self.high),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Plan:
        try:
            doc = json.loads(data)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            return cls(
                doc["fingerprint"],
                tuple(doc["chunks"]),
                schema_from_b64(doc["schema"]),
                doc["key"],
                decode_value(doc["after"]),
                decode_value(doc["high"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MetadataFormatError(f"unreadable download plan: {exc}") from exc


@dataclass(frozen=True)
class _Run:
    """What every chunk node shares."""

    source: _src.Source
    schema: pa.Schema
    target: WriteTarget
    max_rows_per_file: int
    staging: str | None  # the staging prefix of a resumable job
    db: Throttle | None
    retries: int
    n_chunks: int


def staging_prefix(dataset_uuid: str, job_id: str) -> str:
    """Where a resumable download keeps its plan and finished chunks.

    Examples
    --------
    >>> staging_prefix("sales", "nightly-2024-05-01")
    'sales/_staging/nightly-2024-05-01/'
    """
    return f"{naming.dataset_prefix(dataset_uuid)}{STAGING_DIR}/{job_id}/"


def _chunk_record_key(prefix: str, index: int) -> str:
    return f"{prefix}chunks/{index:06d}.json"


# --------------------------------------------------------------------------- chunk nodes
class _Buffer:
    """Record batches until a file's worth of rows is there; yields tables to write."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def _table(self) -> pa.Table:
        schemas = {b.schema for b in self.batches}
        if len(schemas) == 1:
            return pa.Table.from_batches(self.batches)
        try:  # inferred columns: all-null batches next to typed ones
            unified = pa.unify_schemas(list(schemas), promote_options="permissive")
            return pa.Table.from_batches([b.cast(unified) for b in self.batches])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise SourceQueryError(
                f"a column's values change type within a chunk ({exc}); CAST it in the "
                "query or pass types={...} for it"
            ) from None

    def add(self, batch: pa.RecordBatch) -> list[pa.Table]:
        if batch.num_rows:
            self.batches.append(batch)
            self.rows += batch.num_rows
        out: list[pa.Table] = []
        if self.rows >= self.max_rows:
            table = self._table()
            start = 0
            while table.num_rows - start >= self.max_rows:
                out.append(table.slice(start, self.max_rows))
                start += self.max_rows
            rest = table.slice(start)
            self.batches = rest.to_batches()
            self.rows = rest.num_rows
        return out

    def flush(self) -> list[pa.Table]:
        if not self.rows:
            return []
        table = self._table()
        self.batches, self.rows = [], 0
        return [table]


def _merge(results: Sequence[NodeResult], schema: pa.Schema, uuid: str) -> NodeResult:
    """One chunk's result from the results of the tables it wrote."""
    parts: list[WrittenPartition] = []
    categories: dict[str, pa.Array] = {}
    for r in results:
        parts.extend(r.parts)
        schema = merge_schemas(schema, r.schema, dataset_uuid=uuid)
        for col, cats in r.categories.items():
            have = categories.get(col)
            categories[col] = cats if have is None else union_categories(have, cats)
    return NodeResult(tuple(parts), schema, categories, sum(r.rows for r in results))


def _widened(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both ``a`` and ``b`` values fit in, as batches within a chunk are widened
    (``int64`` and ``double``: ``double``), or None."""
    try:
        unified = pa.unify_schemas(
            [pa.schema([("v", a)]), pa.schema([("v", b)])], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return unified.field(0).type


def _inferred(run: _Run) -> list[str]:
    """The columns without a declared type: typed by their values, chunk by chunk."""
    return [f.name for f in run.schema if pa.types.is_null(f.type)]


def _to_dataset_types(table: pa.Table, run: _Run) -> pa.Table:
    """``table`` (appended to a dataset) with its inferred columns in the dataset's types
    where those hold them (integers appended to a double column), as batches within a
    chunk are widened; the dataset's schema rules (other differences fail the write).

    Raises
    ------
    SourceQueryError
        A value does not convert exactly (an integer above 2**53 to double).
    """
    base = run.target.base_schema
    if base is None:
        return table
    for name in _inferred(run):
        idx = base.get_field_index(name)
        i = table.schema.get_field_index(name)
        if idx < 0 or i < 0:
            continue
        have, want = table.schema.field(i).type, base.field(idx).type
        if pa.types.is_null(have) or type_family(have) == type_family(want):
            continue  # merge_schemas takes it (a null column, a wider int, ...)
        if _widened(have, want) != want:
            continue  # the dataset's type does not hold these values: merge_schemas refuses
        try:
            column = table.column(i).cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SourceQueryError(
                f"column {name!r} is {want} in dataset {run.target.uuid!r} but {have} in this "
                f"download, and its values do not convert exactly ({exc}); CAST it in the "
                f"query or pass types={{{name!r}: ...}}"
            ) from None
        table = table.set_column(i, table.schema.field(i).with_type(want), column)
    return table


def _unify(run: _Run, results: Sequence[NodeResult], what: str) -> list[NodeResult]:
    """``results`` (of the files of a chunk, or of the chunks) with one type per inferred
    column: the values' types widened as batches within a file are (``int64`` and
    ``double``: ``double``). Blobs keep the type they were written with; readers cast
    each blob to the dataset's type, so the values of every blob written narrower are
    checked here to convert exactly (they are read, one column).

    Raises
    ------
    SourceQueryError
        The types have no common type (integers and text), a value does not convert
        exactly (an integer above 2**53 to double), or the column is a partition column
        (its values would be spelled differently in the keys).
    """
    out = list(results)
    store, uuid = run.target.store, run.target.uuid
    for name in _inferred(run):
        typed = [
            (i, r.schema.field(name).type)
            for i, r in enumerate(results)
            if r.rows and not pa.types.is_null(r.schema.field(name).type)
        ]
        kinds = {type_family(t) for _, t in typed}
        if len(kinds) < 2:
            continue  # one type family: merge_schemas widens it (int32 and int64, ...)
        unified: pa.DataType | None = typed[0][1]
        for _, t in typed[1:]:
            unified = _widened(unified, t) if unified is not None else None
        types = " and ".join(sorted({str(t) for _, t in typed}))
        hint = f"CAST it in the query or pass types={{{name!r}: ...}}"
        if unified is None:
            raise SourceQueryError(
                f"column {name!r} has no declared type and its values are {types} in "
                f"different parts of {what}, which have no common type; {hint}"
            )
        if name in run.target.partition_on:
            raise SourceQueryError(
                f"partition column {name!r} has no declared type and its values are {types} "
                f"in different parts of {what} (a value would get two partitions); {hint}"
            )
        for i, t in typed:
            if t == unified:
                continue
            for part in results[i].parts:
                _check_converts(store, uuid, part, name, unified)
            result = out[i]
            out[i] = dataclasses.replace(
                result,
                schema=with_column_type(result.schema, name, unified),
                parts=tuple(_retyped_index(p, name, unified) for p in result.parts),
            )
        logger.info("%s: column %r widened from %s to %s", what, name, types, unified)
    return out


def _check_converts(
    store: Store, uuid: str, part: WrittenPartition, name: str, t: pa.DataType
) -> None:
    """Check that column ``name`` of a written blob converts to ``t`` exactly."""
    table = read_blob(store, part.key, columns=[name], row_filter=None, dataset_uuid=uuid)
    if name not in table.column_names:
        return
    try:
        table.column(name).cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SourceQueryError(
            f"column {name!r} has no declared type and is {table.schema.field(name).type} in "
            f"some rows but {t} in others, and those values do not convert to {t} exactly "
            f"({exc}); CAST it in the query or pass types={{{name!r}: ...}}"
        ) from None


def _retyped_index(part: WrittenPartition, name: str, t: pa.DataType) -> WrittenPartition:
    """``part`` with the secondary-index values of ``name`` (if indexed) of type ``t``."""
    if name not in part.index_values:
        return part
    values = {**part.index_values, name: part.index_values[name].cast(t)}
    return dataclasses.replace(part, index_values=values)


def _stream_to_blobs(
    run: _Run, conn: _src.SourceConnection, sql: str, out: list[NodeResult]
) -> None:
    """Stream ``sql`` into blobs, appending each write's result to ``out``.

    A file's worth of rows is encoded and stored by a writer thread while the next one is
    fetched (both release the GIL); at most one write is pending, so memory stays at about
    two files' worth of rows.
    """
    buffer = _Buffer(run.max_rows_per_file)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dk-download") as pool:
        pending: Future[NodeResult] | None = None
        try:
            batches = conn.stream(sql)
            done = False
            while not done:
                batch = next(batches, None)
                if batch is None:
                    done, tables = True, buffer.flush()
                else:
                    tables = buffer.add(_src.conform(batch, run.schema))
                for table in tables:
                    table = _to_dataset_types(table, run)
                    if pending is not None:
                        out.append(pending.result())
                    pending = pool.submit(write_result, table, run.target)
            if pending is not None:
                out.append(pending.result())
                pending = None
        finally:
            if pending is not None:  # failing: keep what the pending write made, to discard it
                with contextlib.suppress(Exception):
                    out.append(pending.result())


def _fetch_chunk(run: _Run, index: int, sql: str) -> NodeResult:
    """Stream one chunk into blobs; on any failure the blobs written so far are deleted."""
    target = run.target
    fallback = False
    while True:
        results: list[NodeResult] = []
        try:
            with throttled(run.db), run.source.connect() as conn:
                if fallback and isinstance(conn, _src._SQLiteConnection):
                    conn.use_adbc = False
                _stream_to_blobs(run, conn, sql, results)
            return _merge(_unify(run, results, f"chunk {index}"), run.schema, target.uuid)
        except _src._TypeInferenceError as exc:
            _discard(target.store, results)
            if fallback:
                raise SourceQueryError(f"chunk {index}: {exc}") from None
            logger.info(
                "chunk %d: ADBC could not infer the column types (%s); using sqlite3", index, exc
            )
            fallback = True
            continue
        except BaseException:
            _discard(target.store, results)
            raise


def _discard(store: Store, results: Sequence[NodeResult]) -> None:
    written = [p.key for r in results for p in r.parts]
    if written:
        report = store.delete_many(written)
        if report.failed:
            logger.debug("could not delete %d blobs of a failed chunk", len(report.failed))


def _reusable(run: _Run, index: int) -> NodeResult | None:
    """The recorded result of a chunk a previous run of this job finished, if still valid."""
    if run.staging is None:
        return None
    store = run.target.store
    try:
        result = _result_from_json(store.get(_chunk_record_key(run.staging, index)))
    except KeyNotFoundError:
        return None
    except (MetadataFormatError, ValueError, KeyError, TypeError) as exc:
        logger.warning("chunk %d: unreadable staging record, downloading again: %s", index, exc)
        return None
    missing = renew_reused(store, [p.key for p in result.parts])
    if missing:
        logger.info("chunk %d: %d recorded blobs are gone, downloading again", index, len(missing))
        return None
    return result


def _run_chunk(run: _Run, index: int, sql: str) -> NodeResult:
    """One chunk node: reuse a finished chunk of this job, or download it."""
    what = f"chunk {index + 1}/{run.n_chunks} of {run.target.uuid}"
    reused = _reusable(run, index)
    if reused is not None:
        logger.info("%s: reused (%d rows, %d blobs)", what, reused.rows, len(reused.parts))
        return reused
    logger.info("%s: downloading", what)
    result = run.source.retrying(
        lambda: _fetch_chunk(run, index, sql), what=f"downloading {what} from", retries=run.retries
    )
    if run.staging is not None:
        run.target.store.put(_chunk_record_key(run.staging, index), _result_to_json(result))
    logger.info("%s: %d rows in %d blobs", what, result.rows, len(result.parts))
    return result


# --------------------------------------------------------------------------- commit
def _high_water(meta: DatasetMetadata | None, key: str | None) -> tuple[bool, Any]:
    """(recorded?, high-water mark) of ``key`` in a dataset's download state."""
    if meta is None:
        return False, None
    state = meta.metadata.get(STATE_KEY)
    if not isinstance(state, Mapping) or state.get("key") != key or "high_water" not in state:
        return False, None
    return True, decode_value(state["high_water"])


def _commit_download(
    results: list[NodeResult],
    *,
    run: _Run,
    mode: Mode,
    base: _commit.Resolved | None,
    metadata: dict[str, Any],
    state: dict[str, Any],
    incremental: bool,
    after: Any,
) -> DatasetMetadata:
    target = run.target
    store = target.store
    if incremental and base is not None:
        current = resolve_or_none(store, target.uuid)
        recorded, mark = _high_water(current.meta if current else None, state.get("key"))
        if not recorded or mark != after:
            raise CommitConflictError(
                f"dataset {target.uuid!r}: another download moved the high-water mark of "
                f"{state.get('key')!r} during this one; nothing was committed, run it again"
            )
    user_meta = {**metadata, STATE_KEY: state}
    rows = sum(r.rows for r in results)
    # every chunk typed its inferred columns by its own values: one type across chunks
    results = _unify(run, results, "the download")
    if mode == "append":
        staged = stage_results(results, base.meta.schema if base is not None else None, target.uuid)
        if base is not None and not staged.parts and state.get("high_water") == encode_value(after):
            logger.info("download into %s: no new rows; no commit", target.uuid)
            meta = base.meta
        else:
            meta = commit_update(
                store,
                target.uuid,
                staged,
                base=base,
                table_name=target.table_name,
                partition_on=target.partition_on,
                secondary_indices=target.secondary_indices,
                delete_scope=None,
                removed=set(),
                metadata=user_meta,
            )
    else:
        staged = stage_results(results, None, target.uuid)
        meta = commit_write(
            store,
            target.uuid,
            staged,
            base=base,
            table_name=target.table_name,
            partition_on=target.partition_on,
            secondary_indices=target.secondary_indices,
            metadata=user_meta,
        )
    remove_staging(store, run.staging, target.uuid, pipeline="download")
    logger.info(
        "download into %s: %d rows from %d chunks committed as version %s",
        target.uuid,
        rows,
        len(results),
        meta.version,
    )
    return meta


def remove_staging(store: Store, staging: str | None, uuid: str, *, pipeline: str) -> None:
    """After the commit: delete a resumable job's staging area (what fails is GC's)."""
    if staging is None:
        return
    report = store.delete_many(list(store.iter_keys(staging)))
    if report.failed:
        logger.warning(
            "%s into %s: %d staging blobs left for GC", pipeline, uuid, len(report.failed)
        )


def _done(meta: DatasetMetadata) -> DatasetMetadata:
    return meta


# --------------------------------------------------------------------------- planning
def _as_types(types: Mapping[str, pa.DataType | str] | None) -> dict[str, pa.DataType]:
    out: dict[str, pa.DataType] = {}
    for name, t in (types or {}).items():
        if isinstance(t, pa.DataType):
            out[name] = t
            continue
        try:
            out[name] = pa.type_for_alias(str(t))
        except ValueError:
            raise InvalidInputError(
                f"types[{name!r}]: {t!r} is not an Arrow type (pass e.g. pa.decimal128(10, 2) "
                "or 'float64')"
            ) from None
    return out


def _match_column(name: str, columns: Sequence[str], what: str) -> str:
    if name in columns:
        return name
    folded = [c for c in columns if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidInputError(f"{what} {name!r} is not a column of the source ({list(columns)})")


def _plan(
    conn: _src.SourceConnection,
    *,
    relation: str,
    columns: Sequence[str] | None,
    types: dict[str, pa.DataType],
    chunk_by: str | None,
    n_chunks: int,
    chunking: _src.Chunking,
    chunks: Sequence[str] | None,
    after: Any,
    include_nulls: bool,
    fingerprint: str,
) -> _Plan:
    schema, select = _src.target_schema(conn, relation, columns, types)
    if chunk_by is None:
        predicates: list[str | None] = list(chunks) if chunks is not None else [None]
        return _Plan(
            fingerprint,
            tuple(_src.select_sql(select, relation, p) for p in predicates),
            schema,
            None,
            None,
            None,
        )
    all_columns = conn.probe(relation).names
    key = _match_column(chunk_by, all_columns, "chunk_by")
    key_plan = _src.plan_key_chunks(
        conn,
        relation,
        key,
        n_chunks=n_chunks,
        chunking=chunking,
        after=after,
        include_nulls=include_nulls,
    )
    predicates = list(key_plan.predicates) or ["1 = 0"]  # nothing to download: keep the schema
    high = key_plan.high if key_plan.high is not None else after
    return _Plan(
        fingerprint,
        tuple(_src.select_sql(select, relation, p) for p in predicates),
        schema,
        key,
        after,
        high,
    )


def _load_or_plan(
    store: Store,
    staging: str | None,
    fingerprint: str,
    make: Any,
) -> tuple[_Plan, bool]:
    """The job's stored plan (resumed: True), or a new one (stored for resumable jobs)."""
    if staging is not None:
        try:
            stored = _Plan.from_json(store.get(staging + "plan.json"))
        except KeyNotFoundError:
            stored = None
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise InvalidInputError(
                    f"job id {staging.rstrip('/').rsplit('/', 1)[-1]!r} was used for another "
                    "download of this dataset (other source, query or options); use a new job id"
                )
            return stored, True
    plan: _Plan = make()
    if staging is not None and not store_once(store, staging + "plan.json", plan.to_json()):
        # another client planned the same job meanwhile: use its plan
        return _load_or_plan(store, staging, fingerprint, make)
    return plan, False


def committed_job(
    store: Store, uuid: str, job_id: str | None, *, state_key: str, pipeline: str, name: str
) -> Job[DatasetMetadata] | None:
    """A job that just returns the dataset, if a run with ``job_id`` already committed it.

    Resumable pipelines record their job id in the dataset's user metadata under
    ``state_key``; a rerun after the commit (a retried workflow step) must not download or
    ingest again.
    """
    if job_id is None:
        return None
    current = resolve_or_none(store, uuid)
    last = current.meta.metadata.get(state_key) if current is not None else None
    if current is None or not isinstance(last, Mapping) or last.get("job_id") != job_id:
        return None
    import dask

    logger.info("%s job %s into %s already committed", pipeline, job_id, uuid)
    done = dask.delayed(_done, pure=True)(
        current.meta,
        dask_key_name=task_key(pipeline, "done", uuid, job_id, current.meta.version),
    )
    return Job(done, name=f"{pipeline} {name} -> {uuid} (done)", tasks=0)


def store_once(store: Store, key: str, data: bytes, *, attempts: int = 10) -> bool:
    """Create ``key`` with ``data`` unless it exists; True if it now holds ``data``.

    A create-only write whose outcome is unknown (a time-out, a dropped connection) is
    settled by reading the key back: our bytes mean it happened, no key means it did not
    (try again), other bytes mean another writer won (False).

    Raises
    ------
    StoreError
        If the outcome stays unknown after ``attempts`` tries.
    """
    for attempt in range(attempts):
        try:
            store.put(key, data, if_absent=True)
            return True
        except KeyExistsError:
            return store.get(key) == data
        except (StoreUnavailableError, TimeoutError, OSError):
            if attempt == attempts - 1:
                raise
            try:
                return store.get(key) == data
            except KeyNotFoundError:
                continue  # it did not happen: try again
            except (StoreUnavailableError, TimeoutError, OSError):
                continue  # cannot tell yet: the next put settles it
    raise AssertionError("unreachable")  # pragma: no cover


def download_table(
    url: str,
    *,
    table: str | None = None,
    query: str | None = None,
    store: Any,
    dataset_uuid: str,
    columns: Sequence[str] | None = None,
    chunk_by: str | None = None,
    n_chunks: int = 8,
    chunking: Literal["range", "rows"] = "range",
    chunks: Sequence[str] | None = None,
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    mode: Mode = "error",
    incremental: bool = False,
    job_id: str | None = None,
    types: Mapping[str, pa.DataType | str] | None = None,
    max_rows_per_file: int = 1_000_000,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "snappy",
    row_group_size: int | None = None,
    db_concurrency: int | Throttle | None = None,
    storage_concurrency: int | Throttle | None = None,
    retries: int = 3,
    connect_args: Mapping[str, Any] | None = None,
) -> Job[DatasetMetadata]:
    """Download a database table (or a query's result) into a dataset, chunk by chunk.

    Planning happens here: the source's columns and their Arrow types, and the chunks
    (ranges of ``chunk_by``, or the ``chunks`` WHERE clauses, or one chunk). The returned
    :class:`Job` runs one node per chunk, each streaming its rows into blobs, and one
    commit node; nothing is visible before the commit.

    Parameters
    ----------
    url
        The database: ``postgresql://user:password@host:port/db`` (ADBC),
        ``sqlite:///path.db`` (ADBC, read-only), or any SQLAlchemy URL. Credentials are
        never logged, put in error messages or in task keys.
    table, query
        What to download: a table (``"name"`` or ``"schema.name"``) or a ``SELECT``
        query; exactly one of the two.
    store
        The target store (URL, path or store object).
    dataset_uuid
        The target dataset.
    columns
        Columns to download (default: all).
    chunk_by
        A numeric, date or timestamp column to split the rows by (text keys too with
        ``chunking="rows"``). Rows whose key is NULL get a chunk of their own.
    n_chunks
        How many chunks (about; fewer when the key has fewer distinct values).
    chunking
        ``"range"``: equal key ranges between the key's min and max (cheap to plan;
        skewed keys make unequal chunks). ``"rows"``: ranges of about equal row counts
        (planned with one window query over the key column).
    chunks
        Explicit chunks instead of ``chunk_by``: one SQL WHERE clause each (they should
        not overlap).
    partition_on, secondary_indices
        Layout of the target (for ``"append"`` to an existing dataset: its own layout).
    mode
        ``"error"`` (the dataset must not exist), ``"overwrite"`` or ``"append"``.
    incremental
        Append only rows whose ``chunk_by`` key is above the high-water mark recorded by
        the previous download (needs ``chunk_by`` and ``mode="append"``; the first run
        downloads everything, NULL keys included; later runs never see NULL keys, nor
        rows committed later with a key below the mark).
    job_id
        Make the download resumable: a rerun with the same job id after a failure (or a
        killed client or worker) reuses the plan and the finished chunks. A rerun after
        the job committed returns the committed dataset.
    types
        Arrow types per column overriding the mapped ones (``pa.DataType`` or alias
        like ``"float64"``).
    max_rows_per_file
        Most rows per blob (a chunk holds at most this many rows in memory, plus one
        batch).
    metadata
        User metadata for the dataset.
    compression, row_group_size
        As for :func:`dataset_kit.write_dataset`.
    db_concurrency
        Most concurrent database sessions across the cluster (an int, or a
        :class:`~dataset_kit.throttle.Throttle` shared with other downloads). A chunk
        holds its lease while its query runs and streams (including writing the blobs of
        that stream).
    storage_concurrency
        Most concurrent store requests across the cluster.
    retries
        Retries of a chunk (and of planning) on transient database errors: refused or
        dropped connections, serialization failures, deadlocks.
    connect_args
        Driver options (ADBC database options, or ``sqlalchemy.create_engine`` keyword
        arguments).

    Returns
    -------
    Job
        Its :meth:`~Job.compute` returns the committed :class:`DatasetMetadata`.

    Raises
    ------
    SourceConnectionError
        The database cannot be reached, or refused the credentials (after retries).
    SourceQueryError
        Unknown table or column, bad query, or values that do not convert.
    DatasetExistsError
        ``mode="error"`` and the dataset exists.
    InvalidInputError
        Bad options.
    ConfigError
        The driver is not installed (``pip install 'dataset-kit[db]'``).

    Examples
    --------
    >>> import os, sqlite3, tempfile, dataset_kit as dk
    >>> from dataset_kit.pipelines.download import download_table
    >>> tmp = tempfile.mkdtemp()
    >>> db = os.path.join(tmp, "shop.db")
    >>> con = sqlite3.connect(db)
    >>> _ = con.execute("CREATE TABLE sales (id INTEGER, day DATE, amount REAL)")
    >>> _ = con.executemany("INSERT INTO sales VALUES (?, ?, ?)",
    ...                     [(i, f"2024-05-0{1 + i % 3}", i * 1.5) for i in range(10)])
    >>> con.commit(); con.close()
    >>> store = dk.open_store(os.path.join(tmp, "lake"))
    >>> job = download_table(f"sqlite:///{db}", table="sales", store=store,
    ...                      dataset_uuid="sales", chunk_by="id", n_chunks=3, partition_on="day")
    >>> job.compute().num_partitions
    9
    >>> df = dk.read_table(store=store, dataset_uuid="sales")
    >>> sorted(df["id"].tolist()) == list(range(10)), type(df["day"][0]).__name__
    (True, 'date')
    """
    # ------------------------------------------------------------------ options
    if (table is None) == (query is None):
        raise InvalidInputError("give exactly one of table= and query=")
    if mode not in ("error", "overwrite", "append"):
        raise InvalidInputError(f"mode must be 'error', 'overwrite' or 'append', got {mode!r}")
    if chunking not in ("range", "rows"):
        raise InvalidInputError(f"chunking must be 'range' or 'rows', got {chunking!r}")
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1:
        raise InvalidInputError(f"n_chunks must be an int >= 1, got {n_chunks!r}")
    if isinstance(max_rows_per_file, bool) or not isinstance(max_rows_per_file, int):
        raise InvalidInputError(f"max_rows_per_file must be an int, got {max_rows_per_file!r}")
    if max_rows_per_file < 1:
        raise InvalidInputError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInputError(f"retries must be an int >= 0, got {retries!r}")
    if chunks is not None:
        if chunk_by is not None:
            raise InvalidInputError("give chunk_by= or chunks=, not both")
        if isinstance(chunks, str) or not all(isinstance(c, str) and c.strip() for c in chunks):
            raise InvalidInputError("chunks must be a list of SQL WHERE clauses (strings)")
        if not chunks:
            raise InvalidInputError("chunks is empty")
    if incremental:
        if chunk_by is None:
            raise InvalidInputError("incremental=True needs chunk_by= (the increasing key)")
        if mode != "append":
            raise InvalidInputError("incremental=True appends: pass mode='append'")
    if job_id is not None and (not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id)):
        raise InvalidInputError(
            f"job_id must be 1-128 letters, digits, '_', '.' or '-', got {job_id!r}"
        )
    if columns is not None:
        columns = as_list(columns, "columns")
    type_map = _as_types(types)
    source = _src.open_source(url, connect_args=connect_args)
    dst = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    _commit.require_atomic(dst)
    db = as_throttle(db_concurrency, name="db")
    storage = as_throttle(storage_concurrency, name="storage")
    if db is not None and storage is not None and db.name == storage.name:
        # a chunk holds its database lease while its blobs are written, and each write
        # takes a storage lease: one throttle for both would wait on itself forever
        raise InvalidInputError(
            f"db_concurrency and storage_concurrency share the throttle {db.name!r}: a "
            "chunk keeps its database lease while it writes, so it would wait on itself; "
            "pass two throttles"
        )
    options = WriteOptions(compression=compression, row_group_size=row_group_size)

    import dask

    # ------------------------------------------------------------------ target
    finished = committed_job(
        dst, uuid, job_id, state_key=STATE_KEY, pipeline="download", name=source.url
    )
    if finished is not None:
        return finished
    target, base = resolve_target(
        dst,
        uuid,
        mode=mode,
        partition_on=partition_on,
        secondary_indices=secondary_indices,
        options=options,
        throttle=storage,
    )
    after: Any = None
    include_nulls = True
    if incremental and base is not None:
        recorded, after = _high_water(base.meta, chunk_by)
        if not recorded:
            raise InvalidInputError(
                f"dataset {uuid!r} has no recorded high-water mark for {chunk_by!r}: it was "
                "not written by a download with this chunk_by; download it in full first"
            )
        include_nulls = False  # NULL keys came with the first download

    # ------------------------------------------------------------------ plan
    staging = None if job_id is None else staging_prefix(uuid, job_id)
    fingerprint = hashlib.sha256(
        repr(
            (
                source.url,
                table,
                query,
                columns,
                chunk_by,
                n_chunks,
                chunking,
                chunks,
                sorted((k, str(v)) for k, v in type_map.items()),
                encode_value(after),
                mode,
            )
        ).encode()
    ).hexdigest()
    relation = ""

    def make() -> _Plan:
        def plan_once() -> _Plan:
            with throttled(db), source.connect() as conn:
                nonlocal relation
                if table is not None:
                    relation = conn.relation(table)
                else:
                    assert query is not None
                    relation = f"({query.strip().rstrip(';')}) dk_query"
                return _plan(
                    conn,
                    relation=relation,
                    columns=columns,
                    types=type_map,
                    chunk_by=chunk_by,
                    n_chunks=n_chunks,
                    chunking=chunking,
                    chunks=chunks,
                    after=after,
                    include_nulls=include_nulls,
                    fingerprint=fingerprint,
                )

        return source.retrying(plan_once, what="planning a download from", retries=retries)

    plan, resumed = _load_or_plan(dst, staging, fingerprint, make)
    validate_write_columns(
        plan.schema.empty_table(),
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        sort_partitions_by=(),
    )
    if target.base_schema is not None:  # fail early on a schema mismatch
        merge_schemas(target.base_schema, plan.schema, dataset_uuid=uuid)
    run = _Run(
        source, plan.schema, target, max_rows_per_file, staging, db, retries, len(plan.chunks)
    )
    state: dict[str, Any] = {"job_id": job_id}
    if plan.key is not None:
        state.update(key=plan.key, high_water=encode_value(plan.high))

    # ------------------------------------------------------------------ graph
    token = (
        "download",
        source.url,
        plan.chunks,
        schema_to_b64(plan.schema),
        dst.url,
        uuid,
        base.meta.version if base is not None else None,
        mode,
        target.partition_on,
        target.secondary_indices,
        options,
        max_rows_per_file,
        job_id,
    )
    # ``run`` goes into every node as a literal (it is small): a shared delayed input would
    # make dask place every chunk next to it, on one worker
    nodes = [
        dask.delayed(_run_chunk, pure=False)(
            run, i, sql, dask_key_name=task_key("download", f"chunk{i}", *token)
        )
        for i, sql in enumerate(plan.chunks)
    ]
    final = final_node(
        _commit_download,
        nodes,
        key=task_key("download", "commit", *token),
        run=run,
        mode=mode,
        base=base,
        metadata=dict(metadata or {}),
        state=state,
        incremental=incremental,
        after=plan.after,
    )
    logger.info(
        "download %s -> %s: %d chunks%s",
        source.url,
        uuid,
        len(plan.chunks),
        " (resumed plan)" if resumed else "",
    )
    return Job(final, name=f"download {source.url} -> {uuid}", tasks=len(nodes))
