"""Root pytest configuration: doctest namespace and shared options."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update({"dk": dk, "pd": pd, "pa": pa, "np": np})


@pytest.fixture(autouse=True)
def _doctest_temp_files(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Examples make their scratch space with ``tempfile.mkdtemp()`` as a user would; in
    the suite it lands in the test's own directory, which pytest removes."""
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
