"""Azurite helpers for the ``--azurite`` workloads (untimed setup and checks only).

Each measurement (child process) starts its own in-memory Azurite
(``dataset_kit.testing.azurite.azurite_server``) and fills a container here from a local
base dataset.
"""

from __future__ import annotations

import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

UPLOAD_THREADS = 8


def container_name(*parts: str) -> str:
    """A fresh, valid container name (lowercase letters, digits, single hyphens)."""
    stem = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:40]
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def _container(connection_string: str, name: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string)
    return service.get_container_client(name)


def upload_tree(root: str, connection_string: str, name: str) -> int:
    """Create container ``name`` and upload every file under ``root`` (blob name = the
    relative path; files whose name starts with '.' are skipped). Returns the count."""
    container = _container(connection_string, name)
    container.create_container()
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [os.path.join(directory, n) for n in names if not n.startswith(".")]

    def upload(path: str) -> None:
        blob = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, "rb") as fh:
            container.upload_blob(blob, fh.read(), overwrite=True)

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(upload, files))
    return len(files)


def count_blobs(connection_string: str, name: str, suffix: str = ".parquet") -> int:
    """Blobs in container ``name`` whose name ends with ``suffix``."""
    container = _container(connection_string, name)
    return sum(1 for blob in container.list_blob_names() if blob.endswith(suffix))
