"""Start and stop the two registries, each on a free port with a fresh data directory.

Reuses the test suite's starters (tests/support/servers.py): Distribution gets a small
config.yml with the access log disabled, Dockyard runs as
`python -m dockyard serve --listen 127.0.0.1:PORT --data DIR --workers N`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.support.servers import (  # noqa: E402
    DOCKER_REGISTRY,
    Server,
    start_distribution,
    start_dockyard,
)

from bench.procstats import ProcessTree  # noqa: E402


@dataclass(frozen=True)
class Target:
    """A running registry as the scenarios see it."""

    name: str
    url: str
    tree: ProcessTree
    log: Path
    data: Path | None = None
    """The data directory (scenario 8 measures it and runs the collectors on it)."""
    server: Server | None = None
    """The started server (scenario 8 restarts Distribution read-only)."""


def start(name: str, workdir: Path, workers: int) -> Server:
    data = workdir / "data"
    if name == "distribution":
        return start_distribution(data, access_log=False)
    if name == "dockyard":
        return start_dockyard(data, workers=workers)
    raise ValueError(f"unknown registry {name!r}")


@contextlib.contextmanager
def running(name: str, workdir: Path, workers: int) -> Iterator[Target]:
    """A fresh registry for one scenario; stopped (with every child) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = start(name, workdir, workers)
    tree = ProcessTree(server.proc.pid)
    try:
        yield Target(name, server.url, tree, server.log, server.data, server)
    finally:
        children = tree.processes()[1:]
        server.stop()
        _reap(children)


def _reap(procs: list[psutil.Process]) -> None:
    """Stop children the server left behind (only the ones it had started)."""
    alive = [p for p in procs if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=10)
    for proc in still:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def distribution_version() -> str:
    try:
        out = subprocess.run([DOCKER_REGISTRY, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except OSError:
        return "not installed"
    return out.strip().split()[-1] if out.strip() else "unknown"
