"""Blob stores: bytes under ``/``-separated keys, with the conditional writes commits need.

:func:`open_store` turns a URL, a path, a store object or a factory into a :class:`Store`.
Backends: :class:`LocalStore` (a directory tree, the default), :class:`MemoryStore`
(in-process, shared by name), :class:`KVStoreAdapter` (any simplekv/minimalkv store) and
:class:`FaultInjectingStore` (a wrapper that injects failures, for tests);
:class:`DelegatingStore` is the base for such wrappers; :class:`RetryingStore` retries
transient failures of idempotent operations.
"""

from dataset_kit.store._base import (
    BlobInfo,
    Capability,
    DeleteReport,
    Store,
    delete_many_on,
    validate_key,
)
from dataset_kit.store._factory import open_store
from dataset_kit.store.counting import CountingStore
from dataset_kit.store.delegate import DelegatingStore
from dataset_kit.store.faults import FaultInjectingStore
from dataset_kit.store.kv import KVStoreAdapter
from dataset_kit.store.local import LocalStore
from dataset_kit.store.memory import MemoryStore
from dataset_kit.store.retry import RetryingStore

__all__ = [
    "BlobInfo",
    "Capability",
    "CountingStore",
    "DelegatingStore",
    "DeleteReport",
    "FaultInjectingStore",
    "KVStoreAdapter",
    "LocalStore",
    "MemoryStore",
    "RetryingStore",
    "Store",
    "delete_many_on",
    "open_store",
    "validate_key",
]
