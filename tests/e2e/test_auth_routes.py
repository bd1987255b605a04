"""Authorization by route: every route x every action x names holding every route keyword.

A repository may be called `team/blobs/uploads/x`: the scope a request needs comes from
the route the path matched, never from words found in the path. Users with pull, or pull
and push, on `team/**` must not delete anything (manifests, tags, blobs, repositories),
whatever the name; a user with pull must not push. Both Basic and bearer tokens.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.authenv import write_config, write_htpasswd
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import blob_bytes, digest_of
from tests.support.servers import Server, start_dockyard

USERS = {"pusher": ("pusher-secret-pw", []), "reader": ("reader-secret-pw", []),
         "admin": ("admin-secret-pw", ["admins"])}
ACCESS = [{"repository": "team/**", "allow": {"pusher": ["pull", "push"],
                                              "reader": ["pull"], "group:admins": ["*"]}}]
#: every keyword of the route table inside a repository name
NAMES = ["team/blobs/uploads/x", "team/blobs/uploads", "team/blobs", "team/uploads/x",
         "team/manifests/x", "team/tags/list", "team/referrers/x", "team/v2_catalog",
         "team/admin/v1/repositories/x"]
LAYER = blob_bytes(1024, "routes-layer")
CONFIG = b'{"architecture":"amd64","os":"linux"}'
NEW = blob_bytes(64, "routes-new")
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": digest_of(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(LAYER), "size": len(LAYER)}],
}).encode()
OTHER = MANIFEST.replace(b'"layers"', b'"annotations": {"a": "b"}, "layers"')
MD, LD, ND = digest_of(MANIFEST), digest_of(LAYER), digest_of(NEW)


def basic(user: str) -> dict[str, str]:
    raw = f"{user}:{USERS[user][0]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _session(c: httpx.Client, name: str) -> str:
    r = c.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = c.patch(r.headers["Location"], content=b"12345", headers={"Content-Range": "0-4"})
    assert r.status_code == 202, r.text
    return str(r.headers["Location"])


Send = Callable[[httpx.Client, str, str], httpx.Response]


@dataclass(frozen=True)
class Op:
    """One endpoint of the distribution-spec (or the admin API) and the action it needs."""

    label: str
    action: str  # pull | push | delete
    send: Send  # (client, name, an open upload session's path)


OPS = [
    Op("tags", "pull", lambda c, n, s: c.get(f"/v2/{n}/tags/list")),
    Op("get-manifest", "pull", lambda c, n, s: c.get(f"/v2/{n}/manifests/v1")),
    Op("head-manifest", "pull", lambda c, n, s: c.head(f"/v2/{n}/manifests/{MD}")),
    Op("get-blob", "pull", lambda c, n, s: c.get(f"/v2/{n}/blobs/{LD}")),
    Op("head-blob", "pull", lambda c, n, s: c.head(f"/v2/{n}/blobs/{LD}")),
    Op("referrers", "pull", lambda c, n, s: c.get(f"/v2/{n}/referrers/{MD}")),
    Op("sync-provenance", "pull", lambda c, n, s: c.get(f"/admin/v1/sync/repositories/{n}")),
    Op("put-manifest", "push", lambda c, n, s: c.put(
        f"/v2/{n}/manifests/other", content=OTHER, headers={"Content-Type": OCI_MANIFEST})),
    Op("start-upload", "push", lambda c, n, s: c.post(f"/v2/{n}/blobs/uploads/")),
    Op("monolithic-upload", "push", lambda c, n, s: c.post(
        f"/v2/{n}/blobs/uploads/", params={"digest": ND}, content=NEW)),
    Op("mount", "push", lambda c, n, s: c.post(
        f"/v2/{n}/blobs/uploads/", params={"mount": LD, "from": NAMES[0]})),
    Op("patch-upload", "push", lambda c, n, s: c.patch(
        s, content=b"678", headers={"Content-Range": "5-7"})),
    Op("finish-upload", "push", lambda c, n, s: c.put(
        s, params={"digest": digest_of(b"12345")})),
    Op("cancel-upload", "push", lambda c, n, s: c.delete(s)),
    # every endpoint of an upload session needs push (Distribution), its status too
    Op("upload-status", "push", lambda c, n, s: c.get(s)),
    Op("delete-manifest", "delete", lambda c, n, s: c.delete(f"/v2/{n}/manifests/{MD}")),
    Op("delete-tag", "delete", lambda c, n, s: c.delete(f"/v2/{n}/manifests/v1")),
    Op("delete-blob", "delete", lambda c, n, s: c.delete(f"/v2/{n}/blobs/{LD}")),
    Op("delete-repository", "delete", lambda c, n, s: c.delete(
        f"/admin/v1/repositories/{n}")),
]
GRANTED = {"pusher": {"pull", "push"}, "reader": {"pull"}, "admin": {"pull", "push", "delete"}}


@dataclass
class Env:
    server: Server
    method: str
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    clients: dict[tuple[str, str], httpx.Client] = field(default_factory=dict)

    def client(self, user: str, name: str) -> httpx.Client:
        """One keep-alive client per user and repository (and token), reused."""
        if (user, name) not in self.clients:
            self.clients[user, name] = httpx.Client(base_url=self.server.url,
                                                    headers=self.headers(user, name))
        return self.clients[user, name]

    def headers(self, user: str, name: str) -> dict[str, str]:
        if self.method == "htpasswd":
            return basic(user)
        if (user, name) not in self.tokens:
            r = httpx.get(f"{self.server.url}/auth/token", auth=(user, USERS[user][0]),
                          params={"service": "dockyard",
                                  "scope": f"repository:{name}:pull,push,delete"})
            r.raise_for_status()
            self.tokens[user, name] = r.json()["token"]
        return {"Authorization": f"Bearer {self.tokens[user, name]}"}

    def snapshot(self, name: str, session: str) -> list[Any]:
        c = self.client("admin", name)
        r = c.get(session)
        return [c.get(f"/v2/{name}/tags/list").json(),
                c.head(f"/v2/{name}/manifests/{MD}").status_code,
                c.head(f"/v2/{name}/blobs/{LD}").status_code,
                c.head(f"/v2/{name}/blobs/{ND}").status_code,
                (r.status_code, r.headers.get("Range"))]


def _start(tmp: Path, method: str) -> Env:
    htpasswd = write_htpasswd(tmp / "htpasswd", USERS)
    auth: dict[str, Any] = {"method": method, "htpasswd": {"path": htpasswd},
                            "access": ACCESS, "ratelimit": {"failures": 100000}}
    server = start_dockyard(tmp / "data", config=write_config(tmp / "config.yml", auth=auth))
    env = Env(server, method)
    for name in NAMES:
        with httpx.Client(base_url=server.url, headers=env.headers("admin", name)) as c:
            for blob in (CONFIG, LAYER):
                r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest_of(blob)},
                           content=blob)
                assert r.status_code == 201, r.text
            r = c.put(f"/v2/{name}/manifests/v1", content=MANIFEST,
                      headers={"Content-Type": OCI_MANIFEST})
            assert r.status_code == 201, r.text
    return env


@pytest.fixture(scope="module", params=["htpasswd", "token"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    env = _start(tmp_path_factory.mktemp(f"routes-{request.param}"), request.param)
    yield env
    for client in env.clients.values():
        client.close()
    env.server.stop()


@pytest.mark.parametrize("user", ["reader", "pusher"])
def test_what_the_policy_does_not_grant_is_refused_and_changes_nothing(env: Env,
                                                                       user: str) -> None:
    refused = [op for op in OPS if op.action not in GRANTED[user]]
    assert refused
    for name in NAMES:
        session = _session(env.client("admin", name), name)
        for op in refused:
            before = env.snapshot(name, session)
            r = op.send(env.client(user, name), name, session)
            assert r.status_code == 403, (name, op.label, r.status_code, r.text)
            if r.request.method != "HEAD":
                assert [e["code"] for e in r.json()["errors"]] == ["DENIED"], r.text
            assert env.snapshot(name, session) == before, (name, op.label)


@pytest.mark.parametrize("user", ["reader", "pusher", "admin"])
def test_what_the_policy_grants_is_served(env: Env, user: str) -> None:
    allowed = [op for op in OPS if op.action in GRANTED[user] and op.action != "delete"]
    for name in NAMES:
        for op in allowed:
            session = _session(env.client("admin", name), name)
            r = op.send(env.client(user, name), name, session)
            assert r.status_code < 300, (name, op.label, r.status_code, r.text)


def test_the_admin_deletes_under_every_name(env: Env) -> None:
    # the tag first: deleting the manifest by digest takes its tags with it
    deletes = sorted((op for op in OPS if op.action == "delete"),
                     key=lambda op: op.label != "delete-tag")
    for name in NAMES:
        c = env.client("admin", name)
        session = _session(c, name)
        for op in deletes:
            r = op.send(c, name, session)
            assert r.status_code == 202, (name, op.label, r.status_code, r.text)
            if op.label == "delete-tag":  # put the tag back for the next delete
                r = c.put(f"/v2/{name}/manifests/v1", content=MANIFEST,
                          headers={"Content-Type": OCI_MANIFEST})
                assert r.status_code == 201
        assert c.get(f"/v2/{name}/tags/list").status_code == 404


def _audit(env: Env) -> list[dict[str, Any]]:
    return [json.loads(line.split("dockyard.audit: ", 1)[1])
            for line in env.server.log.read_text().splitlines() if "dockyard.audit: " in line]


def test_the_audit_trail_records_what_each_endpoint_did(env: Env) -> None:
    name = "team/audit/blobs/uploads/x"
    c = env.client("admin", name)
    for blob in (CONFIG, LAYER):
        assert c.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest_of(blob)},
                      content=blob).status_code == 201
    mounted = "team/audit/mounted"
    m = env.client("admin", mounted)
    r = m.post(f"/v2/{mounted}/blobs/uploads/", params={"mount": LD, "from": name})
    if env.method == "token":  # the token names one repository: no pull on `from`
        assert r.status_code == 202
    else:
        assert r.status_code == 201
    assert c.put(f"/v2/{name}/manifests/v1", content=MANIFEST,
                 headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    session = _session(c, name)  # an open session is not audited; its cancel neither
    assert c.delete(session).status_code == 204
    assert c.delete(f"/v2/{name}/manifests/v1").status_code == 202
    refused = env.client("pusher", name).delete(f"/admin/v1/repositories/{name}")
    assert refused.status_code == 403
    assert c.delete(f"/admin/v1/repositories/{name}").status_code == 202
    mine = [(e["event"], e["user"], e.get("tag"), e.get("digest"), e.get("source"))
            for e in _audit(env) if e["repository"] in (name, mounted)]
    expected = [("blob.push", "admin", None, digest_of(CONFIG), None),
                ("blob.push", "admin", None, LD, None)]
    if env.method == "htpasswd":
        expected.append(("blob.mount", "admin", None, LD, name))
    expected += [("push", "admin", "v1", MD, None), ("delete", "admin", "v1", None, None),
                 ("repository.delete", "admin", None, None, None)]
    assert mine == expected
