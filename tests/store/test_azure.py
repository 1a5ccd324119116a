"""The native Azure Blob Storage backend against Azurite (started once per test session)."""

from __future__ import annotations

import pickle
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import azure.storage.blob  # a test dependency (fail loudly if missing); used below
import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.exceptions import (
    ConfigError,
    KeyNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from dataset_kit.store import Capability, Store, open_store
from dataset_kit.store.azure import AzureBlobStore
from dataset_kit.testing.azurite import ACCOUNT_KEY
from dataset_kit.testing.store_suite import StoreConformanceSuite


@pytest.fixture
def store(azurite: str, container: str) -> Iterator[AzureBlobStore]:
    azure_store = AzureBlobStore(container, connection_string=azurite, retry_total=2)
    yield azure_store
    azure_store.close()


class TestAzureStore(StoreConformanceSuite):
    run_cross_process_tests = True  # a real shared store: race create-only across processes

    @pytest.fixture
    def store(self, store: AzureBlobStore) -> Store:
        return store


class TestAzureStoreWithPrefix(StoreConformanceSuite):
    """Everything again below a key prefix, next to keys outside it."""

    large_value_size = 1024 * 1024
    threads = 4

    @pytest.fixture
    def store(self, azurite: str, container: str) -> Iterator[Store]:
        outside = AzureBlobStore(container, connection_string=azurite)
        outside.put("outside/blob", b"not in the prefixed store")
        outside.put("tenant", b"a key equal to the prefix")
        with AzureBlobStore(container, connection_string=azurite, prefix="tenant/x") as store:
            yield store
        assert outside.get("outside/blob") == b"not in the prefixed store"
        outside.close()


# --------------------------------------------------------------------------- identity
def test_declares_concurrent_io(store: AzureBlobStore) -> None:
    """Writers and pipelines issue small calls on threads only to stores declaring it."""
    assert Capability.CONCURRENT_IO in store.capabilities


def test_url_and_pickle_carry_no_secret_in_the_url(store: AzureBlobStore, azurite: str) -> None:
    assert ACCOUNT_KEY in azurite
    assert ACCOUNT_KEY not in store.url
    assert ACCOUNT_KEY not in repr(store)
    assert store.url.startswith(f"azure://{store.container}?account_url=")
    assert store.options["connection_string"] == azurite  # travels to workers
    store.put("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, AzureBlobStore)
    assert clone.url == store.url
    assert clone.get("k") == b"v"
    reopened = open_store(store.url, **store.options)
    assert reopened.get("k") == b"v"


def test_errors_mask_secrets(azurite: str, container: str) -> None:
    sas = "sv=2024-01-01&sr=c&sp=r&sig=c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ%3D%3D"
    account_url = azurite.split("BlobEndpoint=")[1].rstrip(";")
    store = AzureBlobStore(container, account_url=f"{account_url}?{sas}", retry_total=0)
    assert "sig=" not in store.url
    assert "c2VjcmV0" not in repr(store)
    assert store.options["credential"] == sas
    with pytest.raises(StoreError) as info:
        store.get("k")  # the bogus SAS cannot authenticate
    assert "c2VjcmV0" not in str(info.value)
    store.close()


def test_open_store_url(azurite: str, container: str) -> None:
    store = open_store(f"azure://{container}?prefix=p", connection_string=azurite)
    assert isinstance(store, AzureBlobStore)
    assert store.prefix == "p"
    assert Capability.ATOMIC_CREATE in store.capabilities
    store.put("a", b"1")
    plain = AzureBlobStore(container, connection_string=azurite)
    assert list(plain.iter_keys()) == ["p/a"]
    with pytest.raises(ConfigError):
        open_store(f"azure://{container}?bogus=1", connection_string=azurite)
    with pytest.raises(ConfigError):
        open_store("azure://UPPER", connection_string=azurite)
    store.close()
    plain.close()


def test_connection_string_from_environment(
    azurite: str, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    store = open_store(f"azure://{container}")
    store.put("env", b"ok")
    assert store.get("env") == b"ok"
    store.close()


def test_unreachable_account_fails_fast() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cs = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    store = AzureBlobStore("unreachable", connection_string=cs, retry_total=1, timeout=2)
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.get("k")
    assert time.monotonic() - start < 15
    assert ACCOUNT_KEY not in str(info.value)
    store.close()


def test_proxy_variables_are_read_once_when_the_clients_are_made(
    azurite: str, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests would scan the environment on every request (a fifth of a small upload's
    client CPU); the store reads it once instead, with the same meaning: a proxy in
    HTTP_PROXY is used (here a dead one, so requests fail) unless NO_PROXY names the
    endpoint's host. Variables set after the clients exist are not seen."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("http_proxy", dead_proxy)
    through_proxy = AzureBlobStore(container, connection_string=azurite, retry_total=0, timeout=5)
    with pytest.raises(StoreError):
        through_proxy.put("proxied", b"never arrives")
    through_proxy.close()

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = AzureBlobStore(container, connection_string=azurite, retry_total=0, timeout=5)
    direct.put("direct", b"arrives")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy")
    assert direct.get("direct") == b"arrives"  # the clients keep what they read
    assert not direct.exists("proxied")
    direct.close()


def test_get_with_info_is_one_request(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download's response carries the properties: no separate HEAD request (on
    Azure each is a round trip; every dataset open reads its pointer this way)."""
    written = store.put("gi", b"payload")

    def no_head(*args: object, **kwargs: object) -> None:
        raise AssertionError("get_with_info must not make a properties request")

    monkeypatch.setattr(azure.storage.blob.BlobClient, "get_blob_properties", no_head)
    data, info = store.get_with_info("gi")
    assert (data, info.size, info.etag) == (b"payload", 7, written.etag)


def test_listing_reads_the_page_xml_not_blob_models(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iter_infos reads name, size, time and etag from each page's XML (the SDK's blob
    models cost 0.45 ms of CPU per blob), across pages, with what the models say."""
    keys = [f"p/{i:02d} é %2F x" for i in range(7)] + ["q/other"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * i)
    expected = sorted(store._iter_infos_slowly("p/"), key=lambda info: info.key)
    assert len(expected) == 7
    monkeypatch.setattr(store, "_list_page_size", 3)  # three pages

    def no_models(*args: object, **kwargs: object) -> None:
        raise AssertionError("iter_infos must not list blob models")

    monkeypatch.setattr(azure.storage.blob.ContainerClient, "list_blobs", no_models)
    listed = list(store.iter_infos("p/"))
    assert sorted(listed, key=lambda info: info.key) == expected
    for info in listed:
        assert store.stat(info.key) == info


def test_listing_falls_back_to_blob_models_if_the_page_xml_is_missing(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK whose pager no longer keeps the page XML: the blob models are listed."""
    import dataset_kit.store.azure as azure_module

    for i in range(4):
        store.put(f"k{i}", b"y" * i)
    expected = list(store.iter_infos(""))
    monkeypatch.setattr(azure_module, "_listed_infos", lambda *args: None)
    assert list(store.iter_infos("")) == expected


def test_missing_container_without_create(azurite: str) -> None:
    name = f"dk-{uuid.uuid4().hex[:20]}"
    store = AzureBlobStore(name, connection_string=azurite, create_container=False)
    with pytest.raises(KeyNotFoundError):
        store.get("k")
    assert not store.exists("k")
    assert list(store.iter_keys()) == []
    store.close()


# --------------------------------------------------------------------------- bulk operations
def test_conditional_delete_many_in_batches_and_one_by_one(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``unmodified_since`` is the service's If-Unmodified-Since, per blob, in batches of
    256 and in the one-request-per-blob fallback for services that reject batches."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContainerClient

    keys = [f"c/{i:03d}" for i in range(300)]
    for key in keys:
        store.put(key, b"x")
    report = store.delete_many(keys, unmodified_since=time.time() - 60)
    assert sorted(report.kept) == keys and not report.deleted and not report.failed

    def rejected(self: Any, *blobs: Any, **kwargs: Any) -> Any:
        raise HttpResponseError(message="batch not supported here")

    monkeypatch.setattr(ContainerClient, "delete_blobs", rejected)
    report = store.delete_many(keys[:3], unmodified_since=time.time() - 60)
    assert report.kept == keys[:3] and not report.failed
    report = store.delete_many(keys[:3], unmodified_since=time.time() + 60)
    assert report.deleted == keys[:3] and not report.kept
    monkeypatch.undo()
    report = store.delete_many(keys, unmodified_since=time.time() + 60)
    assert len(report.deleted) == 300 and not report.kept
    assert list(store.iter_keys("c/")) == []


def test_delete_many_in_several_batches(store: AzureBlobStore) -> None:
    keys = [f"bulk/{i:04d}" for i in range(600)]
    for key in keys:
        store.put(key, b"x")
    store.put("keep", b"y")
    report = store.delete_many([*keys, "bulk/missing", "../bad"])
    assert sorted(report.deleted) == sorted([*keys, "bulk/missing"])
    assert report.absent == ["bulk/missing"]  # the batch's 404 tells it apart
    assert list(report.failed) == ["../bad"]
    assert list(store.iter_keys()) == ["keep"]


class _BatchTracker:
    """Wraps a store's batch request: counts the requests in flight (and the peak) and
    records each batch's size; each request first sleeps ``delay`` seconds."""

    def __init__(self, store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch, delay: float):
        import threading

        self.lock, self.in_flight, self.peak, self.sizes = threading.Lock(), 0, 0, []
        self.send, self.delay = store._delete_batch, delay
        monkeypatch.setattr(store, "_delete_batch", self)

    def __call__(self, keys: list[str], report: Any, since: Any = None) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.sizes.append(len(keys))
        time.sleep(self.delay)
        try:
            self.send(keys, report, since)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_delete_many_sends_several_batches_at_once(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 keys are 4 batch requests, in flight together; the keys are consumed as
    the batches go out, and every key is accounted for once."""
    batches = _BatchTracker(store, monkeypatch, delay=0.2)
    for i in range(0, 1000, 100):
        store.put(f"many/{i:04d}", b"x")
    keys = (f"many/{i:04d}" for i in range(1000))  # mostly missing: deleted all the same
    report = store.delete_many(keys)
    assert batches.peak >= 2 and sorted(batches.sizes) == [232, 256, 256, 256]
    assert sorted(report.deleted) == [f"many/{i:04d}" for i in range(1000)]
    assert not report.failed and list(store.iter_keys("many/")) == []


def test_a_throttled_delete_many_holds_one_lease_per_batch_request(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a throttle of one lease, the batches go one at a time (the store alone
    would send them together), each at most 256 keys."""
    from dataset_kit.pipelines._stores import ThrottledStore
    from dataset_kit.throttle import Throttle

    batches = _BatchTracker(store, monkeypatch, delay=0.05)
    throttled = ThrottledStore(store, Throttle("azure-delete-test", 1))
    report = throttled.delete_many(f"t/{i:04d}" for i in range(600))
    assert len(report.deleted) == 600 and not report.failed
    assert batches.peak == 1 and sorted(batches.sizes) == [88, 256, 256]


def test_server_side_copy(store: AzureBlobStore) -> None:
    assert Capability.SERVER_COPY in store.capabilities
    data = bytes(range(256)) * 4096  # 1 MiB
    store.put("src", data)
    info = store.copy("src", "dst/copy")
    assert info.size == len(data)
    assert store.get("dst/copy") == data
    assert info.etag == store.stat("dst/copy").etag


# --------------------------------------------------------------------------- copies between stores
@pytest.fixture
def other(azurite: str) -> Iterator[AzureBlobStore]:
    """A second container of the same storage account."""
    from azure.storage.blob import BlobServiceClient

    name = f"dk-{uuid.uuid4().hex[:20]}"
    second = AzureBlobStore(name, connection_string=azurite)
    yield second
    second.close()
    with BlobServiceClient.from_connection_string(azurite) as service:
        service.delete_container(name)


def _record_transfers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the names of the blobs whose bytes pass through this process (uploaded or
    downloaded by the SDK)."""
    names: list[str] = []
    client = azure.storage.blob.BlobClient
    upload, download = client.upload_blob, client.download_blob

    def recording_upload(self: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(self.blob_name)
        return upload(self, *args, **kwargs)

    def recording_download(self: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(self.blob_name)
        return download(self, *args, **kwargs)

    monkeypatch.setattr(client, "upload_blob", recording_upload)
    monkeypatch.setattr(client, "download_blob", recording_download)
    return names


def test_copy_from_another_container_is_made_inside_the_service(
    store: AzureBlobStore, other: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One account: the service copies (no bytes through this process), through the
    wrappers that only count, retry or throttle the source's reads, listed or not."""
    from dataset_kit.pipelines._stores import ThrottledStore
    from dataset_kit.store import CountingStore, RetryingStore
    from dataset_kit.throttle import Throttle

    data = bytes(range(256)) * 4096
    listed = other.put("src/k", data)
    source = CountingStore(RetryingStore(ThrottledStore(other, Throttle("copy-test", 2))))
    transfers = _record_transfers(monkeypatch)
    info = store.copy_from(source, "src/k", "dst/k", source_info=listed)
    again = store.copy_from(source, "src/k", "dst/unlisted")  # the source is stat'ed first
    assert transfers == []
    assert source.counts["get"] == 0 and source.counts["copy_from"] == 0
    monkeypatch.undo()
    assert (info.key, info.size) == ("dst/k", len(data))
    assert info.etag == store.stat("dst/k").etag
    assert store.get("dst/k") == data and store.get("dst/unlisted") == data
    assert again.size == len(data)
    # between two prefixes of one container too
    connection = store.options["connection_string"]
    left = AzureBlobStore(store.container, connection_string=connection, prefix="left")
    right = AzureBlobStore(store.container, connection_string=connection, prefix="right")
    listed = left.put("k", b"prefixed")
    transfers = _record_transfers(monkeypatch)
    right.copy_from(left, "k", "k", source_info=listed)
    assert transfers == []
    monkeypatch.undo()
    assert right.get("k") == b"prefixed" and store.get("right/k") == b"prefixed"


def test_copy_from_copies_exactly_the_listed_blob(
    store: AzureBlobStore, other: AzureBlobStore
) -> None:
    """The service copy is conditional on the listed etag: a blob replaced since is not
    copied under the listed size; a missing source is named."""
    listed = other.put("k", b"old")
    other.put("k", b"replaced, and longer")
    with pytest.raises(PreconditionFailedError) as err:
        store.copy_from(other, "k", "dst", source_info=listed)
    assert err.value.key == "k"
    assert not store.exists("dst")
    with pytest.raises(KeyNotFoundError) as missing:
        store.copy_from(other, "nope", "dst")
    assert missing.value.key == "nope"
    with pytest.raises(KeyNotFoundError) as missing:
        store.copy_from(other, "nope", "dst", source_info=listed)
    assert missing.value.key == "nope"
    assert not store.exists("dst")


def test_copy_from_reads_through_a_wrapper_that_hooks_reads(
    store: AzureBlobStore, other: AzureBlobStore
) -> None:
    """A source whose reads are hooked (faults here) is read through the hook."""
    from dataset_kit.exceptions import StoreUnavailableError
    from dataset_kit.store import FaultInjectingStore

    listed = other.put("k", b"bytes")
    faulty = FaultInjectingStore(other, fail_rate=1.0, operations=frozenset({"get"}))
    with pytest.raises(StoreUnavailableError):
        store.copy_from(faulty, "k", "dst", source_info=listed)
    assert not store.exists("dst")


def test_copy_from_falls_back_when_the_service_may_not_read_the_source(
    store: AzureBlobStore, other: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Azure refuses a copy whose source the target's credential cannot read (a
    SAS of the target container only; Azurite does not check): the bytes then pass
    through this process, and later copies do not ask the service again."""
    from azure.core.exceptions import HttpResponseError

    refusals = []

    def refuse(*args: object, **kwargs: object) -> None:
        refusals.append(args)
        error = HttpResponseError(message="CannotVerifyCopySource")
        error.status_code = 403
        error.error_code = "CannotVerifyCopySource"
        raise error

    monkeypatch.setattr(azure.storage.blob.BlobClient, "start_copy_from_url", refuse)
    listed = other.put("k", b"through the client")
    for dst in ("one", "two"):
        info = store.copy_from(other, "k", dst, source_info=listed)
        assert info.size == len(b"through the client")
        assert store.get(dst) == b"through the client"
    assert len(refusals) == 1
    assert not store._copies_inside(other)


def test_backup_between_containers_copies_inside_the_service(
    store: AzureBlobStore, other: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup to another container of the account moves no data blob through the
    client, throttled or not."""
    df = pd.DataFrame({"p": [1, 1, 2, 3], "x": [1.0, 2.0, 3.0, 4.0]})
    dk.write_dataset(df, store=other, dataset_uuid="ds", partition_on="p")
    transfers = _record_transfers(monkeypatch)
    report = dk.pipelines.backup("ds", source=other, target=store, storage_concurrency=2).compute()
    assert report.copied == 3
    assert [name for name in transfers if name.endswith(".parquet")] == []
    assert transfers  # the metadata is read and written by this process
    monkeypatch.undo()
    pd.testing.assert_frame_equal(
        dk.read_table(store=store, dataset_uuid="ds"), dk.read_table(store=other, dataset_uuid="ds")
    )
    assert dk.pipelines.verify("ds", store=store).compute().ok


# --------------------------------------------------------------------------- datasets
def test_dataset_round_trip(store: AzureBlobStore) -> None:
    df = pd.DataFrame({"p": [1, 1, 2], "x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})
    dk.write_dataset(df, store=store, dataset_uuid="ds", partition_on="p")
    more = pd.DataFrame({"p": [3], "x": [4.0], "s": ["d"]})
    dk.update_dataset(more, store=store, dataset_uuid="ds", partition_on="p")
    dk.update_dataset(store=store, dataset_uuid="ds", delete_scope=[{"p": 1}])
    out = dk.read_table(store=store, dataset_uuid="ds")
    out = out.sort_values("x").reset_index(drop=True)
    assert out["x"].tolist() == [3.0, 4.0]
    assert out["s"].tolist() == ["c", "d"]
    assert sorted(int(v) for v in out["p"]) == [2, 3]
    reopened = open_store(store.url, **store.options)
    again = dk.read_table(store=reopened, dataset_uuid="ds")
    assert len(again) == 2


@pytest.mark.slow
def test_four_processes_appending_through_azurite_lose_nothing(store: AzureBlobStore) -> None:
    import pandas as pd

    import dataset_kit as dk
    from dataset_kit.testing.workers import append_in_processes

    dk.write_dataset(
        pd.DataFrame({"worker": [-1], "seq": [0], "tag": ["seed"]}),
        store=store,
        dataset_uuid="conc",
    )
    outcomes = append_in_processes(store, "conc", processes=4, appends=5)
    assert outcomes == dict.fromkeys(range(4), "ok")
    df = dk.read_table(store=store, dataset_uuid="conc")
    tags = sorted(df["tag"])
    assert tags == sorted(["seed"] + [f"{w}-{i}" for w in range(4) for i in range(5)])
    versions = [v["version"] for v in dk.open_dataset(store=store, dataset_uuid="conc").versions()]
    assert versions == list(range(21))  # every append its own version, none lost


@pytest.mark.slow
def test_dataset_operations_identical_with_20_percent_faults_on_azure(
    azurite: str, container: str, tmp_path: Path
) -> None:
    from dataset_kit.store import FaultInjectingStore, LocalStore, RetryingStore
    from dataset_kit.testing.scenarios import compare_results, run_scenario

    clean = run_scenario(LocalStore(tmp_path))
    azure_store = AzureBlobStore(container, connection_string=azurite, retry_total=2)
    faulty = FaultInjectingStore(azure_store, fail_rate=0.2, fail_after_write_rate=0.05, seed=7)
    store = RetryingStore(faulty, attempts=25, base_delay=0.001, max_delay=0.02)
    compare_results(run_scenario(store), clean)
    assert sum(s.faults + s.unknown_outcome for s in faulty.stats.values()) > 10


class _StaticToken:
    """A token credential as azure-identity's would return it (Azurite checks issuer,
    audience and expiry of a bearer token, not its signature)."""

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        import base64
        import json

        from azure.core.credentials import AccessToken

        def part(doc: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

        now = int(time.time())
        tenant = "ab1f708d-50f6-404c-a006-d71b2ac7a606"
        claims = {
            "iss": f"https://sts.windows.net/{tenant}/",
            "aud": "https://storage.azure.com",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": "dataset-kit-test",
            "tid": tenant,
        }
        return AccessToken(
            f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln", now + 3600
        )


@pytest.fixture(scope="module")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Azurite over HTTPS with OAuth: (blob endpoint URL, CA bundle path)."""
    from dataset_kit.testing.azurite import azurite_server, write_self_signed_cert

    cert, key = write_self_signed_cert(tmp_path_factory.mktemp("tls"))
    with azurite_server(tls=(cert, key)) as conn:
        fields = dict(f.split("=", 1) for f in conn.split(";") if f)
        yield fields["BlobEndpoint"], cert


def test_token_credential_over_https(
    azurite_tls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, ca_bundle = azurite_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)  # trust the throw-away certificate
    store = AzureBlobStore("tokens", account_url=endpoint, credential=_StaticToken())
    dk.write_dataset(pd.DataFrame({"a": [1, 2]}), store=store, dataset_uuid="t")
    assert dk.read_table(store=store, dataset_uuid="t")["a"].tolist() == [1, 2]
    store.close()
    keyless = AzureBlobStore("tokens", account_url=endpoint, retry_total=0)  # anonymous
    with pytest.raises(StoreError, match="no credentials were given"):
        keyless.get("t.by-dataset-metadata.json")
    keyless.close()


def test_default_credential_is_created_per_process_and_fails_clearly(
    azurite_tls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, ca_bundle = azurite_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    store = open_store(f"azure://tokens?account_url={endpoint}&credential=default", retry_total=0)
    assert isinstance(store, AzureBlobStore)
    assert "credential=default" in store.url
    clone = pickle.loads(pickle.dumps(store))  # what a dask worker receives: no secret
    assert clone.options["credential"] == "default"
    # no identity is configured on this machine: a typed error naming the cause, fast
    started = time.monotonic()
    with pytest.raises(StoreError, match="DefaultAzureCredential"):
        clone.get("anything")
    assert time.monotonic() - started < 30
    with pytest.raises(ConfigError, match="secrets do not belong"):
        open_store(f"azure://tokens?account_url={endpoint}&credential=SECRETKEY")


class _LoseAnswers:
    """Wraps the SDK's HTTP transport: the first ``times`` requests with ``method`` reach
    Azurite and are carried out, then their answer is lost (as on a dropped connection),
    so the SDK's retry sends them again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, times: int = 1) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        self.method, self.left, self.lost = method, times, 0
        real = RequestsTransport.send

        def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            response = real(transport, request, **kwargs)
            if request.method == self.method and self.left > 0 and "comp=" not in request.url:
                from azure.core.exceptions import ServiceResponseError

                self.left -= 1
                self.lost += 1
                raise ServiceResponseError("injected: the answer was lost")
            return response

        monkeypatch.setattr(RequestsTransport, "send", send)


@pytest.mark.parametrize("operation", ["create-only", "compare-and-swap", "cas-delete"])
def test_a_conditional_request_whose_answer_was_lost_is_outcome_unknown(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """The SDK sends the request again; its condition then fails against the write the
    first attempt made. That is not another writer's write (KeyExistsError /
    PreconditionFailedError, which made a commit take its own snapshot for a lost race):
    it is StoreUnavailableError, outcome unknown, and the callers look."""
    first = store.put("cas", b"v1")
    lose = _LoseAnswers(monkeypatch, "DELETE" if operation == "cas-delete" else "PUT")
    with pytest.raises(StoreUnavailableError, match="outcome is unknown"):
        if operation == "create-only":
            store.put("new", b"mine", if_absent=True)
        elif operation == "compare-and-swap":
            store.put("cas", b"v2", if_match=first.etag)
        else:
            store.delete("cas", if_match=first.etag)
    assert lose.lost == 1
    if operation == "create-only":
        assert store.get("new") == b"mine"  # the first attempt did it
    elif operation == "compare-and-swap":
        assert store.get("cas") == b"v2"
    else:
        assert not store.exists("cas")


def test_a_commit_whose_snapshot_answer_was_lost_commits_once(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the snapshot write's answer is lost once; the commit reads the
    snapshot back, finds its own commit id and goes on (it took the version for another
    writer's and committed a second one)."""
    from azure.core.exceptions import ServiceResponseError
    from azure.core.pipeline.transport import RequestsTransport

    dk.write_dataset(pd.DataFrame({"x": [1]}), store=store, dataset_uuid="d")
    real = RequestsTransport.send
    lost: list[str] = []

    def send(transport: Any, request: Any, **kwargs: Any) -> Any:
        response = real(transport, request, **kwargs)
        if request.method == "PUT" and "/_versions/" in request.url and not lost:
            lost.append(request.url)
            raise ServiceResponseError("injected: the answer was lost")
        return response

    monkeypatch.setattr(RequestsTransport, "send", send)
    meta = dk.update_dataset(pd.DataFrame({"x": [2]}), store=store, dataset_uuid="d")
    assert len(lost) == 1 and meta.version == 1
    history = dk.open_dataset(store=store, dataset_uuid="d").versions()
    assert [v["version"] for v in history] == [0, 1]
    assert sorted(dk.read_table(store=store, dataset_uuid="d")["x"]) == [1, 2]


def test_listed_names_the_service_encoded_are_decoded() -> None:
    """The service percent-encodes names XML cannot carry (Encoded="true"); listings
    decode them, and take the SDK's raw names only as the check that the page is the
    one the SDK read. (Azurite answers 500 for such names, so the page is built here.)"""
    from xml.etree.ElementTree import fromstring

    from dataset_kit.store.azure import _listed_infos

    page = fromstring(
        "<EnumerationResults><Blobs>"
        '<Blob><Name Encoded="true">p/a%EF%BF%BEb</Name><Properties>'
        "<Last-Modified>Sun, 06 Dec 2026 09:00:00 GMT</Last-Modified>"
        "<Content-Length>3</Content-Length><Etag>0x1</Etag></Properties></Blob>"
        "<Blob><Name>p/plain</Name><Properties>"
        "<Last-Modified>Sun, 06 Dec 2026 09:00:00 GMT</Last-Modified>"
        "<Content-Length>5</Content-Length><Etag>0x2</Etag></Properties></Blob>"
        "</Blobs></EnumerationResults>"
    )
    infos = _listed_infos(page, ["p/a%EF%BF%BEb", "p/plain"], 2)
    assert infos is not None
    assert [(i.key, i.size) for i in infos] == [("a\ufffeb", 3), ("plain", 5)]
    assert _listed_infos(page, ["p/other", "p/plain"], 2) is None  # not the SDK's page


def test_key_listings_read_the_same_xml_as_info_listings(
    store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iter_keys goes through the XML reader that decodes Encoded names (it returned the
    SDK's raw names, still percent-encoded for such blobs)."""
    import dataset_kit.store.azure as azure_module

    for key in ("k/a", "k/b c", "k/ünï"):
        store.put(key, b"x")
    assert sorted(store.iter_keys("k/")) == ["k/a", "k/b c", "k/ünï"]
    real = azure_module._listed_infos

    def marked(*args: Any) -> Any:
        infos = real(*args)
        return None if infos is None else [replace(i, key=i.key + "!") for i in infos]

    monkeypatch.setattr(azure_module, "_listed_infos", marked)
    assert sorted(store.iter_keys("k/")) == ["k/a!", "k/b c!", "k/ünï!"]
