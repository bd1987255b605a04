"""Stores that cannot be opened, and what the registry refuses, as the real `dockyard`
command says them: one `Error: ...` line and exit 1, never a traceback. `serve` with a
data directory that cannot be made or a PostgreSQL that is down; `gc` on a full disk
(a tmpfs the test mounts; skipped where mount is refused)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_full_disk import mount_tmpfs
from tests.support.servers import free_port


def dockyard(*args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run the real command (stdin closed), with `env` added to this one's."""
    return subprocess.run([sys.executable, "-m", "dockyard", *args], text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line of stderr, asserting it is click's one `Error: ` line, exit 1."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("Error: ")] == lines[-1:], proc.stderr
    return lines[-1]


def serve(data: Path, *args: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """`dockyard serve` that must stop by itself before it serves."""
    return dockyard("serve", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}",
                    "--workers", "2", *args, env=env)


@pytest.mark.parametrize("auth", ["none", "token"])
def test_serve_with_a_data_directory_that_cannot_be_made_is_one_line(
        tmp_path: Path, auth: str) -> None:
    """Token auth makes its signing key under the data directory before the database:
    that step too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "c.yml"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    config.write_text(f"auth:\n  method: {auth}\n  htpasswd:\n    path: {htpasswd}\n")
    line = error_line(serve(blocker / "data", "--config", str(config)))
    assert line.startswith("Error: the registry's storage: ")
    assert "Not a directory" in line


def test_serve_on_a_postgresql_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://dockyard@127.0.0.1:{free_port()}/dockyard"
    line = error_line(serve(tmp_path / "data", env={"DOCKYARD_DATABASE_URL": url}))
    assert line.startswith("Error: the registry's storage: ")
    assert "Connect call failed" in line



@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a database host behind a
    firewall that drops, a server hung mid-failover)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("command", ["serve", "gc"])
def test_a_postgresql_that_never_answers_fails_at_the_connect_timeout(
        tmp_path: Path, silent_port: int, command: str) -> None:
    """`database.connect_timeout` bounds each new connection (asyncpg's own default,
    60 s, held a start or a command that long), said as such."""
    env = {"DOCKYARD_DATABASE_URL": f"postgresql://dockyard@127.0.0.1:{silent_port}/d",
           "DOCKYARD_DATABASE_CONNECT_TIMEOUT": "1s"}
    started = time.monotonic()
    done = (serve(tmp_path / "data", env=env) if command == "serve" else
            dockyard("gc", "--data", str(tmp_path / "data"), env=env))
    took = time.monotonic() - started
    assert error_line(done) == "Error: the registry's storage: no answer in time"
    assert took < 20, f"{took:.0f} s"

@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB filesystem of the test's own: room for the metadata database."""
    yield from mount_tmpfs(tmp_path / "data", "2m")


def fill(path: Path) -> Path:
    """Write zeros into `path` until its filesystem is full; the filler file."""
    filler = path / "filler"
    chunk = bytes(4096)
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler


def test_gc_on_a_full_disk_is_one_line(tmp_path: Path, tiny_fs: Path) -> None:
    """The metadata database cannot be written: `StorageFull` (or, with no room for its
    write-ahead log at all, SQLite's own error) is one line, at every level of full."""
    config = tmp_path / "c.yml"
    config.write_text("storage:\n  guard:\n    reserve: 0\n    min_free: 0\n")
    assert dockyard("du", "--config", str(config), "--data", str(tiny_fs)).returncode == 0
    filler = fill(tiny_fs)
    full = filler.stat().st_size
    said = []
    for room in range(4, 68, 4):  # KiB left: from no room for the log to room for a page
        os.truncate(filler, full - room * 1024)
        said.append(error_line(dockyard("gc", "--config", str(config), "--data",
                                        str(tiny_fs))))
        if "insufficient storage" in said[-1]:
            break
    assert said[-1] == ("Error: insufficient storage: the metadata database cannot be "
                        "written, the disk holding it is full"), said
