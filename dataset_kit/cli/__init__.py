"""The ``dataset-kit`` command: inspect and maintain datasets from a shell.

The only place that configures logging and chooses a scheduler. Settings come from the
command line, else the environment (``DATASET_KIT_STORE``, ``DATASET_KIT_SCHEDULER``),
else a TOML config file (``--config`` or ``DATASET_KIT_CONFIG``: ``store``, ``scheduler``
and a ``[store_options]`` table). Commands: ``ls``,
``info``, ``stats``, ``history``, ``query``, ``download``, ``ingest``, ``repartition``, ``gc``,
``expire-versions``, ``backup``, ``restore``, ``verify``, ``delete``, ``demo``.

Pipelines (``download``, ``ingest``, ``repartition``, ``gc``, ``backup``, ``restore``,
``verify``)
run on ``--scheduler`` (a dask scheduler address or scheduler file; default
``$DATASET_KIT_SCHEDULER``, then the config file, else the local threaded scheduler) and
show a progress bar on stderr when it is a terminal (``--progress``/``--no-progress`` to
force).

Commands that only read (``ls``, ``info``, ``stats``, ``history``, ``query``, ``verify``,
the source of ``backup`` and ``restore``) and those that change an existing dataset
(``gc``, ``expire-versions``, ``delete``) never create a local store directory: a missing
one is a ``ConfigError``. ``download``, ``ingest``, the targets of ``backup``, ``restore``
and ``repartition``, and ``demo`` create it.

Exit codes map the error hierarchy (documented in ``dataset-kit --help``)::

    0  success
    1  any other dataset_kit error
    2  usage error (bad arguments)
    3  not found (dataset or version)
    4  commit conflict or unknown commit state
    5  invalid input, configuration (e.g. a missing store directory), metadata, or schema
    6  store error (I/O, unsupported operation)
    7  refused: a destructive command without --yes
    8  verify found missing or corrupt blobs
    9  source error (database or input files: connection, query, malformed input)
    141  stdout closed early (``query ... | head``): nothing more is written

``--json`` prints one strict JSON document on stdout (RFC 8259: NaN and infinities are
``null``, bytes base64, timestamps ISO 8601, durations ISO 8601 ``P...``); errors go to
stderr as one ``error: <Type>: <message>`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from dataset_kit import exceptions as exc

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (exc.DatasetNotFoundError, 3),
    (exc.VersionNotFoundError, 3),
    (exc.CommitError, 4),
    (exc.InvalidInputError, 5),
    (exc.DatasetError, 5),
    (exc.ConfigError, 5),
    (exc.StoreError, 6),
    (exc.SourceError, 9),
    (exc.DatasetKitError, 1),
]
REFUSED = 7
VERIFY_FAILED = 8
_STORE_ENV = "DATASET_KIT_STORE"
_SCHEDULER_ENV = "DATASET_KIT_SCHEDULER"
_CONFIG_ENV = "DATASET_KIT_CONFIG"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Rows a text ``query`` shows on a terminal (without ``--limit``).
_SCREEN_ROWS = 200
#: The commands whose ``--store`` may be created: they write a new dataset into it.
_CREATES_STORE = frozenset({"download", "ingest", "restore"})
_LINK_HELP = (
    "hard-link data and index blobs where both stores are local directories on one file "
    "system (copy otherwise): fast and needs no space, but the two datasets share those "
    "files, so it is no copy against a failing disk"
)
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONFIG_KEYS = frozenset({"store", "scheduler", "store_options"})


def _load_config(path: str | None) -> dict[str, Any]:
    """The settings of a TOML config file, e.g.::

    store = "azure://datasets?prefix=prod"
    scheduler = "tcp://scheduler:8786"
    [store_options]
    credential = "default"
    """
    if not path:
        return {}
    import tomllib

    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except OSError as error:
        raise exc.ConfigError(f"cannot read the config file {path!r}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise exc.ConfigError(f"config file {path!r} is not valid TOML: {error}") from error
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise exc.ConfigError(
            f"config file {path!r}: unknown keys {unknown}; known: {sorted(_CONFIG_KEYS)}"
        )
    if not isinstance(config.get("store_options", {}), dict):
        raise exc.ConfigError(f"config file {path!r}: store_options must be a table")
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-kit",
        description="Inspect and maintain dataset_kit / kartothek / plateau datasets.",
        epilog="exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 commit conflict, "
        "5 invalid input/configuration/metadata/schema (e.g. a missing store directory), "
        "6 store error, 7 refused without --yes, 8 verify found missing or corrupt blobs, "
        "9 source (database/files) error, 141 stdout closed early. Settings: command "
        "line, then $DATASET_KIT_STORE / $DATASET_KIT_SCHEDULER, then the config file. "
        "Commands that only read never create a missing store directory.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get(_CONFIG_ENV),
        help=f"TOML file with store/scheduler/store_options (default: ${_CONFIG_ENV})",
    )
    parser.add_argument(
        "--store",
        default=None,
        help=f"store URL or directory (default: ${_STORE_ENV}, then the config file)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=_LOG_LEVELS,
        default="WARNING",
        help="logging level, case-insensitive (default WARNING)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="dask scheduler address (host:port, tcp://host:port), scheduler file (*.json) or "
        "'threads'/'sync' for pipelines (default: $DATASET_KIT_SCHEDULER, then the config "
        "file, else local threads)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list the datasets in the store")
    for name, text in (
        ("info", "versions, partitions, rows, bytes, schema, indices"),
        ("stats", "per-partition rows and bytes, with an imbalance summary"),
        ("history", "the retained versions with their commits"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("dataset")
        if name != "history":
            p.add_argument("--version", type=int, default=None)
    gc = sub.add_parser(
        "gc",
        help="delete blobs no retained version references (dry run unless --yes)",
        description="Delete the blobs of a dataset that no retained version references "
        "(dry run unless --yes). With --keep-versions/--retention, the versions outside "
        "the rules are expired too once their blobs are gone (--no-expire keeps them).",
    )
    gc.add_argument("dataset")
    gc.add_argument(
        "--grace-period", type=_duration, default="1h", help="duration, e.g. 90s, 30min, 1h (1h)"
    )
    gc.add_argument("--keep-versions", type=_positive_int, default=None)
    gc.add_argument(
        "--retention", type=_duration, default=None, help="duration: keep versions this young"
    )
    gc.add_argument(
        "--no-scan",
        dest="scan",
        action="store_false",
        help="no listing: only the blobs that versions outside --keep-versions/--retention "
        "release (cheap on huge datasets; orphans of failed writers need a scanning run)",
    )
    gc.add_argument(
        "--expire",
        dest="expire",
        action="store_true",
        default=None,
        help="then expire the versions outside the rules, if every delete succeeded "
        "(the default with --keep-versions/--retention)",
    )
    gc.add_argument(
        "--no-expire",
        dest="expire",
        action="store_false",
        help="keep the versions outside the rules listed in history: their blobs are "
        "deleted all the same, so they become unreadable",
    )
    gc.add_argument(
        "--prune-dirs",
        action="store_true",
        help="local stores: also remove the partition directories the deletes empty",
    )
    gc.add_argument("--storage-concurrency", type=int, default=None)
    gc.add_argument("--yes", action="store_true", help="really delete")
    ex = sub.add_parser("expire-versions", help="forget old versions (dry run unless --yes)")
    ex.add_argument("dataset")
    ex.add_argument("--keep-versions", type=_positive_int, default=None)
    ex.add_argument("--retention", type=_duration, default=None, help="duration, e.g. 7d")
    ex.add_argument("--yes", action="store_true", help="really expire")
    bk = sub.add_parser("backup", help="copy a dataset to another store/uuid (incremental)")
    bk.add_argument("dataset")
    bk.add_argument("--target", required=True, help="target store URL or directory")
    bk.add_argument("--target-uuid", default=None)
    bk.add_argument("--versions", choices=["all", "latest"], default="all")
    bk.add_argument(
        "--check",
        choices=["size", "checksum"],
        default="size",
        help="how copies are checked; checksum also compares the blobs the target holds",
    )
    bk.add_argument("--link", action="store_true", help=_LINK_HELP)
    bk.add_argument("--storage-concurrency", type=int, default=None)
    rs = sub.add_parser("restore", help="copy a backed-up dataset back into --store")
    rs.add_argument("dataset")
    rs.add_argument("--source", required=True, help="the backup's store URL or directory")
    rs.add_argument("--target-uuid", default=None)
    rs.add_argument("--version", type=int, default=None, help="backup version (newest)")
    rs.add_argument("--check", choices=["size", "checksum"], default="size")
    rs.add_argument("--link", action="store_true", help=_LINK_HELP)
    rs.add_argument("--storage-concurrency", type=int, default=None)
    qu = sub.add_parser(
        "query",
        help="read columns and rows matching predicates",
        description="Read columns and rows matching predicates. Text output prints every "
        f"row, except on a terminal without --limit: at most {_SCREEN_ROWS} rows (the first "
        "and last half), with a note on stderr. --json prints one object per row: "
        "timestamps in ISO 8601 at their stored precision (with the offset of "
        "time-zone-aware ones), dates as YYYY-MM-DD, binary values as base64 strings.",
    )
    qu.add_argument("dataset")
    qu.add_argument(
        "--columns",
        type=_column_list,
        default=None,
        help="comma-separated columns, each at most once (default: all)",
    )
    qu.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="'col OP value' with OP one of == != < <= > >= in 'not in' (values of in: "
        "comma-separated); repeat to AND; values are parsed by the column's type (binary: "
        "base64, as --json prints it) and may be quoted with matching ' or \"",
    )
    qu.add_argument(
        "--filter", default=None, help='predicates as JSON DNF: [[["col", "==", 1]], ...]'
    )
    qu.add_argument("--version", type=int, default=None)
    qu.add_argument(
        "--limit", type=_non_negative_int, default=None, help="at most this many rows (>= 0)"
    )
    qu.add_argument(
        "--output",
        type=_output_file,
        default=None,
        help="write to a .csv or .parquet file (any case) instead of the screen; its "
        "directory must exist. CSV and the screen show lists, structs and maps as JSON "
        "and binary as base64, as --json does",
    )
    dl = sub.add_parser("download", help="a database table or query -> a dataset (in chunks)")
    dl.add_argument("dataset")
    dl.add_argument("--url", required=True, help="database URL (postgresql://, sqlite:///, ...)")
    what = dl.add_mutually_exclusive_group(required=True)
    what.add_argument("--table")
    what.add_argument("--query")
    dl.add_argument("--chunk-by", default=None, help="numeric/date/timestamp key to split on")
    dl.add_argument("--n-chunks", type=int, default=8)
    dl.add_argument("--chunking", choices=["range", "rows"], default="range")
    dl.add_argument("--partition-on", default=None, help="comma-separated columns")
    dl.add_argument("--mode", choices=["error", "overwrite", "append"], default="error")
    dl.add_argument("--incremental", action="store_true", help="only rows above the mark")
    dl.add_argument("--job-id", default=None, help="resumable: rerun with the same id")
    dl.add_argument("--db-concurrency", type=int, default=None)
    ig = sub.add_parser("ingest", help="JSON-lines or CSV files (plain or gzip) -> a dataset")
    ig.add_argument("dataset")
    ig.add_argument("files", nargs="+", help="paths or quoted glob patterns ('logs/*.jsonl.gz')")
    ig.add_argument("--format", choices=["auto", "jsonl", "csv"], default="auto")
    ig.add_argument(
        "--schema",
        type=_schema_spec,
        default=None,
        help="column types 'col:type,...' (e.g. 'ts:timestamp[s],n:int64'; default: inferred)",
    )
    ig.add_argument(
        "--blocksize", type=_size, default="64MiB", help="text per node, e.g. 64MiB (64MiB)"
    )
    ig.add_argument("--delimiter", default=",", help="CSV delimiter (,)")
    ig.add_argument("--no-header", action="store_true", help="CSV without a header (--schema)")
    ig.add_argument("--newlines-in-values", action="store_true", help="CSV: quoted line breaks")
    ig.add_argument("--bad-lines", choices=["error", "quarantine"], default="error")
    ig.add_argument("--partition-on", default=None, help="comma-separated columns")
    ig.add_argument("--mode", choices=["error", "overwrite", "append"], default="error")
    ig.add_argument("--job-id", default=None, help="resumable: rerun with the same id")
    ig.add_argument("--max-rows-per-file", type=int, default=1_000_000)
    ig.add_argument("--compression", default="zstd")
    ig.add_argument("--storage-concurrency", type=int, default=None)
    rp = sub.add_parser("repartition", help="rewrite a dataset with another partitioning")
    rp.add_argument("dataset")
    rp.add_argument("--target", required=True, help="target dataset uuid")
    rp.add_argument("--target-store", default=None, help="default: --store")
    rp.add_argument("--partition-on", required=True, help="comma-separated columns")
    rp.add_argument("--bucket-by", default=None, help="comma-separated columns")
    rp.add_argument("--num-buckets", type=int, default=None)
    rp.add_argument("--sort-by", default=None, help="comma-separated columns")
    rp.add_argument("--rows-per-file", type=int, default=None)
    rp.add_argument(
        "--bytes-per-file",
        type=_size,
        default=None,
        help="target file size instead of rows, e.g. 134217728, 128MiB, 1GiB",
    )
    rp.add_argument("--mode", choices=["error", "overwrite"], default="error")
    rp.add_argument(
        "--shuffle",
        choices=["staged", "p2p", "disk", "tasks"],
        default=None,
        help="default: staged through a target store with local paths, else P2P on a "
        "cluster and disk locally",
    )
    ve = sub.add_parser("verify", help="check every referenced blob exists and is readable")
    ve.add_argument("dataset")
    which = ve.add_mutually_exclusive_group()
    which.add_argument("--all-versions", action="store_true", help="every retained version")
    which.add_argument("--version", type=int, default=None, help="this version (the newest)")
    ve.add_argument("--deep", action="store_true", help="also read and decode every blob")
    de = sub.add_parser(
        "delete", help="delete a dataset (asks on a terminal; elsewhere refused without --yes)"
    )
    de.add_argument("dataset")
    de.add_argument("--yes", action="store_true", help="really delete")
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on a local directory",
        description="Run the end-to-end demo on a local directory. The demo marks the "
        "directory it creates with a .dataset-kit-demo file and clears a directory only if "
        "it carries that file (an earlier demo's) or is empty; it refuses any other "
        "existing path and deletes nothing there.",
    )
    demo.add_argument(
        "--dir",
        default="demo-data",
        help="new, empty, or earlier demo directory (default demo-data); its contents are replaced",
    )
    return parser


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:  # strict JSON, keys in the order the data has them (a schema's order)
        print(json.dumps(_json_value(data), indent=2, default=str, allow_nan=False))
    elif text:  # nothing to say (an empty store's ls): no blank line
        print(text)


def _confirm(question: str) -> bool:
    """Ask on a terminal; never on a pipe (scripts must pass --yes, never hang)."""
    if not sys.stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
}


def _size(text: str) -> int:
    """``"128MiB"`` -> 134217728 (argparse type: a bad size is a usage error)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 134217728, 128MiB, 1GiB)")
    value = round(float(match.group(1)) * _SIZE_UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return value


def _int_at_least(minimum: int, text: str) -> int:
    """argparse type body: an integer >= ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(0, text)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(1, text)


def _duration(text: str) -> float:
    """argparse type: ``"90s"``, ``"30min"``, ``"1h"``, ``"7d"`` or seconds -> seconds."""
    from dataset_kit.core.duration import parse_duration

    try:
        seconds = parse_duration(text, name="duration")
    except exc.InvalidInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    assert seconds is not None  # only None in, None out
    return seconds


def _schema_spec(text: str) -> dict[str, str]:
    """argparse type of ``ingest --schema``: ``col:type,...`` with Arrow type names."""
    import pyarrow as pa

    schema: dict[str, str] = {}
    for item in text.split(","):
        name, sep, type_name = (part.strip() for part in item.partition(":"))
        if not sep or not name or not type_name:
            raise argparse.ArgumentTypeError(f"expected 'column:type', got {item.strip()!r}")
        if name in schema:
            raise argparse.ArgumentTypeError(f"column {name!r} is given twice")
        try:
            pa.type_for_alias(type_name)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{type_name!r} (column {name!r}) is not an Arrow type name such as int64, "
                "float64, string, bool, date32, timestamp[s]"
            ) from None
        schema[name] = type_name
    return schema


def _column_list(text: str) -> list[str]:
    """argparse type of ``--columns``: names, none empty, none twice."""
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty column name in {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"columns given more than once: {', '.join(twice)}")
    return names


_OUTPUT_FORMATS = (".csv", ".parquet")


def _output_file(text: str) -> str:
    """argparse type of ``query --output``: a path ending in .csv or .parquet (any case)."""
    if not text.lower().endswith(_OUTPUT_FORMATS):
        raise argparse.ArgumentTypeError(f"must end with .csv or .parquet, got {text!r}")
    return text


def _cols(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _is_local(url: str) -> bool:
    """Whether ``open_store`` makes a local directory store of ``url`` (and so takes
    ``create=``): a plain path, ``file://``, ``hfs://``/``fs://`` without a fragment."""
    match = _URL_SCHEME.match(url)
    if match is None:
        return True
    scheme = match.group(1).lower()
    return scheme == "file" or (scheme in ("hfs", "fs") and "#" not in url)


def _open_store(url: str, options: dict[str, Any], *, create: bool, option: str) -> Any:
    """Open a store; without ``create`` a missing local directory is a ConfigError
    (commands that only read must not create one from a typo)."""
    import dataset_kit as dk

    if create or not _is_local(url):
        return dk.open_store(url, **options)
    if _URL_SCHEME.match(url) is None:
        path = os.path.abspath(url)
        if not os.path.isdir(path):
            what = "is not a directory" if os.path.exists(path) else "does not exist"
            where = "" if path == url else f" ({path})"
            raise exc.ConfigError(
                f"{option}: store directory {url!r}{where} {what} (this command does not create it)"
            )
    try:
        return dk.open_store(url, **{**options, "create": False})
    except exc.ConfigError as error:
        raise exc.ConfigError(f"{option}: {error}") from error


def _meta_summary(meta: Any) -> dict[str, Any]:
    rows = [r for r, _ in meta.stats.values()]
    return {
        "dataset": meta.uuid,
        "version": meta.version,
        "partitions": meta.num_partitions,
        "rows": sum(rows),
        "bytes": sum(b for _, b in meta.stats.values()),
        "partition_keys": list(meta.partition_keys),
    }


def _meta_text(meta: Any) -> str:
    s = _meta_summary(meta)
    return (
        f"{s['dataset']} version {s['version']}: {s['partitions']} files, {s['rows']:,} rows, "
        f"{s['bytes']:,} bytes, partitioned on {s['partition_keys']}"
    )


def _compute(args: argparse.Namespace, job: Any) -> Any:
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    return job.compute(scheduler=args.scheduler, progress=progress)


def partition_stats(meta: Any) -> dict[str, Any]:
    """Per-partition rows and bytes of a version, and how balanced they are."""
    parts = [
        {"label": label, "rows": meta.stats[label][0], "bytes": meta.stats[label][1]}
        for label in meta.partitions
        if label in meta.stats
    ]
    summary: dict[str, Any] = {
        "partitions": len(meta.partitions),
        "with_stats": len(parts),
    }
    for what in ("rows", "bytes"):
        values = sorted(p[what] for p in parts)
        if values:
            median = values[len(values) // 2]
            summary[what] = {
                "total": sum(values),
                "min": values[0],
                "median": median,
                "max": values[-1],
                "max_over_median": round(values[-1] / median, 2) if median else None,
            }
    return {"dataset": meta.uuid, "version": meta.version, "summary": summary, "parts": parts}


def _stats_text(stats: dict[str, Any]) -> str:
    s = stats["summary"]
    lines = [f"{stats['dataset']} version {stats['version']}: {s['partitions']} partitions"]
    for what in ("rows", "bytes"):
        if what in s:
            d = s[what]
            lines.append(
                f"  {what:<5} total {d['total']:,}  min {d['min']:,}  median {d['median']:,}  "
                f"max {d['max']:,}  max/median {d['max_over_median']}"
            )
    if s["with_stats"] < s["partitions"]:
        lines.append(f"  ({s['partitions'] - s['with_stats']} partitions without recorded stats)")
    return "\n".join(lines)


_OPS = ("not in", "==", "!=", "<=", ">=", "<", ">", "in")


def _text_value(text: str, t: Any, column: str) -> Any:
    """A command-line value parsed as the Python value of a column of Arrow type ``t``.

    Binary values are given in base64, the form ``--json`` and CSV output print.
    """
    import base64
    import binascii
    import datetime as dt
    import decimal

    import pandas as pd
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
    try:
        if pa.types.is_boolean(t):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if pa.types.is_integer(t):
            return int(text)
        if pa.types.is_floating(t):
            return float(text)
        if pa.types.is_decimal(t):
            return decimal.Decimal(text)
        if pa.types.is_date(t):
            return dt.date.fromisoformat(text)
        if pa.types.is_timestamp(t):
            return pd.Timestamp(text)
        if binary:
            return base64.b64decode(text, validate=True)
    except (ValueError, decimal.InvalidOperation, binascii.Error) as error:
        how = ", given in base64" if binary else ""
        raise exc.PredicateError(
            f"--where: {text!r} is not a value of column {column!r} ({t}{how})"
        ) from error
    return text


def _unquote(text: str) -> str:
    """``'2024-01-02'`` or ``"a b"`` -> the text inside matching quotes; else as is."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _where(exprs: list[str], schema: Any) -> list[tuple[str, str, Any]]:
    terms = []
    for expr in exprs:
        for op in _OPS:
            left, sep, right = expr.partition(f" {op} ")
            if sep:
                break
        else:
            raise exc.PredicateError(
                f"--where {expr!r}: expected 'column OP value' with OP in {_OPS}"
            )
        column, raw = left.strip(), right.strip()
        if schema.get_field_index(column) < 0:
            raise exc.PredicateError(f"--where {expr!r}: unknown column {column!r}")
        t = schema.field(column).type
        if op in ("in", "not in"):
            value: Any = [
                _text_value(_unquote(v.strip()), t, column) for v in raw.split(",") if v.strip()
            ]
        else:
            value = _text_value(_unquote(raw), t, column)
        terms.append((column, op, value))
    return terms


def _check_output(path: str) -> None:
    """Fail before reading when ``query --output`` cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise exc.InvalidInputError(f"--output {path!r}: the directory {parent!r} {what}")
    if os.path.isdir(path):
        raise exc.InvalidInputError(f"--output {path!r} is a directory")
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise exc.InvalidInputError(f"--output {path!r}: {target!r} is not writable")


def _write_output(df: Any, path: str) -> None:
    try:
        if path.lower().endswith(".csv"):
            _flat_frame(df).to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
    except OSError as error:  # pyarrow's I/O errors are OSErrors too
        raise exc.InvalidInputError(f"cannot write --output {path!r}: {error}") from error


_TIMESPEC = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
#: ``infer_dtype`` kinds of object columns that ``DataFrame.to_json`` renders well.
_JSON_NATIVE = frozenset(
    {"empty", "string", "integer", "floating", "mixed-integer-float", "boolean", "decimal"}
)


def _json_value(value: Any) -> Any:
    """A value as JSON-ready Python: timestamps in ISO 8601 at their precision, dates as
    YYYY-MM-DD, durations in ISO 8601 (``P0DT0H0M1S``), bytes as base64, NaN and
    infinities as None, containers element by element."""
    import base64
    import datetime as dt
    import decimal
    import math

    import numpy as np
    import pandas as pd

    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64 | np.timedelta64):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.timedelta64 | dt.timedelta):
        value = pd.Timedelta(value)
        return None if value is pd.NaT else value.isoformat()
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)  # keeps the unit
        if value is pd.NaT:
            return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat(timespec=_TIMESPEC.get(value.unit, "auto"))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [_json_value(v) for v in value]
    return value


