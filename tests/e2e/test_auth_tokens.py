"""The token service's OAuth2 form, refresh tokens, an external issuer, htpasswd reloads."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.cli.main import main
from tests.support.authenv import (
    PLATFORM_ACCESS,
    USERS,
    basic_auth,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.servers import start_dockyard


def test_oauth2_password_and_refresh_grants(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth=token_auth(htpasswd))
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        url = f"{server.url}/auth/token"
        r = httpx.post(url, data={"grant_type": "password", "username": "builder",
                                  "password": USERS["builder"][0], "service": "dockyard",
                                  "scope": "repository:tools/a:pull,push repository:x:delete",
                                  "client_id": "docker", "access_type": "offline"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["scope"] == "repository:tools/a:pull,push"  # no delete for builder
        assert doc["expires_in"] == 300
        assert r.headers["Cache-Control"] == "no-store"
        refresh = doc["refresh_token"]
        claims = jwt.decode(doc["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "builder"
        assert claims["aud"] == "dockyard"
        assert {"type": "repository", "name": "tools/a", "actions": ["pull", "push"]} in \
            claims["access"]

        r = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh,
                                  "service": "dockyard", "scope": "repository:tools/b:push"})
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "repository:tools/b:push"
        token = r.json()["access_token"]
        up = httpx.post(f"{server.url}/v2/tools/b/blobs/uploads/",
                        headers={"Authorization": f"Bearer {token}"})
        assert up.status_code == 401  # push without pull is not enough for an upload

        # an access token is not a refresh token, nor the other way round
        r = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": token})
        assert r.status_code == 401
        r = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {refresh}"})
        assert r.status_code == 401
        r = httpx.post(url, data={"grant_type": "client_credentials"})
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported_grant_type"
        r = httpx.get(url, params={"service": "someone-else"})
        assert r.status_code == 403

        # at most 100 distinct scopes a token (2,000 made a 167 KB token no server
        # takes back in a header); the same scope twice counts once
        many = " ".join(f"repository:tools/a{i}:pull" for i in range(101))
        r = httpx.post(url, data={"grant_type": "password", "username": "builder",
                                  "password": USERS["builder"][0], "scope": many})
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_scope", "error_description":
                            "101 scopes asked for; at most 100 in one token"}
        r = httpx.get(url, params=[("scope", f"repository:tools/a{i}:pull")
                                   for i in range(101)],
                      auth=("builder", USERS["builder"][0]))
        assert r.status_code == 400
        assert r.json()["errors"][0]["message"] == \
            "101 scopes asked for; at most 100 in one token"
        r = httpx.get(url, params=[("scope", "repository:tools/a:pull")] * 150,
                      auth=("builder", USERS["builder"][0]))
        assert r.status_code == 200
        assert r.json()["scope"] == "repository:tools/a:pull"
    finally:
        server.stop()


def test_tokens_from_an_external_issuer(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp-2026", "use": "sig", "alg": "ES256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    realm = "https://sso.example/registry/token"
    config = write_config(tmp_path / "config.yml", auth={
        "method": "token", "access": PLATFORM_ACCESS,
        "token": {"builtin": False, "realm": realm, "service": "registry.example",
                  "issuer": "https://sso.example", "jwks": jwks}})
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        r = httpx.get(f"{server.url}/v2/")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == \
            f'Bearer realm="{realm}",service="registry.example"'
        assert httpx.get(f"{server.url}/auth/token").status_code == 404
        now = int(time.time())
        claims = {"iss": "https://sso.example", "sub": "ci-bot", "aud": "registry.example",
                  "iat": now, "nbf": now, "exp": now + 60,
                  "access": [{"type": "repository", "name": "team/app",
                              "actions": ["pull", "push"]}]}
        token = jwt.encode(claims, key, "ES256", headers={"kid": "idp-2026"})
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{server.url}/v2/team/app/blobs/uploads/", headers=auth)
        assert r.status_code == 202, r.text
        r = httpx.post(f"{server.url}/v2/team/other/blobs/uploads/", headers=auth)
        assert r.status_code == 401  # the issuer decides: ask it for a wider token
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        bad = jwt.encode({**claims, "iss": "https://evil.example"}, key, "ES256",
                         headers={"kid": "idp-2026"})
        r = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401
    finally:
        server.stop()


def test_htpasswd_changes_apply_without_a_restart(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth=basic_auth(htpasswd))
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        url = f"{server.url}/v2/"
        assert httpx.get(url, auth=("newbie", "fresh-pw")).status_code == 401
        r = CliRunner().invoke(main, ["user", "add", "--file", str(htpasswd),
                                      "--password-stdin", "newbie"], input="fresh-pw\n")
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 5
        while httpx.get(url, auth=("newbie", "fresh-pw")).status_code != 200:
            assert time.monotonic() < deadline, "the new user was not picked up"
            time.sleep(0.2)
        r = CliRunner().invoke(main, ["user", "rm", "--file", str(htpasswd), "newbie"])
        assert r.exit_code == 0
        deadline = time.monotonic() + 5
        while httpx.get(url, auth=("newbie", "fresh-pw")).status_code != 401:
            assert time.monotonic() < deadline, "the removed user still gets in"
            time.sleep(0.2)
        # a broken edit keeps the users in force
        htpasswd.write_text(htpasswd.read_text() + "mallory:{SHA}abc\n")
        time.sleep(1.2)
        assert httpx.get(url, auth=("admin", USERS["admin"][0])).status_code == 200
        assert "keeping the previous users" in server.log.read_text()
    finally:
        server.stop()


def test_an_external_issuers_key_rotation_applies_without_a_restart(tmp_path: Path) -> None:
    """The JWKS file is re-read when it changes: a new key works at once, a removed key
    stops working, and a broken file keeps the keys in force."""

    def jwk_of(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
        doc = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        doc.update({"kid": kid, "use": "sig", "alg": "ES256"})
        return doc  # type: ignore[no-any-return]

    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(old, "k-old")]}))
    config = write_config(tmp_path / "config.yml", auth={
        "method": "token", "access": PLATFORM_ACCESS,
        "token": {"builtin": False, "realm": "https://sso.example/token",
                  "service": "registry.example", "issuer": "https://sso.example",
                  "jwks": jwks}})
    server = start_dockyard(tmp_path / "data", config=config)

    def status(key: ec.EllipticCurvePrivateKey, kid: str) -> int:
        now = int(time.time())
        token = jwt.encode({"iss": "https://sso.example", "sub": "ci", "aud": "registry.example",
                            "iat": now, "nbf": now, "exp": now + 60, "access": []},
                           key, "ES256", headers={"kid": kid})
        return httpx.get(f"{server.url}/v2/",
                         headers={"Authorization": f"Bearer {token}"}).status_code

    def eventually(key: ec.EllipticCurvePrivateKey, kid: str, want: int) -> None:
        deadline = time.monotonic() + 5
        while (got := status(key, kid)) != want:
            assert time.monotonic() < deadline, f"{kid}: {got}, not {want}"
            time.sleep(0.2)

    try:
        assert status(old, "k-old") == 200
        assert status(new, "k-new") == 401
        # the issuer publishes its next key beside the current one ...
        jwks.write_text(json.dumps({"keys": [jwk_of(old, "k-old"), jwk_of(new, "k-new")]}))
        eventually(new, "k-new", 200)
        assert status(old, "k-old") == 200
        # ... then retires the old one
        jwks.write_text(json.dumps({"keys": [jwk_of(new, "k-new")]}))
        eventually(old, "k-old", 401)
        # a broken edit keeps the keys in force
        jwks.write_text('{"keys": [')
        time.sleep(1.5)
        assert status(new, "k-new") == 200
        assert "keeping the previous token keys" in server.log.read_text()
    finally:
        server.stop()


def test_deleting_a_key_file_revokes_its_keys(tmp_path: Path) -> None:
    """A removed `public_keys` or `jwks` file gives no keys any more: tokens its keys
    signed are refused after the next look at the files, while a file that does not
    parse keeps its keys (and is tried again, and logged, until it is fixed)."""
    pem_key, jwks_key, third = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(pem_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    other = tmp_path / "other.pem"
    other.write_bytes(third.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(jwks_key.public_key()))
    jwk.update({"kid": "idp-1", "use": "sig", "alg": "ES256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    config = write_config(tmp_path / "config.yml", auth={
        "method": "token", "access": PLATFORM_ACCESS,
        "token": {"builtin": False, "realm": "https://sso.example/token",
                  "service": "registry.example", "issuer": "https://sso.example",
                  "public_keys": [pem, other], "jwks": jwks}})
    server = start_dockyard(tmp_path / "data", config=config)

    def status(key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> int:
        now = int(time.time())
        token = jwt.encode({"iss": "https://sso.example", "sub": "ci", "aud": "registry.example",
                            "iat": now, "nbf": now, "exp": now + 60, "access": []},
                           key, "ES256", headers={"kid": kid} if kid else None)
        return httpx.get(f"{server.url}/v2/",
                         headers={"Authorization": f"Bearer {token}"}).status_code

    def refused_soon(key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> None:
        deadline = time.monotonic() + 5
        while (got := status(key, kid)) != 401:
            assert got == 200
            assert time.monotonic() < deadline, "a deleted key file's key still verifies"
            time.sleep(0.2)

    try:
        assert status(pem_key) == 200
        assert status(jwks_key, "idp-1") == 200
        assert status(third) == 200
        pem.unlink()
        refused_soon(pem_key)
        time.sleep(1.5)
        assert status(pem_key) == 401  # for good, not for one look
        assert status(jwks_key, "idp-1") == 200  # the other files' keys stay
        assert "issuer.pem is gone" in server.log.read_text()
        jwks.unlink()
        refused_soon(jwks_key, "idp-1")
        # a file that does not parse keeps its keys, logged at each look until fixed
        other.write_text("-----BEGIN PUBLIC KEY-----\ncut short")
        for _ in range(3):
            time.sleep(1.2)
            assert status(third) == 200
        log = server.log.read_text()
        assert log.count("keeping the previous token keys of") >= 2, log[-3000:]
    finally:
        server.stop()


@pytest.mark.parametrize("sub", ["group:admins", "authenticated", "anonymous", "x:y", "*"])
def test_a_token_whose_sub_is_a_policy_subject_is_refused(tmp_path: Path, sub: str) -> None:
    """An external issuer's token for a user called `group:admins` matched the group's
    rules, `auth.catalog` and `metrics.allow`; such a `sub` is no user name: 401."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp", "use": "sig", "alg": "ES256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    config = write_config(tmp_path / "config.yml", auth={
        "method": "token", "catalog": ["group:admins"],
        "access": [{"repository": "**", "allow": {"group:admins": ["*"]}}],
        "token": {"builtin": False, "realm": "https://sso.example/token",
                  "service": "registry.example", "issuer": "https://sso.example",
                  "jwks": jwks}}, metrics={"allow_from": [], "allow": ["group:admins"]})
    server = start_dockyard(tmp_path / "data", config=config)

    def bearer(user: str, access: list[dict[str, object]]) -> dict[str, str]:
        now = int(time.time())
        token = jwt.encode({"iss": "https://sso.example", "sub": user,
                            "aud": "registry.example", "iat": now, "nbf": now,
                            "exp": now + 60, "access": access},
                           key, "ES256", headers={"kid": "idp"})
        return {"Authorization": f"Bearer {token}"}

    catalog = [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    try:
        pusher = bearer("ci-bot", [{"type": "repository", "name": "private/secret",
                                    "actions": ["pull", "push"]}])
        r = httpx.post(f"{server.url}/v2/private/secret/blobs/uploads/",
                       params={"digest": "sha256:" + hashlib.sha256(b"s").hexdigest()},
                       content=b"s", headers=pusher)
        assert r.status_code == 201, r.text
        # an ordinary name gets what the policy gives it: not the admins' view
        r = httpx.get(f"{server.url}/v2/_catalog", headers=bearer("ci-bot", catalog))
        assert r.status_code == 200, r.text
        assert r.json()["repositories"] == [], r.text
        assert httpx.get(f"{server.url}/metrics", headers=bearer("ci-bot", [])
                         ).status_code == 403
        for path, access in (("/v2/_catalog", catalog), ("/metrics", []), ("/v2/", [])):
            r = httpx.get(server.url + path, headers=bearer(sub, access))
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert [e["code"] for e in r.json()["errors"]] == ["UNAUTHORIZED"]
    finally:
        server.stop()
