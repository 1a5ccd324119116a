"""Root pytest configuration: doctest namespace and shared options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataset_kit as dk


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update({"dk": dk, "pd": pd, "pa": pa, "np": np})
