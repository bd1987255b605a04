"""Three Dockyard nodes behind deploy/nginx/cluster.conf, sharing PostgreSQL and a blob store.

One PostgreSQL 15 (scripts/services/postgres.sh), three `dockyard serve` nodes started
together with the same config file (metadata in PostgreSQL, blobs in one shared directory
until the S3 driver is wired in), and Debian's nginx running the shipped cluster.conf with
only its addresses rewritten. Everything goes through the front unless a test must pin a
request to a node. The module proves:

- the conformance port passes through the front;
- the chunks of one upload can land on different nodes (pinned); through the front a
  session's requests stay on one node (cluster.conf hashes its id), sessions spread;
- two nodes racing PATCHes on one session never both write: one wins, one gets 416;
- `kill -9` of a node in the middle of a PATCH: the client resumes through another node
  at the offset the registry reports and the image pulls back complete; reads through the
  front never see the dead node;
- skopeo and podman push and pull through the front;
- the scheduled collection runs on one node at a time and moves on when its node is killed;
- `dockyard gc` run over and over while pushes and deletes go through the nodes loses no
  image, and afterwards exactly the deleted images' bytes are gone.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from dockyard.core.blobs import TOUCH_INTERVAL  # a HEAD renews a blob's time this often
from tests.e2e import test_conformance as conformance
from tests.e2e.test_lifecycle import blob_files, image_blobs, pull_verified, wait_until
from tests.support import nginx
from tests.support.clients import Podman, Skopeo
from tests.support.images import random_layout, read_layout, sha256
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import canonical, descriptor, digest_of, with_digest
from tests.support.postgres import postgres_unavailable, running_postgres
from tests.support.s3 import S3Server, running_s3
from tests.support.servers import Server, free_port, start_dockyard

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "cluster.conf"
NODES = 3
#: the scheduled collection every second (on one node at a time); a long grace, so the
#: conformance workflows' blobs wait for their manifests undisturbed
NODE_CONFIG = """\
http:
  trusted_proxies: [127.0.0.1/32]
  relativeurls: false
storage: {storage}
database:
  url: {url}
