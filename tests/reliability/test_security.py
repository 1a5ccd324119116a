"""Security: secrets stay secret, the local store stays in its root, TLS clusters work.

1. Credentials never show up in logs (every logger captured at DEBUG), error messages and
   tracebacks, reprs, or the keys and reprs of dask task graphs, for a full round of
   operations on Azurite (write, append, read, compute, gc, backup, verify, and failing
   calls: missing dataset, wrong account key, bogus SAS). Stores inside task *arguments*
   carry the connection string by design (workers need it); a ``credential="default"``
   store carries no secret at all, even in the pickles of a whole task graph.
2. The local store never reads, writes or deletes outside its root, whatever symlinks an
   attacker with write access to the root plants (partition directories, snapshot
   directory, pointer, data blobs, a whole dataset prefix pointing outside).
3. A pipeline runs on a TLS-secured dask cluster (``Security.temporary()``, a
   ``LocalCluster(protocol="tls")`` with worker processes), with a ``Client`` built with
   the security object or through ``distributed.comm.tls.*`` configuration; a client
   without the right certificates is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dataset_kit as dk
from dataset_kit.core import naming
from dataset_kit.exceptions import DatasetKitError
from dataset_kit.store import LocalStore, Store
from dataset_kit.store.azure import AzureBlobStore
from dataset_kit.testing.azurite import ACCOUNT_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FRAME = pd.DataFrame({"p": [1, 1, 2], "k": ["a", "b", "a"], "x": [0.5, 1.5, 2.5]})
#: A well-formed account key that is *not* Azurite's (authentication fails with it).
WRONG_KEY = "c2VjcmV0LXdyb25nLWtleS10aGF0LW11c3Qtc3RheS1oaWRkZW4tMDEyMzQ1Njc4OQ=="
SAS_SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZS12YWx1ZS0wMTIzNDU2Nzg5"


def double(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(x=df["x"] * 2)


def secret_forms(*secrets: str) -> list[str]:
    """Each secret as it could leak: verbatim, URL-quoted, and its first 16 characters."""
    forms: set[str] = set()
    for s in secrets:
        forms.update({s, urllib.parse.quote(s, safe=""), s[:16]})
    return sorted(forms)


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.texts.append(text)


@contextlib.contextmanager
def all_logs_at_debug() -> Iterator[_Everything]:
    """Every record of every logger, at DEBUG, while the context is open."""
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    old = {lg.name: lg.level for lg in loggers}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for lg in loggers:
            lg.setLevel(old[lg.name])


def error_text(exc: BaseException) -> str:
    """Message, repr and the whole formatted chain (causes and contexts) of an error."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # also suppressed contexts
        seen.add(id(cur))
        parts += [str(cur), repr(cur)]
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


def graph_texts(job: Any) -> list[str]:
    graph = job.to_delayed().__dask_graph__()
    return [repr(job), job.key, *(str(k) for k in graph), *(repr(v) for v in graph.values())]


# =========================================================================== 1. secrets
@pytest.fixture
def containers(azurite: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(f"dk-sec-{uuid.uuid4().hex[:16]}")
        return made[-1]

    yield make
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite, retry_total=1) as service:
        for name in made:
            with contextlib.suppress(ResourceNotFoundError):
                service.delete_container(name)


