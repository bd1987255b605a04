"""The object store stopped for 10 s in the middle of a load (issue 10).

Dockyard on S3 (SeaweedFS) + PostgreSQL, two worker processes; several clients push
small images and pull them back without a pause. The store is then stopped for 10 s,
once killed (and started again on the same data and port) and twice frozen (SIGSTOP,
then SIGCONT: connections are accepted and never answered, the case that hangs): with
the default `storage.s3.readtimeout` requests mostly wait for it, with a short one they
get 503s.

What a user sees: every request answers within its client timeout (no hang), with
success or 503 UNAVAILABLE (OCI error body, Retry-After), never another 5xx; once the
store is back, pushes and pulls work again within seconds without restarting Dockyard;
every push whose manifest got 201 is pullable with verified digests, and every blob a
HEAD said is there is GETtable with the right bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.s3 import S3Server, running_s3
from tests.support.servers import Server, start_dockyard

CLIENTS = 4
OUTAGE = 10.0
CLIENT_TIMEOUT = 60.0
"""Every request's own timeout: far past the outage, far below the test's."""
RECOVERY = 15.0
"""Seconds after the store is back by which a whole push and pull must work again."""
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3(own=True) as server:
        yield server


@pytest.fixture
def node(tmp_path: Path, s3: S3Server, database_url: str, request: pytest.FixtureRequest
         ) -> Iterator[Server]:
    """One node, two workers; `readtimeout` from the test's parameter, if any."""
    storage = s3.storage_section()
    readtimeout = getattr(request, "param", None)
    if readtimeout is not None:
        storage["s3"]["readtimeout"] = readtimeout
    config = tmp_path / "node.yml"
    # every push that fails mid-outage leaves its session open until the purge, all of
    # them anonymous: the per-user session cap (1000) is not what is under test here
    storage["uploads"] = {"max_sessions_per_user": 100000, "max_sessions": 100000}
    config.write_text(yaml.safe_dump({
        "storage": storage, "database": {"url": database_url},
        "log": {"level": "info"}}))
    server = start_dockyard(tmp_path / "node" / "data", workers=2, config=config)
    yield server
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-6000:]


@dataclass
class Image:
    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]


