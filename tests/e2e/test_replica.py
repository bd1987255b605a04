"""A standby replica following a primary Dockyard: real servers on loopback.

The primary runs with htpasswd auth and grants the admin API (the change feed) to the
`admins` group; the replica logs in as `admin` with the password taken from an
environment variable (`replica.password_env`). Pushes, retags, deletes and a collection
on the primary reach the replica (catalog, tags, manifest digests and blob bytes compared);
a replica killed with SIGKILL in the middle of its first comparison resumes and
converges; pushes are refused until `dockyard promote`, then accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.core.replica import READ_ONLY_CACHE
from dockyard.remote.client import FeedExpired, RegistryClient, RegistryClientError
from dockyard.remote.credentials import Credentials
from tests.support.authenv import (
    USERS,
    basic_auth,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.clients import Skopeo
from tests.support.images import multiplatform_layout
from tests.support.oci_api import (
    blob_bytes,
    canonical,
    descriptor,
    push_blob,
    push_image,
    put_manifest,
)
from tests.support.prom import samples
from tests.support.servers import Server, free_port, start_dockyard

ADMIN = ("admin", USERS["admin"][0])
BUILDER = ("builder", USERS["builder"][0])
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Server]:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    auth = {**basic_auth(htpasswd), "admin": ["group:admins"]}
    config = write_config(tmp_path / "primary.yml", auth=auth)
    server = start_dockyard(tmp_path / "primary" / "data", workers=2, config=config)
    yield server
    server.stop()


def replica_config(tmp_path: Path, primary: Server) -> Path:
    return write_config(tmp_path / "replica.yml", replica={
        "primary": primary.url, "username": "admin", "password_env": "PRIMARY_PASSWORD",
        "interval": "1s", "wait": "2s", "batch": 7})


def start_replica(tmp_path: Path, primary: Server, *, port: int | None = None) -> Server:
    return start_dockyard(tmp_path / "replica" / "data", workers=2,
                          config=replica_config(tmp_path, primary), port=port,
                          env={"PRIMARY_PASSWORD": ADMIN[1]})


def kill9(server: Server) -> None:
    """SIGKILL the server's supervisor and workers at once (its own process group)."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def snapshot(url: str, auth: tuple[str, str] | httpx.Auth | None = None
             ) -> dict[str, dict[str, str]]:
    """repository -> tag -> manifest digest, through the distribution API."""
    out: dict[str, dict[str, str]] = {}
    with httpx.Client(base_url=url, auth=auth, timeout=30) as c:
        repos = c.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
        for repo in repos:
            tags = c.get(f"/v2/{repo}/tags/list").json().get("tags") or []
            # a tag deleted between the list and the HEAD shows as "" (and the caller
            # looks again)
            out[repo] = {t: c.head(f"/v2/{repo}/manifests/{t}",
                                   headers={"Accept": MANIFEST_ACCEPT})
                         .headers.get("Docker-Content-Digest", "") for t in tags}
    return out


def pushers(url: str, auth: tuple[str, str] | None = None) -> dict[str, dict[str, str]]:
    """repository -> tag -> the account that pushed it, as `/admin/v1/tags` says."""
    with httpx.Client(base_url=url, auth=auth, timeout=30) as c:
        repos = c.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
        return {repo: {t["tag"]: t["pushed_by"]
                       for t in c.get(f"/admin/v1/tags/{repo}").json()["tags"]}
                for repo in repos}


def wait_converged(primary: Server, replica: Server, timeout: float = 120
                   ) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        want = snapshot(primary.url, ADMIN)
        try:
            got = snapshot(replica.url)
        except httpx.HTTPError:
            got = {}
        if got == want or time.monotonic() > deadline:
            assert got == want, replica.log.read_text()[-3000:]
            return want
        time.sleep(0.2)


