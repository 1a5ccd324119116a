"""open_store: every URL and object form, options, errors and pickling."""

from __future__ import annotations

import os
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_kit.exceptions import ConfigError, UnsafeCommitWarning
from dataset_kit.store import (
    FaultInjectingStore,
    KVStoreAdapter,
    LocalStore,
    MemoryStore,
    Store,
    open_store,
)
from dataset_kit.store._factory import _rebuild_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import minimalkv.fs
    import simplekv.fs
    import simplekv.memory
    from minimalkv._hstores import HDictStore, HFilesystemStore


@pytest.fixture
def memory_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        MemoryStore.drop(name)


# --------------------------------------------------------------------------- objects
def test_store_instance_is_returned_as_is(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert open_store(store) is store
    with pytest.raises(ConfigError, match="fsync"):
        open_store(store, fsync=True)


def test_callable_is_called_and_opened(tmp_path: Path) -> None:
    store = open_store(lambda: str(tmp_path))
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path)
    same = LocalStore(tmp_path)
    assert open_store(lambda: same) is same
    assert isinstance(open_store(lambda: tmp_path, fsync=True), LocalStore)
    assert isinstance(open_store(HDictStore), KVStoreAdapter)  # a class is a factory too


def test_callable_returning_garbage_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="int returned by the factory"):
        open_store(lambda: 42)
    with pytest.raises(ConfigError):
        open_store(lambda: lambda: "memory://")  # factories are not unwrapped twice


def test_unsupported_objects_are_config_errors() -> None:
    for obj in (42, 1.5, None, b"", object(), {"get": 1}):
        with pytest.raises(ConfigError):
            open_store(obj)
    with pytest.raises(ConfigError, match="empty"):
        open_store("")


@pytest.mark.parametrize(
    "make",
    [
        lambda root: HFilesystemStore(root),
        lambda root: minimalkv.fs.FilesystemStore(root),
        lambda root: simplekv.fs.FilesystemStore(root),
    ],
    ids=["minimalkv-H", "minimalkv-plain", "simplekv"],
)
def test_filesystem_kv_objects_become_local_stores(tmp_path: Path, make: object) -> None:
    kv = make(str(tmp_path))  # type: ignore[operator]
    kv.put("written-by-kv", b"kv")
    store = open_store(kv)
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path)
    assert store.get("written-by-kv") == b"kv"
    store.put("written-by-store", b"store")
    assert kv.get("written-by-store") == b"store"
    assert isinstance(open_store(kv, fsync=True), LocalStore)
    with pytest.raises(ConfigError, match="bogus"):
        open_store(kv, bogus=True)


def test_other_kv_objects_are_adapted() -> None:
    for kv in (HDictStore(), simplekv.memory.DictStore()):
        store = open_store(kv)
        assert isinstance(store, KVStoreAdapter)
        assert store.kv is kv
    with pytest.warns(UnsafeCommitWarning):
        unsafe = open_store(HDictStore(), allow_unsafe_commits=True)
    assert unsafe.options == {"allow_unsafe_commits": True}
    with pytest.raises(ConfigError, match="fsync"):
        open_store(HDictStore(), fsync=True)


# --------------------------------------------------------------------------- local
def test_file_urls(tmp_path: Path) -> None:
    for url in (f"file://{tmp_path}", f"file://localhost{tmp_path}", f"file://{tmp_path}/"):
        store = open_store(url)
        assert isinstance(store, LocalStore)
        assert store.root == str(tmp_path)
    with pytest.raises(ConfigError, match="host"):
        open_store(f"file://otherhost{tmp_path}")
    with pytest.raises(ConfigError):
        open_store("file://")
    with pytest.raises(ConfigError, match="fragment"):
        open_store(f"file://{tmp_path}#frag")


def test_percent_encoded_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/a%20b")
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path / "a b")
    assert open_store(store.url).root == store.root  # type: ignore[attr-defined]


def test_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_store(str(tmp_path)).root == str(tmp_path)  # type: ignore[attr-defined]
    assert open_store(tmp_path).root == str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    relative = open_store("relative/dir")
    assert isinstance(relative, LocalStore)
    assert relative.root == str(tmp_path / "relative" / "dir")
    assert (tmp_path / "relative" / "dir").is_dir()


def test_hfs_urls_are_local_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"hfs://{tmp_path}")
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path)
    assert store.url == f"file://{tmp_path}"
    assert isinstance(open_store(f"fs://{tmp_path}"), LocalStore)
    monkeypatch.chdir(tmp_path)
    relative = open_store("hfs://rel/data")  # minimalkv reads host + path
    assert isinstance(relative, LocalStore)
    assert relative.root == str(tmp_path / "rel" / "data")


