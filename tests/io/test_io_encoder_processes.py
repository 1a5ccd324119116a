"""dataset_kit.io.encoder_processes: helper processes for writes of many small partitions.

Real subprocesses throughout; failures are injected by handing a helper a configuration
that cannot work (a store root that is a file, a Python that does not exist).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import StoreError
from dataset_kit.io import encoder_processes as ep
from dataset_kit.io.write import BlobWriter, WriteOptions, WrittenPartition
from dataset_kit.store import LocalStore


def _helpers_alive() -> list[int]:
    """Pids of this process's children that run the helper entry point."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == me and b"_encoder_main" in cmd:
            found.append(int(entry))
    return found


def _frame(n: int, rows: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame(
        {
            "p": np.repeat(np.arange(n), rows),
            "x": rng.random(n * rows),
            "s": [f"v{i % 11}" for i in range(n * rows)],
        }
    )
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)  # unsorted input


def _writer(store: LocalStore, uuid: str = "h") -> BlobWriter:
    return BlobWriter(store, uuid, naming.DEFAULT_TABLE, ("p",), WriteOptions(), None, (), [])


def _groups(n: int, rows: int) -> tuple[pa.Table, list[tuple[list[str], int, int]]]:
    payload = pa.table({"x": np.arange(n * rows, dtype=float)})
    return payload, [([str(i)], i * rows, (i + 1) * rows) for i in range(n)]


# --------------------------------------------------------------------------- helper_count
def test_helper_count_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ep.ENV_VAR, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert ep.helper_count(ep.MIN_GROUPS) == ep.DEFAULT_MAX
    assert ep.helper_count(ep.MIN_GROUPS - 1) == 0
    assert ep.helper_count(ep.MIN_GROUPS, requested=0) == 0
    assert ep.helper_count(ep.MIN_GROUPS, requested=2) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert ep.helper_count(ep.MIN_GROUPS) == 1
    monkeypatch.setenv(ep.ENV_VAR, "0")
    assert ep.helper_count(ep.MIN_GROUPS) == 0
    monkeypatch.setenv(ep.ENV_VAR, "3")
    assert ep.helper_count(ep.MIN_GROUPS) == 3
    monkeypatch.setenv(ep.ENV_VAR, "many")
    assert ep.helper_count(ep.MIN_GROUPS) == 1  # ignored with a warning
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.delenv(ep.ENV_VAR)
    assert ep.helper_count(ep.MIN_GROUPS, requested=4) == 0


def test_no_helpers_inside_a_daemonic_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dask worker process is daemonic: the cluster already uses every core."""

    class Daemon:
        daemon = True

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    assert ep.helper_count(ep.MIN_GROUPS, requested=2) == 0


# --------------------------------------------------------------------------- write_groups
def test_helpers_write_every_partition_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path)
    payload, groups = _groups(300, 2)
    with caplog.at_level(logging.INFO, logger=ep.__name__):
        written = ep.write_groups(
            payload, groups, writer=_writer(store), processes=2, caller_works=False
        )
    assert "300 of them by 2 helper processes" in caplog.text
    assert [w.label.split("/")[0] for w in written] == [f"p={i}" for i in range(300)]
    for i, w in enumerate(written[::37]):
        got = pa.parquet.read_table(store.local_path(w.key)).column("x").to_pylist()
        assert got == [float(2 * 37 * i), float(2 * 37 * i + 1)]
    assert not _helpers_alive()


def test_a_helper_failing_its_chunks_is_replaced_by_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In the helper's store the dataset's directory is a file, so its writes fail; the
    caller writes the chunks again into the right store, and nothing is lost."""
    store = LocalStore(tmp_path / "lake")
    elsewhere = LocalStore(tmp_path / "broken")
    (tmp_path / "broken" / "h").write_bytes(b"a file where a directory must be")
    payload, groups = _groups(200, 1)
    with caplog.at_level(logging.INFO, logger=ep.__name__):
        written = ep.write_groups(
            payload,
            groups,
            writer=_writer(store),
            helper_writer=_writer(elsewhere),
            processes=1,
            caller_works=False,
        )
    assert "0 of them by 1 helper processes" in caplog.text
    assert len(written) == 200 and all(store.exists(w.key) for w in written)
    assert not _helpers_alive()


def test_a_helper_that_cannot_start_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    monkeypatch.setattr(ep, "_warned", False)
    store = LocalStore(tmp_path / "lake")
    payload, groups = _groups(100, 1)
    with caplog.at_level(logging.WARNING, logger=ep.__name__):
        written = ep.write_groups(payload, groups, writer=_writer(store), processes=2)
    assert "write helper process unavailable" in caplog.text
    assert len(written) == 100 and all(store.exists(w.key) for w in written)


def test_an_error_in_the_callers_chunk_stops_the_helpers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    payload, groups = _groups(2000, 1)
    good = _writer(store)

    class Failing:
        """Fails the caller's first chunk at its fifth partition."""

        def write_many(self, items: Iterable[tuple[list[str], pa.Table]]) -> list[object]:
            out: list[WrittenPartition] = []
            for values, rows in items:
                if len(out) == 4:
                    raise StoreError("disk full (injected)")
                out.append(good.write(values, rows))
            return list(out)

    with pytest.raises(StoreError, match="injected"):
        ep.write_groups(payload, groups, writer=Failing(), helper_writer=good, processes=2)
    assert not _helpers_alive()


# --------------------------------------------------------------------------- through the API
def test_write_dataset_with_helpers_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsorted input, a secondary index and strings: equal to a write without helpers."""
    monkeypatch.setattr(ep, "MIN_GROUPS", 50)
    monkeypatch.setenv(ep.ENV_VAR, "2")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    df = _frame(400)
    with_helpers, without = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    with caplog.at_level(logging.INFO, logger=ep.__name__):
        dk.write_dataset(
            df, store=with_helpers, dataset_uuid="w", partition_on="p", secondary_indices="s"
        )
    assert "wrote 400 partitions" in caplog.text
    monkeypatch.setenv(ep.ENV_VAR, "0")
    dk.write_dataset(df, store=without, dataset_uuid="w", partition_on="p", secondary_indices="s")

    def read(store: LocalStore, **kw: object) -> pd.DataFrame:
        out = dk.read_table(store=store, dataset_uuid="w", **kw)  # type: ignore[arg-type]
        return out.sort_values(["p", "x"], ignore_index=True)

    pd.testing.assert_frame_equal(read(with_helpers), read(without))
    pd.testing.assert_frame_equal(
        read(with_helpers, predicates=[[("s", "==", "v3")]]),
        read(without, predicates=[[("s", "==", "v3")]]),
    )
    expected = df.sort_values(["p", "x"], ignore_index=True)
    pd.testing.assert_frame_equal(read(with_helpers)[list(df.columns)], expected, check_dtype=False)
    assert not _helpers_alive()
