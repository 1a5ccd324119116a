"""Run Azurite, the Azure Blob Storage emulator, for tests of the Azure backend.

:func:`azurite_server` finds (or installs with ``npm``) a pinned ``azurite-blob``, starts
it in memory on a free local port and yields a connection string for it::

    with azurite_server() as connection_string:
        store = AzureBlobStore("test-container", connection_string=connection_string)

Needs ``node`` (and ``npm`` for the first install, about 30 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "AZURITE_VERSION",
    "AzuriteUnavailableError",
    "azurite_server",
    "connection_string",
    "find_azurite",
    "write_self_signed_cert",
]

_log = logging.getLogger(__name__)

#: The pinned Azurite release (3.36+ needs node >= 21). Keep in sync with the Makefile.
AZURITE_VERSION = "3.35.0"
#: Azurite's well-known development account (public, from Azurite's README).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_FLAGS = ("--silent", "--disableTelemetry", "--inMemoryPersistence", "--skipApiVersionCheck")
_BIN = Path("node_modules", ".bin", "azurite-blob")


class AzuriteUnavailableError(RuntimeError):
    """Azurite cannot be found, installed or started."""


def connection_string(port: int, host: str = "127.0.0.1", *, scheme: str = "http") -> str:
    """The connection string of the development account of an Azurite on ``host:port``."""
    return (
        f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={scheme}://{host}:{port}/{ACCOUNT_NAME};"
    )


def write_self_signed_cert(
    directory: str | os.PathLike[str], host: str = "127.0.0.1"
) -> tuple[str, str]:
    """Write a throw-away certificate and key for ``host`` (for Azurite over HTTPS).

    Returns the paths of the PEM certificate (also the CA bundle to trust) and key.
    """
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory, "azurite.pem"), Path(directory, "azurite.key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def _repo_root() -> Path | None:
    """The source checkout this module lives in, if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _candidates() -> list[Path]:
    """Where ``azurite-blob`` is looked for, in order (first one is installed to)."""
    dirs: list[Path] = []
    root = _repo_root()
    if root is not None:
        dirs.append(root / ".cache" / "azurite")
    dirs.append(Path.home() / ".cache" / "dataset_kit" / f"azurite-{AZURITE_VERSION}")
    return dirs


def find_azurite(*, install: bool = True) -> Path:
    """Return the ``azurite-blob`` executable, installing it with npm if needed.

    Looks at ``$AZURITE_BIN``, then ``<repo>/.cache/azurite``, then
    ``~/.cache/dataset_kit/azurite-<version>``; installs into the first of the two
    directories when none has it.

    Raises
    ------
    AzuriteUnavailableError
        If it is not found and cannot be installed (no ``npm``, or npm failed).
    """
    env = os.environ.get("AZURITE_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise AzuriteUnavailableError(f"AZURITE_BIN={env!r} is not an executable")
        return Path(env)
    dirs = _candidates()
    for directory in dirs:
        if os.access(directory / _BIN, os.X_OK):
            return directory / _BIN
    if not install:
        raise AzuriteUnavailableError("azurite-blob is not installed")
    return _install(dirs[0])


def _install(directory: Path) -> Path:
    """``npm install`` the pinned Azurite into ``directory`` (once, across processes)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AzuriteUnavailableError("Azurite needs node and npm, which are not on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers may all get here at once: one installs, the others wait
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.access(directory / _BIN, os.X_OK):
                _log.info("installing azurite@%s into %s", AZURITE_VERSION, directory)
                cmd = [
                    npm,
                    "install",
                    "--prefix",
                    str(directory),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    f"azurite@{AZURITE_VERSION}",
                ]
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
                if done.returncode != 0 or not os.access(directory / _BIN, os.X_OK):
                    raise AzuriteUnavailableError(
                        f"npm install azurite@{AZURITE_VERSION} failed ({done.returncode}): "
                        f"{done.stderr.strip()[-2000:]}"
                    )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return directory / _BIN


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def azurite_server(
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 60.0,
    tls: tuple[str, str] | None = None,
) -> Iterator[str]:
    """Run an in-memory Azurite blob service and yield its connection string.

    Parameters
    ----------
    host
        The address to listen on.
    startup_timeout
        Seconds to wait for the port to accept connections.
    tls
        ``(certificate, key)`` PEM paths (see :func:`write_self_signed_cert`): serve HTTPS
        and accept OAuth bearer tokens (``--oauth basic``: Azurite checks a token's
        issuer, audience and expiry, not its signature), as Azure AD authentication needs.

    Yields
    ------
    str
        A connection string for the development account on the new server.

    Raises
    ------
    AzuriteUnavailableError
        If Azurite cannot be installed, exits early or does not come up in time.

    Notes
    -----
    The server is stopped with SIGTERM (SIGKILL after 5 s) when the context exits.
    """
    binary = find_azurite()
    port = _free_port(host)
    cmd = [str(binary), *_FLAGS, "--blobHost", host, "--blobPort", str(port)]
    if tls is not None:
        cmd += ["--cert", tls[0], "--key", tls[1], "--oauth", "basic"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _accepts(host, port):
                if proc.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace").strip()[-2000:]
                    raise AzuriteUnavailableError(
                        f"azurite exited with {proc.returncode} at start-up: {output}"
                    )
                if time.monotonic() > deadline:
                    raise AzuriteUnavailableError(
                        f"azurite did not accept connections on {host}:{port} "
                        f"within {startup_timeout:.0f} s"
                    )
                time.sleep(0.1)
            _log.debug("azurite %s is up on %s:%d (pid %d)", AZURITE_VERSION, host, port, proc.pid)
            yield connection_string(port, host, scheme="https" if tls else "http")
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