gc: {{interval: 1s, grace: 30s}}
log: {{level: info}}
"""


@dataclass
class Cluster:
    """The nodes, the front and what they share."""

    nodes: list[Server]
    port: int
    nginx: subprocess.Popen[bytes]
    root: Path  # nginx's prefix: site.conf, access.log, error.log
    data: Path
    config: Path
    #: the blob store: a shared directory (`data`), or S3 (each node an empty `data` dir)
    s3: S3Server | None = None
    rootdirectory: str = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def node_data(self, port: int) -> Path:
        return self.data if self.s3 is None else self.data / f"node-{port}"

    def start_node(self, port: int, *, wait: bool = True) -> Server:
        return start_dockyard(self.node_data(port), workers=2, config=self.config,
                              port=port, wait=wait)

    def blobs(self) -> set[str]:
        """Digests of every blob in the blob store."""
        if self.s3 is None:
            return blob_files(self.data)
        return self.s3.blob_digests(self.rootdirectory)

    def kill(self, i: int) -> None:
        """SIGKILL node `i` whole: its supervisor and every worker (one process group)."""
        node = self.nodes[i]
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()

    def restart(self, i: int) -> None:
        self.nodes[i] = self.start_node(self.nodes[i].port)

    def access(self) -> list[tuple[str, str, int, list[str]]]:
        """(method, path, status, upstreams tried) of every request nginx served so far."""
        out = []
        for line in (self.root / "access.log").read_text().splitlines():
            method, uri, status, upstreams = line.split(" ", 3)
            out.append((method, uri, int(status), [u.strip() for u in upstreams.split(",")]))
        return out


def nginx_conf(root: Path, nodes: list[int], port: int) -> Path:
    """The shipped cluster.conf with our ports, inside a minimal nginx.conf under `root`."""
    site = SITE.read_text()
    servers = re.findall(r"server 127\.0\.0\.1:500\d ", site)
    assert len(servers) == NODES, f"{SITE} no longer lists {NODES} nodes: {servers}"
    for old, node in zip(servers, nodes, strict=True):
        site = site.replace(old, f"server 127.0.0.1:{node} ")
    assert "listen 80;" in site, f"{SITE} no longer has 'listen 80;'"
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return nginx.write_conf(root, site,
                            log_format="$request_method $request_uri $status $upstream_addr")


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if not Path(nginx.NGINX).exists():
        pytest.skip("nginx is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp(f"cluster-{request.param}")
    data = tmp / "data"
    with contextlib.ExitStack() as stack:
        s3: S3Server | None = None
        if request.param == "s3":
            s3 = stack.enter_context(running_s3())
            storage = s3.storage_section()
        else:
            storage = {"filesystem": {"rootdirectory": str(data)}}
        url = stack.enter_context(running_postgres())
        config = tmp / "node.yml"
        config.write_text(NODE_CONFIG.format(storage=json.dumps(storage), url=url))
        root = tmp / "nginx"
        root.mkdir()
        port = free_port()
        c = Cluster([], port, None, root, data, config,  # type: ignore[arg-type]
                    s3, storage.get("s3", {}).get("rootdirectory", ""))
        try:
            # all at once, as a deployment starts them: they migrate the same empty database
            ports = [free_port() for _ in range(NODES)]
            c.nodes = [c.start_node(p, wait=False) for p in ports]
            for node in c.nodes:
                node.wait_ready()
            for node in c.nodes:  # the metadata really is elsewhere
                assert not (node.data / "metadata.db").exists()
            conf = nginx_conf(root, ports, port)
            c.nginx = nginx.start(conf, f"{c.url}/v2/")
            yield c
            for node in c.nodes:
                assert "Traceback" not in node.log.read_text(), node.log.read_text()[-5000:]
        finally:
            if c.nginx is not None:
                nginx.stop(c.nginx)
            for node in c.nodes:
                node.stop()
        if s3 is not None:  # nothing on the nodes' own disks
            leftovers = [p for p in data.rglob("*") if p.is_file() and p.suffix != ".log"]
            assert not leftovers, leftovers


# ------------------------------------------------------------------ conformance


@pytest.fixture(scope="class")
def client(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[conformance.Reggie]:
    c = conformance.Reggie(cluster.url,
                           f"cluster-{conformance.RUN_ID}/{request.cls.WORKFLOW}")
    yield c
    c.close()


class TestPullThroughFront(conformance.TestPull):
    """01_pull_test.go against nginx over three nodes."""


class TestPushThroughFront(conformance.TestPush):
    """02_push_test.go against nginx over three nodes."""


class TestContentDiscoveryThroughFront(conformance.TestContentDiscovery):
    """03_discovery_test.go against nginx over three nodes."""


class TestContentManagementThroughFront(conformance.TestContentManagement):
    """04_management_test.go against nginx over three nodes."""


# ------------------------------------------------------------------ uploads across nodes


def new_repo(prefix: str) -> str:
    return f"cluster/{prefix}-{uuid.uuid4().hex[:8]}"


def chunked_upload(c: httpx.Client, front: str, repo: str, data: bytes, size: int,
                   targets: list[str]) -> str:
    """POST through the front, PATCH chunk i to targets[i % len], PUT through the front."""
    r = c.post(f"{front}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    path = urlsplit(r.headers["Location"]).path
    for i, start in enumerate(range(0, len(data), size)):
        part = data[start:start + size]
        r = c.patch(targets[i % len(targets)] + path, content=part, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(part) - 1}"})
        assert r.status_code == 202, (i, r.status_code, r.text)
        assert r.headers["Range"] == f"0-{start + len(part) - 1}"
    digest = sha256(data)
    r = c.put(with_digest(f"{front}{path}", digest))
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"{front}/v2/{repo}/blobs/{digest}"
    return digest


def test_locations_name_the_front(cluster: Cluster) -> None:
    r = httpx.post(f"{cluster.url}/v2/{new_repo('loc')}/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Location"].startswith(f"{cluster.url}/v2/cluster/loc-"), r.headers


def test_chunks_of_one_upload_on_every_node(cluster: Cluster) -> None:
    data = os.urandom(3_000_000)
    with httpx.Client(timeout=60) as c:
        repo = new_repo("pinned")
        digest = chunked_upload(c, cluster.url, repo, data, 500_000,
                                [n.url for n in cluster.nodes])
        for base in [cluster.url, *(n.url for n in cluster.nodes)]:
            r = c.get(f"{base}/v2/{repo}/blobs/{digest}")
            assert r.status_code == 200, base
            assert r.content == data, base

        # through the front, a session's requests go to one node (the one that has its
        # running hash), and the sessions spread over the nodes
        repo = new_repo("spread")
        blobs = [os.urandom(700_000 + i) for i in range(10)]
        for blob in blobs:
            digest = chunked_upload(c, cluster.url, repo, blob, 300_000, [cluster.url])
            assert c.get(f"{cluster.url}/v2/{repo}/blobs/{digest}").content == blob
    by_session: dict[str, set[str]] = {}
    for method, uri, _, ups in cluster.access():
        if method in ("PATCH", "PUT") and uri.startswith(f"/v2/{repo}/blobs/uploads/"):
            by_session.setdefault(urlsplit(uri).path, set()).add(ups[-1])
    assert len(by_session) == len(blobs), by_session
    assert all(len(nodes) == 1 for nodes in by_session.values()), by_session
    assert len(set().union(*by_session.values())) > 1, by_session


def slow_patch(node: Server, path: str, data: bytes) -> tuple[int, str | None]:
    """PATCH all of `data` at offset 0 straight to `node`, 64 KiB at a time with pauses;
    (status, Range header)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    try:
        conn.putrequest("PATCH", path)
        conn.putheader("Content-Range", f"0-{len(data) - 1}")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        for i in range(0, len(data), 64 * 1024):
            conn.send(data[i:i + 64 * 1024])
            time.sleep(0.005)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Range")
    finally:
        conn.close()


