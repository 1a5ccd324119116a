"""Fixtures shared by test packages: an Azurite server for the session, a fresh container."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dataset_kit.testing.azurite import azurite_server


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """The connection string of an in-memory Azurite running for the whole session.

    ``make test`` installs Azurite; a machine without node/npm fails here on purpose.
    """
    with azurite_server() as connection_string:
        yield connection_string


def _drop_container(connection_string: str, name: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(connection_string, retry_total=1) as service:
        try:
            service.delete_container(name)
        except ResourceNotFoundError:  # the test never used its store
            pass


@pytest.fixture
def container(azurite: str) -> Iterator[str]:
    """A fresh container name, dropped after the test."""
    name = f"dk-{uuid.uuid4().hex[:20]}"
    yield name
    _drop_container(azurite, name)


STORE_KINDS = ["memory", "local", "azure"]


@pytest.fixture(params=STORE_KINDS)
def any_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """The same dataset behaviour on every backend: memory, local directory, Azurite."""
    import dataset_kit as dk

    if request.param == "memory":
        yield dk.open_store("memory://")
    elif request.param == "local":
        yield dk.open_store(str(tmp_path_factory.mktemp("store")))
    else:
        from dataset_kit.store.azure import AzureBlobStore

        connection = request.getfixturevalue("azurite")
        # as a user would configure it, so that the store's URL alone opens it too
        request.getfixturevalue("monkeypatch").setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
        name = f"dk-{uuid.uuid4().hex[:20]}"
        store = AzureBlobStore(name, connection_string=connection, retry_total=2)
        yield store
        store.close()
        _drop_container(connection, name)
