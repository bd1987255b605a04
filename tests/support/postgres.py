"""PostgreSQL for tests: one server per test session (started by the project's
scripts/services/postgres.sh on first use), a database of its own per `with` block.

Starting PostgreSQL costs seconds, a database milliseconds: modules share the server and
never each other's data. A test that needs the server itself (to stop it) has none here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "postgres.sh"

_server: tuple[Path, str] | None = None
"""The session's PostgreSQL once started: its directory and the URL of its first database."""


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting PostgreSQL here needs root and runuser"
    return None


def _started() -> str:
    """The URL of the session server's first database, starting the server if needed."""
    global _server
    if _server is None:
        # not under pytest's tmp dir: that is private to root, and the server runs as postgres
        home = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
        home.chmod(0o755)
        started = subprocess.run([str(SCRIPT), "start", str(home), str(free_port())],
                                 capture_output=True, text=True, timeout=600)
        if started.returncode != 0:
            subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
            shutil.rmtree(home, ignore_errors=True)
            raise AssertionError(started.stderr[-2000:])
        _server = (home, started.stdout.strip().splitlines()[-1])
        atexit.register(stop_postgres)
    return _server[1]


def stop_postgres() -> None:
    """Stop the session's PostgreSQL, if one was started, and remove its files."""
    global _server
    if _server is not None:
        home, _server = _server[0], None
        subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def _psql(url: str, sql: str) -> None:
    done = subprocess.run(["psql", url, "-qAtc", sql], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A new database on the session's PostgreSQL (on a free loopback port) for the
    `with` block; yields its URL and drops it after, connections still open included."""
    first = _started()
    name = f"t_{uuid.uuid4().hex[:20]}"
    _psql(first, f'CREATE DATABASE "{name}"')
    try:
        yield f"{first.rsplit('/', 1)[0]}/{name}"
    finally:
        _psql(first, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_postgres() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of the block's own (a test that stops and starts it): yields its
    URL and directory (`postgres_start`/`postgres_stop` take it); removed after."""
    home = Path(tempfile.mkdtemp(prefix="dockyard-own-pg-"))
    home.chmod(0o755)
    port = free_port()
    try:
        yield postgres_start(home, port), home
    finally:
        postgres_stop(home)
        shutil.rmtree(home, ignore_errors=True)


def postgres_start(home: Path, port: int | None = None) -> str:
    """Start (again) the PostgreSQL in `home` (on `port` the first time); its URL."""
    if port is None:
        port = int(next(line.split("=")[1].strip() for line in
                        (home / "data" / "postgresql.conf").read_text().splitlines()
                        if line.startswith("port =")))
    started = subprocess.run([str(SCRIPT), "start", str(home), str(port)],
                             capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr[-2000:]
    return started.stdout.strip().splitlines()[-1]


def postgres_stop(home: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
