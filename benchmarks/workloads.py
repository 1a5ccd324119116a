"""Workload catalogue and the benchmark parameters shared by parent and children."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Workload:
    """One measured operation; ``base`` names the dataset it starts from."""

    key: str
    title: str
    base: str | None = None


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
        Workload("W7", "garbage collection of {w7_blobs:,} unreferenced blobs"),
    )
}
GROUPS: dict[str, list[str]] = {"W5": ["W5-write", "W5-open", "W5-read"]}


def expand(selection: str) -> list[str]:
    """Turn "W1,W5" into workload keys in canonical order."""
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
        else:
            raise ValueError(f"unknown workload {item!r}; known: {', '.join(WORKLOADS)}, W5")
    return [key for key in WORKLOADS if key in wanted]


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

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Params:
        """Inverse of :meth:`to_json` (restores predicate tuples)."""
        raw = dict(raw)
        raw["w5_predicate"] = [[tuple(term) for term in conj] for conj in raw["w5_predicate"]]
        return cls(**raw)

    def title(self, key: str, dates: int) -> str:
        """Human title of workload ``key`` with the sizes filled in."""
        return WORKLOADS[key].title.format(
            rows=self.rows,
            dates=dates,
            append_rows=self.append_rows,
            w5_rows=self.w5_partitions * self.w5_rows_per_partition,
            w5_partitions=self.w5_partitions,
            w7_blobs=self.w7_blobs,
        )