def test_racing_patches_on_two_nodes_never_both_write(cluster: Cluster) -> None:
    """Two nodes receive a PATCH for the same offset of one session at once: the session's
    hold in PostgreSQL lets one write, the other gets 416 with the real offset, and the
    blob published afterwards is exactly the winner's bytes."""
    repo = new_repo("race")
    size = 2_000_000
    a, b = cluster.nodes[1], cluster.nodes[2]
    for _ in range(3):
        with httpx.Client(timeout=60) as c:
            r = c.post(f"{cluster.url}/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            path = urlsplit(r.headers["Location"]).path
            bodies = {"a": os.urandom(size), "b": os.urandom(size)}
            with ThreadPoolExecutor(2) as pool:
                futures = {key: pool.submit(slow_patch, node, path, bodies[key])
                           for key, node in (("a", a), ("b", b))}
                results = {key: f.result(timeout=60) for key, f in futures.items()}
            statuses = sorted(status for status, _ in results.values())
            assert statuses == [202, 416], results
            winner = next(k for k, (status, _) in results.items() if status == 202)
            loser = "b" if winner == "a" else "a"
            # the loser is told where the upload is: before or after the winner's chunk
            assert results[loser][1] in ("0-0", f"0-{size - 1}"), results[loser]
            digest = sha256(bodies[winner])
            r = c.put(with_digest(f"{cluster.url}{path}", digest))
            assert r.status_code == 201, r.text
            assert c.get(f"{cluster.url}/v2/{repo}/blobs/{digest}").content == bodies[winner]


def test_concurrent_pushes_of_shared_layers_in_any_order(cluster: Cluster) -> None:
    """Images naming the same layers in opposite orders, pushed at once through the nodes,
    each image by two threads to the same tag: every manifest PUT succeeds (PostgreSQL
    found deadlocks here, and duplicate keys, and the registry answered 500)."""
    repo = new_repo("order")
    shared = [os.urandom(1000 + i) for i in range(6)]
    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        for blob in shared:
            assert c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(blob)},
                          content=blob).status_code == 201
    statuses: Counter[int] = Counter()

    def push(reverse: bool) -> None:
        layers = shared[::-1] if reverse else shared
        with httpx.Client(base_url=cluster.url, timeout=60) as c:
            for n in range(25):
                config = json.dumps({"reverse": reverse, "n": n}).encode()
                c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(config)},
                       content=config)
                manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                      "config": descriptor(OCI_CONFIG, config),
                                      "layers": [descriptor(OCI_LAYER, b) for b in layers]})
                r = c.put(f"/v2/{repo}/manifests/{'r' if reverse else 'f'}{n}",
                          content=manifest, headers={"Content-Type": OCI_MANIFEST})
                statuses[r.status_code] += 1

    threads = [threading.Thread(target=push, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == {201: 100}, statuses


# ------------------------------------------------------------------ real clients


def test_skopeo_and_podman_through_the_front(cluster: Cluster, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[cluster.host])
    layout = random_layout(tmp_path / "oci", "v1", layer_sizes=(2_500_000, 300_000, 4_000))
    repo = new_repo("skopeo")
    dest = f"docker://{cluster.host}/{repo}:v1"
    skopeo.copy(layout.ref, dest)
    assert sha256(skopeo.inspect_raw(dest)) == layout.digest
    skopeo.copy(dest, f"oci:{tmp_path / 'back'}:v1")
    back = read_layout(tmp_path / "back", "v1")
    assert back.digest == layout.digest
    for digest in layout.all_digests():
        assert back.blob(digest) == layout.blob(digest), digest

    podman = Podman(tmp_path / "podman", insecure_hosts=[cluster.host])
    reason = podman.usable()
    if reason is not None:
        pytest.skip(reason)
    image_id = podman.pull(f"{cluster.host}/{repo}:v1")
    assert image_id == layout.config_digest().split(":", 1)[1]
    pushed = new_repo("podman")
    name = f"{cluster.host}/{pushed}:v2"
    podman.tag(image_id, name)
    digest = podman.push(name, f"docker://{name}")  # chunked PATCH uploads
    assert sha256(skopeo.inspect_raw(f"docker://{name}")) == digest
    served = {(method, uri.split("?")[0]) for method, uri, status, _ in cluster.access()
              if uri.startswith(f"/v2/{pushed}/") and status < 300}
    assert ("PUT", f"/v2/{pushed}/manifests/v2") in served
    assert any(method == "PATCH" for method, _ in served), served
    puller = Podman(tmp_path / "puller", insecure_hosts=[cluster.host])
    assert puller.pull(name) == image_id
    assert puller.image_inspect(name)["Digest"] == digest


# ------------------------------------------------------------------ collection while pushing


def gz(size: int, rng: random.Random) -> bytes:
    return gzip.compress(rng.randbytes(size // 4) * 4, compresslevel=1, mtime=0)


@dataclass
class World:
    """What the gc test knows is alive, and what went wrong."""

    alive: dict[tuple[str, str], bytes] = field(default_factory=dict)
    pushed: set[str] = field(default_factory=set)  # every blob digest any push sent
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)


GC_GRACE = 3.0


def pusher(front: str, repos: list[str], locks: dict[str, threading.Lock], world: World,
           stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    bases = [gz(n, random.Random(n)) for n in (40_000, 80_000, 60_000)]
    with httpx.Client(base_url=front, timeout=60) as c:
        n = 0
        while not stop.wait(0.1):  # a steady stream, not a flood: collections stay short
            repo, tag = rng.choice(repos), f"t{rng.randrange(6)}"
            layers = [*rng.sample(bases, 2), gz(rng.randint(2_000, 30_000), rng)]
            config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                                 "n": n}).encode()
            n += 1
            manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": descriptor(OCI_CONFIG, config),
                                  "layers": [descriptor(OCI_LAYER, b) for b in layers]})
            started = time.monotonic()
            with world.guard:
                world.pushed |= {digest_of(b) for b in [*layers, config]}
            for blob in [*layers, config]:
                d = digest_of(blob)
                if c.head(f"/v2/{repo}/blobs/{d}").status_code == 200:
                    continue
                r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d}, content=blob)
                if r.status_code != 201:
                    with world.guard:
                        world.problems.append(f"blob {repo} {r.status_code} {r.text[:200]}")
            with locks[repo]:
                r = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                          headers={"Content-Type": OCI_MANIFEST})
                with world.guard:
                    if r.status_code == 201:
                        world.alive[(repo, tag)] = manifest
                        world.counts["pushes"] += 1
                    elif (r.status_code == 400 and
                          time.monotonic() - started > GC_GRACE - TOUCH_INTERVAL - 0.25):
                        world.counts["pushes refused: slower than the grace period"] += 1
                    else:
                        world.problems.append(f"manifest {repo}:{tag} {r.status_code} "
                                              f"{r.text[:200]}")


