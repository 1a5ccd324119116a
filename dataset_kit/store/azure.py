"""A native Azure Blob Storage backend (``azure://<container>``) on ``azure-storage-blob`` v12.

Conditional writes map onto the service's own preconditions, so commits are atomic:
create-only puts send ``If-None-Match: *`` and compare-and-swap sends ``If-Match: <etag>``.
Copies run server-side (``Copy Blob``) and ranges are read with ``Range`` requests.

The SDK is imported lazily: this module imports without it, and building a store without
it raises :class:`~dataset_kit.exceptions.ConfigError` with the install hint.
"""

from __future__ import annotations

import collections
import datetime
import email.utils
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import dataset_kit.store._streams as _streams
from dataset_kit.exceptions import (
    ConfigError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from dataset_kit.store._base import BlobInfo, Capability, DeleteReport, Store, validate_key
from dataset_kit.store.delegate import read_origin

if TYPE_CHECKING:
    import requests
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

__all__ = ["AzureBlobStore", "from_url"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_INSTALL_HINT = "azure:// stores need azure-storage-blob: pip install dataset-kit[azure]"
#: Container names: 3-63 lowercase letters, digits and single hyphens, no hyphen at the ends.
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
#: Secrets that may show up in SDK messages: account keys and SAS signatures.
_SECRET_PATTERNS = (
    re.compile(r"(AccountKey=)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature=)[^;\s'\"]+", re.IGNORECASE),
    re.compile(r"([?&]sig=)[^&\s'\"]+", re.IGNORECASE),
)
#: Statuses that are worth retrying later (after the SDK's own retries).
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: The Blob Batch API deletes at most this many blobs per request.
_BATCH_SIZE = 256
#: Batch delete requests in flight at once in one ``delete_many``.
_DELETE_THREADS = 8
#: How long a pending server-side copy may take before it is aborted.
_COPY_TIMEOUT = 600.0
#: Options of :func:`from_url` besides the URL's own ``account_url``/``prefix``.
_OPTIONS = frozenset(
    {
        "connection_string",
        "account_url",
        "credential",
        "prefix",
        "create_container",
        "retry_total",
        "timeout",
        "max_connections",
        "allow_unsafe_commits",  # accepted by every store; conditional writes are native here
    }
)
_DEFAULTS: dict[str, Any] = {
    "create_container": True,
    "retry_total": 5,
    "timeout": 30.0,
    "max_connections": 16,
}


def _parse_connection_string(text: str) -> dict[str, str]:
    """Split ``Key=Value;Key=Value`` into a dict with lower-case keys."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            fields[name.strip().lower()] = value.strip()
    return fields


def _account_url_of(connection_string: str) -> str:
    """The blob endpoint a connection string points at (no secrets)."""
    fields = _parse_connection_string(connection_string)
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return "http://127.0.0.1:10000/devstoreaccount1"
    endpoint = fields.get("blobendpoint")
    if endpoint:
        return _strip_query(endpoint)[0]
    account = fields.get("accountname")
    if not account:
        raise ConfigError("the Azure connection string has neither BlobEndpoint nor AccountName")
    protocol = fields.get("defaultendpointsprotocol", "https")
    suffix = fields.get("endpointsuffix", "core.windows.net")
    return f"{protocol}://{account}.blob.{suffix}"


def _strip_query(url: str) -> tuple[str, str]:
    """Split a URL into (URL without query and fragment, query) and drop a trailing ``/``."""
    parts = urllib.parse.urlsplit(url)
    bare = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return bare.rstrip("/"), parts.query


#: ``credential=DEFAULT_CREDENTIAL``: ``azure.identity.DefaultAzureCredential`` per process.
DEFAULT_CREDENTIAL = "default"


def _http_date_floor(seconds: float) -> datetime.datetime:
    """The latest whole-second time ``t`` with every blob whose Last-Modified is at most
    ``t`` certainly modified before ``seconds``: HTTP dates and Last-Modified both have
    whole seconds, so a blob modified at 10:00:00.9 shows 10:00:00.

    Examples
    --------
    >>> _http_date_floor(1_700_000_000.5).isoformat()
    '2023-11-14T22:13:19+00:00'
    """
    return datetime.datetime.fromtimestamp(int(seconds) - 1, tz=datetime.UTC)


class _MaskSecrets(logging.Filter):
    """Mask SAS signatures and account keys in the records of the HTTP libraries below the
    SDK (urllib3 logs every request URL, query string included, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for pattern in _SECRET_PATTERNS:
            masked = pattern.sub(r"\1***", masked)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_MASK = _MaskSecrets()


def _install_log_masking() -> None:
    for name in ("urllib3.connectionpool", "azure.core.pipeline.policies.http_logging_policy"):
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


def _resolve_credential(credential: Any) -> Any:
    """The SDK credential for ``credential`` (``"default"`` -> DefaultAzureCredential)."""
    if not (isinstance(credential, str) and credential == DEFAULT_CREDENTIAL):
        return credential
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError(
            'credential="default" needs azure-identity: pip install dataset-kit[azure]'
        ) from exc
    return DefaultAzureCredential()


def _import_sdk() -> Any:
    """Import ``azure.storage.blob`` or raise ConfigError with the install hint."""
    try:
        import azure.storage.blob as sdk
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    return sdk


def _environment_settings(account_url: str) -> tuple[dict[str, str], str | None]:
    """What requests would take from the environment for requests to ``account_url``:
    the proxies (none if ``NO_PROXY`` covers its host) and a CA bundle
    (``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``).

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost"}
    >>> with mock.patch.dict(os.environ, env, clear=True):
    ...     _environment_settings("https://acct.blob.core.windows.net")[0]["https"]
    ...     _environment_settings("http://localhost:10000/devstoreaccount1")
    'http://proxy:3128'
    ({}, None)
    """
    import requests.utils

    proxies = {
        scheme: url
        for scheme, url in requests.utils.get_environ_proxies(account_url).items()
        if scheme != "no"
    }
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return proxies, bundle or None


class AzureBlobStore(Store):
    """Blobs in one Azure Blob Storage container, optionally below a key prefix.

    Parameters
    ----------
    container
        The container name (3-63 lowercase letters, digits and hyphens).
    connection_string
        An account connection string (``AccountKey=...`` or ``SharedAccessSignature=...``).
        Takes precedence over ``account_url``.
    account_url
        The blob endpoint, e.g. ``https://<account>.blob.core.windows.net``. A SAS token
        in its query string is moved into ``credential``.
    credential
        Anything the SDK accepts as a credential: an account key, a SAS token, an
        ``AzureNamedKeyCredential`` or a token credential. ``"default"`` means
        ``azure.identity.DefaultAzureCredential()`` (environment, workload or managed
        identity, Azure CLI...), created in each process that uses the store: pickles sent
        to dask workers then carry no secret at all, and every worker authenticates
        itself. Other credentials travel with pickles, so they should be picklable.
    prefix
        Every key is stored under ``<prefix>/`` in the container.
    create_container
        Create the container on first use if it does not exist.
    retry_total
        Retries of the SDK (exponential back-off from 1 s) before an error surfaces.
    timeout
        Connection and read timeout of each HTTP request, in seconds.
    max_connections
        Size of the HTTP connection pool, and the upper bound of the parallel chunk
        transfers of one large blob.

    Raises
    ------
    ConfigError
        If ``azure-storage-blob`` is not installed, the container name or prefix is
        invalid, or neither a connection string nor an account URL is given.

    Notes
    -----
    Clients are created on first use, once per process, and shared by all threads.
    The store pickles by :attr:`url` and :attr:`options`: the URL never carries a
    secret, while ``options`` carries the connection string or credential so that the
    store can be rebuilt in dask workers. ``repr()`` and error messages mask account
    keys and SAS signatures.

    Examples
    --------
    >>> store = AzureBlobStore(  # doctest: +SKIP
    ...     "datasets", connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    ... )
    """

    capabilities = frozenset(
        {
            Capability.ATOMIC_CREATE,
            Capability.COMPARE_AND_SWAP,
            Capability.SERVER_COPY,
            Capability.RANGE_READ,
            Capability.CONCURRENT_IO,
        }
    )

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        prefix: str = "",
        create_container: bool = True,
        retry_total: int = 5,
        timeout: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        _import_sdk()
        if not isinstance(container, str) or not _CONTAINER.fullmatch(container):
            raise ConfigError(
                f"invalid Azure container name {container!r}: use 3-63 lowercase letters, "
                "digits and single hyphens"
            )
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKeyError as exc:
                raise ConfigError(f"invalid Azure key prefix {prefix!r}: {exc}") from None
        if retry_total < 0 or timeout <= 0 or max_connections < 1:
            raise ConfigError(
                "retry_total must be >= 0, timeout > 0 and max_connections >= 1, got "
                f"{retry_total}, {timeout}, {max_connections}"
            )
        if account_url is not None:
            account_url, sas = _strip_query(account_url)
            if sas:
                if credential is not None:
                    raise ConfigError("account_url has a SAS token and a credential is given too")
                credential = sas
        if connection_string is not None:
            derived = _account_url_of(connection_string)
            if account_url is not None and account_url != derived:
                raise ConfigError(
                    f"account_url {account_url!r} does not match the connection string's "
                    f"endpoint {derived!r}"
                )
            account_url = derived
        elif not account_url:
            raise ConfigError("an Azure store needs a connection_string or an account_url")
        self._container = container
        self._connection_string = connection_string
        self._account_url = account_url
        self._credential = credential
        self._prefix = prefix
        self._root = f"{prefix}/" if prefix else ""
        self._create_container = bool(create_container)
        self._retry_total = int(retry_total)
        self._timeout = float(timeout)
        self._max_connections = int(max_connections)
        self._secrets = self._collect_secrets()
        self._lock = threading.Lock()
        # accounts whose blobs this store's credential may not read inside the service
        self._copy_refused: set[str] = set()
        self._pid: int | None = None
        self._service: BlobServiceClient | None = None
        self._client: ContainerClient | None = None
        self._session: requests.Session | None = None

    def _collect_secrets(self) -> tuple[str, ...]:
        secrets: list[str] = []
        if self._connection_string:
            fields = _parse_connection_string(self._connection_string)
            secrets += [fields.get("accountkey", ""), fields.get("sharedaccesssignature", "")]
        if isinstance(self._credential, str):
            secrets.append(self._credential)
        elif isinstance(self._credential, Mapping):
            secrets += [str(v) for v in self._credential.values()]
        # longest first, so that a secret containing another one is masked whole
        return tuple(sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True))

    def _mask(self, text: str) -> str:
        """``text`` with every known secret and every key/SAS-looking field masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    # ------------------------------------------------------------------ identity
    @property
    def container(self) -> str:
        """The container name."""
        return self._container

    @property
    def account_url(self) -> str:
        """The blob endpoint, e.g. ``https://<account>.blob.core.windows.net`` (no secret)."""
        return self._account_url

    @property
    def prefix(self) -> str:
        """The key prefix inside the container (``""`` for none)."""
        return self._prefix

    @property
    def url(self) -> str:
        """``azure://<container>?account_url=...&prefix=...`` (never with secrets)."""
        query = {"account_url": self._account_url}
        if self._prefix:
            query["prefix"] = self._prefix
        if isinstance(self._credential, str) and self._credential == DEFAULT_CREDENTIAL:
            query["credential"] = DEFAULT_CREDENTIAL
        return f"azure://{self._container}?{urllib.parse.urlencode(query)}"

    @property
    def options(self) -> Mapping[str, Any]:
        """Connection string or credential, and every non-default setting."""
        opts: dict[str, Any] = {}
        if self._connection_string is not None:
            opts["connection_string"] = self._connection_string
        if self._credential is not None:
            opts["credential"] = self._credential
        current = {
            "create_container": self._create_container,
            "retry_total": self._retry_total,
            "timeout": self._timeout,
            "max_connections": self._max_connections,
        }
        opts.update({k: v for k, v in current.items() if v != _DEFAULTS[k]})
        return opts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._mask(self.url)!r})"

    # ------------------------------------------------------------------ clients
    def _container_client(self) -> ContainerClient:
        """The process's shared container client, created on first use."""
        client, pid = self._client, os.getpid()
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._client is None or self._pid != pid:
                self._client = None  # a client inherited through fork is not reused
                self._make_clients()
                self._pid = pid
            assert self._client is not None
            return self._client

    def _make_clients(self) -> None:
        """Build session, service and container client; the caller holds ``_lock``."""
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=self._max_connections
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        proxies, ca_bundle = _environment_settings(self._account_url)
        # requests reads the proxy variables, NO_PROXY, the CA bundle variables and
        # ~/.netrc from the environment on every request (about 0.5 ms of CPU each,
        # a fifth of a small upload's client time); they are read once, here, instead
        session.trust_env = False
        session.proxies.update(proxies)
        transport = RequestsTransport(
            session=session,
            session_owner=False,
            connection_timeout=self._timeout,
            read_timeout=self._timeout,
            connection_verify=ca_bundle or True,
        )
        retry = ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            retry_total=self._retry_total,
            random_jitter_range=1,
        )
        kwargs: dict[str, Any] = {"transport": transport, "retry_policy": retry}
        _install_log_masking()
        credential = _resolve_credential(self._credential)
        try:
            if self._connection_string is not None:
                service = BlobServiceClient.from_connection_string(
                    self._connection_string, credential=credential, **kwargs
                )
            else:
                service = BlobServiceClient(self._account_url, credential=credential, **kwargs)
            client = service.get_container_client(self._container)
        except ValueError as exc:  # malformed connection string or URL
            session.close()
            raise ConfigError(f"cannot configure {self!r}: {self._mask(str(exc))}") from None
        _log.debug("azure: clients for container %r at %s", self._container, self._account_url)
        if self._create_container:
            try:
                self._call("create container", None, client.create_container, exists_ok=True)
            except BaseException:
                client.close()
                service.close()
                session.close()
                raise
        self._session, self._service, self._client = session, service, client

    def close(self) -> None:
        """Close the clients and their connections (they are re-created on next use)."""
        with self._lock:
            client, service, session = self._client, self._service, self._session
            self._client = self._service = self._session = None
            self._pid = None
        for closable in (client, service, session):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing must not fail the caller
                    _log.debug("azure: error while closing a client", exc_info=True)

    # ------------------------------------------------------------------ errors
    def _call(
        self,
        op: str,
        key: str | None,
        fn: Callable[..., _T],
        *args: Any,
        if_absent: bool = False,
        if_match: str | None = None,
        exists_ok: bool = False,
        **kwargs: Any,
    ) -> _T:
        """Run one SDK call and translate its errors into the StoreError hierarchy.

        ``exists_ok`` swallows "already exists" errors (``fn`` then returns ``None``).
        """
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if exists_ok and _status(exc) == 409:
                return None  # type: ignore[return-value]
            error = self._translate(exc, op, key, if_absent=if_absent, if_match=if_match)
            if error is None:
                raise
            # chain the SDK error for debugging, unless its text carries a secret
            raise error from (exc if self._mask(str(exc)) == str(exc) else None)

    def _conditional_call(
        self,
        op: str,
        key: str,
        fn: Callable[..., _T],
        *args: Any,
        if_absent: bool = False,
        if_match: str | None = None,
        **kwargs: Any,
    ) -> _T:
        """:meth:`_call` for a conditional request, which the SDK's retry may repeat.

        A repeated create-only or compare-and-swap request fails against the write its
        first attempt made when only the answer was lost (a dropped connection, a
        timeout): "exists" or "etag changed" then means nothing. So a condition that
        fails *after a retry* is reported as :class:`StoreUnavailableError` (outcome
        unknown): the callers check what is there, as for any lost answer, instead of
        taking their own write for another writer's.
        """
        retried: list[int] = []
        try:
            return self._call(
                op,
                key,
                fn,
                *args,
                if_absent=if_absent,
                if_match=if_match,
                retry_hook=lambda **_: retried.append(1),
                **kwargs,
            )
        except (KeyExistsError, PreconditionFailedError) as exc:
            if not retried:
                raise
            raise StoreUnavailableError(
                f"azure {op} of {key!r} in {self!r}: its condition failed after the request "
                f"was sent again ({exc}); the first attempt may have succeeded, so the "
                "outcome is unknown",
                key=key,
            ) from exc

    def _translate(
        self,
        exc: BaseException,
        op: str,
        key: str | None,
        *,
        if_absent: bool,
        if_match: str | None,
    ) -> StoreError | None:
        """The StoreError for an SDK error, or None for errors that are not the SDK's."""
        from azure.core import exceptions as az

        if isinstance(exc, StoreError):
            return exc
        if not isinstance(exc, az.AzureError):
            return None
        status = _status(exc)
        code = getattr(exc, "error_code", None)
        detail = self._mask(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        what = f"azure {op}" + (f" of {key!r}" if key is not None else "")
        message = f"{what} in {self!r} failed: {type(exc).__name__}"
        if status is not None or code:
            message += f" ({' '.join(str(p) for p in (status, code) if p)})"
        if detail:
            message += f": {detail}"
        if isinstance(exc, (az.ServiceRequestError, az.ServiceResponseError)):
            return StoreUnavailableError(message, key=key)
        if status in _TRANSIENT_STATUS:
            return StoreUnavailableError(message, key=key)
        if isinstance(exc, az.ResourceNotFoundError) or status == 404:
            if if_match is not None:
                return PreconditionFailedError(
                    f"compare-and-swap on {key!r} failed: the key does not exist", key=key
                )
            if code == "ContainerNotFound":
                return KeyNotFoundError(
                    f"{what} failed: container {self._container!r} does not exist ({self!r})",
                    key=key,
                )
            return KeyNotFoundError(f"key {key!r} not found in {self!r}", key=key)
        if isinstance(exc, az.ResourceModifiedError) or status == 412:
            if if_absent:
                return KeyExistsError(f"key {key!r} already exists in {self!r}", key=key)
            return PreconditionFailedError(
                f"compare-and-swap on {key!r} failed: the etag changed ({self!r})", key=key
            )
        if (isinstance(exc, az.ResourceExistsError) or status == 409) and if_absent:
            return KeyExistsError(f"key {key!r} already exists in {self!r}", key=key)
        if status in (401, 403) and self._connection_string is None and self._credential is None:
            message += (
                "; no credentials were given: pass connection_string= or credential= "
                '(credential="default" for DefaultAzureCredential), or set '
                "AZURE_STORAGE_CONNECTION_STRING"
            )
        return StoreError(message, key=key)

    # ------------------------------------------------------------------ helpers
    def _name(self, key: str) -> str:
        return self._root + key

    def _blob(self, key: str) -> BlobClient:
        return self._container_client().get_blob_client(self._name(key))

    def _info(self, key: str, props: Any) -> BlobInfo:
        return BlobInfo(
            key=key,
            size=int(props.size),
            mtime=float(props.last_modified.timestamp()),
            etag=_etag(props.etag),
        )

    def _concurrency(self) -> int:
        return max(1, min(4, self._max_connections))

    def _pages(self, op: str, prefix: str, pager: Callable[[], Any]) -> Iterator[list[Any]]:
        """Yield the listing pages of ``pager()``, each fetched with translated errors."""
        return self._page_lists(op, self._call(op, None, lambda: iter(pager().by_page())))

    def _page_lists(self, op: str, pages: Iterator[Iterable[Any]]) -> Iterator[list[Any]]:
        """Yield the non-empty pages of the page iterator ``pages`` as lists (with translated
        errors; none for a missing container). Each is yielded before the next is fetched,
        so the iterator's state describes the page just yielded."""
        while True:
            try:
                page: list[Any] | None = self._call(op, None, _next_page, pages)
            except KeyNotFoundError:  # the container does not exist: nothing to list
                return
            if page is None:
                return
            if page:  # an empty page may still be followed by more (continuation tokens)
                yield page

    # ------------------------------------------------------------------ hooks: reads
    def _get(self, key: str) -> bytes:
        blob = self._blob(key)
        return self._call(
            "get",
            key,
            lambda: blob.download_blob(max_concurrency=self._concurrency()).readall(),
        )

    def _get_with_info(self, key: str) -> tuple[bytes, BlobInfo]:
        # one request: the download's response carries the blob's properties (and the
        # SDK pins the etag across the chunks of a large blob)
        blob = self._blob(key)

        def read() -> tuple[bytes, Any]:
            downloader = blob.download_blob(max_concurrency=self._concurrency())
            return downloader.readall(), downloader.properties

        data, props = self._call("get", key, read)
        return data, self._info(key, props)

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        if length == 0:
            self._stat(key)  # a missing key is still an error
            return b""
        from azure.core import exceptions as az

        blob = self._blob(key)

        def read() -> bytes | None:
            try:
                return blob.download_blob(
                    offset=start, length=length, max_concurrency=self._concurrency()
                ).readall()
            except az.HttpResponseError as exc:
                # 416 InvalidRange: the range starts at or past the end of an existing
                # blob (decided by the answer's status and code, never by its text, which
                # holds the key and the URL)
                if _status(exc) == 416 or getattr(exc, "error_code", None) == "InvalidRange":
                    return None
                raise

        data = self._call("get_range", key, read)
        return b"" if data is None else data

    def _stat(self, key: str) -> BlobInfo:
        blob = self._blob(key)
        return self._info(key, self._call("stat", key, blob.get_blob_properties))

    def _exists(self, key: str) -> bool:
        blob = self._blob(key)
        return bool(self._call("exists", key, blob.exists))

    def _touch(self, key: str) -> None:
        # Set Blob Metadata is a write: it renews Last-Modified (and the etag) without
        # the content. The store sets no metadata of its own, so there is nothing to keep.
        blob = self._blob(key)
        self._call("touch", key, blob.set_blob_metadata, {})

    def _iter_infos(self, prefix: str) -> Iterator[BlobInfo]:
        # The SDK's list_blobs turns each listed blob into a BlobProperties model through
        # its generic deserializer: about 0.45 ms of CPU per blob (0.9 s for a GC's
        # listing of 2,000 blobs; Azure/azure-sdk-for-python#27144). The listing's XML
        # already holds name, size, time and etag: they are read from it directly (the
        # pager of list_blob_names keeps each page's parsed XML), and list_blobs is only
        # the fallback for an SDK whose pager no longer does.
        client = self._container_client()
        n = len(self._root)
        pages = self._call(
            "list",
            None,
            lambda: client.list_blob_names(
                name_starts_with=self._name(prefix), results_per_page=self._list_page_size
            ).by_page(),
        )
        first = True
        for names in self._page_lists("list", pages):
            infos = _listed_infos(getattr(pages, "_response", None), names, n)
            if infos is None:
                if not first:
                    raise StoreError(f"azure list in {self!r}: unreadable listing page")
                _log.debug("azure: listing XML not available; listing blob models instead")
                yield from self._iter_infos_slowly(prefix)
                return
            first = False
            yield from infos

    #: Blobs per listing page (None: the service's maximum, 5,000); tests make it small.
    _list_page_size: int | None = None

    def _iter_infos_slowly(self, prefix: str) -> Iterator[BlobInfo]:
        client = self._container_client()
        n = len(self._root)
        for page in self._pages(
            "list", prefix, lambda: client.list_blobs(name_starts_with=self._name(prefix))
        ):
            for props in page:
                yield self._info(props.name[n:], props)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        # From the listing's XML, as _iter_infos reads it: the names list_blob_names
        # returns are the raw XML text, still percent-encoded for the blobs the service
        # marks Encoded="true" (names with characters XML cannot carry).
        return (info.key for info in self._iter_infos(prefix))

    def _iter_shallow_keys(self, prefix: str) -> Iterator[str]:
        from azure.storage.blob import BlobPrefix

        client = self._container_client()
        n = len(self._root)
        for page in self._pages(
            "list",
            prefix,
            lambda: client.walk_blobs(name_starts_with=self._name(prefix), delimiter="/"),
        ):
            for item in page:
                if not isinstance(item, BlobPrefix):  # "directories" are not keys
                    yield item.name[n:]

    # ------------------------------------------------------------------ hooks: writes
    def _put(
        self, key: str, data: bytes | memoryview, *, if_absent: bool, if_match: str | None
    ) -> BlobInfo:
        from azure.core import MatchConditions

        payload = data if isinstance(data, bytes) else bytes(data)
        kwargs: dict[str, Any] = {"overwrite": True, "max_concurrency": self._concurrency()}
        if if_absent:
            kwargs["if_none_match"] = "*"
        elif if_match is not None:
            kwargs["etag"] = if_match
            kwargs["match_condition"] = MatchConditions.IfNotModified
        blob = self._blob(key)
        call = self._conditional_call if if_absent or if_match is not None else self._call
        result = call(
            "put",
            key,
            blob.upload_blob,
            payload,
            length=len(payload),
            if_absent=if_absent,
            if_match=if_match,
            **kwargs,
        )
        return BlobInfo(
            key=key,
            size=len(payload),
            mtime=float(result["last_modified"].timestamp()),
            etag=_etag(result["etag"]),
        )

    def _delete(self, key: str, *, if_match: str | None) -> None:
        from azure.core import MatchConditions

        blob = self._blob(key)
        if if_match is not None:
            self._conditional_call(
                "delete",
                key,
                blob.delete_blob,
                if_match=if_match,
                etag=if_match,
                match_condition=MatchConditions.IfNotModified,
            )
            return
        try:
            self._call("delete", key, blob.delete_blob)
        except KeyNotFoundError:
            pass  # deleting a missing key is a no-op

    def delete_many(
        self,
        keys: Iterable[str],
        *,
        unmodified_since: float | None = None,
        prune_dirs: bool = True,
    ) -> DeleteReport:
        """Delete many blobs with the Blob Batch API (256 per request), up to
        ``_DELETE_THREADS`` batches at once (bounded by ``max_connections``).

        ``keys`` is consumed lazily, a few batches ahead of the requests. Missing blobs
        count as deleted; invalid keys and per-blob failures are reported in
        :attr:`DeleteReport.failed`, never raised. ``unmodified_since`` goes into each
        sub-request as ``If-Unmodified-Since`` (whole seconds, as HTTP dates are), so the
        service itself keeps newer blobs (412: :attr:`DeleteReport.kept`).
        ``prune_dirs`` does nothing: a flat namespace has no directories to remove.
        """
        since = None if unmodified_since is None else _http_date_floor(unmodified_since)
        report = DeleteReport()

        def batches() -> Iterator[list[str]]:
            batch: list[str] = []
            for key in keys:
                try:
                    batch.append(validate_key(key))
                except InvalidKeyError as exc:
                    report.failed[key] = exc
                    continue
                if len(batch) == _BATCH_SIZE:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def delete(batch: list[str]) -> DeleteReport:
            part = DeleteReport()
            self._delete_batch(batch, part, since)
            return part

        todo = batches()
        first = next(todo, None)
        if first is None:
            return report
        second = next(todo, None)
        if second is None:  # one request: no threads
            report.merge(delete(first))
            return report
        threads = max(1, min(_DELETE_THREADS, self._max_connections))
        with ThreadPoolExecutor(threads, thread_name_prefix="dk-azure-delete") as pool:
            pending = collections.deque([pool.submit(delete, first), pool.submit(delete, second)])
            for batch in todo:
                pending.append(pool.submit(delete, batch))
                while len(pending) >= 2 * threads:
                    report.merge(pending.popleft().result())
            while pending:
                report.merge(pending.popleft().result())
        return report

    def _delete_each(
        self, keys: list[str], report: DeleteReport, since: datetime.datetime | None
    ) -> None:
        """Delete ``keys`` one request each, accounting every key in ``report``."""
        for key in keys:
            try:
                if since is None:
                    self._delete(key, if_match=None)
                elif not self._delete_unmodified_since(key, since):
                    report.kept.append(key)
                    continue
            except Exception as per_key:
                report.failed[key] = per_key
            else:
                report.deleted.append(key)

    def _delete_unmodified_since(self, key: str, since: datetime.datetime) -> bool:
        """One conditional delete; False if the service kept a newer blob (412)."""
        blob = self._blob(key)
        try:
            self._call("delete", key, blob.delete_blob, if_unmodified_since=since)
        except KeyNotFoundError:
            return True
        except PreconditionFailedError:
            return False
        return True

    def _delete_batch(
        self, keys: list[str], report: DeleteReport, since: datetime.datetime | None = None
    ) -> None:
        from azure.core import exceptions as az

        client = self._container_client()
        names: list[Any] = [self._name(k) for k in keys]
        if since is not None:
            names = [{"name": n, "if_unmodified_since": since} for n in names]
        try:
            responses = list(client.delete_blobs(*names, raise_on_any_failure=False))
        except Exception as exc:
            error = self._translate(exc, "delete_blobs", None, if_absent=False, if_match=None)
            if error is None:
                raise
            if isinstance(error, StoreUnavailableError) or not isinstance(
                exc, az.HttpResponseError
            ):
                for key in keys:
                    report.failed[key] = error
                return
            # The service (or an emulator) rejected the batch request itself: fall back to
            # one delete per blob. Azurite 3.35 accepts batches, so this is for other
            # emulators and proxies that do not pass multipart requests through.
            _log.debug("azure: batch delete rejected (%s); deleting one by one", error)
            self._delete_each(keys, report, since)
            return
        if len(responses) != len(keys):  # cannot attribute the answers: check each key
            self._delete_each(keys, report, since)
            return
        for key, response in zip(keys, responses, strict=True):
            status = int(response.status_code)
            if status in (200, 202, 404):  # 404: already absent
                report.deleted.append(key)
                if status == 404:
                    report.absent.append(key)
            elif status == 412 and since is not None:  # modified since: the service kept it
                report.kept.append(key)
            else:
                cls = StoreUnavailableError if status in _TRANSIENT_STATUS else StoreError
                report.failed[key] = cls(
                    f"azure batch delete of {key!r} in {self!r} failed: "
                    f"{status} {self._mask(str(response.reason or ''))}",
                    key=key,
                )

    def _copy(self, src: str, dst: str, *, if_absent: bool) -> BlobInfo:
        source = self._stat(src)  # KeyNotFoundError names the source
        return self._service_copy(self, src, dst, source, if_absent=if_absent)

    def _copy_from(
        self, source: Store, src: str, dst: str, *, source_info: BlobInfo | None
    ) -> BlobInfo:
        # Within one storage account the service copies (one request, no bytes through
        # this process): the target's credential authorizes reading the source there.
        # Another account would need a SAS for the source: the bytes pass through here.
        origin = self._copy_origin(source)
        if origin is None:
            if source_info is not None and self._streams_from(source, source_info):
                return self._upload_stream(source, dst, source_info)
            return super()._copy_from(source, src, dst, source_info=source_info)
        info = source_info if source_info is not None else source.stat(src)
        try:
            return self._service_copy(origin, src, dst, info, if_absent=False)
        except _CopyRefusedError as exc:
            # e.g. a SAS of the target container only: remember, and read the source
            # here (from the store itself: a caller may hold a lease of the source's
            # throttle around this call)
            self._copy_refused.add(origin.account_url)
            _log.info(
                "azure: %r may not read %r inside the service (%s); copying through "
                "this process instead",
                self,
                origin,
                exc,
            )
            return super()._copy_from(origin, src, dst, source_info=source_info)

    def _streams_from(self, source: Store, source_info: BlobInfo | None) -> bool:
        from dataset_kit.store.local import LocalStore

        return (
            source_info is not None
            and source_info.size > _streams.STREAMED_COPY_BYTES
            and self._copy_origin(source) is None
            and (
                isinstance(read_origin(source), LocalStore)
                or Capability.RANGE_READ in source.capabilities
            )
        )

    def _upload_stream(self, source: Store, dst: str, listed: BlobInfo) -> BlobInfo:
        """Upload a big blob of another store from a stream: its file if the source is
        local, else ranged reads (:meth:`_streams_from` said it can).

        The SDK sends a stream above its single-put limit (64 MiB) as blocks of 4 MiB,
        so memory holds a few blocks, not the blob. A ranged source is checked after the
        upload: a blob replaced or shortened meanwhile fails the copy, and the upload is
        deleted again (conditional on its etag).
        """
        from dataset_kit.store.local import LocalStore

        src = listed.key
        origin = read_origin(source)
        stream: Any
        if isinstance(origin, LocalStore):
            try:
                stream = open(origin.local_path(src), "rb")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise KeyNotFoundError(f"key {src!r} not found in {source!r}", key=src) from None
            ranged = False
        else:
            stream, ranged = _streams.RangeReader(source, src, listed.size), True
        with stream:
            if not ranged:  # an open file never changes: stores replace files by rename
                size = os.fstat(stream.fileno()).st_size
                if size != listed.size:
                    raise StoreError(
                        f"copy {src!r} -> {dst!r}: the source has {size} bytes, "
                        f"{listed.size} when listed; nothing was written",
                        key=dst,
                    )
            result = self._call(
                "put",
                dst,
                self._blob(dst).upload_blob,
                stream,
                length=listed.size,
                overwrite=True,
                max_concurrency=self._concurrency(),
            )
        info = BlobInfo(
            key=dst,
            size=listed.size,
            mtime=float(result["last_modified"].timestamp()),
            etag=_etag(result["etag"]),
        )
        if ranged:
            now = _streams.changed_since(source, listed)
            if now is not None:
                try:
                    self.delete(dst, if_match=info.etag)
                except StoreError:
                    _log.warning("azure: could not delete the torn copy %r", dst, exc_info=True)
                raise StoreError(
                    f"copy {src!r} -> {dst!r}: the source changed during the copy (now "
                    f"{now.size} bytes, etag {now.etag!r}; listed {listed.size}, "
                    f"{listed.etag!r})",
                    key=dst,
                )
        return info

    def _copies_inside(self, source: Store) -> bool:
        return self._copy_origin(source) is not None or super()._copies_inside(source)

    def _copy_origin(self, source: Store) -> AzureBlobStore | None:
        """The Azure store behind ``source`` if the service can copy from it here."""
        origin = read_origin(source)
        if (
            not isinstance(origin, AzureBlobStore)
            or origin.account_url != self.account_url
            or origin.account_url in self._copy_refused
        ):
            return None
        return origin

    def _service_copy(
        self, origin: AzureBlobStore, src: str, dst: str, source: BlobInfo, *, if_absent: bool
    ) -> BlobInfo:
        """Copy ``src`` of ``origin`` (this account) to ``dst`` inside the service.

        The copy is conditional on the source's etag, so it copies exactly ``source``
        (size included); a blob replaced since raises PreconditionFailedError.
        """
        from azure.core import MatchConditions
        from azure.core import exceptions as az

        dst_blob = self._blob(dst)
        kwargs: dict[str, Any] = {
            "source_etag": source.etag,
            "source_match_condition": MatchConditions.IfNotModified,
        }
        if if_absent:
            kwargs["match_condition"] = MatchConditions.IfMissing
        try:
            started = dst_blob.start_copy_from_url(origin._blob(src).url, **kwargs)
        except az.AzureError as exc:
            raise self._copy_error(exc, origin, src, dst, source, if_absent=if_absent) from (
                exc if self._mask(str(exc)) == str(exc) else None
            )
        status = str(started.get("copy_status") or "pending")
        etag, modified = started.get("etag"), started.get("last_modified")
        deadline = time.monotonic() + _COPY_TIMEOUT
        delay = 0.05
        props: Any = None
        while status == "pending":  # another region, or a large blob
            if time.monotonic() > deadline:
                try:
                    self._call("abort copy", dst, dst_blob.abort_copy, started.get("copy_id"))
                except StoreError:
                    _log.debug("azure: could not abort the copy to %r", dst, exc_info=True)
                raise StoreError(
                    f"azure copy of {src!r} to {dst!r} did not finish in {_COPY_TIMEOUT:.0f} s",
                    key=dst,
                )
            time.sleep(delay)
            delay = min(1.0, delay * 2)
            props = self._call("copy status", dst, dst_blob.get_blob_properties)
            status = str(props.copy.status or "success")
            etag, modified = props.etag, props.last_modified
            _log.debug("azure: copy %r -> %r is %s", src, dst, status)
        if status != "success":
            reason = getattr(getattr(props, "copy", None), "status_description", None)
            raise StoreError(
                f"azure copy of {src!r} to {dst!r} in {self!r} ended {status!r}: "
                f"{self._mask(str(reason or 'no reason given'))}",
                key=dst,
            )
        stamp = getattr(modified, "timestamp", None)
        mtime = float(stamp()) if callable(stamp) else time.time()
        return BlobInfo(key=dst, size=source.size, mtime=mtime, etag=_etag(etag))

    def _copy_error(
        self,
        exc: BaseException,
        origin: AzureBlobStore,
        src: str,
        dst: str,
        source: BlobInfo,
        *,
        if_absent: bool,
    ) -> Exception:
        """The error for a failed service-side copy request."""
        status, code = _status(exc), str(getattr(exc, "error_code", None) or "")
        if status in (401, 403) and origin is not self:
            return _CopyRefusedError(f"{status} {code}".strip())
        if status == 404 and "Container" not in code:
            return KeyNotFoundError(f"key {src!r} not found in {origin!r}", key=src)
        if status == 412:
            # the source changed (SourceConditionNotMet; Azurite says ConditionNotMet),
            # or with if_absent the target exists: only the source's etag tells which
            if not if_absent or _changed(origin, src, source.etag):
                return PreconditionFailedError(
                    f"copy of {src!r} from {origin!r}: the source changed since it was "
                    "listed (its etag differs)",
                    key=src,
                )
            return KeyExistsError(f"key {dst!r} already exists in {self!r}", key=dst)
        error = self._translate(exc, "copy", dst, if_absent=if_absent, if_match=None)
        return error if error is not None else StoreError(str(exc), key=dst)


class _CopyRefusedError(Exception):
    """The target's credential may not read the source inside the service."""


def _changed(store: AzureBlobStore, key: str, etag: str) -> bool:
    """True if ``key`` no longer exists or has another etag."""
    try:
        return store.stat(key).etag != etag
    except KeyNotFoundError:
        return True


def _etag(value: object) -> str:
    """The etag in its HTTP header form (listings return it without the quotes)."""
    text = str(value)
    return text if text.startswith(('"', 'W/"')) else f'"{text}"'


def _listed_infos(page: Any, names: list[str], cut: int) -> list[BlobInfo] | None:
    """The infos of one List Blobs page from its parsed XML (``EnumerationResults``), or
    None if ``page`` is not that XML or disagrees with the names the SDK read from it."""
    from xml.etree.ElementTree import Element

    if not isinstance(page, Element):
        return None
    blobs = page.find("Blobs")
    items = [] if blobs is None else blobs.findall("Blob")
    infos: list[BlobInfo] = []
    raw: list[str] = []  # the names as the SDK read them
    times: dict[str, float] = {}  # many blobs share a second
    try:
        for item in items:
            name_node = item.find("Name")
            props = item.find("Properties")
            if name_node is None or props is None:
                return None
            name = name_node.text or ""
            raw.append(name)
            if name_node.get("Encoded") == "true":
                name = urllib.parse.unquote(name)
            stamp = props.findtext("Last-Modified") or ""
            mtime = times.get(stamp)
            if mtime is None:
                mtime = times[stamp] = email.utils.parsedate_to_datetime(stamp).timestamp()
            infos.append(
                BlobInfo(
                    key=name[cut:],
                    size=int(props.findtext("Content-Length") or ""),
                    mtime=mtime,
                    etag=_etag(props.findtext("Etag") or ""),
                )
            )
    except (TypeError, ValueError):
        return None
    if raw != names:
        return None
    return infos


def _next_page(pages: Iterator[Iterable[Any]]) -> list[Any] | None:
    """Fetch the next listing page as a list, or None at the end."""
    page = next(pages, None)
    return None if page is None else list(page)


def _status(exc: BaseException | None) -> int | None:
    """The HTTP status of an SDK error, if it has one."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def from_url(url: str, **options: Any) -> AzureBlobStore:
    """Open ``azure://<container>?account_url=...&prefix=...`` (used by ``open_store``).

    Parameters
    ----------
    url
        The store URL. Its query may carry ``account_url`` and ``prefix``; secrets do not
        belong in it.
    **options
        Keyword arguments of :class:`AzureBlobStore` (``connection_string``,
        ``credential``, ``create_container``, ``retry_total``, ``timeout``,
        ``max_connections``; ``account_url``/``prefix`` must agree with the URL's).
        Without ``connection_string`` and ``credential``, the connection string comes
        from the ``AZURE_STORAGE_CONNECTION_STRING`` environment variable, if set.

    Raises
    ------
    ConfigError
        For a malformed URL or unknown options.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "azure":
        raise ConfigError(f"not an azure:// URL: {url!r}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(
            f"azure:// URLs are azure://<container>?account_url=...&prefix=...: {url!r}"
        )
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigError(f"unknown azure:// options: {sorted(unknown)}")
    kwargs = {k: v for k, v in options.items() if k != "allow_unsafe_commits"}
    for name, values in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items():
        if name not in ("account_url", "prefix", "credential") or len(values) != 1:
            raise ConfigError(
                f"azure:// URLs take account_url, prefix and credential=default once, not {name!r}"
            )
        value = values[0]
        if name == "credential" and value != DEFAULT_CREDENTIAL:
            raise ConfigError(
                "secrets do not belong in azure:// URLs: only credential=default may be given "
                "there; pass other credentials as options"
            )
        if name in kwargs and kwargs[name] != value:
            raise ConfigError(f"azure:// option {name}={kwargs[name]!r} contradicts the URL")
        kwargs[name] = value
    if (
        kwargs.get("connection_string") is None
        and kwargs.get("credential") is None
        and os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    ):
        kwargs["connection_string"] = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    container = urllib.parse.unquote(parts.netloc)
    return AzureBlobStore(container, **kwargs)
