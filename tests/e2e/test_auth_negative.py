"""Every route refuses what the policy does not allow, with the exact status and code.

Two servers: token auth (the built-in token service) and htpasswd (Basic). Each negative
case sends one request and checks the status, the OCI error code, the challenge, and that
nothing changed in the registry (tags, manifests, blobs, upload sessions, the catalog).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.authenv import (
    USERS,
    basic_auth,
    get_token,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import blob_bytes, digest_of
from tests.support.servers import Server, start_dockyard

PUBLIC, PRIVATE, OTHER = "public/app", "private/x", "public/other"
LAYER = blob_bytes(2048, "auth-layer")
CONFIG = b'{"architecture":"amd64","os":"linux"}'
NEW_BLOB = blob_bytes(100, "never-stored")
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": digest_of(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(LAYER), "size": len(LAYER)}],
}).encode()
EVIL = json.dumps({
    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
    "config": {"mediaType": OCI_CONFIG, "digest": digest_of(CONFIG), "size": len(CONFIG)},
    "layers": [], "annotations": {"evil": "yes"},
}).encode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def push_image(url: str, repo: str, headers: dict[str, str]) -> str:
    """Push CONFIG + LAYER + MANIFEST as :v1; return a half-done upload session's path."""
    with httpx.Client(base_url=url, headers=headers) as c:
        for blob in (CONFIG, LAYER):
            r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(blob)},
                       content=blob)
            assert r.status_code == 201, r.text
        r = c.put(f"/v2/{repo}/manifests/v1", content=MANIFEST,
                  headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202
        session = r.headers["Location"]
        r = c.patch(session, content=b"12345", headers={"Content-Range": "0-4"})
        assert r.status_code == 202, r.text
        return session


@dataclass
class Registry:
    server: Server
    admin: dict[str, str]
    sessions: dict[str, str]
    signing_key: ec.EllipticCurvePrivateKey | None = None

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with httpx.Client(base_url=self.server.url, headers=self.admin) as c:
            out["catalog"] = c.get("/v2/_catalog").json()
            for repo in (PUBLIC, PRIVATE, OTHER):
                out[f"tags {repo}"] = (c.get(f"/v2/{repo}/tags/list").status_code,
                                       c.get(f"/v2/{repo}/tags/list").content)
                out[f"manifest {repo}"] = c.head(f"/v2/{repo}/manifests/v1").headers.get(
                    "Docker-Content-Digest")
                for blob in (LAYER, NEW_BLOB):
                    out[f"blob {repo} {len(blob)}"] = c.head(
                        f"/v2/{repo}/blobs/{digest_of(blob)}").status_code
            for repo, session in self.sessions.items():
                r = c.get(session)
                out[f"session {repo}"] = (r.status_code, r.headers.get("Range"))
        uploads = self.server.data / "uploads"
        out["upload dirs"] = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
        return out


def _start(tmp: Path, auth: dict[str, Any], **sections: Any) -> Server:
    htpasswd = write_htpasswd(tmp / "htpasswd")
    auth = {**auth, "htpasswd": {"path": htpasswd}}
    config = write_config(tmp / "config.yml", auth=auth, **sections)
    return start_dockyard(tmp / "data", workers=1, config=config)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("auth-token")
    server = _start(tmp, token_auth(tmp / "htpasswd"))
    scopes = [f"repository:{r}:*" for r in (PUBLIC, PRIVATE, OTHER)] + ["registry:catalog:*"]
    admin = bearer(get_token(server.url, scopes, "admin"))
    sessions = {r: push_image(server.url, r, admin) for r in (PUBLIC, PRIVATE)}
    key = serialization.load_pem_private_key(
        (server.data / "auth" / "token-signing-key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    yield Registry(server, admin, sessions, key)
    server.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("auth-basic")
    server = _start(tmp, {**basic_auth(tmp / "htpasswd"), "ratelimit": {"failures": 100000}})
    admin = basic("admin", USERS["admin"][0])
    sessions = {r: push_image(server.url, r, admin) for r in (PUBLIC, PRIVATE)}
    yield Registry(server, admin, sessions)
    server.stop()


# ---------------------------------------------------------------- the routes


@dataclass(frozen=True)
class Route:
    label: str
    kind: str  # base | catalog | read | write | delete
    send: Callable[[httpx.Client, str, dict[str, str]], httpx.Response]


def _r(label: str, kind: str,
       send: Callable[[httpx.Client, str, dict[str, str]], httpx.Response]) -> Route:
    return Route(label, kind, send)


LD, ND = digest_of(LAYER), digest_of(NEW_BLOB)
ROUTES = [
    _r("base", "base", lambda c, r, s: c.get("/v2/")),
    _r("catalog", "catalog", lambda c, r, s: c.get("/v2/_catalog")),
    _r("tags", "read", lambda c, r, s: c.get(f"/v2/{r}/tags/list")),
    _r("get-manifest", "read", lambda c, r, s: c.get(f"/v2/{r}/manifests/v1")),
    _r("head-manifest", "read", lambda c, r, s: c.head(f"/v2/{r}/manifests/v1")),
    _r("get-blob", "read", lambda c, r, s: c.get(f"/v2/{r}/blobs/{LD}")),
    _r("head-blob", "read", lambda c, r, s: c.head(f"/v2/{r}/blobs/{LD}")),
    _r("referrers", "read", lambda c, r, s: c.get(f"/v2/{r}/referrers/{LD}")),
    _r("tag-times", "read", lambda c, r, s: c.get(f"/admin/v1/tags/{r}")),
    _r("put-manifest", "write", lambda c, r, s: c.put(
        f"/v2/{r}/manifests/evil", content=EVIL, headers={"Content-Type": OCI_MANIFEST})),
    _r("start-upload", "write", lambda c, r, s: c.post(f"/v2/{r}/blobs/uploads/")),
    _r("monolithic-upload", "write", lambda c, r, s: c.post(
        f"/v2/{r}/blobs/uploads/", params={"digest": ND}, content=NEW_BLOB)),
    _r("mount", "write", lambda c, r, s: c.post(
        f"/v2/{r}/blobs/uploads/", params={"mount": LD, "from": PRIVATE})),
    _r("patch-upload", "write", lambda c, r, s: c.patch(
        s[r], content=b"678", headers={"Content-Range": "5-7"})),
    _r("finish-upload", "write", lambda c, r, s: c.put(
        s[r], params={"digest": ND}, content=NEW_BLOB)),
    _r("cancel-upload", "write", lambda c, r, s: c.delete(s[r])),
    # every endpoint of an upload session needs push (Distribution), its status too
    _r("upload-status", "write", lambda c, r, s: c.get(s[r])),
    _r("delete-manifest", "delete", lambda c, r, s: c.delete(
        f"/v2/{r}/manifests/{digest_of(MANIFEST)}")),
    _r("delete-tag", "delete", lambda c, r, s: c.delete(f"/v2/{r}/manifests/v1")),
    _r("delete-blob", "delete", lambda c, r, s: c.delete(f"/v2/{r}/blobs/{LD}")),
]


def check_refused(reg: Registry, route: Route, repo: str, headers: dict[str, str],
                  status: int, code: str, challenge: str | None) -> httpx.Response:
    before = reg.snapshot()
    with httpx.Client(base_url=reg.server.url, headers=headers) as c:
        resp = route.send(c, repo, reg.sessions)
    assert resp.status_code == status, (route.label, resp.status_code, resp.text)
    if resp.request.method != "HEAD":
        assert [e["code"] for e in resp.json()["errors"]] == [code], resp.text
    if challenge is not None:
        assert resp.headers.get("WWW-Authenticate", "").startswith(challenge), resp.headers
    assert reg.snapshot() == before, f"{route.label} changed the registry"
    return resp


# ---------------------------------------------------------------- token auth


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "dockyard", "sub": "builder", "aud": "dockyard", "exp": now + 300,
              "nbf": now - 1, "iat": now, "jti": "x",
              "access": [{"type": "repository", "name": n, "actions": ["*"]}
                         for n in (PUBLIC, PRIVATE, OTHER)]
              + [{"type": "registry", "name": "catalog", "actions": ["*"]}]}
    claims.update(over)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _kid(reg: Registry) -> str:
    token = reg.admin["Authorization"].split()[1]
    return str(jwt.get_unverified_header(token)["kid"])


def forged(reg: Registry, kind: str) -> str:
    key = reg.signing_key
    assert key is not None
    kid = _kid(reg)
    if kind == "expired":
        now = int(time.time())
        return jwt.encode(_claims(exp=now - 120, iat=now - 600, nbf=now - 600), key, "ES256",
                          headers={"kid": kid})
    if kind == "wrong-audience":
        return jwt.encode(_claims(aud="another-registry"), key, "ES256", headers={"kid": kid})
    if kind == "wrong-issuer":
        return jwt.encode(_claims(iss="evil"), key, "ES256", headers={"kid": kid})
    if kind == "alg-none":
        head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{head}.{_b64(json.dumps(_claims()).encode())}."
    if kind == "wrong-key":
        return jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), "ES256",
                          headers={"kid": kid})
    if kind == "hs256-public-key":
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        body = _b64(json.dumps(_claims()).encode())
        sig = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"
    if kind == "tampered":
        real = get_token(reg.server.url, [f"repository:{PUBLIC}:pull"], "reader")
        head, _, sig = real.split(".")
        return f"{head}.{_b64(json.dumps(_claims(sub='reader')).encode())}.{sig}"
    raise AssertionError(kind)


