"""The conformance port (test_conformance.py) against a token-auth Dockyard, with credentials.

The Go suite reads `OCI_USERNAME`/`OCI_PASSWORD`; so does this module (defaulting to a user
it creates in the admins group). The client answers a 401 the way reggie does: it parses the
Bearer challenge, asks the realm for a token for that scope with Basic credentials, and sends
the request again; the last token is reused until a request needs a wider one. The workflow
classes are the port's own, run unchanged on this server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import test_conformance as conformance
from tests.support.authenv import PLATFORM_ACCESS, write_config, write_htpasswd
from tests.support.servers import Server, start_dockyard

USERNAME = os.environ.get("OCI_USERNAME") or "conformance"
PASSWORD = os.environ.get("OCI_PASSWORD") or "conformance-secret"

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class AuthReggie(conformance.Reggie):
    """Reggie with `OCI_USERNAME`/`OCI_PASSWORD`: the registry token flow on a 401."""

    def __init__(self, root_url: str, name: str, username: str, password: str) -> None:
        super().__init__(root_url, name)
        self.username = username
        self.password = password
        self.token = ""

    def _fetch_token(self, challenge: str) -> str:
        params = dict(_PARAM.findall(challenge))
        realm = params.pop("realm")
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        resp = httpx.get(realm, params=query, auth=(self.username, self.password), timeout=30)
        resp.raise_for_status()
        return str(resp.json()["token"])

    def do(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        resp = super().do(method, path, headers=headers, **kw)
        challenge = resp.headers.get("WWW-Authenticate", "")
        if resp.status_code == 401 and challenge.startswith("Bearer "):
            self.token = self._fetch_token(challenge)
            headers["Authorization"] = f"Bearer {self.token}"
            resp = super().do(method, path, headers=headers, **kw)
        return resp


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("auth-conformance")
    htpasswd = write_htpasswd(tmp / "htpasswd", {USERNAME: (PASSWORD, ["admins"])})
    config = write_config(tmp / "config.yml", auth={
        "method": "token", "htpasswd": {"path": htpasswd}, "access": PLATFORM_ACCESS,
        "catalog": ["group:admins"]})
    server = start_dockyard(tmp / "data", workers=2, config=config)
    # the server really wants credentials
    assert httpx.get(f"{server.url}/v2/").status_code == 401
    yield server
    server.stop()


@pytest.fixture(scope="class")
def client(request: pytest.FixtureRequest, registry: Server) -> Iterator[AuthReggie]:
    namespace = f"conformance-{conformance.RUN_ID}/{request.cls.WORKFLOW}"
    c = AuthReggie(registry.url, namespace, USERNAME, PASSWORD)
    yield c
    c.close()


class TestPullWithToken(conformance.TestPull):
    """01_pull_test.go with credentials."""


class TestPushWithToken(conformance.TestPush):
    """02_push_test.go with credentials."""


class TestContentDiscoveryWithToken(conformance.TestContentDiscovery):
    """03_discovery_test.go with credentials."""


class TestContentManagementWithToken(conformance.TestContentManagement):
    """04_management_test.go with credentials."""
