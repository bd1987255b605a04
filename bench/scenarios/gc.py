"""Scenario 8: garbage collection — Distribution's offline collector against Dockyard's online one.

Setup (untimed, identical bytes for both): `images` images in 4 repositories, each two
shared base layers + a unique layer + a config, tagged; then half of them are deleted by
digest (`DELETE /v2/<repo>/manifests/<digest>`, which both registries support).

Timed, while a pusher keeps pushing small images into another repository:

- Distribution 2.8: `docker-registry garbage-collect --delete-untagged CONFIG` needs the
  registry read-only, so the server is stopped, restarted with
  `storage.maintenance.readonly.enabled: true` on the same port, the collector runs, and the
  server is restarted read-write. The time is that whole window (restarts included; the
  collector's own time is in the notes).
- Dockyard: `dockyard gc --grace 0s --data DIR` beside the running server.

Figures: the time, the bytes freed (`du -sb` of each of the workload's blob directories
before, summed over those gone after: the pusher's own blobs, each in a directory of its
own, would otherwise blur the figure), the pusher's requests refused during the window
(any non-2xx answer or failed connection; after a failure the pusher waits 50 ms), and the
images it pushed meanwhile. `du -sb` of the whole data directory and of the blob store,
before and after, is in the notes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp

from bench.config import MB, Settings
from bench.content import sha256_digest
from bench.registry import OCI_CONFIG, OCI_LAYER, Descriptor, image_config, image_manifest
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited
from bench.servers import DOCKER_REGISTRY, Server

REPOS = ("bench/gc-0", "bench/gc-1", "bench/gc-2", "bench/gc-3")
LIVE_REPO = "bench/gc-live"
PAUSE_AFTER_FAILURE = 0.05


@dataclass(frozen=True)
class Image:
    repo: str
    tag: str
    blobs: tuple[bytes, ...]  # unique layer, config (the base layers are shared)
    manifest: bytes
    digest: str


@dataclass
class PushLog:
    """Every request the live pusher made: (start time, ok)."""

    requests: list[tuple[float, bool]] = field(default_factory=list)
    pushed: list[tuple[float, int]] = field(default_factory=list)  # (end time, bytes)

    def refused(self, start: float, end: float) -> int:
        return sum(1 for t, ok in self.requests if start <= t <= end and not ok)

    def total(self, start: float, end: float) -> int:
        return sum(1 for t, _ in self.requests if start <= t <= end)


def _blob_dir(blobs: Path, digest: str) -> Path:
    """`blobs/sha256/<2 hex>/<hex>`: the same layout in both registries."""
    algorithm, _, hexpart = digest.partition(":")
    return blobs / algorithm / hexpart[:2] / hexpart


def du(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


class GarbageCollection(Scenario):
    number = 8
    name = "gc"
    title = "garbage collection while pushing"
    metrics = (
        MetricSpec("gc.seconds", "collection (Distribution: read-only window)", "s", "lower",
                   2),
        MetricSpec("gc.freed", "workload's blob storage freed", "MB", "higher", 2),
        MetricSpec("gc.refused", "pusher requests refused during it", "requests", "lower", 0),
        MetricSpec("gc.pushed", "pushes completed during it", "images", "higher", 0),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        quick = settings.quick
        count = 40 if quick else 400
        self.base = [os.urandom((256 if quick else 1024) * 1024) for _ in range(2)]
        unique = (64 if quick else 256) * 1024
        self.images = [self._image(i, unique) for i in range(count)]

    def _image(self, i: int, unique: int) -> Image:
        layer = os.urandom(unique)
        layers = [*self.base, layer]
        config = image_config([sha256_digest(x) for x in layers], f"gc-{i}")
        manifest = image_manifest(
            Descriptor(OCI_CONFIG, sha256_digest(config), len(config)),
            [Descriptor(OCI_LAYER, sha256_digest(x), len(x)) for x in layers])
        return Image(REPOS[i % len(REPOS)], f"i{i:04d}", (layer, config), manifest,
                     sha256_digest(manifest))

    async def run(self, ctx: Context) -> Outcome:
        target = ctx.target
        assert target.data is not None
        assert target.server is not None
        registry = ctx.registry
        session = registry.session

        # setup: push everything, delete half by digest
        for repo in REPOS:
            for base in self.base:
                await registry.push_bytes(repo, base)

        async def push(image: Image) -> None:
            for blob in image.blobs:
                await registry.push_bytes(image.repo, blob)
            await registry.put_manifest(image.repo, image.tag, image.manifest)

        await gather_limited(8, [partial(push, image) for image in self.images])
        doomed = self.images[::2]
        for image in doomed:
            url = f"{target.url}/v2/{image.repo}/manifests/{image.digest}"
            async with session.delete(url) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"DELETE {image.repo}@{image.digest}: {resp.status}")
        expected = sum(len(b) for image in doomed for b in image.blobs)

        blobs_dir = (target.data / "docker" / "registry" / "v2" / "blobs"
                     if target.name == "distribution" else target.data / "blobs")
        before, before_all = du(blobs_dir), du(target.data)
        # what the workload holds on disk, blob by blob (Distribution keeps manifests as
        # blobs too); the pusher's own blobs are not counted
        workload = {sha256_digest(b) for b in self.base}
        for image in self.images:
            workload |= {sha256_digest(b) for b in image.blobs} | {image.digest}
        sizes = {d: du(_blob_dir(blobs_dir, d)) for d in workload}
        log = PushLog()
        stop = asyncio.Event()
        pusher = asyncio.create_task(_live_pusher(target.url, log, stop))
        await asyncio.sleep(0.5)  # the pusher is in full swing before the collection
        notes: dict[str, str] = {}
        try:
            start = time.monotonic()
            if target.name == "distribution":
                with Stopwatch() as clock:
                    collect_seconds, output = await asyncio.to_thread(
                        _distribution_offline_gc, target.server)
                notes["collector"] = (f"garbage-collect alone {collect_seconds:.2f} s; "
                                      f"{output}")
            else:
                with Stopwatch() as clock:
                    report = await _dockyard_gc(target.data)
                notes["collector"] = (f"dockyard gc: {report['blobs_deleted']} blobs, "
                                      f"{report['bytes_freed']} bytes")
            end = time.monotonic()
        finally:
            stop.set()
            await pusher
        after, after_all = du(blobs_dir), du(target.data)
        freed = sum(size for d, size in sizes.items()
                    if size and not _blob_dir(blobs_dir, d).exists())
        notes["workload"] = (f"{len(self.images)} images in {len(REPOS)} repositories "
                             f"(2 shared base layers of {len(self.base[0]) // 1024} KiB, a "
                             f"unique layer, a config), {len(doomed)} deleted by digest: "
                             f"{expected / MB:.2f} MB of unique blobs to free")
        notes["du"] = (f"data dir {before_all / MB:.2f} -> {after_all / MB:.2f} MB, blob "
                       f"store {before / MB:.2f} -> {after / MB:.2f} MB")
        notes["pusher"] = (f"{log.total(start, end)} requests during the collection, "
                           f"{log.refused(start, end)} refused")
        return Outcome(
            values={"gc.seconds": clock.seconds, "gc.freed": freed / MB,
                    "gc.refused": float(log.refused(start, end)),
                    "gc.pushed": float(len([t for t, _ in log.pushed if start <= t <= end]))},
            notes=notes,
        )


async def _live_pusher(url: str, log: PushLog, stop: asyncio.Event) -> None:
    """Push small images (1 KiB layer, config, manifest) until `stop`, logging requests."""
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=2)
    n = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def request(method: str, path: str, want: int, **kwargs: object) -> str | None:
            t = time.monotonic()
            try:
                async with session.request(method, url + path,
                                           **kwargs) as resp:  # type: ignore[arg-type]
                    await resp.read()
                    ok = resp.status == want
                    log.requests.append((t, ok))
                    return resp.headers.get("Location", "") if ok else None
            except (TimeoutError, aiohttp.ClientError, OSError):
                log.requests.append((t, False))
                return None

        async def blob(data: bytes) -> bool:
            location = await request("POST", f"/v2/{LIVE_REPO}/blobs/uploads/", 202)
            if location is None:
                return False
            sep = "&" if "?" in location else "?"
            path = location if location.startswith("/") else location.split(url, 1)[-1]
            return await request("PUT", f"{path}{sep}digest={sha256_digest(data)}", 201,
                                 data=data) is not None

        while not stop.is_set():
            n += 1
            layer = os.urandom(1024)
            config = image_config([sha256_digest(layer)], f"live-{n}")
            manifest = image_manifest(
                Descriptor(OCI_CONFIG, sha256_digest(config), len(config)),
                [Descriptor(OCI_LAYER, sha256_digest(layer), len(layer))])
            ok = await blob(layer) and await blob(config) and await request(
                "PUT", f"/v2/{LIVE_REPO}/manifests/live-{n}", 201, data=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            ) is not None
            if ok:
                log.pushed.append((time.monotonic(), len(layer) + len(config)))
            else:
                await asyncio.sleep(PAUSE_AFTER_FAILURE)


def _restart_distribution(server: Server, config: Path) -> subprocess.Popen[bytes]:
    """Start docker-registry with `config` on `server`'s port; wait until it answers."""
    proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)],
                            stdout=server.log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    server.proc = proc
    server.wait_ready()
    return proc


def _distribution_offline_gc(server: Server) -> tuple[float, str]:
    """Read-only restart, garbage-collect, read-write restart; (collector s, its summary)."""
    config = Path(str(server.extra["config"]))
    text = config.read_text()
    marker = "  maintenance:\n"
    assert marker in text, text
    readonly = config.with_name(config.stem + "-readonly.yml")
    readonly.write_text(text.replace(marker, marker + "    readonly:\n      enabled: true\n"))
    server.stop()
    _restart_distribution(server, readonly)
    started = time.monotonic()
    result = subprocess.run([DOCKER_REGISTRY, "garbage-collect", "--delete-untagged",
                             str(readonly)], capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"garbage-collect failed: {result.stderr[-2000:]}")
    lines = (result.stdout + result.stderr).splitlines()
    deleting = sum("blob eligible for deletion" in line or "Deleting blob" in line
                   for line in lines)
    server.stop()
    _restart_distribution(server, config)
    return seconds, f"{len(lines)} lines printed, {deleting} about blob deletion"


async def _dockyard_gc(data: Path) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dockyard", "gc", "--data", str(data), "--grace", "0s",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dockyard gc failed: {err.decode()[-2000:]}")
    report: dict[str, int] = json.loads(out)
    return report