BAD_TOKENS = ["expired", "wrong-audience", "wrong-issuer", "alg-none", "wrong-key",
              "hs256-public-key", "tampered"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.label)
@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_token_is_401_everywhere(token_registry: Registry, kind: str, route: Route
                                     ) -> None:
    resp = check_refused(token_registry, route, PUBLIC, bearer(forged(token_registry, kind)),
                         401, "UNAUTHORIZED", 'Bearer realm="')
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind != "base"],
                         ids=lambda r: r.label)
def test_anonymous_token_cannot_write_or_read_private(token_registry: Registry, route: Route
                                                      ) -> None:
    repo = PRIVATE if route.kind == "read" else PUBLIC
    scope = "registry:catalog:*" if route.kind == "catalog" else f"repository:{repo}:*"
    token = get_token(token_registry.server.url, [scope])
    check_refused(token_registry, route, repo, bearer(token), 401, "UNAUTHORIZED",
                  'Bearer realm="')


# (reads of public repositories are allowed anonymously: see the next tests)
@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind != "read"],
                         ids=lambda r: r.label)
def test_no_credentials_gets_the_bearer_challenge(token_registry: Registry, route: Route
                                                  ) -> None:
    resp = check_refused(token_registry, route, PUBLIC, {}, 401, "UNAUTHORIZED",
                         'Bearer realm="')
    challenge = resp.headers["WWW-Authenticate"]
    assert f'realm="{token_registry.server.url}/auth/token"' in challenge
    assert 'service="dockyard"' in challenge
    if route.kind == "write" and route.label != "mount":
        assert f'scope="repository:{PUBLIC}:pull,push"' in challenge


