"""``open_store``: one entry point from URLs, paths and objects to a :class:`Store`."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from dataset_kit.exceptions import ConfigError
from dataset_kit.store._base import Store
from dataset_kit.store.kv import KVStoreAdapter, _is_key_value_store, _quiet_unsafe_warning, _redact
from dataset_kit.store.local import LocalStore
from dataset_kit.store.memory import MemoryStore

__all__ = ["open_store"]

_log = logging.getLogger(__name__)

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

#: Backends that live in their own (optional) module: scheme -> "module:function". The
#: function is called as ``function(url, **options)`` and returns a Store. Imported on
#: first use, so a backend can be added without touching this module's logic.
_BACKENDS: dict[str, str] = {
    "azure": "dataset_kit.store.azure:from_url",
}
#: What to say when a registered backend's module does not exist (yet).
_BACKEND_MISSING: dict[str, str] = {
    "azure": (
        "azure:// needs the native Azure backend (dataset_kit.store.azure), which is not "
        "available in this installation; meanwhile hazure:// opens minimalkv's Azure store "
        "(without atomic commits)"
    ),
}

#: Options of the stores built here. ``allow_unsafe_commits`` is accepted everywhere so
#: that generic code can pass it; stores with real conditional writes ignore it.
_LOCAL_OPTIONS = frozenset({"fsync", "create", "allow_unsafe_commits"})
_MEMORY_OPTIONS = frozenset({"allow_unsafe_commits"})
_KV_OPTIONS = frozenset({"allow_unsafe_commits"})

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def open_store(
    store: str | os.PathLike[str] | Store | object | Callable[[], object], **options: Any
) -> Store:
    """Open a :class:`Store` from a URL, a path, a store object or a factory.

    Parameters
    ----------
    store
        One of:

        * a :class:`Store`: returned as is (``options`` must be empty);
        * ``file:///abs/path``, a plain absolute or relative path, or an ``os.PathLike``:
          a :class:`LocalStore` (relative paths resolve against the current directory);
        * ``hfs:///abs/path`` or ``fs://path`` (simplekv/minimalkv/storefact filesystem
          URLs): a :class:`LocalStore` over the same files, with safe commits;
        * ``memory://``: a new :class:`MemoryStore` with a unique name;
          ``memory://name`` or ``hmemory://name``: the named, process-wide
          :class:`MemoryStore` (unlike minimalkv, where ``hmemory://`` is always new);
        * ``azure://...``: the native Azure backend (``dataset_kit.store.azure``), once
          installed;
        * any other URL: built with ``minimalkv.get_store_from_url`` and wrapped in a
          :class:`KVStoreAdapter` (needs ``pip install dataset-kit[kv]``); so is a
          ``hfs://`` URL with minimalkv wrappers (``#wrap:urlencode``). A read-only
          wrapper (``#wrap:readonly``) is refused with :class:`ConfigError`: every
          store here must write. (minimalkv 1.11 builds ``hfs+readonly://`` as a
          writable store: it is not read-only either.)
        * a simplekv/minimalkv ``KeyValueStore`` object: its filesystem stores become a
          :class:`LocalStore` on their root, any other a :class:`KVStoreAdapter`;
        * a zero-argument callable returning any of the above.
    **options
        Store options, e.g. ``fsync=True`` or ``create=False`` for local stores,
        ``allow_unsafe_commits=True`` for key-value stores. Query parameters of
        ``file://``/``hfs://``/``memory://`` URLs are options too
        (``file:///data?fsync=true``); keyword options win over the query.

    Returns
    -------
    Store

    Raises
    ------
    ConfigError
        For an unknown scheme or option, a malformed URL, an unsupported object, or a
        missing optional dependency.

    Examples
    --------
    >>> store = open_store("memory://open-store-example")
    >>> _ = store.put("a/b.json", b"{}")
    >>> open_store("memory://open-store-example").get("a/b.json")
    b'{}'
    >>> open_store(store) is store
    True
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> local = open_store(tmp.name, fsync=True)
    >>> type(local).__name__, local.options
    ('LocalStore', {'fsync': True})
    >>> open_store(local.url + "?fsync=true").options
    {'fsync': True}
    >>> tmp.cleanup()
    >>> MemoryStore.drop("open-store-example")
    True
    """
    if isinstance(store, Store):
        if options:
            raise ConfigError(
                f"options {sorted(options)} cannot be applied to the open store {store!r}"
            )
        return store
    if not isinstance(store, (str, os.PathLike)) and not _is_key_value_store(store):
        if callable(store):
            result = store()
            _log.debug("open_store: factory %r returned %r", store, type(result).__name__)
            return _open(result, options, source=f"the factory {store!r}")
    return _open(store, options, source=None)


def _rebuild_store(url: str, options: Mapping[str, Any]) -> Store:
    """Rebuild a pickled store (see ``Store.__reduce__``)."""
    with _quiet_unsafe_warning():
        return open_store(url, **options)


def _open(obj: object, options: dict[str, Any], *, source: str | None) -> Store:
    if isinstance(obj, Store):
        if options:
            raise ConfigError(
                f"options {sorted(options)} cannot be applied to the open store {obj!r}"
            )
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return _open_string(os.fsdecode(os.fspath(obj)), options)
    if _is_key_value_store(obj):
        return _open_kv_object(obj, options)
    what = f"{type(obj).__name__} returned by {source}" if source else repr(obj)
    raise ConfigError(
        f"cannot open a store from {what}: expected a Store, a URL or path, a "
        "simplekv/minimalkv KeyValueStore, or a zero-argument callable returning one"
    )


# --------------------------------------------------------------------------- options
def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ConfigError(f"option {name!r} must be a boolean (true/false/1/0), not {value!r}")


def _merge_options(
    query: str, options: Mapping[str, Any], allowed: frozenset[str], scheme: str
) -> dict[str, bool]:
    merged: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if scheme in ("hfs", "fs") and name == "create_if_missing":  # minimalkv spelling
            name = "create"
        merged[name] = value
    merged.update(options)
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for {scheme}:// stores "
            f"(known: {', '.join(sorted(allowed))})"
        )
    return {name: _as_bool(name, value) for name, value in merged.items()}


def _local(path: str, opts: Mapping[str, bool]) -> LocalStore:
    return LocalStore(path, fsync=opts.get("fsync", False), create=opts.get("create", True))


# --------------------------------------------------------------------------- strings
def _open_string(text: str, options: dict[str, Any]) -> Store:
    match = _URL.match(text)
    if match is None:  # a plain path
        if not text:
            raise ConfigError("cannot open a store from an empty path")
        return _local(os.path.abspath(text), _merge_options("", options, _LOCAL_OPTIONS, "file"))
    scheme = match.group(1).lower()
    parts = urllib.parse.urlsplit(text)
    if scheme == "file":
        return _open_file_url(text, parts, options)
    if scheme in ("hfs", "fs") and not parts.fragment:
        path = _decode_path(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"{scheme}:// URL without a path: {text!r}")
        return _local(
            os.path.abspath(path), _merge_options(parts.query, options, _LOCAL_OPTIONS, scheme)
        )
    if scheme in ("memory", "hmemory"):
        return _open_memory_url(text, scheme, parts, options)
    if scheme in _BACKENDS:
        return _open_registered(scheme, text, options)
    return _open_minimalkv_url(text, scheme, options)


def _decode_path(path: str) -> str:
    return os.fsdecode(urllib.parse.unquote_to_bytes(path))


def _open_file_url(text: str, parts: urllib.parse.SplitResult, options: dict[str, Any]) -> Store:
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file:// URLs must not name a host: {text!r}")
    if parts.fragment:
        raise ConfigError(f"file:// URLs take no fragment: {text!r}")
    path = _decode_path(parts.path)
    if not path:
        raise ConfigError(f"file:// URL without a path: {text!r}")
    return _local(path, _merge_options(parts.query, options, _LOCAL_OPTIONS, "file"))


def _open_memory_url(
    text: str, scheme: str, parts: urllib.parse.SplitResult, options: dict[str, Any]
) -> Store:
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"{scheme}:// URLs are {scheme}://[name]: {text!r}")
    _merge_options(parts.query, options, _MEMORY_OPTIONS, scheme)  # validates only
    return MemoryStore(urllib.parse.unquote(parts.netloc) or None)


def _open_registered(scheme: str, url: str, options: dict[str, Any]) -> Store:
    module_name, _, function_name = _BACKENDS[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            missing = _BACKEND_MISSING.get(scheme, f"{scheme}:// needs {module_name}")
            raise ConfigError(missing) from None
        raise ConfigError(f"{scheme}:// backend {module_name} cannot be imported: {exc}") from exc
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ConfigError(f"{scheme}:// backend {module_name} has no {function_name}()")
    store = factory(url, **options)
    if not isinstance(store, Store):
        raise ConfigError(
            f"{module_name}.{function_name}() returned {type(store).__name__}, not a Store"
        )
    return store


def _open_minimalkv_url(url: str, scheme: str, options: dict[str, Any]) -> Store:
    opts = _merge_options("", options, _KV_OPTIONS, scheme)
    try:
        import minimalkv
    except ImportError as exc:
        raise ConfigError(
            f"{scheme}:// stores need minimalkv: pip install dataset-kit[kv]"
        ) from exc
    try:
        # minimalkv warns about its own internals (create_store, S3 class renames) on
        # every call. catch_warnings swaps process-global state: a warning raised by
        # another thread during this call may be missed, which is acceptable here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            kv = minimalkv.get_store_from_url(url)
    except ImportError as exc:
        raise ConfigError(
            f"{scheme}:// stores need an extra client library ({exc.name or exc}): "
            "install it next to minimalkv"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot open the store URL {_redact(url)!r}: {exc!r}") from exc
    _log.debug("open_store: %s via minimalkv as %s", scheme, type(kv).__name__)
    return KVStoreAdapter(kv, url=url, allow_unsafe_commits=opts.get("allow_unsafe_commits", False))


# --------------------------------------------------------------------------- objects
def _filesystem_root(kv: object) -> str | None:
    """The root of a simplekv/minimalkv filesystem store, else None."""
    classes: list[type] = []
    for module_name in ("minimalkv.fs", "simplekv.fs"):
        module = sys.modules.get(module_name)  # the object's class imported it already
        cls = getattr(module, "FilesystemStore", None)
        if isinstance(cls, type):
            classes.append(cls)
    if not classes or not isinstance(kv, tuple(classes)):
        return None
    root = getattr(kv, "root", None)
    return os.fsdecode(os.fspath(root)) if isinstance(root, (str, os.PathLike)) else None


def _open_kv_object(kv: object, options: dict[str, Any]) -> Store:
    root = _filesystem_root(kv)
    if root is not None:
        _log.debug("open_store: %s over %r becomes a LocalStore", type(kv).__name__, root)
        return _local(os.path.abspath(root), _merge_options("", options, _LOCAL_OPTIONS, "file"))
    opts = _merge_options("", options, _KV_OPTIONS, "kv")
    return KVStoreAdapter(kv, allow_unsafe_commits=opts.get("allow_unsafe_commits", False))