def deleter(front: str, repos: list[str], locks: dict[str, threading.Lock], world: World,
            stop: threading.Event) -> None:
    rng = random.Random(7)
    with httpx.Client(base_url=front, timeout=60) as c:
        while not stop.wait(rng.uniform(0.15, 0.3)):
            repo = rng.choice(repos)
            with locks[repo]:
                tags = sorted(t for r, t in world.alive if r == repo)
                if not tags:
                    continue
                tag = rng.choice(tags)
                r = c.delete(f"/v2/{repo}/manifests/{tag}")
                with world.guard:
                    if r.status_code == 202:
                        del world.alive[(repo, tag)]
                        world.counts["deletes"] += 1
                    else:
                        world.problems.append(f"DELETE {repo}:{tag} {r.status_code}")


def dockyard_gc(cluster: Cluster, grace: str) -> subprocess.CompletedProcess[str]:
    """`dockyard gc` with the nodes' own config file: a node of its own, for one run."""
    return subprocess.run(
        [sys.executable, "-m", "dockyard", "gc", "--config", str(cluster.config),
         "--grace", grace, "--json"], capture_output=True, text=True, timeout=120)


def collector(cluster: Cluster, world: World, stop: threading.Event) -> None:
    while not stop.is_set():
        done = dockyard_gc(cluster, f"{GC_GRACE:g}s")
        with world.guard:
            if done.returncode == 0:
                report = json.loads(done.stdout)
                world.counts["collections"] += 1
                world.counts["blobs collected"] += report["blobs_deleted"]
            elif "a collection is running already" in done.stderr:
                world.counts["collections busy"] += 1  # a node's scheduled one
            else:
                world.problems.append(f"dockyard gc: {done.stderr[-1000:]}")
        stop.wait(0.3)  # room for the nodes' own scheduled collections between runs