@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind != "base"],
                         ids=lambda r: r.label)
def test_token_for_another_repository_is_refused(token_registry: Registry, route: Route
                                                 ) -> None:
    """reader's token for public/other: reading public/app needs a new token (401
    insufficient_scope, which the policy would grant); writing is denied outright (403)."""
    token = get_token(token_registry.server.url, [f"repository:{OTHER}:pull"], "reader")
    if route.kind == "read":
        resp = check_refused(token_registry, route, PUBLIC, bearer(token), 401,
                             "UNAUTHORIZED", 'Bearer realm="')
        assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
        assert f'scope="repository:{PUBLIC}:pull"' in resp.headers["WWW-Authenticate"]
    else:
        check_refused(token_registry, route, PUBLIC, bearer(token), 403, "DENIED", None)


def test_builder_token_for_another_repository_asks_for_a_new_token(token_registry: Registry
                                                                   ) -> None:
    url = token_registry.server.url
    token = get_token(url, [f"repository:{OTHER}:pull,push"], "builder")
    r = httpx.post(f"{url}/v2/{PUBLIC}/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert f'scope="repository:{PUBLIC}:pull,push"' in r.headers["WWW-Authenticate"]
    # the token the challenge leads to works
    token = get_token(url, [f"repository:{PUBLIC}:pull,push"], "builder")
    r = httpx.post(f"{url}/v2/{PUBLIC}/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 202
    assert httpx.delete(url + r.headers["Location"], headers=bearer(token)).status_code == 204


@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind in ("write", "delete")],
                         ids=lambda r: r.label)
