"""Fixtures of the pipeline tests: a real PostgreSQL server for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dataset_kit.testing.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL (with its generated password) of a throwaway PostgreSQL for the session.

    Needs PostgreSQL's server binaries (Debian: ``apt-get install postgresql``); a machine
    without them fails here on purpose, with a message saying so.
    """
    with postgres_server(settings=["max_connections=50"]) as url:
        yield url
