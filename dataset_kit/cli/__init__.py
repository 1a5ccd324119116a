"""The ``dataset-kit`` command: inspect and maintain datasets from a shell.

The only place that configures logging. Commands so far: ``ls``, ``info``, ``history``,
``gc``, ``expire-versions``, ``delete``, ``demo`` (more come with the pipelines).

Exit codes map the error hierarchy (documented in ``dataset-kit --help``)::

    0  success
    1  any other dataset_kit error
    2  usage error (bad arguments)
    3  not found (dataset or version)
    4  commit conflict or unknown commit state
    5  invalid input, metadata, or schema
    6  store error (I/O, unsupported operation)
    7  refused: a destructive command without --yes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
    (exc.DatasetKitError, 1),
]
REFUSED = 7
_STORE_ENV = "DATASET_KIT_STORE"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataset-kit",
        description="Inspect and maintain dataset_kit / kartothek / plateau datasets.",
        epilog="exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 commit conflict, "
        "5 invalid input/metadata/schema, 6 store error, 7 refused without --yes",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get(_STORE_ENV),
        help=f"store URL or directory (default: ${_STORE_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list the datasets in the store")
    for name, text in (
        ("info", "versions, partitions, rows, bytes, schema, indices"),
        ("history", "the retained versions with their commits"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("dataset")
        if name == "info":
            p.add_argument("--version", type=int, default=None)
    gc = sub.add_parser("gc", help="delete unreferenced blobs (dry run unless --yes)")
    gc.add_argument("dataset")
    gc.add_argument("--grace-period", type=float, default=3600.0, help="seconds (default 3600)")
    gc.add_argument("--keep-versions", type=int, default=None)
    gc.add_argument("--retention", type=float, default=None, help="seconds")
    gc.add_argument("--yes", action="store_true", help="really delete")
    ex = sub.add_parser("expire-versions", help="forget old versions (dry run unless --yes)")
    ex.add_argument("dataset")
    ex.add_argument("--keep-versions", type=int, default=None)
    ex.add_argument("--retention", type=float, default=None, help="seconds")
    ex.add_argument("--yes", action="store_true", help="really expire")
    de = sub.add_parser("delete", help="delete a dataset (refused without --yes)")
    de.add_argument("dataset")
    de.add_argument("--yes", action="store_true", help="really delete")
    demo = sub.add_parser("demo", help="run the end-to-end demo on a local directory")
    demo.add_argument("--dir", default="demo-data")
    return parser


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _run(args: argparse.Namespace) -> int:
    import dataset_kit as dk

    if args.command == "demo":
        from dataset_kit.demo import main as demo_main

        return demo_main(["--store", args.dir])
    if not args.store:
        raise exc.ConfigError(f"no store: pass --store URL or set ${_STORE_ENV}")
    store = dk.open_store(args.store)
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
            f"{v['partitions']} partitions"
            for v in versions
        )
        _emit(args, versions, text)
    elif args.command == "gc":
        report = dk.garbage_collect(
            store=store,
            dataset_uuid=args.dataset,
            grace_period=args.grace_period,
            keep_versions=args.keep_versions,
            retention=args.retention,
            dry_run=not args.yes,
        )
        verb = "deleted" if args.yes else "would delete (dry run; pass --yes)"
        data = {
            "dry_run": report.dry_run,
            "count": report.count,
            "bytes": report.nbytes,
            "too_young": report.too_young,
            "failed": report.failed,
            "keys": report.keys,
        }
        _emit(
            args,
            data,
            f"{verb} {report.count} blobs, {report.nbytes} bytes; "
            f"{report.too_young} younger than the grace period kept",
        )
        return 6 if report.failed else 0
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
        if not args.yes:
            print(f"refusing to delete {args.dataset!r} without --yes", file=sys.stderr)
            return REFUSED
        dk.delete_dataset(store=store, dataset_uuid=args.dataset)
        _emit(args, {"deleted": args.dataset}, f"deleted {args.dataset}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dataset-kit``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except exc.DatasetKitError as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        for cls, code in EXIT_CODES:
            if isinstance(error, cls):
                return code
        return 1  # pragma: no cover - DatasetKitError is the last entry


if __name__ == "__main__":
    sys.exit(main())