def test_pull_only_token_cannot_push_or_delete(token_registry: Registry, route: Route) -> None:
    url = token_registry.server.url
    # reader asks for everything and is granted pull only (the intersection)
    resp = httpx.get(f"{url}/auth/token", auth=("reader", USERS["reader"][0]), params=[
        ("service", "dockyard"), ("scope", f"repository:{PUBLIC}:pull,push,delete"),
        ("scope", f"repository:{OTHER}:pull,push")])
    doc = resp.json()
    assert set(doc["scope"].split()) == {f"repository:{OTHER}:pull",
                                         f"repository:{PUBLIC}:pull"}
    check_refused(token_registry, route, PUBLIC, bearer(doc["token"]), 403, "DENIED",
                  'Bearer realm="')


def test_anonymous_pull_of_public_repositories(token_registry: Registry) -> None:
    url = token_registry.server.url
    token = get_token(url, [f"repository:{PUBLIC}:pull"])
    with httpx.Client(base_url=url, headers=bearer(token)) as c:
        assert c.get(f"/v2/{PUBLIC}/manifests/v1").content == MANIFEST
        assert c.get(f"/v2/{PUBLIC}/blobs/{LD}").content == LAYER
        assert c.get("/v2/").status_code == 200


def test_mount_without_pull_on_source_falls_back_to_an_upload(token_registry: Registry
                                                              ) -> None:
    url = token_registry.server.url
    token = get_token(url, [f"repository:{OTHER}:pull,push"], "builder")
    # builder may push to public/other but not read private/x: no mount, a plain session
    r = httpx.post(f"{url}/v2/{OTHER}/blobs/uploads/", headers=bearer(token),
                   params={"mount": LD, "from": PRIVATE})
    assert r.status_code == 202, r.text
    assert "/blobs/uploads/" in r.headers["Location"]
    assert httpx.delete(url + r.headers["Location"], headers=bearer(token)).status_code == 204
    with httpx.Client(base_url=url, headers=token_registry.admin) as c:
        assert c.head(f"/v2/{OTHER}/blobs/{LD}").status_code == 404


