"""Run a throwaway PostgreSQL server for tests of the database download pipeline.

:func:`postgres_server` initializes a cluster in a temporary directory, starts it on
127.0.0.1 on a free port and yields a connection URL with a generated password::

    with postgres_server() as url:  # postgresql://postgres:<password>@127.0.0.1:<port>/<db>
        job = download_table(url, table="sales", store=store, dataset_uuid="sales")

Needs the server binaries (``initdb``, ``pg_ctl``) of a PostgreSQL installation, found in
``$DATASET_KIT_PG_BIN`` or ``/usr/lib/postgresql/<version>/bin`` (Debian's layout; the
newest version wins). They are never installed from here: on Debian,
``apt-get install postgresql`` provides them. ``initdb`` refuses to run as root, so as
root every server command runs as the ``postgres`` user (``runuser -u postgres``).

TCP connections need the password (``scram-sha-256``), so tests can check what a wrong
password does; the Unix socket in the temporary directory trusts the local user.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["PG_BIN_ENV", "PostgresUnavailableError", "find_pg_bin", "postgres_server"]

_log = logging.getLogger(__name__)

#: Environment variable naming the directory of the server binaries.
PG_BIN_ENV = "DATASET_KIT_PG_BIN"
#: Server settings for a disposable test cluster: durability off, local only.
_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "listen_addresses=127.0.0.1",
    "max_connections=100",
)
_TAIL_CHARS = 2000


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's binaries are missing, or the server did not start."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``.

    ``$DATASET_KIT_PG_BIN`` if set, else ``/usr/lib/postgresql/*/bin`` (newest version).

    Raises
    ------
    PostgresUnavailableError
        If no such directory exists.
    """
    env = os.environ.get(PG_BIN_ENV)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    if env:  # an explicit choice is the only candidate
        candidates = [env]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for directory in candidates:
        if all(os.access(Path(directory, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    where = f"${PG_BIN_ENV}={env!r}" if env else "/usr/lib/postgresql/*/bin"
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}; "
        "install them (Debian: apt-get install postgresql) or set "
        f"{PG_BIN_ENV} to their directory"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run as ``postgres`` when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return list(cmd)
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailableError("running PostgreSQL as root needs runuser (util-linux)")
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: Sequence[str], what: str, *, timeout: float = 120.0) -> None:
    done = subprocess.run(
        _as_server_user(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-_TAIL_CHARS:]
        raise PostgresUnavailableError(f"{what} failed ({done.returncode}): {output}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[-_TAIL_CHARS:]
    except OSError:
        return ""


def _prepare_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="dk-pg-"))
    root.chmod(0o755)  # the server user must traverse it
    for sub in ("data", "sock"):
        (root / sub).mkdir()
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError(
                "running PostgreSQL as root needs a 'postgres' system user"
            ) from None
        for path in (root, root / "data", root / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    return root


@contextlib.contextmanager
def postgres_server(
    *,
    database: str = "dataset_kit_test",
    host: str = "127.0.0.1",
    settings: Sequence[str] = (),
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Run a throwaway PostgreSQL server and yield a connection URL for it.

    Parameters
    ----------
    database
        The database created for the caller.
    host
        The address the server listens on.
    settings
        Extra ``name=value`` server settings (``postgres -c``).
    startup_timeout
        Seconds to wait for the server to accept connections.

    Yields
    ------
    str
        ``postgresql://postgres:<password>@<host>:<port>/<database>``; the password is
        generated per server.

    Raises
    ------
    PostgresUnavailableError
        If the binaries are missing, or the server does not start in time.

    Notes
    -----
    The server is stopped (``pg_ctl stop -m fast``) and its directory removed when the
    context exits, also when the body raised.
    """
    bin_dir = find_pg_bin()
    root = _prepare_dir()
    data, sock, log = root / "data", root / "sock", root / "postgres.log"
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    pwfile.chmod(0o600)
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()
        port = 0
        for attempt in range(3):  # the free port may be taken before the server binds it
            port = _free_port(host)
            options = " ".join(
                [f"-p {port}", f"-k {sock}", f"-c listen_addresses={host}"]
                + [f"-c {s}" for s in (*_SETTINGS, *settings) if not s.startswith("listen_")]
            )
            try:
                _run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(int(startup_timeout)),
                        "-o",
                        options,
                        "start",
                    ],
                    "pg_ctl start",
                    timeout=startup_timeout + 10,
                )
                started = True
                break
            except PostgresUnavailableError as exc:
                if attempt == 2 or "could not bind" not in _tail(log):
                    raise PostgresUnavailableError(f"{exc}\nserver log: {_tail(log)}") from None
        _wait_ready(host, port, startup_timeout)
        _run(
            [
                str(bin_dir / "createdb"),
                "-h",
                str(sock),
                "-p",
                str(port),
                "-U",
                "postgres",
                database,
            ],
            "createdb",
        )
        _log.debug("postgres from %s is up on %s:%d (%s)", bin_dir, host, port, root)
        yield f"postgresql://postgres:{password}@{host}:{port}/{database}"
    finally:
        if started:
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "stop")
            except (PostgresUnavailableError, subprocess.TimeoutExpired) as exc:
                _log.warning("stopping the test postgres failed: %s", exc)
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], "kill")
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PostgresUnavailableError(
                    f"postgres did not accept connections on {host}:{port} within {timeout:.0f} s"
                ) from None
            time.sleep(0.05)
