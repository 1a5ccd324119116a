"""Root pytest configuration: doctest namespace and shared options."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk

# Loaded before pytest collects the package's modules for their doctests: importing a
# module file that is not loaded yet (--import-mode=importlib) sets it as an attribute
# of its package, and dataset_kit.pipelines.backup / .repartition would then shadow the
# functions of those names (``dk.pipelines.backup(...)``: "'module' object is not
# callable") whenever no test module had imported the pipelines first.
import dataset_kit.pipelines


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update({"dk": dk, "pd": pd, "pa": pa, "np": np})


@pytest.fixture(autouse=True)
def _doctest_temp_files(request: pytest.FixtureRequest) -> Iterator[None]:
    """Examples make their scratch space with ``tempfile.mkdtemp()`` as a user would; in
    the suite it lands in the test's own directory, which pytest removes. (Only doctests
    ask for ``tmp_path``: an autouse ``monkeypatch`` would be set up before every other
    fixture and so undone after them, while their teardown may need the environment
    restored.)"""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    saved = tempfile.tempdir
    tempfile.tempdir = str(request.getfixturevalue("tmp_path"))
    try:
        yield
    finally:
        tempfile.tempdir = saved
