"""The lifecycle issue's torture test: online collection while pushes and deletes go on.

For `TORTURE_SECONDS` (60 by default, as the issue says) a 2-worker server collects every
500 ms with a 3 s grace period while 8 pushers (2 with skopeo, 6 over the raw API) push
images that share base layers into 6 repositories, and 2 deleters delete tags and whole
repositories. Then, once the grace period has passed and the scheduled collector has run:

- every tag that was not deleted pulls back byte-identical (manifest and every blob,
  digests verified), and the tag lists and catalog hold exactly what is alive;
- no blob a live manifest references is missing, and the blob files on disk are exactly
  the blobs the live manifests reference: every byte of the deleted images is gone;
- no pusher ever got a 5xx answer, and no push was refused for a missing blob unless its
  repository was deleted in the middle of it (or the push outlived the grace period).

The test keeps its own record of what is alive: a pusher's manifest PUT and a deleter's
DELETE of the same repository are serialised by a per-repository lock (skopeo's whole
copy is), so the order the server saw them in is the order recorded. Blob uploads run
outside the lock and race with everything.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from dockyard.core.blobs import TOUCH_INTERVAL  # a HEAD renews a blob's time this often
from tests.e2e.test_lifecycle import (
    blob_files,
    catalog,
    files_under,
    image_blobs,
    pull_verified,
    start,
    tags,
    wait_until,
)
from tests.support.clients import Skopeo
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import blob_bytes, canonical, descriptor, digest_of, with_digest

SECONDS = float(os.environ.get("TORTURE_SECONDS", "60"))
GRACE = 3.0
REPOS = [f"torture/r{i}" for i in range(6)]
TAGS = [f"t{i}" for i in range(10)]
API_PUSHERS = 6
SKOPEO_PUSHERS = 2
DELETERS = 2


def gz(size: int) -> bytes:
    return gzip.compress(blob_bytes(size), compresslevel=1, mtime=0)


BASES = [gz(n) for n in (48_000, 96_000, 64_000, 128_000)]
#: top layers images reuse: they fall out of use when their images go, get collected, and
#: are pushed again — so uploads race with the collector deleting the same digest
RECYCLED = [gz(3_000 + 500 * i) for i in range(24)]


@dataclass
class World:
    """What the test knows is alive, and what every actor saw."""

    locks: dict[str, threading.Lock] = field(
        default_factory=lambda: {r: threading.Lock() for r in REPOS})
    alive: dict[tuple[str, str], bytes] = field(default_factory=dict)
    epoch: Counter[str] = field(default_factory=Counter)  # repository deletions so far
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str, n: int = 1) -> None:
        with self.guard:
            self.counts[key] += n

    def problem(self, text: str) -> None:
        with self.guard:
            self.problems.append(text)


class Refused(Exception):
    """A 4xx answer to a push: legitimate only if the repository was deleted meanwhile."""

    def __init__(self, message: str, epoch: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch  # the repository's deletion count when the refusal came


def image(rng: random.Random) -> tuple[list[bytes], bytes, bytes]:
    """(layers, config, manifest) of a new image on 1-3 shared base layers and a top one."""
    top = rng.choice(RECYCLED) if rng.random() < 0.5 else gz(rng.randint(2_000, 24_000))
    layers = [*rng.sample(BASES, rng.randint(1, 3)), top]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": rng.getrandbits(64)}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor(OCI_CONFIG, config),
           "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}
    return layers, config, canonical(doc)


def api_pusher(url: str, world: World, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)

    def hook(resp: httpx.Response) -> None:
        world.count("pusher answers")
        if resp.status_code >= 500:
            world.count("pusher 5xx")
            world.problem(f"{resp.request.method} {resp.request.url.path} -> "
                          f"{resp.status_code}")

    def upload(c: httpx.Client, repo: str, data: bytes) -> None:
        digest = digest_of(data)
        if c.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return
        source = rng.choice(REPOS)
        if source != repo and rng.random() < 0.5:
            resp = c.post(f"/v2/{repo}/blobs/uploads/",
                          params={"mount": digest, "from": source})
        else:
            resp = c.post(f"/v2/{repo}/blobs/uploads/")
        if resp.status_code == 201:
            return
        if resp.status_code != 202:
            raise Refused(f"POST upload {resp.status_code} {resp.text[:200]}")
        done = c.put(with_digest(resp.headers["location"], digest), content=data,
                     headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise Refused(f"PUT upload {done.status_code} {done.text[:200]}")

    with httpx.Client(base_url=url, timeout=60,
                      event_hooks={"response": [hook]}) as c:
        while not stop.is_set():
            repo, tag = rng.choice(REPOS), rng.choice(TAGS)
            layers, config, manifest = image(rng)
            started, epoch = time.monotonic(), world.epoch[repo]
            try:
                for blob in [*layers, config]:
                    upload(c, repo, blob)
                with world.locks[repo]:
                    resp = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                                 headers={"Content-Type": OCI_MANIFEST})
                    if resp.status_code == 201:
                        world.alive[(repo, tag)] = manifest
                        world.count("api pushes")
                        continue
                    now_epoch = world.epoch[repo]
                raise Refused(f"PUT manifest {resp.status_code} {resp.text[:200]}", now_epoch)
            except Refused as exc:
                took = time.monotonic() - started
                if exc.epoch is None:
                    with world.locks[repo]:  # a deleter counts its delete under this lock
                        seen = world.epoch[repo]
                else:
                    seen = exc.epoch
                if seen != epoch:
                    world.count("pushes refused: repository deleted meanwhile")
                elif took > GRACE - TOUCH_INTERVAL - 0.25:
                    world.count("pushes refused: slower than the grace period")
                else:
                    world.problem(f"{repo}:{tag} refused after {took:.2f} s "
                                  f"with no delete of {repo}: {exc}")
            except httpx.HTTPError as exc:
                world.problem(f"{repo}:{tag}: {type(exc).__name__}: {exc}")


def write_layout(path: Path, tag: str, layers: list[bytes], config: bytes,
                 manifest: bytes) -> None:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in [*layers, config, manifest]:
        (blobs / digest_of(data).split(":", 1)[1]).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def skopeo_pusher(host: str, root: Path, world: World, stop: threading.Event,
                  seed: int) -> None:
    rng = random.Random(seed)
    skopeo = Skopeo(root / "skopeo", insecure_hosts=[host])
    n = 0
    while not stop.is_set():
        repo, tag = rng.choice(REPOS), rng.choice(TAGS)
        layers, config, manifest = image(rng)
        layout = root / f"layout-{n}"
        n += 1
        write_layout(layout, tag, layers, config, manifest)
        digest_file = root / "digest"
        with world.locks[repo]:
            result = skopeo.copy(f"oci:{layout}:{tag}", f"docker://{host}/{repo}:{tag}",
                                 "--preserve-digests", "--digestfile", str(digest_file),
                                 check=False)
            if result.returncode == 0:
                world.alive[(repo, tag)] = manifest
                world.count("skopeo pushes")
        shutil.rmtree(layout)
        if result.returncode != 0:
            world.count("skopeo failures")
            world.problem(f"skopeo {repo}:{tag}: {result.stderr.strip()[-600:]}")
        elif digest_file.read_text().strip() != digest_of(manifest):
            world.problem(f"skopeo {repo}:{tag} pushed {digest_file.read_text()}, "
                          f"not {digest_of(manifest)}")


def deleter(url: str, world: World, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.wait(rng.uniform(0.2, 0.6)):
            repo = rng.choice(REPOS)
            with world.locks[repo]:
                alive = sorted(t for r, t in world.alive if r == repo)
                if rng.random() < 0.8:
                    if not alive:
                        continue
                    tag = rng.choice(alive)
                    resp = c.delete(f"/v2/{repo}/manifests/{tag}")
                    if resp.status_code == 202:
                        del world.alive[(repo, tag)]
                        world.count("tags deleted")
                    else:
                        world.problem(f"DELETE {repo}:{tag} -> {resp.status_code} "
                                      f"{resp.text[:200]}")
                else:
                    resp = c.delete(f"/admin/v1/repositories/{repo}")
                    if resp.status_code == 202 or (resp.status_code == 404 and not alive):
                        world.epoch[repo] += 1
                        for t in alive:
                            del world.alive[(repo, t)]
                        world.count("repositories deleted")
                    else:
                        world.problem(f"DELETE repository {repo} -> {resp.status_code} "
                                      f"{resp.text[:200]}")
                if resp.status_code >= 500:
                    world.count("deleter 5xx")


@pytest.mark.slow
def test_gc_torture(tmp_path: Path) -> None:
    server = start(tmp_path, f"gc: {{interval: 500ms, grace: {GRACE:g}s}}\n"
                             "log: {level: warning}\n")
    world = World()
    stop = threading.Event()
    threads = [threading.Thread(target=api_pusher, args=(server.url, world, stop, i),
                                name=f"api-pusher-{i}") for i in range(API_PUSHERS)]
    threads += [threading.Thread(target=skopeo_pusher,
                                 args=(server.host, tmp_path / f"sk{i}", world, stop, 100 + i),
                                 name=f"skopeo-pusher-{i}") for i in range(SKOPEO_PUSHERS)]
    threads += [threading.Thread(target=deleter, args=(server.url, world, stop, 200 + i),
                                 name=f"deleter-{i}") for i in range(DELETERS)]
    try:
        for t in threads:
            t.start()
        stop.wait(SECONDS)
        stop.set()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), f"{t.name} did not stop"

        summary = dict(sorted(world.counts.items()))
        print(f"\ntorture: {SECONDS:g} s, alive tags {len(world.alive)}, {summary}")
        assert not world.problems, "\n".join(world.problems[:30])
        assert world.counts["pusher 5xx"] == 0
        assert world.counts["deleter 5xx"] == 0
        assert world.counts["api pushes"] > 50, summary
        assert world.counts["skopeo pushes"] > 5, summary
        assert world.counts["tags deleted"] > 5, summary
        assert world.counts["repositories deleted"] > 2, summary

        # once the grace period has passed, the scheduled collector leaves exactly the
        # blobs that live manifests reference
        expected: set[str] = set()
        for payload in world.alive.values():
            expected |= image_blobs(payload)
        converged = wait_until(lambda: blob_files(server.data) == expected,
                               timeout=GRACE + 15, interval=0.5)
        on_disk = blob_files(server.data)
        assert expected <= on_disk, f"referenced blobs missing: {sorted(expected - on_disk)}"
        assert converged, (f"{len(on_disk - expected)} blobs of deleted images still on "
                           f"disk after the grace period: {sorted(on_disk - expected)[:10]}")

        with httpx.Client(base_url=server.url, timeout=60) as c:
            for (repo, tag), payload in sorted(world.alive.items()):
                reached = pull_verified(c, repo, tag, payload)
                assert reached <= on_disk
            alive_repos = sorted({r for r, _ in world.alive})
            for repo in REPOS:
                want = sorted(t for r, t in world.alive if r == repo)
                assert (tags(c, repo) or []) == want, repo
            assert catalog(c) == alive_repos
        # reported, not asserted (a race the run may or may not hit): a repository delete
        # landing between a POST's session row and its file (UploadService.start) leaves
        # an empty uploads/<id> with no session row until the purge's orphan sweep
        leftovers = files_under(server.data / "uploads")
        orphans = [p for p in leftovers if p.stat().st_size == 0]
        assert leftovers == orphans, f"upload bytes left behind: {leftovers}"
        if orphans:
            warnings.warn(f"{len(orphans)} orphaned empty upload files left behind: "
                          f"{[p.name for p in orphans]}", stacklevel=1)
        log = server.log.read_text()
        assert "Traceback" not in log, log[-5000:]
    finally:
        stop.set()
        server.stop()
