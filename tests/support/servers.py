"""Start real registry servers (Dockyard, CNCF Distribution) on free loopback ports for tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A registry process started by a test, with its address and data directory."""

    name: str
    port: int
    data: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + "/v2/", timeout=1.0).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_dockyard(
    data: Path,
    *,
    workers: int = 1,
    config: Path | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> Server:
    """Start `dockyard serve` on `port` (default: a free one) with its data under `data`.

    With `wait=False` it returns at once (call `wait_ready`), so several can start together.
    """
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [sys.executable, "-m", "dockyard", "serve", "--listen", f"127.0.0.1:{port}",
           "--data", str(data), "--workers", str(workers)]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += list(args)
    log = data.parent / f"dockyard-{port}.log"
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    server = Server("dockyard", port, data, proc, log)
    if wait:
        server.wait_ready()
    return server


def start_distribution(data: Path, *, access_log: bool = False, htpasswd: Path | None = None,
                       port: int | None = None) -> Server:
    """Start Debian's docker-registry (CNCF Distribution 2.8) on `port` (default: a free
    one); with `htpasswd`, it asks for Basic authentication against that file."""
    if not Path(DOCKER_REGISTRY).exists():
        raise RuntimeError("docker-registry is not installed (make test installs it)")
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    auth = (f"auth:\n  htpasswd:\n    realm: distribution\n    path: {htpasswd}\n"
            if htpasswd else "")
    cfg = data.parent / f"distribution-{port}.yml"
    cfg.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"  accesslog:\n    disabled: {'false' if access_log else 'true'}\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {data}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
        + auth
    )
    log = data.parent / f"distribution-{port}.log"
    proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(cfg)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("distribution", port, data, proc, log, {"config": cfg})
    server.wait_ready()
    return server
