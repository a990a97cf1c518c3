"""A throw-away PostgreSQL server for tests: `initdb` in a temp dir, on 127.0.0.1, a free port.

`postgres_url` (module-scoped fixture) yields its SQLAlchemy URL; `make_database` adds another
empty database on the same server. PostgreSQL refuses to run as root, so as root the server runs
as Debian's `postgres` system user (`runuser`), its folder under /tmp owned by that user.
Without PostgreSQL the fixture skips, or fails with FARM_REQUIRE_SYSTEM_TOOLS=1.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER = "farm"
DATABASE = "farm_records"
HINT = "Debian: apt-get install postgresql"
INITDB = ["--no-sync", "-E", "UTF8", "--locale=C"]


def find_bin() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `postgres`: on PATH, else Debian's newest."""
    found = shutil.which("initdb")
    if found is not None:
        folder = Path(found).resolve().parent
        if (folder / "pg_ctl").exists():
            return folder
    versions = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda folder: _version(folder.parent.name),
    )
    return versions[-1] if versions else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], *, timeout: float = 60) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-600:]
        raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}: {tail}")


@contextmanager
def postgres_server(bin_dir: Path, *, timeout: float = 30) -> Iterator[str]:
    """Start a server, yield the URL of its empty database `farm_records`, stop it."""
    import psycopg

    if os.geteuid() == 0:
        # pytest's own temp dirs are 0700 root: the server user could not reach them.
        base = Path(tempfile.mkdtemp(prefix="farm-pg-", dir="/tmp"))
        base.chmod(0o755)
        shutil.chown(base, user="postgres", group="postgres")
    else:
        base = Path(tempfile.mkdtemp(prefix="farm-pg-"))
    data = base / "data"
    port = free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, *INITDB])
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(base / "server.log")
        wait = ["-w", "-t", str(int(timeout))]
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, *wait, "start"],
            timeout=timeout + 10,
        )
        started = True
        admin = f"host=127.0.0.1 port={port} user={USER} dbname=postgres connect_timeout=5"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{DATABASE}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate"])
        shutil.rmtree(base, ignore_errors=True)


def make_database(url: str) -> str:
    """A new empty database on the server of ``url``; returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"farm_{uuid.uuid4().hex[:12]}"
    dsn = f"host={parsed.host} port={parsed.port} user={parsed.username} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


def require_postgres() -> Path:
    """Debian's PostgreSQL binaries, or skip (fail with FARM_REQUIRE_SYSTEM_TOOLS=1)."""
    bin_dir = find_bin()
    if bin_dir is None:
        if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
            pytest.fail(f"no PostgreSQL (initdb); FARM_REQUIRE_SYSTEM_TOOLS=1 requires it ({HINT})")
        pytest.skip(f"no PostgreSQL (initdb) on PATH nor in /usr/lib/postgresql ({HINT})")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            message = "running as root and there is no `postgres` user to run the server as"
            if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
                pytest.fail(f"{message}; FARM_REQUIRE_SYSTEM_TOOLS=1 requires it ({HINT})")
            pytest.skip(message)
    return bin_dir


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of an empty database on a throw-away server (one server per test module)."""
    with postgres_server(require_postgres()) as url:
        yield url