def assert_content_pullable(primary: Server, replica: Server,
                            state: dict[str, dict[str, str]]) -> None:
    """Every tagged manifest (and index child) and every blob they name pulls from the
    replica with the primary's bytes."""
    with httpx.Client(base_url=replica.url, timeout=30) as c:
        for repo, tags in state.items():
            todo = list(set(tags.values()))
            while todo:
                digest = todo.pop()
                resp = c.get(f"/v2/{repo}/manifests/{digest}",
                             headers={"Accept": MANIFEST_ACCEPT})
                assert resp.status_code == 200, (repo, digest)
                assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digest
                doc = resp.json()
                todo += [m["digest"] for m in doc.get("manifests", [])]
                for blob in [doc["config"], *doc["layers"]] if "config" in doc else []:
                    got = c.get(f"/v2/{repo}/blobs/{blob['digest']}")
                    assert got.status_code == 200, (repo, blob)
                    assert "sha256:" + hashlib.sha256(got.content).hexdigest() == \
                        blob["digest"]


def replica_status(replica: Server) -> dict[str, Any]:
    return dict(httpx.get(replica.url + "/admin/v1/replica", timeout=10).json())


def gc(data: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dockyard", "gc", "--data", str(data),
                           "--grace", "0s", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


def assert_read_only(replica: Server, primary: Server, *, ui: bool = True) -> None:
    with httpx.Client(base_url=replica.url, timeout=30) as c:
        for resp in (c.post("/v2/new/repo/blobs/uploads/"),
                     c.put("/v2/a/app/manifests/v9", content=b"{}",
                           headers={"Content-Type": OCI_MANIFEST}),
                     c.delete("/v2/a/app/manifests/v1"),
                     c.delete("/admin/v1/repositories/a/app")):
            assert resp.status_code == 405, resp.text
            error = resp.json()["errors"][0]
            assert error["code"] == "UNSUPPORTED"
            assert f"read-only replica of {primary.url}" in error["message"]
        # the web UI's deletes too (they went through: lost at the next failover)
        for confirm in ("/ui/r/a/app/-/delete-tag/v1", "/ui/r/a/app/-/delete") if ui else ():
            page = c.get(confirm)
            assert page.status_code == 200, page.text[:500]
            token = re.search(r'name="csrf" value="([^"]*)"', page.text)
            assert token is not None
            resp = c.post(confirm, data={"csrf": token.group(1)})
            assert resp.status_code == 405, resp.text[:500]
            assert "read-only replica" in resp.text
        if ui:
            assert c.get("/v2/a/app/manifests/v1",
                         headers={"Accept": OCI_MANIFEST}).status_code == 200


def test_replica_follows_pushes_retags_deletes_and_collection(
        tmp_path: Path, primary: Server) -> None:
    skopeo = Skopeo(tmp_path / "skopeo")
    with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
        v1 = push_image(c, "a/app", "v1", layers=2)
        old_v2 = push_image(c, "a/app", "v2")
        push_image(c, "b/tool", "latest")
    index = multiplatform_layout(tmp_path / "index")
    skopeo.copy(index.ref, f"docker://{primary.host}/c/multi:1.0", "--all",
                "--preserve-digests", "--dest-creds", ":".join(BUILDER))

    replica = start_replica(tmp_path, primary)
    try:
        # first start: a full comparison
        state = wait_converged(primary, replica)
        assert state["c/multi"]["1.0"] == index.digest
        assert_content_pullable(primary, replica, state)
        assert_read_only(replica, primary)
        # who pushed each tag, as the primary says (its web UI's "by builder"): before,
        # the replica's tags had no pusher
        assert pushers(replica.url) == pushers(primary.url, ADMIN) == {
            "a/app": {"v1": "builder", "v2": "builder"}, "b/tool": {"latest": "builder"},
            "c/multi": {"1.0": "builder"}}

        # then the feed: a retag, a moved tag, a deleted tag, a new repository, a
        # deleted blob link, a deleted repository
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            assert put_manifest(c, "a/app", "stable", v1.payload,
                                v1.media_type).status_code == 201
        with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
            moved = push_image(c, "a/app", "v2", layers=3)
            push_image(c, "d/new", "x")
            layer = blob_bytes(4096, "link")
            push_blob(c, "d/new", layer)
            config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
            push_blob(c, "d/new", config)
            doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                   "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)]}
            assert put_manifest(c, "d/new", "y", canonical(doc),
                                OCI_MANIFEST).status_code == 201
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            assert c.delete("/v2/a/app/manifests/v1").status_code == 202
            assert c.delete("/admin/v1/repositories/b/tool").status_code == 202
        state = wait_converged(primary, replica)
        assert state["a/app"] == {"stable": v1.digest, "v2": moved.digest}
        assert "b/tool" not in state
        assert_content_pullable(primary, replica, state)
        # through the feed: each event names its pusher, and the replica records it
        assert pushers(replica.url) == pushers(primary.url, ADMIN) == {
            "a/app": {"stable": "admin", "v2": "builder"}, "c/multi": {"1.0": "builder"},
            "d/new": {"x": "builder", "y": "builder"}}
        page = httpx.get(f"{replica.url}/ui/r/a/app", timeout=30)
        assert page.status_code == 200, page.text[:500]
        assert 'by <span class="name">admin</span>' in page.text
        # the replica's own collection deletes no manifest (the old v2, untagged now,
        # goes when the primary's collector says so)
        gc(replica.data)
        old = httpx.get(f"{replica.url}/v2/a/app/manifests/{old_v2.digest}",
                        headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert old.status_code == 200

        # the collector: the old v2 manifest, untagged now, goes on both sides
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            assert c.delete("/v2/c/multi/manifests/1.0").status_code == 202
        gc(primary.data)
        state = wait_converged(primary, replica)
        assert "c/multi" not in state
        old = httpx.get(f"{replica.url}/v2/a/app/manifests/{old_v2.digest}",
                        headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert old.status_code == 404
        with httpx.Client(timeout=30) as c:
            for url, auth in ((primary.url, ADMIN), (replica.url, None)):
                gone = c.get(f"{url}/v2/c/multi/manifests/{index.digest}", auth=auth)
                assert gone.status_code == 404

        # lag in the admin API: caught up
        head = httpx.get(primary.url + "/admin/v1/events", params={"after": 0, "limit": 0},
                         auth=ADMIN, timeout=10).json()["head"]
        deadline = time.monotonic() + 30
        while (status := replica_status(replica))["cursor"] != head:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["primary"] == primary.url
        assert status["read_only"] is True
        assert status["events_behind"] == 0
        assert status["seconds_behind"] == 0
        assert "events and" in replica.log.read_text()  # the lag is logged too
        # and in the metrics, for the alerts of deploy/prometheus (the primary has none)
        seen = samples(httpx.get(replica.url + "/metrics", timeout=10).text)
        assert seen[("dockyard_replica_state", (("state", "following"),))] == 1
        assert seen[("dockyard_replica_state", (("state", "error"),))] == 0
        assert seen[("dockyard_replica_events_behind", ())] == 0
        assert seen[("dockyard_replica_seconds_behind", ())] == 0
        reported = seen[("dockyard_replica_last_report_timestamp_seconds", ())]
        assert time.time() - 60 < reported <= time.time()
        primary_metrics = httpx.get(primary.url + "/metrics", timeout=10).text
        assert "dockyard_replica_" not in primary_metrics
        # and on `dockyard status`'s screen
        shown = subprocess.run([sys.executable, "-m", "dockyard", "status", "--data",
                                str(replica.data), "--url", replica.url],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        line = next(t for t in shown.stdout.splitlines() if t.startswith("replica "))
        assert re.fullmatch(rf"replica +of {re.escape(primary.url)}: following, 0 events "
                            r"\(0s\) behind; follower seen running \d+s ago", line), line
        # and on the web UI's operations page
        ops = httpx.get(replica.url + "/ui/operations", timeout=30)
        assert ops.status_code == 200, ops.text[:500]
        assert f"read-only replica of <code>{primary.url}</code>" in ops.text
        assert '<li class="ok">Follower: following</li>' in ops.text
        assert "Behind: 0 events, the last applied 0.0 s old" in ops.text

        # promotion: writes are accepted from then on, and the follower stops
        promoted = subprocess.run([sys.executable, "-m", "dockyard", "promote", "--data",
                                   str(replica.data)], capture_output=True, text=True,
                                  timeout=120)
        assert promoted.returncode == 0, promoted.stderr
        assert primary.url in promoted.stdout
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=replica.url, timeout=30) as c:
            while c.post("/v2/after/promote/blobs/uploads/").status_code == 405:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            push_image(c, "after/promote", "v1")
        # that was one worker; every other one had its last look at the flag before the
        # promotion committed, so it sees the promotion once that look is READ_ONLY_CACHE old
        time.sleep(READ_ONLY_CACHE)
        skopeo.copy(index.ref, f"docker://{replica.host}/c/multi:again", "--all",
                    "--preserve-digests")
        assert replica_status(replica)["read_only"] is False
        assert "dockyard_replica_" not in httpx.get(replica.url + "/metrics",
                                                    timeout=10).text
        assert "has been promoted" in httpx.get(replica.url + "/ui/operations",
                                                timeout=30).text
    finally:
        replica.stop()


def test_a_killed_replica_resumes_and_converges(tmp_path: Path, primary: Server) -> None:
    with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
        for i in range(12):
            config = json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode()
            layers = [os.urandom(1024 * 1024) for _ in range(3)]
            for blob in (config, *layers):
                push_blob(c, f"k/repo{i}", blob)
            doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                   "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", b)
                              for b in layers]}
            assert put_manifest(c, f"k/repo{i}", "v1", canonical(doc),
                                OCI_MANIFEST).status_code == 201
    port = free_port()
    replica = start_replica(tmp_path, primary, port=port)
    try:
        # kill it in the middle of its first comparison: some repositories copied
        deadline = time.monotonic() + 120
        while True:
            copied = snapshot(replica.url)
            if copied:
                break
            assert time.monotonic() < deadline, replica.log.read_text()[-3000:]
            time.sleep(0.02)
        kill9(replica)
        assert len(copied) < 12, "the comparison ended before the kill"
        # the primary changes while the replica is down
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            push_image(c, "k/repo0", "v2")
            digest = c.head("/v2/k/repo1/manifests/v1",
                            headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"]
            assert c.delete(f"/v2/k/repo1/manifests/{digest}").status_code == 202
        gc(primary.data)  # k/repo1 leaves the primary's catalog
        replica = start_replica(tmp_path, primary, port=port)
        state = wait_converged(primary, replica)
        assert "k/repo1" not in state
        assert "v2" in state["k/repo0"]
        assert_content_pullable(primary, replica, state)

        # killed while following: changes made meanwhile arrive after the restart
        kill9(replica)
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            push_image(c, "k/repo2", "v3")
            assert c.delete("/admin/v1/repositories/k/repo3").status_code == 202
        replica = start_replica(tmp_path, primary, port=port)
        state = wait_converged(primary, replica)
        assert "k/repo3" not in state
        assert "v3" in state["k/repo2"]
        assert replica_status(replica)["cursor"] is not None
    finally:
        replica.stop()


def test_a_tag_moved_to_a_manifest_deleted_since_goes_on_the_replica(
        tmp_path: Path, primary: Server) -> None:
    """While the replica is away, a tag moves to a new manifest that is then deleted by
    its digest (what `skopeo delete docker://repo:tag` does): on the primary the tag
    went with the manifest, no event of its own; the replica kept it on the manifest it
    named before for good, and said it was in step."""
    port = free_port()
    replica = start_replica(tmp_path, primary, port=port)
    try:
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            push_image(c, "moved/app", "keep")
            push_image(c, "moved/app", "prod")
        assert "prod" in wait_converged(primary, replica)["moved/app"]
        kill9(replica)
        with httpx.Client(base_url=primary.url, auth=ADMIN, timeout=60) as c:
            moved = push_image(c, "moved/app", "prod")  # prod -> a new manifest
            assert c.delete(f"/v2/moved/app/manifests/{moved.digest}").status_code == 202
        replica = start_replica(tmp_path, primary, port=port)
        state = wait_converged(primary, replica)
        assert state["moved/app"].keys() == {"keep"}
    finally:
        replica.stop()


def test_tag_times_over_http(primary: Server) -> None:
    """`/admin/v1/tags/<name>`, what a replica's comparison reads: each tag's digest and
    push time, paged like the tags list, with the repository's pull access."""
    with httpx.Client(base_url=primary.url, timeout=60, auth=ADMIN) as c:
        pushed = {tag: push_image(c, "times/app", tag).digest for tag in ("t1", "t2", "t3")}
        push_image(c, "private/times", "v1")
    with httpx.Client(base_url=primary.url, timeout=60) as c:
        first = c.get("/admin/v1/tags/times/app", params={"n": "2"})
        assert first.status_code == 200, first.text
        assert first.links["next"]["url"] == "/admin/v1/tags/times/app?n=2&last=t2"
        rest = c.get(first.links["next"]["url"])
        assert rest.status_code == 200, rest.text
        assert "link" not in rest.headers
        listed = first.json()["tags"] + rest.json()["tags"]
        assert [(t["tag"], t["digest"]) for t in listed] == sorted(pushed.items())
        times = [t["pushed_at"] for t in listed]
        assert times == sorted(times)
        assert [t["pushed_by"] for t in listed] == ["admin"] * 3
        assert time.time() - 120 < times[0] <= time.time()
        assert c.get("/admin/v1/tags/times/app").json()["tags"] == listed
        assert c.get("/admin/v1/tags/times/app", params={"n": "0"}).json() == {
            "name": "times/app", "tags": []}
        bad = c.get("/admin/v1/tags/times/app", params={"n": "x"})
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        # pull access to the repository: anonymous may not pull private/**
        assert c.get("/admin/v1/tags/private/times").status_code == 401
        assert c.get("/admin/v1/tags/private/times", auth=BUILDER).status_code == 200
        gone = c.get("/admin/v1/tags/times/none")
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_the_feed_over_http(primary: Server) -> None:
    """The admin endpoint: admin access only, bad and expired cursors, the long poll
    ended early by a push on another worker."""
    with httpx.Client(base_url=primary.url, timeout=60) as c:
        assert c.get("/admin/v1/events").status_code == 401
        denied = c.get("/admin/v1/events", auth=BUILDER)
        assert denied.status_code == 403
        assert denied.json()["errors"][0]["code"] == "DENIED"
        for bad in ("-1", "x", "1.5", "99999999999999999999"):
            resp = c.get("/admin/v1/events", params={"after": bad}, auth=ADMIN)
            assert resp.status_code == 400, bad
            assert resp.json()["errors"][0]["code"] == "CURSOR_INVALID"
        # int() and float() took these too
        for key, bad in (("limit", "many"), ("limit", "1_0"), ("limit", " 1"),
                         ("wait", "1e1"), ("wait", "inf"), ("wait", "nan"),
                         ("limit", "\uff11")):
            resp = c.get("/admin/v1/events", params={key: bad}, auth=ADMIN)
            assert resp.status_code == 400, (key, bad)
            assert resp.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        assert c.get("/admin/v1/events", params={"limit": 0, "wait": "0.5"},
                     auth=ADMIN).status_code == 200
        head = c.get("/admin/v1/events", params={"limit": 0}, auth=ADMIN).json()["head"]
        ahead = c.get("/admin/v1/events", params={"after": head + 10}, auth=ADMIN)
        assert ahead.status_code == 410
        assert ahead.json()["errors"][0]["code"] == "CURSOR_EXPIRED"
        assert ahead.json()["errors"][0]["detail"]["head"] == head

    import threading
    result: dict[str, Any] = {}

    def poll(after: int = head) -> None:
        started = time.monotonic()
        result["page"] = httpx.get(primary.url + "/admin/v1/events", auth=ADMIN,
                                   params={"after": after, "wait": 25}, timeout=60).json()
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
        pushed = push_image(c, "feed/poll", "now")
    waiter.join(60)
    page = result["page"]
    assert [(e["kind"], e["repository"], e["tag"], e["digest"], e["actor"])
            for e in page["events"]] == [
        ("manifest.put", "feed/poll", "now", pushed.digest, "builder")]
    assert page["next"] == page["events"][0]["id"] == page["head"]
    assert result["took"] < 25  # ended by the push, not by the wait's bound

    # a waiting reader does not hold up a shutdown: its wait ends with the drain
    waiter = threading.Thread(target=poll, kwargs={"after": page["next"]})
    result.clear()
    waiter.start()
    time.sleep(0.5)
    stopping = time.monotonic()
    primary.stop()
    waiter.join(60)
    assert result["page"]["events"] == []
    assert time.monotonic() - stopping < 20  # not the 25 s asked for, nor drain_timeout


def test_the_feed_through_the_remote_client(primary: Server) -> None:
    """What the follower sees through `remote.RegistryClient`: a page with the new
    event, `FeedExpired` carrying the head for a cursor past it, 403 for a non-admin."""
    with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
        pushed = push_image(c, "feed/client", "v1")

    async def read() -> None:
        async with RegistryClient(primary.url, credentials=Credentials(*ADMIN)) as client:
            page = await client.events(0, 100, 0)
            assert [(e["kind"], e["repository"], e["tag"], e["digest"])
                    for e in page["events"]][-1] == (
                "manifest.put", "feed/client", "v1", pushed.digest)
            head = page["head"]
            with pytest.raises(FeedExpired) as expired:
                await client.events(head + 10, 100, 0)
            assert expired.value.head == head
            assert expired.value.codes == ("CURSOR_EXPIRED",)
        async with RegistryClient(primary.url, credentials=Credentials(*BUILDER)) as client:
            with pytest.raises(RegistryClientError) as denied:
                await client.events(0, 100, 0)
            assert denied.value.status == 403
            assert denied.value.codes == ("DENIED",)

    asyncio.run(read())


class TokenFlow(httpx.Auth):
    """The Docker token flow for httpx: on a Bearer challenge, a token for its scope."""

    def __init__(self, user: str, password: str) -> None:
        self.login = (user, password)

    def auth_flow(self, request: httpx.Request
                  ) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.startswith("Bearer"):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            token = httpx.get(params["realm"], auth=self.login, timeout=30, params={
                k: params[k] for k in ("service", "scope") if k in params}).json()["token"]
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def test_replicate_once_from_a_primary_with_token_auth(tmp_path: Path) -> None:
    """`dockyard replicate --once` through the token flow, the password from the
    environment (never printed); the copy then serves pulls and refuses pushes."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "primary.yml",
                          auth={**token_auth(htpasswd), "admin": ["group:admins"]})
    primary = start_dockyard(tmp_path / "primary" / "data", config=config)
    replica: Server | None = None
    try:
        with httpx.Client(base_url=primary.url, auth=TokenFlow(*BUILDER), timeout=60) as c:
            push_image(c, "t/one", "v1", layers=2)
            push_image(c, "t/two", "latest")
        data = tmp_path / "replica" / "data"
        done = subprocess.run(
            [sys.executable, "-m", "dockyard", "replicate", "--from", primary.url,
             "--username", "admin", "--password-env", "PRIMARY_PASSWORD", "--once",
             "--data", str(data)], capture_output=True, text=True, timeout=300,
            env={**os.environ, "PRIMARY_PASSWORD": ADMIN[1]})
        assert done.returncode == 0, done.stderr
        assert ADMIN[1] not in done.stdout + done.stderr
        replica = start_dockyard(data)  # no replica: section; the copy is read-only
        assert snapshot(replica.url) == snapshot(primary.url, TokenFlow(*ADMIN))
        assert_read_only(replica, primary, ui=False)  # anonymous: no UI forms
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def test_the_primary_down_the_replica_serves_reports_and_catches_up(
        tmp_path: Path, primary: Server) -> None:
    with httpx.Client(base_url=primary.url, auth=BUILDER, timeout=60) as c:
        first = push_image(c, "down/app", "v1")
    replica = start_replica(tmp_path, primary)
    restarted: Server | None = None
    try:
        wait_converged(primary, replica)
        primary.stop()
        deadline = time.monotonic() + 60
        while (status := replica_status(replica)).get("state") != "error":
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["last_error"]
        assert "retrying in" in replica.log.read_text()
        # what DockyardReplicaNotFollowing fires on (deploy/prometheus/alerts.yml)
        seen = samples(httpx.get(replica.url + "/metrics", timeout=10).text)
        assert seen[("dockyard_replica_state", (("state", "error"),))] == 1
        assert seen[("dockyard_replica_state", (("state", "following"),))] == 0
        pulled = httpx.get(f"{replica.url}/v2/down/app/manifests/v1",
                           headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert pulled.status_code == 200
        assert pulled.headers["Docker-Content-Digest"] == first.digest
        restarted = start_dockyard(primary.data, workers=1, port=primary.port,
                                   config=tmp_path / "primary.yml")
        with httpx.Client(base_url=restarted.url, auth=BUILDER, timeout=60) as c:
            push_image(c, "down/app", "v2")
        state = wait_converged(restarted, replica)
        assert sorted(state["down/app"]) == ["v1", "v2"]
        assert replica_status(replica)["state"] == "following"
    finally:
        replica.stop()
        if restarted is not None:
            restarted.stop()