def test_collection_while_pushing_through_the_nodes_loses_nothing(cluster: Cluster) -> None:
    repos = [new_repo(f"gc{i}") for i in range(3)]
    locks = {r: threading.Lock() for r in repos}
    world = World()
    stop = threading.Event()
    threads = [threading.Thread(target=pusher, args=(cluster.url, repos, locks, world, stop,
                                                     i)) for i in range(3)]
    threads.append(threading.Thread(target=deleter,
                                    args=(cluster.url, repos, locks, world, stop)))
    threads.append(threading.Thread(target=collector, args=(cluster, world, stop)))
    scheduled = sum(len(collection_times(n)) for n in cluster.nodes)
    for t in threads:
        t.start()
    try:
        # at least 8 s of pushes, and on until `dockyard gc` (a few seconds a run on a
        # busy machine) and the nodes' schedule have each collected twice meanwhile
        started = time.monotonic()
        while time.monotonic() - started < 90 and not stop.wait(0.5):
            with world.guard:
                ran = world.counts["collections"]
            if time.monotonic() - started > 8 and ran >= 2 and sum(
                    len(collection_times(n)) for n in cluster.nodes) - scheduled >= 2:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    world.counts["scheduled collections"] = sum(len(collection_times(n))
                                                for n in cluster.nodes) - scheduled
    summary = dict(sorted(world.counts.items()))
    print(f"\ncluster gc: {summary}")
    assert not world.problems, "\n".join(world.problems[:20])
    assert world.counts["pushes"] > 15, summary
    assert world.counts["deletes"] > 5, summary
    # `dockyard gc` and the nodes' own scheduled collections, one at a time (the lease)
    assert world.counts["collections"] >= 2, summary
    assert world.counts["scheduled collections"] >= 2, summary
    # deleted images' own layers older than the grace period went while pushes went on
    assert world.counts["blobs collected"] > 0, summary

    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        for (repo, tag), manifest in sorted(world.alive.items()):
            pull_verified(c, repo, tag, manifest)
    # collected now with no grace: exactly the pushed blobs alive images use remain
    expected: set[str] = set()
    for manifest in world.alive.values():
        expected |= image_blobs(manifest)
    for _ in range(20):  # the nodes' scheduled collection may hold the lease right now
        done = dockyard_gc(cluster, "0s")
        if "a collection is running already" not in done.stderr:
            break
    assert done.returncode == 0, done.stderr
    assert world.pushed & cluster.blobs() == expected


# ------------------------------------------------------------------ a node killed


