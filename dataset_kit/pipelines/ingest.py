"""Text files into a dataset: many line-delimited JSON or CSV files (plain or gzip).

The graph: planning on the client (the files resolved and described, the schema given or
inferred from a sample of each file, the files cut at line boundaries into pieces and
coalesced into nodes of about ``blocksize`` bytes each), one node per group of pieces that
parses its blocks with ``pyarrow.json`` / ``pyarrow.csv`` and writes them as blobs (split
by ``partition_on``, balanced files of at most ``max_rows_per_file`` rows, never an empty
file), and one commit node. A failed run commits nothing.

Bad lines (malformed JSON or CSV, values that do not fit the schema) fail the ingest with
a :class:`~dataset_kit.exceptions.SourceFormatError` naming the file and the line, or,
with ``bad_lines="quarantine"``, are set aside: each node writes its bad lines (file, line
number, error, text) as JSON lines to ``<uuid>.quarantine/<run>/part-<node>.jsonl``, next
to the dataset but outside its folder (so garbage collection never removes them), and the
dataset's user metadata records their count and place under ``"dataset_kit.ingest"``.

Resumable runs (``job_id=``) use the staging area of :mod:`dataset_kit.pipelines.download`
(``<uuid>/_staging/<job_id>/``): the plan and a record of each finished node; a rerun
reuses them and reads only the rest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import os
import uuid as _uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from dataset_kit.core import naming
from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.core.schema import merge_schemas, schema_from_b64, schema_to_b64
from dataset_kit.exceptions import (
    InvalidInputError,
    KeyNotFoundError,
    MetadataFormatError,
)
from dataset_kit.io import commit as _commit
from dataset_kit.io import textfiles as _tf
from dataset_kit.io.write import WriteOptions, validate_write_columns
from dataset_kit.pipelines._job import Job, final_node, job_token, task_key
from dataset_kit.pipelines._stores import renew_reused
from dataset_kit.pipelines.compute import (
    NodeResult,
    WriteTarget,
    commit_results,
    resolve_target,
    write_result,
)
from dataset_kit.pipelines.download import (
    _JOB_ID,
    _chunk_record_key,
    _discard,
    _merge,
    _result_from_json,
    _result_to_json,
    committed_job,
    remove_staging,
    staging_prefix,
    store_once,
)
from dataset_kit.store import Store, open_store
from dataset_kit.throttle import Throttle, as_throttle

__all__ = [
    "QUARANTINE_SUFFIX",
    "STATE_KEY",
    "ingest_files",
    "quarantine_prefix",
    "read_quarantine",
]

logger = logging.getLogger(__name__)

Mode = Literal["error", "overwrite", "append"]

#: User-metadata key recording the last ingest (job id, run, files, rows, bad lines).
STATE_KEY = "dataset_kit.ingest"
#: ``<uuid><QUARANTINE_SUFFIX>/<run>/`` holds the bad lines of a quarantining run.
QUARANTINE_SUFFIX = ".quarantine"
_FORMAT = 1


def quarantine_prefix(dataset_uuid: str, run: str) -> str:
    """Where a run of :func:`ingest_files` puts the lines it could not read.

    Examples
    --------
    >>> quarantine_prefix("logs", "nightly-2024-05-01")
    'logs.quarantine/nightly-2024-05-01/'
    """
    return f"{dataset_uuid}{QUARANTINE_SUFFIX}/{run}/"


def read_quarantine(
    store: Any, dataset_uuid: str, *, run: str | None = None
) -> list[dict[str, Any]]:
    """The quarantined lines of a dataset's ingests (of one ``run``, or of all), in order.

    Each is a dict with ``run``, ``file``, ``line`` (1-based), ``error`` and ``text``.
    """
    st = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    if run is not None and not _JOB_ID.fullmatch(run):
        raise InvalidInputError(f"not a run id: {run!r}")
    prefix = quarantine_prefix(uuid, run) if run is not None else f"{uuid}{QUARANTINE_SUFFIX}/"
    out: list[dict[str, Any]] = []
    for key in sorted(st.iter_keys(prefix)):
        out.extend(json.loads(line) for line in st.get(key).splitlines() if line.strip())
    return out


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class _Plan:
    """What an ingest does; stored in the staging area of a resumable job."""

    fingerprint: str
    run: str
    fmt: _tf.TextFormat
    schema: pa.Schema
    explicit: bool
    files: tuple[_tf.FileInfo, ...]
    nodes: tuple[tuple[_tf.Piece, ...], ...]

    def to_json(self) -> bytes:
        index = {f.path: i for i, f in enumerate(self.files)}
        return json.dumps(
            {
                "format": _FORMAT,
                "fingerprint": self.fingerprint,
                "run": self.run,
                "text_format": {
                    "kind": self.fmt.kind,
                    "delimiter": self.fmt.delimiter,
                    "header": self.fmt.header,
                    "newlines_in_values": self.fmt.newlines_in_values,
                },
                "schema": schema_to_b64(self.schema),
                "explicit": self.explicit,
                "files": [
                    {
                        "path": f.path,
                        "size": f.size,
                        "mtime_ns": f.mtime_ns,
                        "gzip": f.gzip,
                        "data_start": f.data_start,
                        "weight": f.weight,
                        "columns": None if f.columns is None else list(f.columns),
                    }
                    for f in self.files
                ],
                "nodes": [
                    [[index[p.file.path], p.start, p.end, p.whole] for p in node]
                    for node in self.nodes
                ],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Plan:
        try:
            doc = json.loads(data)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            files = tuple(
                _tf.FileInfo(
                    f["path"],
                    int(f["size"]),
                    int(f["mtime_ns"]),
                    bool(f["gzip"]),
                    int(f["data_start"]),
                    int(f["weight"]),
                    None if f["columns"] is None else tuple(f["columns"]),
                )
                for f in doc["files"]
            )
            nodes = tuple(
                tuple(_tf.Piece(files[i], int(a), int(b), bool(w)) for i, a, b, w in node)
                for node in doc["nodes"]
            )
            return cls(
                doc["fingerprint"],
                doc["run"],
                _tf.TextFormat(**doc["text_format"]),
                schema_from_b64(doc["schema"]),
                bool(doc["explicit"]),
                files,
                nodes,
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise MetadataFormatError(f"unreadable ingest plan: {exc}") from exc


def _load_or_plan(store: Store, staging: str | None, fingerprint: str, make: Any) -> _Plan:
    """The job's stored plan, or a new one (stored for resumable jobs)."""
    if staging is not None:
        try:
            stored = _Plan.from_json(store.get(staging + "plan.json"))
        except KeyNotFoundError:
            stored = None
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise InvalidInputError(
                    f"job id {stored.run!r} was used for another ingest into this dataset "
                    "(other files or options); use a new job id"
                )
            logger.info("ingest job %s: resuming its stored plan", stored.run)
            return stored
    plan: _Plan = make()
    if staging is not None and not store_once(store, staging + "plan.json", plan.to_json()):
        # another client planned the same job meanwhile: use its plan
        return _load_or_plan(store, staging, fingerprint, make)
    return plan


