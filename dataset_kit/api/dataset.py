"""A read-only handle on one version of a dataset, for notebooks and tools."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dataset_kit.core.metadata import DatasetMetadata
from dataset_kit.exceptions import DatasetKitError, InvalidInputError
from dataset_kit.io import commit as _commit
from dataset_kit.io import read as _read
from dataset_kit.store import Store, open_store

__all__ = ["Dataset", "open_dataset"]


def _total_rows(meta: DatasetMetadata) -> int | None:
    """A version's rows, if every partition's count is recorded (None otherwise)."""
    if len(meta.stats) != len(meta.partitions):
        return None
    return sum(r for r, _ in meta.stats.values())


class Dataset:
    """One version of a dataset: metadata, figures and reads pinned to that version.

    Obtain it with :func:`open_dataset`.
    """

    def __init__(self, store: Store, meta: DatasetMetadata) -> None:
        self.store = store
        self.meta = meta

    @property
    def uuid(self) -> str:
        """The dataset uuid."""
        return self.meta.uuid

    @property
    def version(self) -> int | None:
        """The version this handle reads (None: written by another tool, not yet adopted)."""
        return self.meta.version

    @property
    def schema(self) -> pa.Schema:
        """The exact logical schema."""
        return _read.logical_schema(self.meta)

    @property
    def partition_keys(self) -> tuple[str, ...]:
        """Partition columns."""
        return self.meta.partition_keys

    @property
    def secondary_indices(self) -> tuple[str, ...]:
        """Columns with a secondary index."""
        return self.meta.secondary_indices

    @property
    def num_partitions(self) -> int:
        """Number of partitions (data blobs)."""
        return self.meta.num_partitions

    @property
    def num_rows(self) -> int | None:
        """Total rows, if every partition's count is recorded (None otherwise)."""
        return _total_rows(self.meta)

    @property
    def nbytes(self) -> int | None:
        """Total size of the data blobs, if recorded (None otherwise)."""
        if len(self.meta.stats) != len(self.meta.partitions):
            return None
        return sum(b for _, b in self.meta.stats.values())

    def versions(self) -> list[dict[str, Any]]:
        """The retained versions of the current history, oldest first, with commit info.

        Each entry has the commit's fields (``operation``, ``timestamp``, ``id``, ...),
        then ``version``, ``partitions`` and ``rows`` of that version as :meth:`info`
        counts them (``rows`` None if not recorded), and ``rows_added``: the rows its
        commit wrote (None if it did not say).
        """
        out = []
        for m in _commit.iter_snapshots(self.store, self.uuid):
            entry = dict(m.commit)
            entry["rows_added"] = entry.pop("rows", None)
            entry.update(version=m.version, partitions=m.num_partitions, rows=_total_rows(m))
            out.append(entry)
        return out

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary: version, partitions, rows, bytes, schema, indices."""
        return {
            "uuid": self.uuid,
            "version": self.version,
            "partition_keys": list(self.partition_keys),
            "secondary_indices": list(self.secondary_indices),
            "partitions": self.num_partitions,
            "rows": self.num_rows,
            "bytes": self.nbytes,
            "schema": {f.name: str(f.type) for f in self.schema},
            "metadata": dict(self.meta.metadata),
            "commit": dict(self.meta.commit),
        }

    def read_table(
        self,
        *,
        columns: Sequence[str] | None = None,
        predicates: Any = None,
        output: str = "pandas",
    ) -> Any:
        """Read this version (see :func:`dataset_kit.read_table`)."""
        from dataset_kit.api.eager import _finish

        plan = _read.plan_read(self.store, self.meta, columns=columns, predicates=predicates)
        table = _read.concat(plan, _read.read_partitions(self.store, plan))
        return _finish(plan, table, output, None)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"<Dataset {self.uuid!r} version={self.version} partitions={self.num_partitions} "
            f"rows={self.num_rows}>"
        )

    def partition_sizes(self) -> list[tuple[str, int, int]]:
        """``(label, rows, bytes)`` of every partition whose figures are recorded."""
        return [
            (label, *self.meta.stats[label])
            for label in self.meta.partitions
            if label in self.meta.stats
        ]

    def _recent_versions(self, limit: int) -> tuple[int, list[DatasetMetadata]]:
        """How many versions are retained, and the newest ``limit`` of them (newest first)."""
        start = self.meta.history_start
        versions = [
            v for v in _commit.snapshot_versions(self.store, self.uuid, expired=False) if v >= start
        ]
        if self.version is not None:
            versions = [v for v in versions if v <= self.version]
        recent = []
        for v in reversed(versions[-limit:]):
            if v == self.version:
                recent.append(self.meta)
                continue
            try:
                recent.append(_commit.load_version(self.store, self.uuid, v))
            except DatasetKitError:  # expired meanwhile, unreadable: not shown
                continue
        return len(versions), recent

    def _repr_html_(self) -> str:
        """Jupyter's view: figures, partition-size spread, recent versions and the schema."""
        esc = html.escape
        rows, nbytes = self.num_rows, self.nbytes
        keys, indices = set(self.partition_keys), set(self.secondary_indices)
        out = [
            '<div class="dataset-kit-dataset">',
            f"<strong>Dataset</strong> <code>{esc(self.uuid)}</code> "
            f"version <strong>{esc(str(self.version))}</strong>",
            "<table>",
            _row("partitions", f"{self.num_partitions:,}"),
            _row("rows", "unknown" if rows is None else f"{rows:,}"),
            _row("bytes", "unknown" if nbytes is None else _human_bytes(nbytes)),
            _row("partitioned on", ", ".join(self.partition_keys) or "(not partitioned)"),
        ]
        if indices:
            out.append(_row("secondary indices", ", ".join(self.secondary_indices)))
        sizes = sorted(r for _, r, _ in self.partition_sizes())
        if sizes:
            spread = f"min {sizes[0]:,} / median {sizes[len(sizes) // 2]:,} / max {sizes[-1]:,}"
            out.append(_row("rows per file", spread))
        out.append("</table>")
        try:
            total, recent = self._recent_versions(5)
        except DatasetKitError:  # pragma: no cover - store unreachable: show the rest
            total, recent = 0, []
        if recent:
            out.append(f"<details><summary>versions ({total} retained)</summary><table>")
            out.append(
                "<tr><th>version</th><th>operation</th><th>time</th><th>partitions</th></tr>"
            )
            for m in recent:
                out.append(
                    "<tr>"
                    + "".join(
                        f"<td>{esc(str(x))}</td>"
                        for x in (
                            m.version,
                            m.commit.get("operation", ""),
                            m.commit.get("timestamp", ""),
                            m.num_partitions,
                        )
                    )
                    + "</tr>"
                )
            out.append("</table></details>")
        out.append(f"<details><summary>schema ({len(self.schema)} columns)</summary><table>")
        out.append("<tr><th>column</th><th>type</th><th>role</th></tr>")
        for f in self.schema:
            role = "partition" if f.name in keys else "indexed" if f.name in indices else ""
            out.append(
                f"<tr><td>{esc(f.name)}</td><td><code>{esc(str(f.type))}</code></td>"
                f"<td>{role}</td></tr>"
            )
        out.append("</table></details></div>")
        return "\n".join(out)

    def plot_partition_sizes(self, *, by: str = "rows", bins: int = 30, ax: Any = None) -> Any:
        """A histogram of the partitions' sizes, to see imbalance at a glance.

        Needs matplotlib (``pip install 'dataset-kit[plot]'``).

        Parameters
        ----------
        by
            ``"rows"`` or ``"bytes"``.
        bins
            Histogram bins.
        ax
            A matplotlib ``Axes`` to draw on (None: a new figure).

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        InvalidInputError
            For an unknown ``by``.
        ImportError
            Without matplotlib.
        """
        if by not in ("rows", "bytes"):
            raise InvalidInputError(f"by must be 'rows' or 'bytes', got {by!r}")
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError(
                "plot_partition_sizes needs matplotlib: pip install 'dataset-kit[plot]'"
            ) from exc
        values = [r if by == "rows" else b for _, r, b in self.partition_sizes()]
        if ax is None:
            _, ax = plt.subplots()
        ax.hist(values, bins=bins)
        ax.set_xlabel(f"{by} per partition file")
        ax.set_ylabel("files")
        ax.set_title(f"{self.uuid} v{self.version}: {len(values)} files")
        return ax


def _row(name: str, value: str) -> str:
    name, value = html.escape(name), html.escape(value)
    return f"<tr><th style='text-align:left'>{name}</th><td>{value}</td></tr>"


def _human_bytes(n: int) -> str:
    """A byte count for people.

    Examples
    --------
    >>> _human_bytes(1536)
    '1.5 KiB'
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def open_dataset(*, store: Any, dataset_uuid: str, version: int | None = None) -> Dataset:
    """Open a dataset (the newest version, or ``version``) for inspection and reads.

    Raises
    ------
    DatasetNotFoundError, VersionNotFoundError, MetadataFormatError

    Examples
    --------
    >>> import pandas as pd, dataset_kit as dk
    >>> store = dk.open_store("memory://")
    >>> _ = dk.write_dataset(pd.DataFrame({"a": [1, 2]}), store=store, dataset_uuid="d")
    >>> ds = dk.open_dataset(store=store, dataset_uuid="d")
    >>> ds.version, ds.num_rows
    (0, 2)
    """
    kv = open_store(store)
    return Dataset(kv, _commit.load_version(kv, dataset_uuid, version))
