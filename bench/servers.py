"""Start and stop the registries, each on a free port with a fresh data directory.

Reuses the test suite's starters (tests/support/servers.py): Distribution gets a small
config.yml with the access log disabled, Dockyard runs as
`python -m dockyard serve --listen 127.0.0.1:PORT --data DIR --workers N`. In S3 mode
both get their own bucket on the shared S3 server (Dockyard its own database too), and
`cluster` is N Dockyard nodes on one bucket behind deploy/nginx/cluster.conf.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.support import nginx  # noqa: E402
from tests.support.servers import (  # noqa: E402
    DOCKER_REGISTRY,
    Server,
    free_port,
    start_distribution,
    start_dockyard,
)

from bench.procstats import ProcessTree  # noqa: E402
from bench.s3mode import S3Backend, Store  # noqa: E402

CLUSTER_SITE = _ROOT / "deploy" / "nginx" / "cluster.conf"


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
    parts: dict[str, ProcessTree] | None = None
    """S3 mode: the processes the server's cost is made of, by part (registry, nginx,
    PostgreSQL, the S3 server), each metered over the whole scenario for the notes."""


def start(name: str, workdir: Path, workers: int) -> Server:
    data = workdir / "data"
    if name == "distribution":
        return start_distribution(data, access_log=False)
    if name == "dockyard":
        return start_dockyard(data, workers=workers)
    raise ValueError(f"unknown registry {name!r}")


@contextlib.contextmanager
def running(name: str, workdir: Path, workers: int, backend: S3Backend | None = None,
            nodes: int = 3) -> Iterator[Target]:
    """A fresh registry for one scenario; stopped (with every child) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    if backend is not None:
        with _running_s3(name, workdir, workers, backend, nodes) as target:
            yield target
        return
    server = start(name, workdir, workers)
    tree = ProcessTree(server.proc.pid)
    try:
        yield Target(name, server.url, tree, server.log, server.data, server)
    finally:
        _stop(server)


def _stop(server: Server) -> None:
    children = ProcessTree(server.proc.pid).processes()[1:]
    server.stop()
    _reap(children)


@contextlib.contextmanager
def _running_s3(name: str, workdir: Path, workers: int, backend: S3Backend,
                nodes: int) -> Iterator[Target]:
    """Distribution, one Dockyard node or a cluster of `nodes` on a fresh store.

    Dockyard's cost includes the PostgreSQL it keeps its metadata in (Distribution keeps
    its own in the bucket, so the S3 server's cost is shown apart for both).
    """
    store = backend.fresh()
    started: list[Server] = []
    front: subprocess.Popen[bytes] | None = None
    try:
        s3 = ProcessTree(backend.s3_pid)
        postgres = ProcessTree(backend.postgres_pid)
        if name == "distribution":
            started.append(start_distribution_s3(workdir / "data", backend, store))
            server = started[0]
            parts = {"Distribution": ProcessTree(server.proc.pid), "S3 server": s3}
            yield Target(name, server.url, ProcessTree(server.proc.pid), server.log,
                         None, server, parts)
            return
        config = backend.dockyard_config(store, workdir / "dockyard.yml")
        count = nodes if name == "cluster" else 1
        ports = [free_port() for _ in range(count)]
        for port in ports:  # together, as a deployment starts them
            started.append(start_dockyard(workdir / f"node-{port}", workers=workers,
                                          config=config, port=port, wait=False))
        for server in started:
            server.wait_ready()
        pids = [server.proc.pid for server in started]
        if name != "cluster":
            server = started[0]
            parts = {"Dockyard": ProcessTree(*pids), "PostgreSQL": postgres, "S3 server": s3}
            yield Target(name, server.url, ProcessTree(*pids, backend.postgres_pid),
                         server.log, None, server, parts)
            return
        port = free_port()
        front = nginx.start(cluster_nginx_conf(workdir / "nginx", ports, port),
                            f"http://127.0.0.1:{port}/v2/")
        parts = {f"{count} nodes": ProcessTree(*pids), "nginx": ProcessTree(front.pid),
                 "PostgreSQL": postgres, "S3 server": s3}
        tree = ProcessTree(*pids, front.pid, backend.postgres_pid)
        yield Target(name, f"http://127.0.0.1:{port}", tree, started[0].log, None,
                     started[0], parts)
    finally:
        if front is not None:
            nginx.stop(front)
        for server in started:
            _stop(server)
        backend.release(store)


def start_distribution_s3(data: Path, backend: S3Backend, store: Store) -> Server:
    """Debian's docker-registry on `store` through its own `s3` driver, access log off.

    Started without AWS_CA_BUNDLE: Distribution 2.8's S3 driver panics when it is set.
    """
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = data.parent / f"distribution-{port}.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        + backend.distribution_storage(store)
        + f"http:\n  addr: 127.0.0.1:{port}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
    log = data.parent / f"distribution-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(cfg)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = Server("distribution", port, data, proc, log, {"config": cfg})
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


def cluster_nginx_conf(root: Path, nodes: list[int], port: int) -> Path:
    """The shipped cluster.conf with its upstream lines replaced by `nodes` and listening
    on `port`, in a minimal nginx.conf under `root`: as many nginx workers as CPUs (as a
    production front would run) and no access log (Distribution's is off too)."""
    site = CLUSTER_SITE.read_text()
    line = re.compile(r"(\n[ \t]*server 127\.0\.0\.1:)\d+([^#\n]*)[^\n]*")
    first = line.search(site)
    if first is None or "listen 80;" not in site:
        raise RuntimeError(f"{CLUSTER_SITE} no longer has the upstream lines or 'listen 80;'")
    upstream = "".join(f"{first.group(1)}{node}{first.group(2).rstrip()}" for node in nodes)
    site = site[:first.start()] + upstream + line.sub("", site[first.end():])
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = nginx.write_conf(root, site)
    text = conf.read_text().replace("worker_processes 1;", "worker_processes auto;")
    text = re.sub(r"access_log [^;]*;", "access_log off;", text)
    conf.write_text(text)
    return conf


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
