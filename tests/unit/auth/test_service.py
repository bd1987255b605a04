"""AccessControl: authentication, decisions, the token service's intersection, startup errors."""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.auth import service
from dockyard.auth.identity import Identity, Scope
from dockyard.auth.service import (
    AccessControl,
    Decision,
    RateLimited,
    Unauthenticated,
)
from dockyard.config.auth import AuthSettings
from dockyard.config.settings import ConfigError, load_settings
from dockyard.server import check_access
from tests.support.authenv import PLATFORM_ACCESS, USERS, write_config, write_htpasswd


def _settings(tmp_path: Path, method: str, **extra: object) -> AuthSettings:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    return AuthSettings.model_validate({"method": method, "htpasswd": {"path": htpasswd},
                                        "access": PLATFORM_ACCESS,
                                        "catalog": ["group:admins"], **extra})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_htpasswd_authentication(tmp_path: Path) -> None:
    control = AccessControl(_settings(tmp_path, "htpasswd", ratelimit={"failures": 2}),
                            tmp_path)
    who = await control.authenticate(basic("admin", USERS["admin"][0]), "1.2.3.4")
    assert who.user == "admin"
    assert who.groups == {"admins"}
    assert (await control.authenticate(None, "1.2.3.4")).user is None
    assert (await control.authenticate(basic("", ""), "1.2.3.4")).user is None
    with pytest.raises(Unauthenticated):
        await control.authenticate("Bearer abc", "1.2.3.4")
    with pytest.raises(Unauthenticated):
        await control.authenticate("Basic !!!", "1.2.3.4")
    for i in range(2):
        with pytest.raises(Unauthenticated):
            await control.authenticate(basic("reader", f"wrong-{i}"), "5.6.7.8")
    with pytest.raises(RateLimited):
        await control.authenticate(basic("reader", USERS["reader"][0]), "9.9.9.9")
    # credentials verified before the lockout still work (the attacker cannot lock out
    # a user who is busy pushing)
    assert (await control.authenticate(basic("admin", USERS["admin"][0]), "5.6.7.8")).user \
        == "admin"


async def test_decisions_and_token_grants(tmp_path: Path) -> None:
    control = AccessControl(_settings(tmp_path, "token"), tmp_path)
    assert (tmp_path / "auth" / "token-signing-key.pem").exists()
    push = Scope("repository", "tools/x", frozenset({"pull", "push"}))
    builder = Identity(user="builder")
    assert control.decide(builder, push) is Decision.ALLOW
    assert control.decide(Identity(), push) is Decision.UNAUTHENTICATED
    assert control.decide(Identity(user="reader"), push) is Decision.DENIED
    assert control.decide(Identity(), None) is Decision.UNAUTHENTICATED

    doc = control.issue(Identity(user="reader"), [push], offline=True)
    assert doc["scope"] == "repository:tools/x:pull"
    assert "refresh_token" in doc
    token_identity = await control.authenticate(f"Bearer {doc['token']}", "c")
    assert control.decide(token_identity, Scope("repository", "tools/x", frozenset({"pull"}))) \
        is Decision.ALLOW
    assert control.decide(token_identity, push) is Decision.DENIED
    assert control.decide(token_identity, None) is Decision.ALLOW
    # a builder token lacking push: the client should fetch a wider one
    narrow = control.issue(builder, [Scope("repository", "tools/x", frozenset({"pull"}))],
                           offline=False)
    narrow_identity = await control.authenticate(f"Bearer {narrow['token']}", "c")
    assert control.decide(narrow_identity, push) is Decision.INSUFFICIENT_SCOPE
    assert control.refresh(doc["refresh_token"], "c").user == "reader"
    with pytest.raises(Unauthenticated):
        control.refresh(doc["token"], "c")
    anonymous = control.issue(Identity(), [push], offline=True)
    assert "refresh_token" not in anonymous


async def test_refresh_tokens_die_with_the_password_and_the_chain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    control = AccessControl(_settings(tmp_path, "token",
                                      token={"refresh_max_lifetime": "1h"}), tmp_path)
    assert control.htpasswd is not None
    control.htpasswd.check_interval = 0
    who = await control.login("reader", USERS["reader"][0], "c")
    first = control.issue(who, [], offline=True)["refresh_token"]
    again = control.refresh(first, "c")
    assert again.user == "reader"
    second = control.issue(again, [], offline=True)["refresh_token"]
    # the chain keeps the time of the password login, so it cannot renew itself forever
    clock = time.time() + 3601
    monkeypatch.setattr(service.time, "time", lambda: clock)
    with pytest.raises(Unauthenticated, match="too old"):
        control.refresh(second, "c")
    monkeypatch.undo()
    # a new password (or a removed user) revokes every refresh token issued before
    write_htpasswd(tmp_path / "htpasswd", {**USERS, "reader": ("a-new-password", [])})
    os.utime(tmp_path / "htpasswd", ns=(1, 1))
    with pytest.raises(Unauthenticated, match="changed"):
        control.refresh(second, "c")
    fresh = control.issue(await control.login("reader", "a-new-password", "c"), [],
                          offline=True)["refresh_token"]
    assert control.refresh(fresh, "c").user == "reader"
    write_htpasswd(tmp_path / "htpasswd", {"admin": USERS["admin"]})
    os.utime(tmp_path / "htpasswd", ns=(2, 2))
    with pytest.raises(Unauthenticated):
        control.refresh(fresh, "c")


def test_startup_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"htpasswd\.path is required"):
        AccessControl(AuthSettings(method="htpasswd"), tmp_path)
    bad = tmp_path / "bad"
    bad.write_text("alice:$apr1$x$y\n")
    with pytest.raises(ValueError, match="only bcrypt"):
        AccessControl(AuthSettings.model_validate(
            {"method": "htpasswd", "htpasswd": {"path": bad}}), tmp_path)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    external = AuthSettings.model_validate(
        {"method": "token", "token": {"builtin": False, "public_keys": [pub]}})
    with pytest.raises(ValueError, match="realm is required"):
        AccessControl(external, tmp_path)
    config = write_config(tmp_path / "c.yml", auth={"access": [
        {"repository": "**", "allow": {"anonymous": ["read"]}}]})
    with pytest.raises(ConfigError, match="unknown action"):
        load_settings(config, env={})


def test_warning_when_open_on_a_public_address(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env={}, overrides={"storage.filesystem.rootdirectory": tmp_path})
    with caplog.at_level(logging.WARNING, logger="dockyard.server"):
        check_access(settings, "127.0.0.1")
        assert not caplog.records
        check_access(settings, "0.0.0.0")
    assert "auth.method none" in caplog.text


@pytest.mark.parametrize(("host", "resolved", "warned"), [
    ("localhost", ["127.0.0.1", "::1"], False),
    ("registry.example.com", ["192.0.2.7"], True),  # a name was never checked
    ("dual.example.com", ["127.0.0.1", "2001:db8::1"], True),
    ("", [], True),  # every address
])
def test_warning_when_open_on_a_name(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch, host: str,
                                     resolved: list[str], warned: bool) -> None:
    settings = load_settings(env={}, overrides={"storage.filesystem.rootdirectory": tmp_path})

    def getaddrinfo(name: str, *_args: object, **_kwargs: object) -> list[tuple[Any, ...]]:
        assert name == host
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, 0)) for a in resolved]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with caplog.at_level(logging.WARNING, logger="dockyard.server"):
        check_access(settings, host)
    assert ("auth.method none" in caplog.text) is warned