def test_credentials_never_leak(azurite: str, containers: Callable[[], str]) -> None:
    assert ACCOUNT_KEY in azurite
    forms = secret_forms(ACCOUNT_KEY, WRONG_KEY)
    texts: list[str] = []
    errors: list[str] = []

    def failing(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except DatasetKitError as exc:
            texts.append(error_text(exc))
            errors.append(f"{what}: {type(exc).__name__}")
        else:
            raise AssertionError(f"{what} did not fail")

    with all_logs_at_debug() as logs:
        store = AzureBlobStore(containers(), connection_string=azurite, retry_total=1)
        vault = AzureBlobStore(containers(), connection_string=azurite, retry_total=1)
        dk.write_dataset(
            FRAME, store=store, dataset_uuid="s", partition_on="p", secondary_indices="k"
        )
        dk.update_dataset(FRAME.assign(p=3), store=store, dataset_uuid="s")
        dk.update_dataset(store=store, dataset_uuid="s", delete_scope=[{"p": 1}])
        dk.read_table(store=store, dataset_uuid="s", predicates=[[("k", "==", "a")]])
        ds = dk.open_dataset(store=store, dataset_uuid="s")
        texts += [repr(store), repr(vault), repr(ds), repr(ds.info()), repr(ds.versions())]
        jobs = [
            dk.pipelines.map_partitions(
                double, source="s", target="t", store=store, partition_on="p"
            ),
            dk.pipelines.backup("s", source=store, target=vault),
            dk.pipelines.garbage_collect("s", store=store, grace_period=0),
            dk.pipelines.verify("s", store=store, versions="all", deep=True),
        ]
        for job in jobs:
            texts += graph_texts(job)
            texts.append(repr(job.compute(scheduler="threads")))
        texts += graph_texts(dk.pipelines.restore("s", source=vault, target=store))
        failing("missing dataset", lambda: dk.read_table(store=store, dataset_uuid="nope"))
        failing(
            "existing dataset",
            lambda: dk.write_dataset(FRAME, store=store, dataset_uuid="s"),
        )
        wrong = azurite.replace(ACCOUNT_KEY, WRONG_KEY)
        bad_key = AzureBlobStore(containers(), connection_string=wrong, retry_total=0)
        texts.append(repr(bad_key))
        failing("wrong account key", lambda: dk.read_table(store=bad_key, dataset_uuid="s"))
        failing(
            "wrong account key, write",
            lambda: dk.write_dataset(FRAME, store=bad_key, dataset_uuid="w"),
        )
        for s in (store, vault, bad_key):
            s.close()
    records = logs.texts
    assert records, "nothing was logged"
    haystack = "\n".join([*texts, *records])
    leaks = [f for f in forms if f in haystack]
    assert not leaks, f"secrets leaked: {leaks}"
    print(
        f"credential leaks: 0 in {len(records)} log records (all loggers at DEBUG), "
        f"{len(errors)} errors with their tracebacks ({', '.join(errors)}), reprs and "
        f"{sum(len(t) for t in texts)} characters of task graph keys/reprs; "
        f"{len(forms)} secret forms scanned"
    )


def test_sas_signature_never_leaks_into_debug_logs(
    azurite: str, containers: Callable[[], str]
) -> None:
    """A SAS token must not appear in the logs either, at any level.

    It does: every request goes through ``requests``/``urllib3``, whose logger
    ``urllib3.connectionpool`` logs each request line at DEBUG, query string included:
    ``"PUT /devstoreaccount1/<container>?restype=container&sv=...&sig=<signature>
    HTTP/1.1" 403``. The Azure SDK's own HTTP logging policy redacts ``sig`` (and
    dataset_kit masks it in reprs and errors, ``store/azure.py::_mask``), but nothing masks
    the transport's log: an application that turns on DEBUG logging (``logging.basicConfig(
    level=logging.DEBUG)``) writes its SAS token to its logs. A valid SAS leaks the same
    way on every request. (A logging filter on ``urllib3.connectionpool`` that applies
    ``_SECRET_PATTERNS``, installed by ``AzureBlobStore._make_clients``, would close it.)
    """
    endpoint = azurite.split("BlobEndpoint=")[1].split(";")[0]
    sas = f"{endpoint}?sv=2024-01-01&sr=c&sp=rwdl&sig={SAS_SIGNATURE}"
    texts: list[str] = []
    with all_logs_at_debug() as logs:
        store = AzureBlobStore(containers(), account_url=sas, retry_total=0)
        texts += [repr(store), store.url]
        try:
            dk.list_datasets(store)
        except DatasetKitError as exc:
            texts.append(error_text(exc))
        store.close()
    assert not [f for f in secret_forms(SAS_SIGNATURE) if f in "\n".join(texts)]
    leaking = [t[:160] for t in logs.texts if SAS_SIGNATURE[:16] in t]
    assert not leaking, f"{len(leaking)} log records hold the SAS signature: {leaking[:1]}"


def test_default_credential_stores_carry_no_secret(
    azurite: str, containers: Callable[[], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import cloudpickle
    from azure.core.credentials import AzureNamedKeyCredential

    from dataset_kit.store import azure as azure_module
    from dataset_kit.testing.azurite import ACCOUNT_NAME

    # secrets a careless implementation could pick up from the environment
    client_secret = "client-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", client_secret)
    # what DefaultAzureCredential would find on a worker: here, in this process only
    named = AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY)
    real = azure_module._resolve_credential
    monkeypatch.setattr(
        azure_module, "_resolve_credential", lambda c: named if c == "default" else real(c)
    )
    endpoint = azurite.split("BlobEndpoint=")[1].split(";")[0]
    query = urllib.parse.urlencode({"account_url": endpoint, "credential": "default"})
    store = dk.open_store(f"azure://{containers()}?{query}")
    assert isinstance(store, AzureBlobStore)
    assert store.options == {"credential": "default"}
    local = LocalStore(tmp_path)
    dk.write_dataset(FRAME, store=local, dataset_uuid="s", partition_on="p")
    dk.pipelines.backup("s", source=local, target=store).compute(scheduler="threads")
    jobs = [
        dk.pipelines.backup("s", source=store, target=local, target_uuid="back"),
        dk.pipelines.map_partitions(double, source="s", target="m", store=store),
        dk.pipelines.garbage_collect("s", store=store, grace_period=0),
        dk.pipelines.verify("s", store=store, versions="all"),
    ]
    blobs = [pickle.dumps(store)]
    texts = [repr(store), store.url]
    for job in jobs:
        blobs += [cloudpickle.dumps(job.to_delayed().__dask_graph__())]
        texts += graph_texts(job)
    forms = [*secret_forms(ACCOUNT_KEY, client_secret), azurite]
    for form in forms:
        encoded = form.encode()
        assert not any(encoded in b for b in blobs), "a secret travels in a pickle"
        assert not any(form in t for t in texts), "a secret shows in a repr or key"
    clone = pickle.loads(blobs[0])
    assert clone.options == {"credential": "default"} and clone.url == store.url
    for job in jobs:
        job.compute(scheduler="threads")
    store.close()
    print(
        f"credential=default: the store pickle and {len(jobs)} task graph pickles "
        f"({sum(map(len, blobs))} bytes) carry no secret (environment connection string, "
        "client secret, account key); the jobs ran"
    )


# =========================================================================== 2. local root
def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry below ``directory`` (not following symlinks): file bytes, link targets."""
    out: dict[str, bytes | str] = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "dir"
    return out


def _blob(root: Path, uuid: str, part: str) -> Path:
    return next((root / uuid / "table" / part).glob("*.parquet"))


def _sentinel(path: Path) -> None:
    """A Parquet file like the dataset's, holding ``x = 999``: read only through a link."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": pa.array([999.0])}), path)


def plant(root: Path, outside: Path, trick: str) -> str:
    """Plant one symlink trick in a store holding dataset ``ds``; return its dataset."""
    table = root / "ds" / "table"
    victim = outside / "victim"
    if trick == "partition-dir":  # a partition directory pointing at the outside tree
        for blob in (table / "p=1").iterdir():
            _sentinel(victim / blob.name)
        shutil.rmtree(table / "p=1")
        (table / "p=1").symlink_to(victim, target_is_directory=True)
    elif trick == "versions-dir":  # the snapshot directory pointing outside
        shutil.copytree(root / "ds" / "_versions", victim / "_versions")
        shutil.rmtree(root / "ds" / "_versions")
        (root / "ds" / "_versions").symlink_to(victim / "_versions")
    elif trick == "pointer":  # the pointer is a link to a file outside
        pointer = root / naming.pointer_key("ds")
        shutil.copy(pointer, victim / "pointer.json")
        pointer.unlink()
        pointer.symlink_to(victim / "pointer.json")
    elif trick == "blob":  # every data blob is a link to a file outside
        for i, blob in enumerate(sorted(table.rglob("*.parquet"))):
            _sentinel(victim / f"blob{i}.parquet")
            blob.unlink()
            blob.symlink_to(victim / f"blob{i}.parquet")
    elif trick == "dataset-prefix":  # a whole dataset prefix pointing outside
        (root / "evil").symlink_to(victim, target_is_directory=True)
        return "evil"
    elif trick == "relative-dotdot":  # a relative link climbing out of the root
        (table / "p=9").symlink_to(Path("..", "..", "..", "..", "outside", "victim"))
    return "ds"


def read_through_link(trick: str, name: str, result: Any) -> bool:
    """Whether a successful operation must have read a file outside the root."""
    if isinstance(result, pd.DataFrame) and (result.get("x", pd.Series()) == 999.0).any():
        return True  # a sentinel blob
    if trick == "pointer":  # there is no pointer inside the root at all
        return name in ("read", "read-v0", "versions")
    if trick == "versions-dir":  # version 0 exists only as a snapshot, outside
        return name == "read-v0"
    return False


OPERATIONS: list[tuple[str, Callable[[Store, str], Any]]] = [
    ("read", lambda s, u: dk.read_table(store=s, dataset_uuid=u)),
    ("read-v0", lambda s, u: dk.read_table(store=s, dataset_uuid=u, version=0)),
    ("versions", lambda s, u: dk.open_dataset(store=s, dataset_uuid=u).versions()),
    ("list", lambda s, u: dk.list_datasets(s)),
    (
        "append",
        lambda s, u: dk.update_dataset(
            pd.DataFrame({"p": [1, 9], "x": [9.0, 9.5]}), store=s, dataset_uuid=u
        ),
    ),
    (
        "write-new",
        lambda s, u: dk.write_dataset(FRAME[["p", "x"]], store=s, dataset_uuid=u, partition_on="p"),
    ),
    ("verify", lambda s, u: dk.pipelines.verify(u, store=s, deep=True).compute(scheduler="sync")),
    (
        "backup",
        lambda s, u: dk.pipelines.backup(u, source=s, target=s, target_uuid="copy").compute(
            scheduler="sync"
        ),
    ),
    ("gc", lambda s, u: dk.garbage_collect(store=s, dataset_uuid=u, grace_period=0)),
    ("expire", lambda s, u: dk.expire_versions(store=s, dataset_uuid=u, keep_versions=1)),
    (
        "overwrite",
        lambda s, u: dk.write_dataset(
            FRAME[["p", "x"]], store=s, dataset_uuid=u, partition_on="p", mode="overwrite"
        ),
    ),
    ("delete", lambda s, u: dk.delete_dataset(store=s, dataset_uuid=u)),
]
TRICKS = ["partition-dir", "versions-dir", "pointer", "blob", "dataset-prefix", "relative-dotdot"]


def test_local_store_stays_inside_its_root(tmp_path: Path) -> None:
    base = tmp_path / "base"
    store = LocalStore(base)
    dk.write_dataset(FRAME[["p", "x"]], store=store, dataset_uuid="ds", partition_on="p")
    dk.update_dataset(FRAME[["p", "x"]].assign(p=2), store=store, dataset_uuid="ds")
    outcomes: dict[str, int] = {}
    runs = 0
    for trick in TRICKS:
        for name, operation in OPERATIONS:
            work = tmp_path / "work"
            if work.exists():
                shutil.rmtree(work)
            root, outside = work / "root", work / "outside"
            shutil.copytree(base, root)
            (outside / "victim").mkdir(parents=True)
            (outside / "victim" / "secret.txt").write_bytes(b"do not touch")
            uuid_ = plant(root, outside, trick)
            before = snapshot(outside)
            local = LocalStore(root)
            try:
                result = operation(local, uuid_)
            except DatasetKitError as exc:
                outcome = type(exc).__name__
            except Exception as exc:
                raise AssertionError(f"{trick}/{name}: untyped {exc!r}") from exc
            else:
                outcome = "ok"
                assert not read_through_link(trick, name, result), (
                    f"{trick}/{name}: read data through a link out of the root"
                )
            after = snapshot(outside)
            assert after == before, f"{trick}/{name}: the outside tree changed"
            assert sorted(p.name for p in work.iterdir()) == ["outside", "root"]
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            runs += 1
    print(
        f"local store confinement: {len(TRICKS)} symlink tricks x {len(OPERATIONS)} operations "
        f"= {runs} runs, outside tree unchanged in all; outcomes {dict(sorted(outcomes.items()))}"
    )


@pytest.mark.xfail(
    strict=True,
    reason="documented LocalStore limitation: a directory verified once is cached (no "
    "lstat per call), so one swapped for a symlink later is followed",
)
def test_directory_swapped_for_a_symlink_after_first_use(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(root)
    store.put("ds/table/p=1/a.parquet", b"first")
    store.put("ds/table/p=1/b.parquet", b"second")  # now p=1 is verified and cached
    shutil.rmtree(root / "ds" / "table" / "p=1")
    (root / "ds" / "table" / "p=1").symlink_to(outside, target_is_directory=True)
    with contextlib.suppress(DatasetKitError):
        store.put("ds/table/p=1/c.parquet", b"third")
    assert list(outside.iterdir()) == [], "wrote outside the root through a swapped directory"


# =========================================================================== 3. TLS
def test_pipeline_on_a_tls_secured_cluster(tmp_path: Path) -> None:
    import dask
    import distributed
    from distributed.security import Security

    security = Security.temporary()  # a throw-away CA and certificates, in memory
    store = LocalStore(tmp_path / "store")
    dk.write_dataset(FRAME, store=store, dataset_uuid="s", partition_on="p")
    pem = {}
    for name in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
        pem[name] = tmp_path / f"{name}.pem"
        pem[name].write_text(getattr(security, name))
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        protocol="tls",
        security=security,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        # 1. a client built with the security object
        with distributed.Client(cluster, security=security, set_as_default=False) as client:
            job = dk.pipelines.map_partitions(
                double, source="s", target="t1", store=store, partition_on="p"
            )
            assert job.compute(scheduler=client).version == 0
        # 2. by address, with the certificates in the dask configuration
        tls = {
            "distributed.comm.tls.ca-file": str(pem["tls_ca_file"]),
            "distributed.comm.tls.client.cert": str(pem["tls_client_cert"]),
            "distributed.comm.tls.client.key": str(pem["tls_client_key"]),
            "distributed.comm.require-encryption": True,
        }
        with dask.config.set(tls):
            job = dk.pipelines.map_partitions(
                double, source="s", target="t2", store=store, partition_on="p"
            )
            assert job.compute(scheduler=address).version == 0
        # 3. clients without the right certificates are refused
        refusals = refused_connections(address)
    assert refusals == {
        "foreign CA": "refused",
        "no certificates": "refused",
        "plain tcp": "refused",
    }, refusals
    for target in ("t1", "t2"):
        got = dk.read_table(store=store, dataset_uuid=target)
        assert sorted(got["x"]) == sorted(FRAME["x"] * 2)
    print(
        f"TLS cluster {address.split(':')[0]}:// with worker processes: pipelines ran with a "
        f"Security client and with distributed.comm.tls config; refused: {', '.join(refusals)}"
    )


_REFUSALS = """
import json, os, sys
import distributed
from distributed.security import Security

address = sys.argv[1]
attempts = {
    "foreign CA": lambda: distributed.Client(
        address, security=Security.temporary(), timeout=5, set_as_default=False
    ),
    "no certificates": lambda: distributed.Client(address, timeout=5, set_as_default=False),
    "plain tcp": lambda: distributed.Client(
        address.replace("tls://", "tcp://"), timeout=3, set_as_default=False
    ),
}
out = {}
for name, attempt in attempts.items():
    try:
        attempt()
        out[name] = "CONNECTED"
    except Exception as exc:
        out[name] = "refused"
print(json.dumps(out), flush=True)
os._exit(0)  # a Client whose start failed hangs 60 s in __del__: skip the finalizers
"""


def refused_connections(address: str) -> dict[str, str]:
    """Try to connect without the right certificates, in a child process.

    (distributed's ``Client.__del__`` of a client whose start failed blocks for 60 s in
    ``close()``; in the test process that would stall whatever test runs when the garbage
    collector gets to it.)
    """
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REFUSALS, address],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


_TLS_ADDRESS = """
import os, sys
import pandas as pd
import dataset_kit as dk

store = dk.open_store(sys.argv[1])
dk.write_dataset(pd.DataFrame({"x": [1]}), store=store, dataset_uuid="s")
try:
    dk.pipelines.verify("s", store=store).compute(scheduler="tls://127.0.0.1:9")
except Exception as exc:
    print(f"{type(exc).__module__}.{type(exc).__name__}: {exc}", flush=True)
os._exit(0)  # see refused_connections
"""


def test_tls_address_without_certificates_is_a_config_error(tmp_path: Path) -> None:
    """``job.compute(scheduler="tls://...")`` without TLS configuration should fail with the
    documented ``ConfigError`` ("cannot connect to the dask scheduler at ..."): it raises
    ``TypeError: TLS expects a `ssl_context` argument of type ssl.SSLContext (perhaps
    check your TLS configuration?) Instead got None`` from distributed, because
    ``dataset_kit/pipelines/_job.py::_open_client`` (lines 81-82) only turns ``OSError``
    into ``ConfigError``. (No cluster is needed: the error comes before connecting. Run in
    a child process: see :func:`refused_connections`.)
    """
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _TLS_ADDRESS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    assert out.startswith("dataset_kit.exceptions.ConfigError"), out
    assert "tls://127.0.0.1:9" in out