def test_hfs_create_if_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_store(f"hfs://{tmp_path}/missing?create_if_missing=false")
    assert open_store(f"hfs://{tmp_path}/made?create_if_missing=true").exists("x") is False


def test_same_files_through_minimalkv_and_local(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        kv = minimalkv.get_store_from_url(f"hfs://{tmp_path}")
    kv.put("uuid/table/part.parquet", b"PAR1")
    store = open_store(f"hfs://{tmp_path}")
    assert store.get("uuid/table/part.parquet") == b"PAR1"
    store.put("uuid.by-dataset-metadata.json", b"{}")
    assert kv.get("uuid.by-dataset-metadata.json") == b"{}"


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("fsync=true", True),
        ("fsync=1", True),
        ("fsync=TRUE", True),
        ("fsync=false", False),
        ("fsync=0", False),
        ("", False),
    ],
)
def test_boolean_query_options(tmp_path: Path, query: str, expected: bool) -> None:
    store = open_store(f"file://{tmp_path}?{query}")
    assert store.options == ({"fsync": True} if expected else {})


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'fsync'.*boolean"):
        open_store(f"file://{tmp_path}?fsync=maybe")
    with pytest.raises(ConfigError, match="'bogus'"):
        open_store(f"file://{tmp_path}?bogus=1")
    with pytest.raises(ConfigError, match="'bogus'"):
        open_store(str(tmp_path), bogus=True)
    with pytest.raises(ConfigError, match="'fsync'"):
        open_store(str(tmp_path), fsync="sometimes")
    with pytest.raises(ConfigError, match="'fsync'"):
        open_store("memory://", fsync=True)


def test_keyword_options_win_over_the_query(tmp_path: Path) -> None:
    assert open_store(f"file://{tmp_path}?fsync=true", fsync=False).options == {}
    assert open_store(f"file://{tmp_path}?fsync=false", fsync=True).options == {"fsync": True}
    assert open_store(f"file://{tmp_path}?fsync=false", fsync="1").options == {"fsync": True}