# --------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class _Run:
    """What every node shares."""

    reader: _tf.Reader
    schema: pa.Schema
    target: WriteTarget
    blocksize: int
    max_rows_per_file: int
    bad_lines: _tf.BadLines
    staging: str | None
    run_id: str
    quarantine: str
    n_nodes: int


@dataclass(frozen=True)
class _NodeOut:
    """What one node did: its blobs, its bad lines, the bytes of text it parsed."""

    result: NodeResult
    bad_lines: int
    text_bytes: int


class _Balancer:
    """Tables in, tables of at most ``max_rows`` rows out, the last ones of equal size.

    Full files are cut only while at least two files' worth of rows are buffered; the
    rest is split evenly at the end, so a node's files hold between ``max_rows / 2`` and
    ``max_rows`` rows (all of them if fewer), never a small remainder.

    Examples
    --------
    >>> b = _Balancer(10)
    >>> [t.num_rows for t in b.add(pa.table({"a": list(range(25))}))]
    [10]
    >>> [t.num_rows for t in b.flush()]
    [7, 8]
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.tables: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> list[pa.Table]:
        if table.num_rows:
            self.tables.append(table)
            self.rows += table.num_rows
        out: list[pa.Table] = []
        if self.rows >= 2 * self.max_rows:
            buffered = pa.concat_tables(self.tables)
            start = 0
            while buffered.num_rows - start >= 2 * self.max_rows:
                out.append(buffered.slice(start, self.max_rows))
                start += self.max_rows
            rest = buffered.slice(start)
            self.tables, self.rows = [rest], rest.num_rows
        return out

    def flush(self) -> list[pa.Table]:
        if not self.rows:
            return []
        buffered = pa.concat_tables(self.tables)
        self.tables, self.rows = [], 0
        n = math.ceil(buffered.num_rows / self.max_rows)
        bounds = [buffered.num_rows * i // n for i in range(n + 1)]
        return [buffered.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def _quarantine_key(run: _Run, index: int) -> str:
    return f"{run.quarantine}part-{index:05d}.jsonl"


def _out_to_json(out: _NodeOut) -> bytes:
    return json.dumps(
        {
            "format": _FORMAT,
            "bad_lines": out.bad_lines,
            "text_bytes": out.text_bytes,
            "result": json.loads(_result_to_json(out.result)),
        }
    ).encode()


def _out_from_json(data: bytes) -> _NodeOut:
    doc = json.loads(data)
    if doc.get("format") != _FORMAT:
        raise MetadataFormatError(f"unknown staging record format {doc.get('format')!r}")
    result = _result_from_json(json.dumps(doc["result"]).encode())
    return _NodeOut(result, int(doc["bad_lines"]), int(doc["text_bytes"]))


def _reusable(run: _Run, index: int) -> _NodeOut | None:
    """The recorded output of a node a previous run of this job finished, if still valid."""
    if run.staging is None:
        return None
    store = run.target.store
    try:
        out = _out_from_json(store.get(_chunk_record_key(run.staging, index)))
    except KeyNotFoundError:
        return None
    except (MetadataFormatError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ingest node %d: unreadable staging record, reading again: %s", index, exc)
        return None
    keys = [p.key for p in out.result.parts]
    if out.bad_lines:
        keys.append(_quarantine_key(run, index))
    missing = renew_reused(store, keys)
    if missing:
        logger.info(
            "ingest node %d: %d recorded blobs are gone, reading again", index, len(missing)
        )
        return None
    return out


def _ingest(
    run: _Run, index: int, pieces: Sequence[_tf.Piece], results: list[NodeResult]
) -> _NodeOut:
    """Parse the pieces and write their rows; the written blobs go to ``results``."""
    target = run.target
    balancer = _Balancer(run.max_rows_per_file)
    bad: list[_tf.BadLine] = []
    text_bytes = 0
    for piece in pieces:
        for block in _tf.iter_blocks(piece, run.reader.fmt, blocksize=run.blocksize):
            text_bytes += len(block.data)
            tables, found = _tf.parse_block(run.reader, block, bad_lines=run.bad_lines)
            bad.extend(found)
            for table in tables:
                for chunk in balancer.add(table):
                    results.append(write_result(chunk, target))
    for chunk in balancer.flush():
        results.append(write_result(chunk, target))
    if bad:
        lines = [json.dumps({"run": run.run_id, **b.to_dict()}) for b in bad]
        target.store.put(_quarantine_key(run, index), ("\n".join(lines) + "\n").encode())
    return _NodeOut(_merge(results, run.schema, target.uuid), len(bad), text_bytes)


def _run_node(run: _Run, index: int, pieces: Sequence[_tf.Piece]) -> _NodeOut:
    """One node: reuse a finished node of this job, or read its pieces and write blobs."""
    what = f"node {index + 1}/{run.n_nodes} of ingest into {run.target.uuid}"
    reused = _reusable(run, index)
    if reused is not None:
        logger.info("%s: reused (%d rows)", what, reused.result.rows)
        return reused
    results: list[NodeResult] = []
    try:
        out = _ingest(run, index, pieces, results)
    except BaseException:
        _discard(run.target.store, results)
        raise
    if run.staging is not None:
        run.target.store.put(_chunk_record_key(run.staging, index), _out_to_json(out))
    logger.info(
        "%s: %d rows in %d blobs, %d bad lines",
        what,
        out.result.rows,
        len(out.result.parts),
        out.bad_lines,
    )
    return out


def _commit_ingest(
    outs: list[_NodeOut],
    *,
    run: _Run,
    mode: Mode,
    base: _commit.Resolved | None,
    metadata: dict[str, Any],
    state: dict[str, Any],
) -> DatasetMetadata:
    target = run.target
    rows = sum(o.result.rows for o in outs)
    bad = sum(o.bad_lines for o in outs)
    state = {
        **state,
        "rows": rows,
        "text_bytes": sum(o.text_bytes for o in outs),
        "bad_lines": bad,
        "quarantine": run.quarantine if bad else None,
    }
    meta = commit_results(
        [o.result for o in outs],
        target=target,
        mode=mode,
        base=base,
        metadata={**metadata, STATE_KEY: state},
    )
    remove_staging(target.store, run.staging, target.uuid, pipeline="ingest")
    if bad:
        logger.warning(
            "ingest into %s: %d bad lines set aside under %s", target.uuid, bad, run.quarantine
        )
    logger.info(
        "ingest into %s: %d rows from %d nodes committed as version %s",
        target.uuid,
        rows,
        len(outs),
        meta.version,
    )
    return meta


# --------------------------------------------------------------------------- planning
def _blocksize(value: int | str) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"blocksize must be a number of bytes, got {value!r}")
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            value = int(parse_bytes(value))
        except ValueError:
            raise InvalidInputError(
                f"blocksize must be bytes or a size like '64MB', got {value!r}"
            ) from None
    if not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"blocksize must be >= 1 byte, got {value!r}")
    return value


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _fingerprint_files(files: Any) -> list[str]:
    items = [files] if isinstance(files, str | os.PathLike) else list(files)
    return [
        os.path.abspath(os.fspath(f)) if "://" not in os.fspath(f) else os.fspath(f) for f in items
    ]


def ingest_files(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    store: Any,
    dataset_uuid: str,
    format: Literal["auto", "jsonl", "csv"] = "auto",
    schema: pa.Schema | Mapping[str, pa.DataType | str] | None = None,
    blocksize: int | str = "64MiB",
    sample_bytes: int = 1 << 16,
    delimiter: str = ",",
    header: bool = True,
    newlines_in_values: bool = False,
    bad_lines: Literal["error", "quarantine"] = "error",
    partition_on: str | Sequence[str] | None = None,
    secondary_indices: str | Sequence[str] | None = None,
    mode: Mode = "error",
    job_id: str | None = None,
    max_rows_per_file: int = 1_000_000,
    metadata: Mapping[str, Any] | None = None,
    compression: str = "zstd",
    row_group_size: int | None = None,
    storage_concurrency: int | Throttle | None = None,
) -> Job[DatasetMetadata]:
    """Ingest line-delimited JSON or CSV files (plain or gzip) into a dataset, in parallel.

    Planning happens here: the files are resolved and described, the schema is taken
    from ``schema`` or inferred from a sample of each file, and the files are cut at line
    boundaries into pieces and coalesced into nodes of about ``blocksize`` bytes. The
    returned :class:`Job` runs one node per group of pieces (parse with pyarrow, write
    blobs) and one commit node; nothing is visible before the commit.

    Parameters
    ----------
    files
        Local paths or ``file://`` URLs, or glob patterns (``"logs/**/*.jsonl.gz"``), or
        a list of them. They must be readable where the nodes run (on a cluster: a
        shared filesystem).
    store
        The target store (URL, path or store object).
    dataset_uuid
        The target dataset.
    format
        ``"jsonl"`` (one JSON object per line), ``"csv"``, or ``"auto"``: from the file
        names (``.jsonl``, ``.ndjson``, ``.json``, ``.csv``, each optionally ``.gz``).
        Gzip is detected from the content.
    schema
        The columns and their types (a ``pyarrow.Schema`` or a dict of column -> type or
        type alias like ``"int32"``). Input fields not in it are ignored; missing ones
        are null. Default: inferred from the first ``sample_bytes`` of every file.
    blocksize
        Bytes of text per node (an int or ``"64MiB"``): larger plain files are split at
        line boundaries, small files are coalesced. Gzip files are never split (a node
        reads a gzip file whole, streaming ``blocksize`` bytes at a time).
    sample_bytes
        Bytes of each file the schema is inferred from.
    delimiter, header
        CSV: the field delimiter; whether the first line holds the column names (if not,
        pass ``schema=``: its columns, in order).
    newlines_in_values
        CSV: quoted values may contain line breaks. Files are then read whole, never
        split, each in one node's memory.
    bad_lines
        ``"error"``: a bad line (malformed, or a value that does not fit the schema)
        fails the ingest with :class:`~dataset_kit.exceptions.SourceFormatError` naming
        the file and line; nothing is committed. ``"quarantine"``: bad lines are left
        out and written, with file, line number, error and text, to
        ``<uuid>.quarantine/<run>/`` (see :func:`read_quarantine`).
    partition_on, secondary_indices
        Layout of the target (for ``"append"`` to an existing dataset: its own layout).
    mode
        ``"error"`` (the dataset must not exist), ``"overwrite"`` or ``"append"``.
    job_id
        Make the ingest resumable: a rerun with the same job id after a failure reuses
        the plan and the finished nodes. After the job committed, a rerun returns the
        committed dataset. The job id also names the quarantine run.
    max_rows_per_file
        Most rows per blob; a node's blobs are balanced (between half and all of it).
    metadata
        User metadata for the dataset.
    compression, row_group_size
        As for :func:`dataset_kit.write_dataset`; the default here is ``zstd``, the
        smallest (log text compresses about 10x, see docs/ingest.md).
    storage_concurrency
        Most concurrent store requests across the cluster.

    Returns
    -------
    Job
        Its :meth:`~Job.compute` returns the committed :class:`DatasetMetadata`; its
        user metadata ``"dataset_kit.ingest"`` records job id, run, files, rows, bad
        lines and the quarantine prefix.

    Raises
    ------
    SourceError
        A file does not exist, a pattern matches nothing, a file changed during the run.
    SourceFormatError
        A bad line (``bad_lines="error"``), a corrupt gzip file, a bad CSV header.
    SchemaMismatchError
        Files whose inferred types disagree, or that do not fit the dataset appended to.
    DatasetExistsError
        ``mode="error"`` and the dataset exists.
    InvalidInputError
        Bad options, no files.

    Examples
    --------
    >>> import os, tempfile, dataset_kit as dk
    >>> tmp = tempfile.mkdtemp()
    >>> for day in (1, 2):
    ...     with open(os.path.join(tmp, f"app-{day}.jsonl"), "w") as fh:
    ...         _ = fh.writelines(f'{{"day": {day}, "n": {i}}}\\n' for i in range(5))
    >>> store = dk.open_store(os.path.join(tmp, "lake"))
    >>> job = ingest_files(os.path.join(tmp, "*.jsonl"), store=store, dataset_uuid="logs",
    ...                    partition_on="day")
    >>> job.compute().metadata["dataset_kit.ingest"]["rows"]
    10
    >>> sorted(dk.read_table(store=store, dataset_uuid="logs")["n"])[:3]
    [0, 0, 1]
    """
    # ------------------------------------------------------------------ options
    if mode not in ("error", "overwrite", "append"):
        raise InvalidInputError(f"mode must be 'error', 'overwrite' or 'append', got {mode!r}")
    if bad_lines not in ("error", "quarantine"):
        raise InvalidInputError(f"bad_lines must be 'error' or 'quarantine', got {bad_lines!r}")
    if format not in ("auto", "jsonl", "csv"):
        raise InvalidInputError(f"format must be 'auto', 'jsonl' or 'csv', got {format!r}")
    size = _blocksize(blocksize)
    _positive("sample_bytes", sample_bytes)
    _positive("max_rows_per_file", max_rows_per_file)
    if job_id is not None and (not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id)):
        raise InvalidInputError(
            f"job_id must be 1-128 letters, digits, '_', '.' or '-', got {job_id!r}"
        )
    given = None if schema is None else _tf.as_schema(schema)
    if format != "auto":  # fail early on bad CSV options
        _tf.TextFormat(format, delimiter, header, newlines_in_values)
    if not header and given is None:
        raise InvalidInputError("header=False: pass schema= (the CSV columns, in order)")
    dst = open_store(store)
    uuid = naming.validate_uuid(dataset_uuid)
    _commit.require_atomic(dst)
    storage = as_throttle(storage_concurrency, name="storage")
    options = WriteOptions(compression=compression, row_group_size=row_group_size)

    import dask

    # ------------------------------------------------------------------ target
    finished = committed_job(
        dst, uuid, job_id, state_key=STATE_KEY, pipeline="ingest", name="files"
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

    # ------------------------------------------------------------------ plan
    staging = None if job_id is None else staging_prefix(uuid, job_id)
    fingerprint = hashlib.sha256(
        repr(
            (
                _fingerprint_files(files),
                format,
                None if given is None else schema_to_b64(given),
                size,
                sample_bytes,
                delimiter,
                header,
                newlines_in_values,
                bad_lines,
                mode,
            )
        ).encode()
    ).hexdigest()

    def make() -> _Plan:
        paths = _tf.resolve_files(files)
        kinds = {p: _tf.detect_kind(p) for p in paths} if format == "auto" else {}
        kind = format if format != "auto" else kinds[paths[0]]
        other = [p for p, k in kinds.items() if k != kind]
        if other:
            raise InvalidInputError(
                f"the files mix formats: {paths[0]!r} is {kind}, {other[0]!r} is not; "
                "ingest them separately or pass format="
            )
        fmt = _tf.TextFormat(kind, delimiter, header, newlines_in_values)
        names = None if given is None else given.names
        infos = tuple(_tf.stat_file(p, fmt, columns=names) for p in paths)
        sch = given
        if sch is None:
            sch = _tf.infer_schema(infos, fmt, sample_bytes=sample_bytes, bad_lines=bad_lines)
            if target.base_schema is not None:  # appending: the dataset's types where they fit
                sch = _tf.toward_dataset(sch, target.base_schema)
        pieces = _tf.plan_nodes(infos, blocksize=size, splittable=fmt.splittable)
        run_id = job_id or (
            dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-") + _uuid.uuid4().hex[:8]
        )
        return _Plan(
            fingerprint,
            run_id,
            fmt,
            sch,
            given is not None,
            infos,
            tuple(tuple(node) for node in pieces),
        )

    plan = _load_or_plan(dst, staging, fingerprint, make)
    validate_write_columns(
        plan.schema.empty_table(),
        partition_on=target.partition_on,
        secondary_indices=target.secondary_indices,
        sort_partitions_by=(),
    )
    if target.base_schema is not None:  # fail early on a schema mismatch
        merge_schemas(target.base_schema, plan.schema, dataset_uuid=uuid)
    node_pieces = plan.nodes or ((),)  # no data: one node that writes nothing
    run = _Run(
        _tf.Reader(plan.fmt, plan.schema, drop_extra=plan.explicit),
        plan.schema,
        target,
        size,
        max_rows_per_file,
        bad_lines,
        staging,
        plan.run,
        quarantine_prefix(uuid, plan.run),
        len(node_pieces),
    )
    state: dict[str, Any] = {
        "job_id": job_id,
        "run": plan.run,
        "format": plan.fmt.kind,
        "files": len(plan.files),
        "file_bytes": sum(f.size for f in plan.files),
    }

    # ------------------------------------------------------------------ graph
    token = job_token(
        "ingest",
        plan.fingerprint,
        plan.run,
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
    # make dask place every node next to it, on one worker
    nodes = [
        dask.delayed(_run_node, pure=False)(
            run, i, list(pieces), dask_key_name=task_key("ingest", f"node{i}", token)
        )
        for i, pieces in enumerate(node_pieces)
    ]
    final = final_node(
        _commit_ingest,
        nodes,
        key=task_key("ingest", "commit", token),
        run=run,
        mode=mode,
        base=base,
        metadata=dict(metadata or {}),
        state=state,
    )
    logger.info(
        "ingest %d files (%d bytes) -> %s: %d nodes, run %s",
        len(plan.files),
        state["file_bytes"],
        uuid,
        len(nodes),
        plan.run,
    )
    return Job(final, name=f"ingest {len(plan.files)} files -> {uuid}", tasks=len(nodes))