def test_kill_node_mid_push_then_resume_through_another(cluster: Cluster) -> None:
    repo = new_repo("kill")
    layer = os.urandom(6_000_000)
    first, second = 2_000_000, 4_000_000
    victim = cluster.nodes[0]
    with httpx.Client(timeout=30) as c:
        r = c.post(f"{cluster.url}/v2/{repo}/blobs/uploads/")
        location = r.headers["Location"]
        path = urlsplit(location).path
        session = path.rsplit("/", 1)[1]
        r = c.patch(victim.url + path, content=layer[:first],
                    headers={"Content-Range": f"0-{first - 1}"})
        assert r.status_code == 202, r.text

        # the second chunk streams to the victim, which dies with half of it written
        killed = threading.Event()
        outcome: list[object] = []

        def body() -> Iterator[bytes]:
            yield layer[first:first + 1_000_000]
            killed.wait(20)
            yield layer[first + 1_000_000:second]

        def patch() -> None:
            try:
                outcome.append(c.patch(victim.url + path, content=body(), headers={
                    "Content-Range": f"{first}-{second - 1}"}).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=patch)
        sender.start()
        if cluster.s3 is None:  # the half chunk reaches the disk as it arrives
            stored = cluster.data / "uploads" / session
            assert wait_until(lambda: stored.stat().st_size > first, timeout=10,
                              interval=0.02)
        else:  # S3 holds less than a part in the writer: give it time to arrive
            time.sleep(1.0)
        cluster.kill(0)
        killed.set()
        sender.join(timeout=30)
        assert len(outcome) == 1, "the PATCH to the killed node did not end"
        assert isinstance(outcome[0], httpx.HTTPError), outcome

    try:
        with httpx.Client(base_url=cluster.url, timeout=30) as c:
            # reads through the front never see the dead node
            for _ in range(3 * NODES):
                assert c.get("/v2/").status_code == 200
            # the registry reports what it really has: the torn chunk is not counted
            r = c.get(path)
            assert r.status_code == 204, r.text
            assert r.headers["Range"] == f"0-{first - 1}"
            r = c.patch(path, content=layer[first:], headers={
                "Content-Range": f"{first}-{len(layer) - 1}"})
            assert r.status_code == 202, r.text
            assert r.headers["Range"] == f"0-{len(layer) - 1}"
            r = c.put(with_digest(path, sha256(layer)))
            assert r.status_code == 201, r.text
            config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
            assert c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(config)},
                          content=config).status_code == 201
            manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "config": descriptor(OCI_CONFIG, config),
                                  "layers": [descriptor(OCI_LAYER, layer)]})
            assert c.put(f"/v2/{repo}/manifests/v1", content=manifest,
                         headers={"Content-Type": OCI_MANIFEST}).status_code == 201
            pull_verified(c, repo, "v1", manifest)
            assert c.get(f"/v2/{repo}/blobs/{sha256(layer)}").content == layer
        dead = [ups for method, uri, status, ups in cluster.access()
                if victim.host in ups and status >= 500]
        assert not dead, dead  # nginx moved every request off the dead node
    finally:
        cluster.restart(0)


def collection_times(node: Server) -> list[datetime]:
    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            for line in node.log.read_text().splitlines()
            if "dockyard.gc: collection: " in line]


def test_killed_nodes_job_runs_on_the_others(cluster: Cluster) -> None:
    # a node an earlier test killed may have died holding the collection's lease: the
    # schedule goes on once it runs out (a minute at most), so count from there
    start = sum(len(collection_times(n)) for n in cluster.nodes)
    assert wait_until(lambda: sum(len(collection_times(n)) for n in cluster.nodes) > start,
                      timeout=75, interval=0.25)
    counts = [len(collection_times(n)) for n in cluster.nodes]
    time.sleep(4)
    together = sum(len(collection_times(n)) for n in cluster.nodes) - sum(counts)
    # due every second and run by one node at a time: six independent workers would
    # have collected about 30 times
    assert 2 <= together <= 6, together
    last = max(range(NODES), key=lambda i: max(collection_times(cluster.nodes[i]),
                                               default=datetime.min))
    survivors = [n for i, n in enumerate(cluster.nodes) if i != last]
    before = sum(len(collection_times(n)) for n in survivors)
    cluster.kill(last)
    try:
        # its lease runs out (1 s after a run; a minute if it died collecting) and the
        # others take turns
        assert wait_until(
            lambda: sum(len(collection_times(n)) for n in survivors) - before >= 2,
            timeout=75, interval=0.25), [n.log.read_text()[-2000:] for n in survivors]
    finally:
        cluster.restart(last)
