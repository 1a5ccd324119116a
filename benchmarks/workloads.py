"""Workload catalogue and the benchmark parameters shared by parent and children.

A workload is measured for each of its *entries*: a contender name, or
``contender:variant`` when one library is measured in several ways (W8-W10: on a
cluster or on threads, a loop with one or two threads, ...).

An Azurite workload ``K`` also exists as ``K-rtt<N>`` (see :func:`workload`): the same
setup, entries, checks and targets, but the timed operation talks to Azurite through a
proxy that adds an N ms network round trip (:mod:`benchmarks.latency_proxy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: The contenders of the classic workloads W1-W7, in report order.
CLASSIC = ("dataset_kit", "pyarrow", "deltalake", "plateau")


@dataclass(frozen=True)
class Workload:
    """One measured operation.

    ``base`` names the dataset it starts from (built once per contender, untimed),
    ``entries`` what is measured, ``azurite`` whether it needs ``--azurite``, ``rtt_ms``
    the round trip the latency proxy adds to the timed operation (None: no proxy).
    """

    key: str
    title: str
    base: str | None = None
    entries: tuple[str, ...] = CLASSIC
    azurite: bool = False
    rtt_ms: float | None = None

    @property
    def plain(self) -> str:
        """The key without its ``-rtt<N>`` suffix."""
        return split_rtt(self.key)[0]

    @property
    def pipeline(self) -> bool:
        """W8-W10: reported with variants and notes."""
        return self.entries != CLASSIC


_BACKUP = ("dataset_kit", "naive:full")
_BACKUP_INCR = ("dataset_kit", "naive:full", "naive:missing")
_BACKUP_LOCAL = ("dataset_kit", "dataset_kit:link", "naive:full")
_BACKUP_LOCAL_INCR = ("dataset_kit", "dataset_kit:link", "naive:full", "naive:missing")

WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload("W1", "write {rows:,} rows partitioned on date ({dates} partitions)"),
        Workload("W2", "full read to pandas ({rows:,} rows)", base="W1"),
        Workload("W3", "selective read: one date and store_id in 3 values", base="W1"),
        Workload("W4", "append one date ({append_rows:,} rows) to the W1 dataset", base="W1"),
        Workload("W5-write", "write {w5_rows:,} rows into {w5_partitions:,} partitions"),
        Workload("W5-open", "open the {w5_partitions:,}-partition dataset", base="W5-write"),
        Workload(
            "W5-read", "read one of {w5_partitions:,} partitions by predicate", base="W5-write"
        ),
        Workload(
            "W6",
            "repartition the W1 dataset ({rows:,} rows) from date to store_id (100 partitions)",
            base="W1",
            entries=(
                "dataset_kit:cluster",
                "dataset_kit:cluster-p2p",
                "pyarrow:dask",
                "plateau:cluster",
                "pyarrow:stream",
                "deltalake:stream",
            ),
        ),
        Workload(
            "W7",
            "garbage collection of {w7_blobs:,} unreferenced blobs, listing the dataset "
            "(finds the orphans of failed writers too)",
        ),
        Workload(
            "W7-lite",
            "garbage collection of the same {w7_blobs:,} blobs from the metadata alone "
            "(no listing: deltalake's default vacuum)",
        ),
        Workload(
            "W8",
            "per-partition compute (revenue = sales * price, filter) over {w8_partitions:,} "
            "partitions x {w8_rows_per_partition:,} rows into a new dataset",
            base="W8-base",
            entries=(
                "dataset_kit:cluster",
                "dataset_kit:threads",
                "pyarrow:loop",
                "pyarrow:loop2",
                "pyarrow:loop2-strdict",
                "plateau:cluster",
                "plateau:threads",
            ),
        ),
        Workload(
            "W9-local",
            "GC of {w9_blobs:,} unreferenced blobs, local store",
            base="W9-base",
            entries=("dataset_kit", "plateau", "deltalake"),
        ),
        Workload(
            "W9-azure",
            "GC of {w9_azure_blobs:,} unreferenced blobs, Azurite",
            base="W9-azure-base",
            entries=("dataset_kit", "plateau"),
            azurite=True,
        ),
        Workload(
            "W10-local",
            "backup of a {w10_partitions:,}-partition dataset, local -> local",
            base="W10-base",
            entries=_BACKUP_LOCAL,
        ),
        Workload(
            "W10-local-incr",
            "incremental backup after appending 1 partition, local -> local",
            base="W10-base",
            entries=_BACKUP_LOCAL_INCR,
        ),
        Workload(
            "W10-azure",
            "backup of a {w10_partitions:,}-partition dataset, local -> Azurite",
            base="W10-base",
            entries=_BACKUP,
            azurite=True,
        ),
        Workload(
            "W10-azure-azure",
            "backup of a {w10_partitions:,}-partition dataset, Azurite -> another container "
            "of the same account",
            base="W10-base",
            entries=_BACKUP,
            azurite=True,
        ),
        Workload(
            "W10-azure-incr",
            "incremental backup after appending 1 partition, local -> Azurite",
            base="W10-base",
            entries=_BACKUP_INCR,
            azurite=True,
        ),
    )
}
GROUPS: dict[str, list[str]] = {
    "W5": ["W5-write", "W5-open", "W5-read"],
    "W7": ["W7", "W7-lite"],
    "W9": ["W9-local", "W9-azure"],
    "W10": ["W10-local", "W10-local-incr", "W10-azure", "W10-azure-azure", "W10-azure-incr"],
}

#: What the variants of an entry mean (used in the report).
VARIANTS: dict[str, str] = {
    "cluster": "2-worker LocalCluster, 1 thread each",
    "cluster-p2p": "2-worker LocalCluster, 1 thread each, shuffle_method='p2p'",
    "threads": "local threaded scheduler",
    "loop": "fragment loop, 1 thread",
    "loop2": "fragment loop, ThreadPool(2)",
    "loop2-strdict": "fragment loop, ThreadPool(2), dictionary encoding for strings only",
    "dask": "raw dask.dataframe: read_parquet -> shuffle(store_id) -> "
    "to_parquet(partition_on), 2-worker LocalCluster",
    "stream": "single process, streaming rewrite (scanner -> partitioned writer)",
    "full": "sequential get/put of every blob",
    "link": "link=True: hard links to the source's files (one file system)",
    "missing": "sequential get/put of the data blobs the target lacks, plus the metadata",
}


@dataclass(frozen=True)
class Target:
    """An issue target: ``peer`` median / ``entry`` median must be >= ``at_least``."""

    key: str
    entry: str
    peer: str
    at_least: float | None
    goal: str


_W8_GOAL = "dataset_kit within 1.3x of the loop"
TARGETS: tuple[Target, ...] = (
    Target("W6", "dataset_kit:cluster", "pyarrow:dask", 2.0, ">= 2x faster than raw dask"),
    Target("W6", "dataset_kit:cluster", "plateau:cluster", 2.0, ">= 2x faster than plateau"),
    Target("W6", "dataset_kit:cluster", "pyarrow:stream", None, "(on the way to beating it)"),
    Target("W6", "dataset_kit:cluster", "deltalake:stream", None, "(on the way to beating it)"),
    Target("W8", "dataset_kit:cluster", "pyarrow:loop2", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:cluster", "pyarrow:loop", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:cluster", "pyarrow:loop2-strdict", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:threads", "pyarrow:loop2", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:threads", "pyarrow:loop", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:threads", "pyarrow:loop2-strdict", 1 / 1.3, _W8_GOAL),
    Target("W8", "dataset_kit:cluster", "plateau:cluster", None, "(no target)"),
    Target("W9-local", "dataset_kit", "plateau", 5.0, ">= 5x faster than plateau"),
    Target("W9-local", "dataset_kit", "deltalake", None, "(no target)"),
    Target("W9-azure", "dataset_kit", "plateau", 5.0, ">= 5x faster than plateau"),
    Target("W10-local", "dataset_kit", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target("W10-local", "dataset_kit:link", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target("W10-azure", "dataset_kit", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target("W10-azure-azure", "dataset_kit", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target("W10-local-incr", "dataset_kit", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target(
        "W10-local-incr", "dataset_kit:link", "naive:full", 5.0, ">= 5x faster than the naive copy"
    ),
    Target("W10-local-incr", "dataset_kit", "naive:missing", None, "(no target)"),
    Target("W10-azure-incr", "dataset_kit", "naive:full", 5.0, ">= 5x faster than the naive copy"),
    Target("W10-azure-incr", "dataset_kit", "naive:missing", None, "(no target)"),
)


_RTT = "-rtt"
#: Round trips a new connection through the latency proxy waits before its first request
#: reaches Azurite: TCP's handshake plus TLS 1.3's (real Azure is HTTPS; Azurite here is
#: plain HTTP, so the handshakes are modelled by the proxy).
CONNECT_RTTS = 2.0


def rtt_key(key: str, rtt_ms: float) -> str:
    """``("W9-azure", 20)`` -> ``"W9-azure-rtt20"``."""
    return f"{key}{_RTT}{rtt_ms:g}"


def split_rtt(key: str) -> tuple[str, float | None]:
    """``"W9-azure-rtt20"`` -> ``("W9-azure", 20.0)``; any other key -> ``(key, None)``."""
    plain, sep, ms = key.rpartition(_RTT)
    if not sep or plain not in WORKLOADS or not WORKLOADS[plain].azurite:
        return key, None
    try:
        rtt = float(ms)
    except ValueError:
        return key, None
    return (plain, rtt) if rtt >= 0 and rtt_key(plain, rtt) == key else (key, None)


def workload(key: str) -> Workload:
    """The workload ``key``, including the ``-rtt<N>`` variants of the Azurite workloads.

    Raises
    ------
    KeyError
        If there is no such workload.
    """
    plain, rtt = split_rtt(key)
    found = WORKLOADS[plain]
    if rtt is None:
        return found
    title = f"{found.title}, through a {rtt:g} ms round-trip latency proxy"
    return replace(found, key=key, title=title, rtt_ms=rtt)


def with_rtts(keys: list[str], rtts: list[float]) -> list[str]:
    """``keys`` with, after each Azurite workload, its ``-rtt<N>`` variants for ``rtts``."""
    out: list[str] = []
    for key in keys:
        out.append(key)
        if workload(key).azurite and workload(key).rtt_ms is None:
            out += [rtt_key(key, rtt) for rtt in rtts if rtt_key(key, rtt) not in keys]
    return list(dict.fromkeys(out))


def targets_for(keys: list[str]) -> list[Target]:
    """The issue targets of ``keys``; a ``-rtt<N>`` variant has those of its workload."""
    return [replace(t, key=key) for key in keys for t in TARGETS if t.key == split_rtt(key)[0]]


def split_entry(entry: str) -> tuple[str, str]:
    """``"dataset_kit:cluster"`` -> ``("dataset_kit", "cluster")``; no variant -> ``""``."""
    contender, _, variant = entry.partition(":")
    return contender, variant


def expand(selection: str) -> list[str]:
    """Turn "W1,W5" into workload keys in canonical order (a ``-rtt<N>`` variant follows
    its workload)."""
    wanted: set[str] = set()
    for item in (s.strip() for s in selection.split(",")):
        if not item:
            continue
        if item.lower() == "all":
            wanted.update(WORKLOADS)
        elif item.upper() in GROUPS:
            wanted.update(GROUPS[item.upper()])
        elif item.upper() in WORKLOADS or item in WORKLOADS:
            wanted.add(item if item in WORKLOADS else item.upper())
        elif split_rtt(item)[1] is not None:
            wanted.add(item)
        else:
            groups = ", ".join(GROUPS)
            raise ValueError(
                f"unknown workload {item!r}; known: {', '.join(WORKLOADS)}, {groups} "
                f"(and <Azurite workload>{_RTT}<ms>)"
            )
    order = list(WORKLOADS)
    return sorted(wanted, key=lambda k: (order.index(split_rtt(k)[0]), split_rtt(k)[1] or -1.0))


@dataclass
class Params:
    """Sizes, query values and input files; serialised into every child spec."""

    rows: int
    append_rows: int
    w5_partitions: int
    w5_rows_per_partition: int
    w7_blobs: int
    w7_rows_per_blob: int
    w3_date: str
    w3_store_ids: list[int]
    w5_predicate: list[list[tuple[str, str, Any]]]
    inputs: dict[str, str] = field(default_factory=dict)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    w8_partitions: int = 200
    w8_rows_per_partition: int = 50_000
    w9_blobs: int = 10_000
    w9_azure_blobs: int = 2_000
    w10_partitions: int = 1_000
    w10_rows_per_partition: int = 1_000

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Params:
        """Inverse of :meth:`to_json` (restores predicate tuples)."""
        raw = dict(raw)
        raw["w5_predicate"] = [[tuple(term) for term in conj] for conj in raw["w5_predicate"]]
        return cls(**raw)

    def expected_for(self, key: str, entry: str) -> dict[str, Any]:
        """Expected check values of ``key``, with the overrides of ``key/entry`` if any
        (a ``-rtt<N>`` variant expects what its workload does)."""
        key = split_rtt(key)[0]
        return {**self.expected.get(key, {}), **self.expected.get(f"{key}/{entry}", {})}

    def title(self, key: str, dates: int) -> str:
        """Human title of workload ``key`` with the sizes filled in."""
        return workload(key).title.format(
            rows=self.rows,
            dates=dates,
            append_rows=self.append_rows,
            w5_rows=self.w5_partitions * self.w5_rows_per_partition,
            w5_partitions=self.w5_partitions,
            w7_blobs=self.w7_blobs,
            w8_partitions=self.w8_partitions,
            w8_rows_per_partition=self.w8_rows_per_partition,
            w9_blobs=self.w9_blobs,
            w9_azure_blobs=self.w9_azure_blobs,
            w10_partitions=self.w10_partitions,
        )