@dataclass
class Load:
    """What the clients saw: every answer, every problem, what they pushed."""

    statuses: Counter[int] = field(default_factory=Counter)
    #: (monotonic time, status, seconds it took) of every answer
    answers: list[tuple[float, int, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pushed: list[Image] = field(default_factory=list)
    #: blobs a HEAD answered 200 for
    present: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, client: httpx.Client, method: str, url: str,
                expect: int | tuple[int, ...],
                **kwargs: object) -> httpx.Response | None:
        """One request that should answer `expect` (or 503 while the store is down);
        None when it failed in transport. Anything else is a problem."""
        began = time.monotonic()
        try:
            resp = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            self.problem(f"{method} {url}: no answer in {time.monotonic() - began:.0f} s")
            return None
        except httpx.HTTPError as exc:
            self.problem(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        with self.lock:
            self.statuses[resp.status_code] += 1
            now = time.monotonic()
            self.answers.append((now, resp.status_code, now - began))
        if resp.status_code == 503:
            self.check_unavailable(method, url, resp)
        elif resp.status_code not in (expect if isinstance(expect, tuple) else (expect,)):
            self.problem(f"{method} {url}: {resp.status_code} {resp.text[:300]}")
        return resp

    def check_unavailable(self, method: str, url: str, resp: httpx.Response) -> None:
        try:
            codes = [e["code"] for e in resp.json()["errors"]]
        except (ValueError, KeyError, TypeError):
            codes = []
        if codes[:1] != ["UNAVAILABLE"] or not resp.headers.get("Retry-After", "").isdigit():
            self.problem(f"{method} {url}: 503 without an OCI UNAVAILABLE body and "
                         f"Retry-After: {dict(resp.headers)} {resp.text[:300]}")

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def push_blob(load: Load, c: httpx.Client, repo: str, data: bytes) -> bool:
    digest = digest_of(data)
    ok = False
    started = load.request(c, "POST", f"/v2/{repo}/blobs/uploads/", 202)
    if started is not None and started.status_code == 202:
        location = str(httpx.URL(started.headers["Location"]).copy_merge_params(
            {"digest": digest}))
        put = load.request(c, "PUT", location, 201, content=data,
                           headers={"Content-Type": "application/octet-stream"})
        ok = put is not None and put.status_code == 201
    # a blob whose push failed may or may not be there (the store may have kept it)
    head = load.request(c, "HEAD", f"/v2/{repo}/blobs/{digest}", 200 if ok else (200, 404))
    if head is not None and head.status_code == 200:
        with load.lock:
            load.present[digest] = (repo, data)
    return ok


def push_and_pull(load: Load, c: httpx.Client, repo: str) -> bool:
    """Push a small image (config and two layers), pull it back; whether all worked."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": uuid.uuid4().hex}).encode()
    layers = [os.urandom(n) for n in (2_000, 30_000)]
    blobs = {digest_of(b): b for b in [config, *layers]}
    if not all(push_blob(load, c, repo, data) for data in [config, *layers]):
        return False
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(b), "size": len(b)} for b in layers],
    }).encode()
    tag = f"t{uuid.uuid4().hex[:10]}"
    put = load.request(c, "PUT", f"/v2/{repo}/manifests/{tag}", 201, content=manifest,
                       headers={"Content-Type": MANIFEST})
    if put is None or put.status_code != 201:
        return False
    with load.lock:
        load.pushed.append(Image(repo, tag, manifest, blobs))
    got = load.request(c, "GET", f"/v2/{repo}/manifests/{tag}", 200,
                       headers={"Accept": MANIFEST})
    if got is None or got.status_code != 200:
        return False
    if got.content != manifest:
        load.problem(f"{repo}:{tag}: the manifest pulled differs from the one pushed")
    pulled = True
    for digest, data in blobs.items():
        blob = load.request(c, "GET", f"/v2/{repo}/blobs/{digest}", 200)
        if blob is None or blob.status_code != 200:
            pulled = False
        elif blob.content != data:
            load.problem(f"{repo}@{digest}: GET answered 200 with other bytes")
    return pulled


def run_clients(url: str, load: Load, stop: threading.Event) -> list[threading.Thread]:
    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as c:
            while not stop.is_set():
                push_and_pull(load, c, f"outage/c{n}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def verify_everything(url: str, load: Load) -> None:
    """Nothing lost, nothing half there: checked once the store is back."""
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as c:
        for image in load.pushed:
            got = c.get(f"/v2/{image.repo}/manifests/{image.tag}",
                        headers={"Accept": MANIFEST})
            assert got.status_code == 200, (image.repo, image.tag, got.text)
            assert got.content == image.manifest
            for digest in image.blobs:
                blob = c.get(f"/v2/{image.repo}/blobs/{digest}")
                assert blob.status_code == 200, (image.repo, digest, blob.text)
                assert digest_of(blob.content) == digest
        for digest, (repo, data) in load.present.items():
            blob = c.get(f"/v2/{repo}/blobs/{digest}")
            assert blob.status_code == 200, (repo, digest, blob.text)  # HEAD said so
            assert digest_of(blob.content) == digest == digest_of(data)


def weed_pid(s3: S3Server) -> int:
    return int((s3.home / "weed.pid").read_text())


def kill(s3: S3Server) -> Callable[[], None]:
    """Kill the store now; the callable starts it again on the same data and port."""
    os.kill(weed_pid(s3), signal.SIGKILL)

    def restart() -> None:
        s3.stop()  # the process is gone: this clears what it left (pid file, sockets)
        try:
            s3.start()
        except AssertionError:
            log = (s3.home / "weed.log").read_text(errors="replace")
            raise AssertionError(f"the store did not start again:\n{log[-6000:]}") from None

    return restart


def freeze(s3: S3Server) -> Callable[[], None]:
    """Stop the store's process now (it keeps its sockets); the callable resumes it."""
    pid = weed_pid(s3)
    os.kill(pid, signal.SIGSTOP)
    return lambda: os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize(("stop_store", "node", "answers_503"), [
    (kill, None, True),
    (freeze, None, None),  # a call waits up to 3 x 10 s: most just wait for the store
    (freeze, "2s", True),  # past 3 x 2 s a call gives up: 503
], ids=["killed", "frozen", "frozen-readtimeout-2s"], indirect=["node"])
def test_store_stopped_mid_load(node: Server, s3: S3Server,
                                stop_store: Callable[[S3Server], Callable[[], None]],
                                answers_503: bool | None) -> None:
    load = Load()
    stop = threading.Event()
    threads = run_clients(node.url, load, stop)
    try:
        time.sleep(4)  # the load runs
        with load.lock:
            before = sum(load.statuses.values())
        assert before > 0
        assert not load.problems, load.problems
        went = time.monotonic()
        bring_back = stop_store(s3)
        try:
            time.sleep(OUTAGE)
        finally:
            bring_back()
        back = time.monotonic()
        # without restarting Dockyard, a whole push and pull works again soon
        with httpx.Client(base_url=node.url, timeout=CLIENT_TIMEOUT) as c:
            probe = Load()
            while not push_and_pull(probe, c, "outage/probe"):
                assert time.monotonic() - back < RECOVERY, (
                    f"nothing works {RECOVERY:.0f} s after the store came back",
                    probe.statuses, probe.problems[:5])
                time.sleep(0.2)
            recovered = time.monotonic() - back
            assert not probe.problems, probe.problems
        time.sleep(3)  # the load goes on with the store back
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2 * CLIENT_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert not load.problems, load.problems[:10]
    during = Counter(s for at, s, _ in load.answers if went <= at <= back + 1)
    slowest = max(took for _, _, took in load.answers)
    print(f"\nstatuses: {dict(load.statuses)}; during the outage: {dict(during)}; "
          f"slowest answer {slowest:.1f} s; recovered in {recovered:.1f} s; "
          f"{len(load.pushed)} images pushed")
    if answers_503:  # the store down longer than a call waits: 503s, not a hang
        assert during[503] > 0, during
    assert set(load.statuses) <= {200, 201, 202, 404, 503}, load.statuses
    after = [s for at, s, _ in load.answers if at > back + recovered]
    assert after
    assert 503 not in after[len(after) // 2:], Counter(after)
    verify_everything(node.url, load)
    assert len(load.pushed) > CLIENTS