def test_create_false(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_store(f"file://{tmp_path}/missing?create=false")
    with pytest.raises(ConfigError):
        open_store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_allow_unsafe_commits_is_accepted_and_ignored_by_safe_stores(tmp_path: Path) -> None:
    store = open_store(tmp_path, allow_unsafe_commits=True)
    assert isinstance(store, LocalStore)
    assert store.options == {}


# --------------------------------------------------------------------------- memory
def test_memory_urls(memory_names: list[str]) -> None:
    first = open_store("memory://")
    second = open_store("memory://")
    assert isinstance(first, MemoryStore)
    assert isinstance(second, MemoryStore)
    memory_names += [first.name, second.name]
    assert first.url != second.url
    first.put("k", b"1")
    assert not second.exists("k")

    memory_names.append("factory-named")
    named = open_store("memory://factory-named")
    named.put("k", b"shared")
    assert open_store("memory://factory-named").get("k") == b"shared"
    assert open_store("hmemory://factory-named").get("k") == b"shared"
    assert open_store("memory://factory-named/").get("k") == b"shared"
    assert open_store(named.url).get("k") == b"shared"
    assert isinstance(open_store("hmemory://"), MemoryStore)


def test_bad_memory_urls() -> None:
    for url in ("memory://a/b", "memory://bad%20name", "memory://x#frag", "memory://x?y=1"):
        with pytest.raises(ConfigError):
            open_store(url)
    with pytest.raises(ConfigError):
        MemoryStore("bad/name")


# --------------------------------------------------------------------------- minimalkv
def test_other_schemes_go_through_minimalkv(tmp_path: Path) -> None:
    url = f"hfs://{tmp_path}#wrap:urlencode"  # wrappers need minimalkv itself
    store = open_store(url)
    assert isinstance(store, KVStoreAdapter)
    assert store.url == url
    store.put("a/b", b"x")
    assert os.listdir(tmp_path) == ["a%2Fb"]
    assert list(store.iter_keys()) == ["a/b"]
    readonly = open_store(f"hfs+readonly://{tmp_path}")
    assert isinstance(readonly, KVStoreAdapter)
    with pytest.raises(ConfigError, match="put"):  # a store that cannot write is refused
        open_store(f"hfs://{tmp_path}#wrap:readonly")


def test_minimalkv_deprecation_warnings_are_suppressed(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_store(f"hfs://{tmp_path}#wrap:urlencode")
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchscheme"):
        open_store("nosuchscheme://somewhere/bucket")


def test_unknown_option_for_minimalkv_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'fsync'"):
        open_store(f"hfs://{tmp_path}#wrap:urlencode", fsync=True)


def test_missing_minimalkv_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minimalkv", None)  # makes `import minimalkv` fail
    with pytest.raises(ConfigError, match=r"pip install dataset-kit\[kv\]"):
        open_store("redis://localhost/0")


def test_store_package_does_not_import_minimalkv() -> None:
    import subprocess

    code = (
        "import sys, dataset_kit.store, dataset_kit.testing.store_suite; "
        "bad = [m for m in ('minimalkv', 'simplekv') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- azure
def test_azure_urls_open_the_native_backend() -> None:
    from dataset_kit.store.azure import AzureBlobStore

    store = open_store(
        "azure://container-x?account_url=http://127.0.0.1:9/devstoreaccount1",
        connection_string="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=c2VjcmV0;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    assert isinstance(store, AzureBlobStore)
    assert "c2VjcmV0" not in repr(store) and "c2VjcmV0" not in store.url


def test_azure_backend_plugs_in(monkeypatch: pytest.MonkeyPatch, memory_names: list[str]) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    def from_url(url: str, **options: object) -> Store:
        calls.append((url, options))
        store = MemoryStore()
        memory_names.append(store.name)
        return store

    fake = types.ModuleType("dataset_kit.store.azure")
    fake.from_url = from_url  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dataset_kit.store.azure", fake)
    store = open_store("azure://acct@container/prefix", allow_unsafe_commits=False)
    assert isinstance(store, MemoryStore)
    assert calls == [("azure://acct@container/prefix", {"allow_unsafe_commits": False})]

    fake.from_url = lambda url, **options: "not a store"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="not a Store"):
        open_store("azure://acct@container")
    del fake.from_url  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="from_url"):
        open_store("azure://acct@container")


# --------------------------------------------------------------------------- pickling
def _round_trip(store: Store) -> Store:
    return pickle.loads(pickle.dumps(store))


def test_pickle_local_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fsync=True)
    store.put("k", b"v")
    clone = _round_trip(store)
    assert type(clone) is LocalStore
    assert (clone.url, dict(clone.options)) == (store.url, {"fsync": True})
    assert clone.get("k") == b"v"


def test_pickle_memory_store(memory_names: list[str]) -> None:
    store = MemoryStore()
    memory_names.append(store.name)
    store.put("k", b"v")
    clone = _round_trip(store)
    assert type(clone) is MemoryStore
    assert clone.url == store.url
    clone.put("k2", b"from clone")
    assert store.get("k2") == b"from clone"


def test_pickle_kv_adapter_by_url(tmp_path: Path) -> None:
    url = f"hfs://{tmp_path}#wrap:urlencode"
    store = open_store(url)
    store.put("k/1", b"v")
    payload = pickle.dumps(store)
    assert url.encode() in payload
    assert b"URLEncodeKeysDecorator" not in payload  # no live store object inside
    clone = pickle.loads(payload)
    assert type(clone) is KVStoreAdapter
    assert clone.url == url
    assert clone.get("k/1") == b"v"


def test_pickle_kv_adapter_by_object(tmp_path: Path) -> None:
    store = KVStoreAdapter(HFilesystemStore(str(tmp_path)))
    store.put("k/1", b"v")
    clone = _round_trip(store)
    assert type(clone) is KVStoreAdapter
    assert isinstance(clone.kv, HFilesystemStore)
    assert clone.url == store.url  # the same store: the pickled copy keeps its identity
    assert clone.url.startswith("kv://HFilesystemStore?instance=")
    assert clone.get("k/1") == b"v"


def test_pickle_unsafe_kv_adapter_does_not_warn_again() -> None:
    with pytest.warns(UnsafeCommitWarning):
        store = KVStoreAdapter(HDictStore(), allow_unsafe_commits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsafeCommitWarning)
        clone = _round_trip(store)
    assert clone.options == {"allow_unsafe_commits": True}


def test_pickle_fault_injecting_store(memory_names: list[str]) -> None:
    inner = MemoryStore()
    memory_names.append(inner.name)
    store = FaultInjectingStore(inner, fail_rate=0.25, seed=3, errors=("timeout",))
    clone = _round_trip(store)
    assert type(clone) is FaultInjectingStore
    assert clone.url == inner.url
    assert clone.inner.url == inner.url


def test_rebuild_store_is_open_store(tmp_path: Path) -> None:
    store = _rebuild_store(f"file://{tmp_path}", {"fsync": True})
    assert isinstance(store, LocalStore)
    assert store.options == {"fsync": True}
