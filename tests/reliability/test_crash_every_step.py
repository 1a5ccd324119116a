"""Kill -9 a writer after each of its store calls: the dataset opens at the old or the new
version, never broken, and a following GC leaves exactly the referenced blobs.

Every operation is run once per crash point (n = 1, 2, ... mutating store calls) in a
forked child that SIGKILLs itself; the checks run in the parent on what the child left.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import DatasetNotFoundError
from dataset_kit.io import gc as _gc
from dataset_kit.io.commit import iter_snapshots
from dataset_kit.store import LocalStore, Store
from dataset_kit.testing.crash import crash_points

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

UUID = "ds"


def frame(*parts: int, tag: str = "a") -> pd.DataFrame:
    return pd.DataFrame(
        {"p": list(parts), "x": [float(p) for p in parts], "sku": [f"{tag}{p}" for p in parts]}
    )


def content(store: Store, uuid: str = UUID, version: int | None = None) -> pd.DataFrame | None:
    try:
        df = dk.read_table(store=store, dataset_uuid=uuid, version=version)
    except DatasetNotFoundError:
        return None
    return df.sort_values(["p", "sku"]).reset_index(drop=True)


def same(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool((a.astype(str).values == b.astype(str).values).all())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    store = LocalStore(root)
    dk.write_dataset(
        frame(1, 2), store=store, dataset_uuid=UUID, partition_on="p", secondary_indices="sku"
    )
    dk.update_dataset(frame(3), store=store, dataset_uuid=UUID)
    # "g": a dataset with garbage (its first version's blobs once that version expires)
    dk.write_dataset(frame(1, 2, 3), store=store, dataset_uuid="g", partition_on="p")
    dk.write_dataset(frame(4), store=store, dataset_uuid="g", partition_on="p", mode="overwrite")
    return root


def expire_and_collect(store: Store) -> None:
    dk.expire_versions(store=store, dataset_uuid="g", keep_versions=1)
    dk.garbage_collect(store=store, dataset_uuid="g", grace_period=0, keep_versions=1)


def check_after_gc(store: LocalStore, uuid: str) -> None:
    """A GC keeping every version leaves exactly the referenced blobs, all readable."""
    try:
        dk.garbage_collect(store=store, dataset_uuid=uuid, grace_period=0)
    except DatasetNotFoundError:  # nothing of the dataset was ever written
        assert not list(store.iter_keys(naming.dataset_prefix(uuid)))
        return
    blobs = {
        k
        for k in store.iter_keys(naming.dataset_prefix(uuid))
        if k.endswith(".parquet") and not k.endswith("_common_metadata")
    }
    if content(store, uuid) is None:  # deleted, or never committed: nothing may remain
        assert not blobs, blobs
        return
    referenced: set[str] = set()
    for meta in iter_snapshots(store, uuid, strict=True):
        referenced.update(_gc.references(meta))
    assert blobs == referenced, (blobs - referenced, referenced - blobs)
    versions = dk.open_dataset(store=store, dataset_uuid=uuid).versions()
    for version in [v["version"] for v in versions]:
        assert content(store, uuid, version) is not None  # every version reads whole
    assert dk.pipelines.verify(uuid, store=store, versions="all").compute(scheduler="sync").ok


OPERATIONS: dict[str, tuple[Callable[[Store], Any], str]] = {
    "append": (lambda s: dk.update_dataset(frame(4, 5, tag="n"), store=s, dataset_uuid=UUID), UUID),
    "overwrite": (
        lambda s: dk.write_dataset(
            frame(7, 8, tag="o"),
            store=s,
            dataset_uuid=UUID,
            partition_on="p",
            secondary_indices="sku",
            mode="overwrite",
        ),
        UUID,
    ),
    "delete_scope": (
        lambda s: dk.update_dataset(store=s, dataset_uuid=UUID, delete_scope=[{"p": 1}]),
        UUID,
    ),
    "delete_dataset": (lambda s: dk.delete_dataset(store=s, dataset_uuid=UUID), UUID),
    "write_new": (
        lambda s: dk.write_dataset(
            frame(1, 2, 3, tag="w"),
            store=s,
            dataset_uuid="new",
            partition_on="p",
            secondary_indices="sku",
        ),
        "new",
    ),
    "build_index": (
        lambda s: dk.build_dataset_indices(store=s, dataset_uuid=UUID, columns="x"),
        UUID,
    ),
    "gc": (expire_and_collect, "g"),
    "backup": (
        lambda s: dk.pipelines.backup(
            UUID, source=s, target=s, target_uuid="copy", batch_size=1
        ).compute(scheduler="sync"),
        "copy",
    ),
    "map_partitions": (
        lambda s: dk.pipelines.map_partitions(
            lambda f: f.assign(x=f["x"] * 2),
            source=UUID,
            target="new",
            store=s,
            partition_on="p",
        ).compute(scheduler="sync"),
        "new",
    ),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_crash_at_every_step(name: str, base: Path, tmp_path: Path) -> None:
    operation, uuid = OPERATIONS[name]
    counter = iter(range(10_000))

    def fresh() -> LocalStore:
        target = tmp_path / f"run{next(counter)}"
        shutil.copytree(base, target)
        return LocalStore(target)

    before = content(LocalStore(base), uuid)
    clean = fresh()
    operation(clean)
    after = content(clean, uuid)  # what an uninterrupted run leaves
    crashes = 0
    for n, store, completed in crash_points(operation, fresh):
        assert isinstance(store, LocalStore)
        now = content(store, uuid)
        assert same(now, before) or same(now, after), f"{name}: broken state after call {n}"
        if completed:
            assert same(now, after)
        else:
            crashes += 1
            if name == "backup":  # a torn backup resumes: running it again completes it
                operation(store)
                assert same(content(store, uuid), after)
        check_after_gc(store, uuid)
    assert crashes >= 3, f"{name}: only {crashes} crash points"
    print(f"crash-every-step {name}: {crashes} crash points, every one old-or-new and GC-clean")
