"""A throwaway PostgreSQL for tests, started by the project's scripts/services/postgres.sh."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "postgres.sh"


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting PostgreSQL here needs root and runuser"
    return None


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """PostgreSQL on a free loopback port for the `with` block; yields its database URL."""
    # not under pytest's tmp dir: that is private to root, and the server runs as postgres
    home = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
    home.chmod(0o755)
    try:
        started = subprocess.run([str(SCRIPT), "start", str(home), str(free_port())],
                                 capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, started.stderr[-2000:]
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
