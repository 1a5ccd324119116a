"""Concurrent writers in separate processes, on the local store and on Azurite.

1. 8 processes x 25 appends: every append present exactly once, versions 0..200 strictly
   increasing without gaps, nothing lost.
2. Mixed appends, overwrites and partition deletes: each commits or fails with
   CommitConflictError; every version equals the serial replay of the committed
   operations up to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.store import LocalStore, Store
from dataset_kit.store.azure import AzureBlobStore
from dataset_kit.testing.workers import append_in_processes, mixed_frame, mixed_in_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(params=["local", "azure"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path)
        return
    connection = request.getfixturevalue("azurite")
    container = request.getfixturevalue("container")
    store = AzureBlobStore(container, connection_string=connection, retry_total=3)
    yield store
    store.close()


def history(store: Store, uuid: str) -> list[dict[str, object]]:
    versions = dk.open_dataset(store=store, dataset_uuid=uuid).versions()
    numbers = [v["version"] for v in versions]
    assert numbers == list(range(len(numbers))), "versions must be 0..n without gaps"
    return versions


def test_8_processes_x_25_appends_lose_nothing(shared_store: Store) -> None:
    started = time.monotonic()
    outcomes = append_in_processes(shared_store, "conc", processes=8, appends=25, timeout=600)
    elapsed = time.monotonic() - started
    assert set(outcomes.values()) == {"ok"}, outcomes
    df = dk.read_table(store=shared_store, dataset_uuid="conc")
    assert len(df) == 200 and df["tag"].is_unique
    assert sorted(df["tag"]) == sorted(f"{w}-{i}" for w in range(8) for i in range(25))
    assert len(history(shared_store, "conc")) == 200
    print(f"concurrent appends {type(shared_store).__name__}: 200 commits in {elapsed:.1f} s")


def test_mixed_operations_equal_a_serial_replay(shared_store: Store) -> None:
    uuid = "mixed"
    dk.write_dataset(
        mixed_frame(-1, 0, 0),
        store=shared_store,
        dataset_uuid=uuid,
        partition_on="p",
        metadata={"op": "init"},
    )
    outcomes = mixed_in_processes(shared_store, uuid, processes=6, steps=12)
    ops = [op for text in outcomes.values() for op in json.loads(text)]  # raises on "error:"
    committed = sorted(
        (op for op in ops if op["version"] != "conflict"), key=lambda o: o["version"]
    )
    conflicts = [op for op in ops if op["version"] == "conflict"]
    assert all(op["kind"] != "append" for op in conflicts), "appends must rebase, never conflict"
    assert [op["version"] for op in committed] == list(range(1, len(committed) + 1))

    state = mixed_frame(-1, 0, 0)
    for op in committed:  # replay serially, checking every version on the way
        w, s = (int(x) for x in op["id"].split("-"))
        row = mixed_frame(w, s, op["p"])
        if op["kind"] == "append":
            state = pd.concat([state, row], ignore_index=True)
        elif op["kind"] == "overwrite":
            state = row
        else:
            state = state[state["p"] != op["p"]]
        got = dk.read_table(store=shared_store, dataset_uuid=uuid, version=op["version"])
        meta = dk.open_dataset(store=shared_store, dataset_uuid=uuid, version=op["version"]).meta
        assert meta.metadata["op"] == op["id"]
        assert sorted(got["tag"]) == sorted(state["tag"]), f"version {op['version']} ({op})"
    print(
        f"mixed operations {type(shared_store).__name__}: {len(committed)} committed, "
        f"{len(conflicts)} conflicts, every version equal to the serial replay"
    )