def _json_column(series: Any) -> Any:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, (pd.CategoricalDtype, pd.ArrowDtype)):
        series = series.astype(object)
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        timespec = _TIMESPEC.get(series.dt.unit, "auto")
        return series.map(lambda v: None if v is pd.NaT else v.isoformat(timespec=timespec))
    elif pd.api.types.is_timedelta64_dtype(dtype):
        return series.map(_json_value).astype(object)
    if series.dtype != object or pd.api.types.infer_dtype(series, skipna=True) in _JSON_NATIVE:
        return series
    return series.map(_json_value).astype(object)


def _flat_cell(value: Any) -> Any:
    """A nested or binary value as text: lists, structs and maps as JSON, bytes as base64."""
    value = _json_value(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return value


def _flat_frame(df: Any) -> Any:
    """``df`` for CSV and the screen: lists, structs, maps and binary columns as the text
    ``--json`` gives them (JSON, base64), never Python reprs such as ``b'..'``; other
    columns unchanged."""
    import pandas as pd

    out = df
    for name in df.columns:
        series = df[name]
        if isinstance(series.dtype, pd.ArrowDtype):
            series = series.astype(object)
        elif series.dtype != object:
            continue
        if pd.api.types.infer_dtype(series, skipna=True) in _JSON_NATIVE:
            continue
        if out is df:
            out = df.copy(deep=False)
        out[name] = series.map(lambda v: None if v is None else _flat_cell(v)).astype(object)
    return out


def _json_records(df: Any) -> str:
    """``query --json``: one object per row. Floats keep every digit (the shortest text
    that reads back as the same float; pandas' ``to_json`` keeps 10 to 15); NaN and
    infinities are null, also inside lists, structs and maps."""
    names = [str(name) for name in df.columns]
    columns = [_json_column(df[name]).tolist() for name in df.columns]
    rows = [
        dict(zip(names, (_json_value(v) for v in values), strict=True))
        for values in zip(*columns, strict=True)
    ]
    return json.dumps(rows, separators=(",", ":"), allow_nan=False)


def _query(args: argparse.Namespace, store: Any) -> int:
    import dataset_kit as dk

    if args.output is not None:
        _check_output(args.output)
    ds = dk.open_dataset(store=store, dataset_uuid=args.dataset, version=args.version)
    predicates: Any = None
    if args.filter is not None:
        try:
            predicates = json.loads(args.filter)
        except json.JSONDecodeError as error:
            raise exc.PredicateError(f"--filter is not valid JSON: {error}") from error
    if args.where:
        terms = _where(args.where, ds.schema)
        predicates = [list(c) + terms for c in predicates] if predicates else [terms]
    df = ds.read_table(columns=args.columns, predicates=predicates)
    if args.limit is not None:
        df = df.head(args.limit)
    if args.output:
        _write_output(df, args.output)
        _emit(args, {"rows": len(df), "output": args.output}, f"{len(df)} rows -> {args.output}")
    elif args.json:
        print(_json_records(df))
    else:
        # every row into a file or pipe; a screenful on a terminal unless --limit says more
        cap = _SCREEN_ROWS if args.limit is None and sys.stdout.isatty() else None
        print(_flat_frame(df).to_string(index=False, max_rows=cap))
        if cap is not None and len(df) > cap:
            print(
                f"showing {cap} of {len(df)} rows; use --limit or --output for all",
                file=sys.stderr,
            )
        else:
            print(f"({len(df)} rows)", file=sys.stderr)
    return 0


def _ingest(args: argparse.Namespace, store: Any) -> int:
    from dataset_kit.pipelines.ingest import STATE_KEY, ingest_files

    meta = _compute(
        args,
        ingest_files(
            args.files,
            store=store,
            dataset_uuid=args.dataset,
            format=args.format,
            schema=args.schema,
            blocksize=args.blocksize,
            delimiter=args.delimiter,
            header=not args.no_header,
            newlines_in_values=args.newlines_in_values,
            bad_lines=args.bad_lines,
            partition_on=_cols(args.partition_on),
            mode=args.mode,
            job_id=args.job_id,
            max_rows_per_file=args.max_rows_per_file,
            compression=args.compression,
            storage_concurrency=args.storage_concurrency,
        ),
    )
    state = meta.metadata.get(STATE_KEY, {})
    data = {
        **_meta_summary(meta),
        "files": state.get("files"),
        "bad_lines": state.get("bad_lines"),
        "quarantine": state.get("quarantine"),
    }
    text = _meta_text(meta)
    if state.get("bad_lines"):
        text += f"\n{state['bad_lines']} bad lines set aside under {state['quarantine']}"
    _emit(args, data, text)
    return 0


def _run(args: argparse.Namespace) -> int:
    import dataset_kit as dk

    if args.command == "demo":
        from dataset_kit.demo import main as demo_main

        code = demo_main(["--store", args.dir])
        _emit(args, {"ok": code == 0, "store": os.path.abspath(args.dir)}, "")
        return code
    config = _load_config(args.config)
    # command line > environment > config file, for every setting
    args.scheduler = (
        args.scheduler or os.environ.get(_SCHEDULER_ENV) or config.get("scheduler") or None
    )
    store_url = args.store or os.environ.get(_STORE_ENV) or config.get("store")
    if not store_url:
        raise exc.ConfigError(
            f"no store: pass --store URL, set ${_STORE_ENV}, or give a config file with "
            f"store = ... (--config or ${_CONFIG_ENV})"
        )
    store_options = config.get("store_options", {}) if store_url == config.get("store") else {}
    source = None
    if args.command == "restore":  # a missing source must not leave a new target behind
        source = _open_store(args.source, {}, create=False, option="--source")
    store = _open_store(
        store_url, store_options, create=args.command in _CREATES_STORE, option="--store"
    )
    if args.command == "ls":
        names = dk.list_datasets(store)
        _emit(args, names, "\n".join(names))
    elif args.command == "info":
        info = dk.open_dataset(store=store, dataset_uuid=args.dataset, version=args.version).info()
        lines = [f"{k}: {v}" for k, v in info.items() if k != "schema"]
        lines += ["schema:"] + [f"  {c}: {t}" for c, t in info["schema"].items()]
        _emit(args, info, "\n".join(lines))
    elif args.command == "history":
        versions = dk.open_dataset(store=store, dataset_uuid=args.dataset).versions()
        text = "\n".join(
            f"{v['version']:>6}  {v.get('timestamp', '?')}  {v.get('operation', '?'):<14}"
            f"{v['partitions']} partitions" + ("" if v["rows"] is None else f", {v['rows']} rows")
            for v in versions
        )
        _emit(args, versions, text)
    elif args.command == "stats":
        stats = partition_stats(
            dk.open_dataset(store=store, dataset_uuid=args.dataset, version=args.version).meta
        )
        _emit(args, stats, _stats_text(stats))
    elif args.command == "gc":
        if args.expire is None:  # expire what loses its blobs, so history stays readable
            args.expire = args.keep_versions is not None or args.retention is not None
        report = _compute(
            args,
            dk.pipelines.garbage_collect(
                args.dataset,
                store=store,
                grace_period=args.grace_period,
                keep_versions=args.keep_versions,
                retention=args.retention,
                scan=args.scan,
                expire=args.expire,
                dry_run=not args.yes,
                prune_dirs=args.prune_dirs,
                storage_concurrency=args.storage_concurrency,
            ),
        )
        verb = "deleted" if args.yes else "would delete (dry run; pass --yes)"
        data = {
            "dry_run": report.dry_run,
            "scanned": report.scanned,
            "count": report.count,
            "bytes": report.nbytes,
            "too_young": report.too_young,
            "spared": report.spared,
            "failed": report.failed,
            "absent": report.absent,
            "expired": report.expired,
            "keys": report.keys,
        }
        text = f"{verb} {report.count} blobs, {report.nbytes} bytes"
        if report.scanned:
            text += f"; {report.too_young} younger than the grace period kept"
        if args.expire:
            text += f"; {'expired' if args.yes else 'would expire'} versions {report.expired}"
        _emit(args, data, text)
        return 6 if report.failed else 0
    elif args.command in ("backup", "restore"):
        if args.command == "backup":
            # a missing or unreadable source must not leave a new target behind
            dk.open_dataset(store=store, dataset_uuid=args.dataset)
            job = dk.pipelines.backup(
                args.dataset,
                source=store,
                target=dk.open_store(args.target),
                target_uuid=args.target_uuid,
                versions=args.versions,
                check=args.check,
                link=args.link,
                storage_concurrency=args.storage_concurrency,
            )
        else:
            job = dk.pipelines.restore(
                args.dataset,
                source=source,
                target=store,
                target_uuid=args.target_uuid,
                version=args.version,
                check=args.check,
                link=args.link,
                storage_concurrency=args.storage_concurrency,
            )
        copy = _compute(args, job)
        _emit(
            args,
            dataclasses.asdict(copy),
            f"{args.command} of {copy.source_uuid} -> {copy.target_uuid} version {copy.version}: "
            f"copied {copy.copied} blobs ({copy.copied_bytes} bytes"
            + (f", {copy.linked} of them hard links" if copy.linked else "")
            + f"), {copy.skipped} already there",
        )
    elif args.command == "query":
        return _query(args, store)
    elif args.command == "download":
        from dataset_kit.pipelines.download import download_table

        meta = _compute(
            args,
            download_table(
                args.url,
                table=args.table,
                query=args.query,
                store=store,
                dataset_uuid=args.dataset,
                chunk_by=args.chunk_by,
                n_chunks=args.n_chunks,
                chunking=args.chunking,
                partition_on=_cols(args.partition_on),
                mode=args.mode,
                incremental=args.incremental,
                job_id=args.job_id,
                db_concurrency=args.db_concurrency,
            ),
        )
        _emit(args, _meta_summary(meta), _meta_text(meta))
    elif args.command == "ingest":
        return _ingest(args, store)
    elif args.command == "repartition":
        from dataset_kit.pipelines.repartition import repartition

        options: dict[str, Any] = {}
        if args.rows_per_file is not None:
            options["target_rows_per_file"] = args.rows_per_file
        if args.bytes_per_file is not None:
            options["target_bytes_per_file"] = args.bytes_per_file
        meta = _compute(
            args,
            repartition(
                args.dataset,
                args.target,
                store=store,
                target_store=dk.open_store(args.target_store) if args.target_store else None,
                partition_on=_cols(args.partition_on) or [],
                bucket_by=_cols(args.bucket_by),
                num_buckets=args.num_buckets,
                sort_by=_cols(args.sort_by),
                mode=args.mode,
                shuffle_method=args.shuffle,
                **options,
            ),
        )
        _emit(args, _meta_summary(meta), _meta_text(meta))
    elif args.command == "verify":
        result = _compute(
            args,
            dk.pipelines.verify(
                args.dataset,
                store=store,
                versions="all" if args.all_versions else "latest",
                version=args.version,
                deep=args.deep,
            ),
        )
        data = {**dataclasses.asdict(result), "ok": result.ok}
        lines = [
            f"checked {result.checked} blobs of versions {result.versions}: "
            f"{len(result.missing)} missing, {len(result.corrupt)} corrupt"
        ]
        lines += [f"missing: {k}" for k in result.missing]
        lines += [f"corrupt: {k}: {why}" for k, why in result.corrupt.items()]
        _emit(args, data, "\n".join(lines))
        return 0 if result.ok else VERIFY_FAILED
    elif args.command == "expire-versions":
        expired = dk.expire_versions(
            store=store,
            dataset_uuid=args.dataset,
            keep_versions=args.keep_versions,
            retention=args.retention,
            dry_run=not args.yes,
        )
        verb = "expired" if args.yes else "would expire (dry run; pass --yes)"
        _emit(args, {"expired": expired, "dry_run": not args.yes}, f"{verb}: {expired}")
    elif args.command == "delete":
        try:  # a missing dataset is "not found" (3), also when the answer would be no
            dk.open_dataset(store=store, dataset_uuid=args.dataset)
        except exc.DatasetNotFoundError:
            raise
        except exc.DatasetError:  # broken metadata: deleting it is still allowed
            pass
        if not args.yes and not _confirm(f"delete dataset {args.dataset!r} in {store!r}?"):
            print(f"refusing to delete {args.dataset!r} without --yes", file=sys.stderr)
            return REFUSED
        dk.delete_dataset(store=store, dataset_uuid=args.dataset)
        _emit(args, {"deleted": args.dataset}, f"deleted {args.dataset}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dataset-kit``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except BrokenPipeError:  # `query ... | head`: the reader has what it wanted
        # point stdout at /dev/null, so the interpreter's final flush does not fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except exc.DatasetKitError as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        for cls, code in EXIT_CODES:
            if isinstance(error, cls):
                return code
        return 1  # pragma: no cover - DatasetKitError is the last entry


if __name__ == "__main__":
    sys.exit(main())
