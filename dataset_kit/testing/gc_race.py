"""Garbage collection racing writers and readers, each role in its own process.

:func:`race` starts writer, reader and collector processes on one dataset (spawned, so
each has its own interpreter; they meet only through the store) and returns what each
did. Writers append (and, with ``overwrite_share``, overwrite); the collector runs
``pipelines.garbage_collect`` in a loop, after ``expire_versions`` if ``expire`` (without
a scan, ``scan=False``, it collects from the metadata and expires in the same run). The
contract under test: GC deletes only blobs no *retained* version references and that are
older than the grace period, so

* a writer never meets a missing blob (its own blobs are young until it commits, and the
  versions it builds on are the newest);
* a reader of a retained version never meets one. A reader picks one of the newest
  ``keep_versions`` versions, reads it, and afterwards looks at the newest version again:
  if the version it read is still among the newest ``keep_versions``, it was retained for
  the whole read, and any missing blob (or expired snapshot) is a violation. Otherwise the
  window moved on during the read (reads of expired versions are out of scope) and the
  read only counts as "window moved".

Each process puts one JSON report into the result queue; the test checks and sums them.
"""

from __future__ import annotations

import json
import random
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from dataset_kit.store import Store
from dataset_kit.testing.processes import run_in_processes

__all__ = ["RaceConfig", "race", "race_frame"]

#: Values of the partition column and of the indexed column.
PARTS = 4
KINDS = 3


@dataclass(frozen=True)
class RaceConfig:
    """What to race: how many of each role, for how long, and the GC settings.

    ``expire``: the collector also runs ``expire_versions(keep_versions)`` before each GC;
    ``collect``: it runs the GC at all (off: only expiry, for diagnosis); ``scan``: off,
    the GC collects without listing, ``garbage_collect(scan=False, expire=expire)``.
    """

    dataset_uuid: str = "race"
    writers: int = 2
    readers: int = 2
    seconds: float = 10.0
    grace_period: float = 2.0
    keep_versions: int = 3
    overwrite_share: float = 0.1
    seed: int = 0
    expire: bool = False
    collect: bool = True
    scan: bool = True


def race_frame(tag: str, rows: int = 3) -> pd.DataFrame:
    """Rows with a unique ``tag`` each, over partitions ``p`` and indexed values ``k``."""
    n = sum(ord(c) for c in tag)
    return pd.DataFrame(
        {
            "p": [(n + i) % PARTS for i in range(rows)],
            "k": [f"k{(n + i) % KINDS}" for i in range(rows)],
            "tag": [f"{tag}.{i}" for i in range(rows)],
        }
    )


@dataclass
class _Report:
    role: str
    ident: int
    ops: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    committed: list[dict[str, Any]] = field(default_factory=list)
    max_seconds: float = 0.0

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _writer(store: Store, config: RaceConfig, ident: int, report: _Report) -> None:
    import dataset_kit as dk
    from dataset_kit.exceptions import CommitConflictError, DataBlobMissingError

    rng = random.Random(config.seed * 1000 + ident)
    deadline = time.monotonic() + config.seconds
    step = 0
    while time.monotonic() < deadline:
        tag = f"w{ident}-{step}"
        step += 1
        overwrite = rng.random() < config.overwrite_share
        frame = race_frame(tag)
        started = time.monotonic()
        try:
            if overwrite:
                meta = dk.write_dataset(
                    frame,
                    store=store,
                    dataset_uuid=config.dataset_uuid,
                    partition_on="p",
                    secondary_indices="k",
                    mode="overwrite",
                )
            else:
                meta = dk.update_dataset(frame, store=store, dataset_uuid=config.dataset_uuid)
        except CommitConflictError:
            report.count("conflicts")
            continue
        except DataBlobMissingError as exc:
            report.violations.append(f"writer {tag}: {exc}")
            continue
        finally:
            report.ops += 1
            report.max_seconds = max(report.max_seconds, time.monotonic() - started)
        kind = "overwrite" if overwrite else "append"
        report.count(kind + "s")
        report.committed.append(
            {
                "version": meta.version,
                "kind": kind,
                "tag": tag,
                "seconds": round(time.monotonic() - started, 3),
            }
        )