def test_token_service_refuses_wrong_password(token_registry: Registry) -> None:
    url = token_registry.server.url
    r = httpx.get(f"{url}/auth/token", auth=("builder", "wrong"),
                  params={"service": "dockyard", "scope": f"repository:{PUBLIC}:push"})
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = httpx.post(f"{url}/auth/token", data={"grant_type": "password", "username": "builder",
                                              "password": "wrong", "service": "dockyard"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_grant"


def test_basic_credentials_are_not_accepted_by_a_token_registry(token_registry: Registry
                                                                ) -> None:
    r = httpx.get(f"{token_registry.server.url}/v2/", headers=basic("admin", USERS["admin"][0]))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("path", [
    f"/v2/public/../{PRIVATE}/manifests/v1",
    "/v2/private%2Fx/manifests/v1",
    f"/v2/{PRIVATE}/manifests/v1/",
    f"/v2/{PRIVATE}//manifests/v1",
    f"/v2/{PUBLIC}/../../{PRIVATE}/blobs/{LD}",
    f"/v2/{PRIVATE}/tags/list/",
])
def test_odd_names_never_reach_private_content(token_registry: Registry, path: str) -> None:
    import http.client

    token = get_token(token_registry.server.url, [f"repository:{PUBLIC}:pull"])
    conn = http.client.HTTPConnection("127.0.0.1", token_registry.server.port, timeout=10)
    conn.request("GET", path, headers=bearer(token))  # sent as is, not normalised
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status in (400, 401, 403, 404), (resp.status, body)
    assert MANIFEST not in body
    assert LAYER not in body


# ---------------------------------------------------------------- htpasswd (Basic)


BASIC_CASES = {
    "anonymous": ({}, 401, "UNAUTHORIZED"),
    "wrong-password": (basic("builder", "not-the-password"), 401, "UNAUTHORIZED"),
    "unknown-user": (basic("mallory", "whatever"), 401, "UNAUTHORIZED"),
    "reader": (basic("reader", USERS["reader"][0]), 403, "DENIED"),
}


@pytest.mark.parametrize(("case", "route"), [
    (case, route) for case in BASIC_CASES for route in ROUTES
    if not (case == "reader" and route.kind in ("read", "base"))  # reader may read
], ids=lambda v: v if isinstance(v, str) else v.label)
def test_basic_refusals(basic_registry: Registry, case: str, route: Route) -> None:
    headers, status, code = BASIC_CASES[case]
    repo = PUBLIC
    if case == "anonymous" and route.kind == "read":
        repo = PRIVATE  # public repositories are readable anonymously
    check_refused(basic_registry, route, repo, headers, status, code,
                  'Basic realm="dockyard"' if status == 401 else None)


def test_basic_anonymous_pull_and_builder_push(basic_registry: Registry) -> None:
    url = basic_registry.server.url
    assert httpx.get(f"{url}/v2/{PUBLIC}/manifests/v1").content == MANIFEST
    builder = basic("builder", USERS["builder"][0])
    session = push_image(url, "public/built", builder)
    assert httpx.delete(url + session, headers=builder).status_code == 204  # own upload
    assert httpx.get(f"{url}/v2/public/built/tags/list").json()["tags"] == ["v1"]
    # builder may not delete; an admin may
    assert httpx.delete(f"{url}/v2/public/built/manifests/v1", headers=builder).status_code \
        == 403
    r = httpx.delete(f"{url}/v2/public/built/manifests/v1", headers=basic_registry.admin)
    assert r.status_code == 202


# ---------------------------------------------------------------- cross-site writes

#: what a browser sends with a form another site's page posts to the registry
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
              "Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("marks", [
    CROSS_SITE,
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
], ids=["form", "origin", "opaque-origin", "fetch-cross-site", "fetch-same-site"])
@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind in ("write", "delete")
                                   and r.label != "upload-status"], ids=lambda r: r.label)
def test_cross_site_writes_with_cached_basic_credentials_are_refused(
        basic_registry: Registry, route: Route, marks: dict[str, str]) -> None:
    """A page of another site can make the browser send a write with the Basic
    credentials it cached for the registry: /v2 refuses it before looking at them."""
    resp = check_refused(basic_registry, route, PUBLIC, {**basic_registry.admin, **marks},
                         403, "DENIED", None)
    assert "cross-site" in resp.json()["errors"][0]["message"]


