"""Trusted proxies: forwarded headers only from them; the public URL; absolute Locations."""

from __future__ import annotations

from typing import Any
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api.context import SETTINGS
from dockyard.api.proxy import (
    PROXIES,
    TrustedProxies,
    absolute_locations,
    client_address,
    public_base,
)
from dockyard.config.settings import Settings


def _request(peer: str, headers: dict[str, str], **http: Any) -> web.Request:
    app = web.Application()
    settings = Settings.model_validate({"http": {"trusted_proxies": ["10.0.0.0/8"], **http}})
    app[SETTINGS] = settings
    app[PROXIES] = TrustedProxies(settings.http.trusted_proxies)
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 1234) if name == "peername" else default)
    return make_mocked_request("GET", "/v2/", headers={"Host": "inner:5000", **headers},
                               app=app, transport=transport)


FORWARDED = {"X-Forwarded-For": "203.0.113.7, 10.1.1.1", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "registry.example"}


def test_forwarded_headers_from_a_trusted_proxy() -> None:
    req = _request("10.0.0.5", FORWARDED)
    assert client_address(req) == "203.0.113.7"
    assert public_base(req) == "https://registry.example"


def test_forwarded_headers_from_anyone_else_are_ignored() -> None:
    req = _request("192.0.2.9", FORWARDED)
    assert client_address(req) == "192.0.2.9"
    assert public_base(req) == "http://inner:5000"


def test_configured_host_wins() -> None:
    req = _request("10.0.0.5", FORWARDED, host="https://reg.example/")
    assert public_base(req) == "https://reg.example"


async def test_absolute_locations() -> None:
    req = _request("10.0.0.5", FORWARDED)
    resp = web.Response(headers={"Location": "/v2/a/blobs/uploads/x"})
    await absolute_locations(req, resp)
    assert resp.headers["Location"] == "https://registry.example/v2/a/blobs/uploads/x"
    resp = web.Response(headers={"Location": "https://elsewhere/x"})
    await absolute_locations(req, resp)
    assert resp.headers["Location"] == "https://elsewhere/x"


def test_trust_parsing() -> None:
    proxies = TrustedProxies(["127.0.0.1/32", "fd00::/8"])
    assert proxies.trusts("127.0.0.1")
    assert proxies.trusts("::ffff:127.0.0.1")
    assert proxies.trusts("fd00::1")
    assert not proxies.trusts("127.0.0.2")
    assert not proxies.trusts("not-an-ip")
    assert not TrustedProxies([]).trusts("127.0.0.1")