def _reader(store: Store, config: RaceConfig, ident: int, report: _Report) -> None:
    import dataset_kit as dk
    from dataset_kit.exceptions import DataBlobMissingError, VersionNotFoundError

    rng = random.Random(config.seed * 1000 + 500 + ident)
    deadline = time.monotonic() + config.seconds
    keep = config.keep_versions

    def newest() -> int:
        version = dk.open_dataset(store=store, dataset_uuid=config.dataset_uuid).version
        assert version is not None
        return version

    while time.monotonic() < deadline:
        before = newest()
        version = rng.randint(max(0, before - keep + 1), before)
        predicates = rng.choice(
            [None, [[("k", "==", f"k{rng.randrange(KINDS)}")]], [[("p", "in", [0, 2])]]]
        )
        started = time.monotonic()
        problem = ""
        rows = expected = None
        try:
            ds = dk.open_dataset(store=store, dataset_uuid=config.dataset_uuid, version=version)
            df = ds.read_table(predicates=predicates)
            rows, expected = len(df), ds.num_rows
            if not df["tag"].is_unique:
                problem = "duplicated rows"
            elif predicates is None and rows != expected:
                problem = f"{rows} rows, the version records {expected}"
        except (DataBlobMissingError, VersionNotFoundError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        report.ops += 1
        report.max_seconds = max(report.max_seconds, time.monotonic() - started)
        after = newest()
        retained = version > after - keep
        if not problem:
            report.count("reads ok")
            report.count("rows read", rows or 0)
        elif retained:
            report.violations.append(
                f"reader: version {version} (newest {before} before, {after} after): {problem}"
            )
        else:
            report.count("window moved")


def _collector(store: Store, config: RaceConfig, ident: int, report: _Report) -> None:
    import dataset_kit as dk

    deadline = time.monotonic() + config.seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        expired = []
        if config.expire and (config.scan or not config.collect):
            expired = dk.expire_versions(
                store=store, dataset_uuid=config.dataset_uuid, keep_versions=config.keep_versions
            )
        if not config.collect:
            report.ops += 1
            report.count("versions expired", len(expired))
            time.sleep(0.05)
            continue
        gc = dk.pipelines.garbage_collect(
            config.dataset_uuid,
            store=store,
            grace_period=config.grace_period,
            keep_versions=config.keep_versions,
            scan=config.scan,
            expire=config.expire and not config.scan,
            batch_size=16,
        ).compute(scheduler="sync")
        expired += gc.expired
        report.ops += 1
        report.max_seconds = max(report.max_seconds, time.monotonic() - started)
        report.count("versions expired", len(expired))
        report.count("blobs deleted", gc.count)
        report.count("blobs spared", gc.spared)
        report.count("blobs too young", gc.too_young)
        if gc.failed:
            report.errors.append(f"gc failed to delete {gc.failed}")
        time.sleep(0.05)


_ROLES = {"writer": _writer, "reader": _reader, "gc": _collector}


def _run_role(
    store: Store, config: RaceConfig, role: str, ident: int, barrier: Any, results: Any
) -> None:
    report = _Report(role, ident)
    try:
        barrier.wait(timeout=120)
        _ROLES[role](store, config, ident, report)
    except Exception:  # reported to the parent, which fails the test
        report.errors.append(traceback.format_exc())
    results.put(((role, ident), json.dumps(asdict(report))))


def race(store: Store, config: RaceConfig) -> list[dict[str, Any]]:
    """Race ``config.writers`` writers, ``config.readers`` readers and one collector.

    The dataset must exist already (partitioned on ``p``, indexed on ``k``: see
    :func:`race_frame`). Returns one report per process: ``role``, ``ops``, ``counts``,
    ``violations`` (missing blobs met where the contract forbids them), ``errors``
    (anything unexpected), ``committed`` (writers: version, kind and tag of each commit)
    and ``max_seconds`` (the slowest operation).
    """
    roles = (
        [("writer", i) for i in range(config.writers)]
        + [("reader", i) for i in range(config.readers)]
        + [("gc", 0)]
    )
    outcomes = run_in_processes(
        _run_role,
        [(store, config, role, ident) for role, ident in roles],
        timeout=config.seconds + 240,
    )
    return [json.loads(outcomes[key]) for key in sorted(outcomes)]