def test_cross_site_admin_writes_and_mounts_are_refused_reads_and_own_origin_served(
        basic_registry: Registry) -> None:
    url = basic_registry.server.url
    admin = basic_registry.admin
    before = basic_registry.snapshot()
    r = httpx.delete(f"{url}/admin/v1/repositories/{PUBLIC}", headers={**admin, **CROSS_SITE})
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    # the form the finding describes: a mount into a repository the page chose
    r = httpx.post(f"{url}/v2/public/stolen/blobs/uploads/", params={"mount": LD,
                   "from": PRIVATE}, headers={**admin, **CROSS_SITE}, content=b"x=1")
    assert r.status_code == 403, r.text
    assert httpx.head(f"{url}/v2/public/stolen/blobs/{LD}", headers=admin).status_code == 404
    assert basic_registry.snapshot() == before
    # reads are not writes; the registry's own origin and a typed URL (`none`) may write
    assert httpx.get(f"{url}/v2/{PUBLIC}/manifests/v1", headers={**admin, **CROSS_SITE}
                     ).content == MANIFEST
    for own in ({"Origin": url, "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
        r = httpx.post(f"{url}/v2/public/own/blobs/uploads/", params={"mount": LD,
                       "from": PUBLIC}, headers={**admin, **own})
        assert r.status_code == 201, r.text


def test_cross_site_writes_are_refused_without_auth_too(tmp_path: Path) -> None:
    """With `auth.method: none` a page of any site could otherwise write to a registry
    on the visitor's own machine or network."""
    server = start_dockyard(tmp_path / "data")
    try:
        r = httpx.post(f"{server.url}/v2/public/x/blobs/uploads/", headers=CROSS_SITE)
        assert r.status_code == 403, r.text
        assert r.json()["errors"][0]["code"] == "DENIED"
        assert httpx.post(f"{server.url}/v2/public/x/blobs/uploads/").status_code == 202
    finally:
        server.stop()


# ---------------------------------------------------------------- failed-login limits


def test_failed_logins_are_rate_limited_per_address_and_per_user(tmp_path: Path) -> None:
    server = _start(tmp_path, {**basic_auth(tmp_path / "htpasswd"),
                               "ratelimit": {"failures": 3, "window": "1m"}},
                    http={"trusted_proxies": ["127.0.0.1/32"]})
    try:
        url = f"{server.url}/v2/{PUBLIC}/blobs/uploads/"

        def attempt(user: str, password: str, client: str) -> httpx.Response:
            return httpx.post(url, headers={**basic(user, password),
                                            "X-Forwarded-For": client})

        # per address: three failures for three users from one address lock the address
        for user in ("u1", "u2", "u3"):
            assert attempt(user, "bad", "192.0.2.1").status_code == 401
        r = attempt("admin", USERS["admin"][0], "192.0.2.1")
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # another address is not affected
        assert attempt("admin", USERS["admin"][0], "192.0.2.2").status_code == 202
        # per user: failures from many addresses lock the user, whatever the address
        for i in range(3):
            assert attempt("builder", "bad", f"198.51.100.{i}").status_code == 401
        r = attempt("builder", USERS["builder"][0], "203.0.113.9")
        assert r.status_code == 429
        assert "Retry-After" in r.headers
        log = server.log.read_text()
        for secret, _ in USERS.values():
            assert secret not in log
    finally:
        server.stop()


# ---------------------------------------------------------------- audit and logs


def test_audit_lines_name_the_identity_and_logs_hold_no_secrets(token_registry: Registry
                                                                ) -> None:
    url = token_registry.server.url
    token = get_token(url, [f"repository:{OTHER}:*"], "admin")
    with httpx.Client(base_url=url, headers=bearer(token)) as c:
        session = push_image(url, OTHER, bearer(token))
        assert c.delete(session).status_code == 204
        assert c.delete(f"/v2/{OTHER}/manifests/v1").status_code == 202
    lines = [json.loads(line.split("dockyard.audit: ", 1)[1])
             for line in token_registry.server.log.read_text().splitlines()
             if "dockyard.audit: " in line]
    mine = [e for e in lines if e["repository"] == OTHER]
    events = [(e["event"], e.get("tag")) for e in mine]
    assert ("push", "v1") in events
    assert ("delete", "v1") in events
    assert events.count(("blob.push", None)) == 2
    for entry in mine:
        assert entry["user"] == "admin"
        assert entry["auth"] == "token"
        assert entry["client"] == "127.0.0.1"
    push = next(e for e in mine if e["event"] == "push")
    assert push["digest"] == digest_of(MANIFEST)
    log = token_registry.server.log.read_text()
    for secret, _ in USERS.values():
        assert secret not in log
    assert token not in log
    assert token.split(".")[2] not in log


@pytest.mark.parametrize("header", [b"Basic \xc3\xa9", b"Basic \xff\xfe", b"Bearer \xff.a.b",
                                    b"Bearer \xc3\xa9.e30.", b"Basic YTpi\xff"])
@pytest.mark.parametrize("which", ["basic", "token"])
def test_credentials_that_are_not_ascii_are_401_not_500(
        basic_registry: Registry, token_registry: Registry, which: str, header: bytes
        ) -> None:
    # base64 and JWTs are ASCII: anything else is malformed credentials (b64decode of
    # a non-ASCII str, and PyJWT's encode of a lone surrogate, raised out as 500s)
    reg = basic_registry if which == "basic" else token_registry
    paths = ["/v2/", f"/v2/{PUBLIC}/tags/list"] + (["/auth/token?service=dockyard"]
                                                   if which == "token" else [])
    with httpx.Client(base_url=reg.server.url) as c:
        for path in paths:
            resp = c.get(path, headers={"Authorization": header})
            assert resp.status_code == 401, (path, resp.status_code, resp.text)
            assert [e["code"] for e in resp.json()["errors"]] == ["UNAUTHORIZED"], resp.text
    assert "Traceback" not in reg.server.log.read_text(errors="replace")
