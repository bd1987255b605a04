"""`proxy:` rules: validation errors naming the key, credentials only by reference."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from dockyard.backends import upstream_credentials
from dockyard.cli.main import main
from dockyard.config.proxy import ProxyCredentials
from dockyard.config.settings import ConfigError, load_settings
from dockyard.gc.retention import configured_rules, rule_for
from tests.support.servers import free_port


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_settings(path, env={})


def test_a_rule_with_its_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, "proxy:\n  - prefix: hub\n    upstream: https://registry-1.docker.io/\n"
                       "    upstream_prefix: library/\n")
    rule = s.proxy[0]
    assert rule.upstream == "https://registry-1.docker.io"
    assert rule.tag_ttl == timedelta(minutes=5)
    assert rule.retention == timedelta(days=30)
    assert rule.tls_verify is True


@pytest.mark.parametrize(("body", "key", "why"), [
    ("    upstrem: https://x.example\n", "proxy.0.upstrem", "unknown key"),
    ("    upstream: ftp://x.example\n", "proxy.0.upstream", "not a registry base URL"),
    ("    upstream: https://x.example\n    tag_ttl: soon\n", "proxy.0.tag_ttl", ""),
    ("    upstream: https://x.example\n    upstream_prefix: library\n",
     "proxy.0.upstream_prefix", "ending in /"),
    ("    upstream: https://x.example\n    credentials: {username: u, password: hunter2}\n",
     "proxy.0.credentials.password", "unknown key"),
    ("    upstream: https://x.example\n    credentials: {username: u}\n",
     "proxy.0.credentials", "password_env, password_file"),
])
def test_bad_rules_are_named(tmp_path: Path, body: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "proxy:\n  - prefix: hub\n" + body)
    assert key in str(info.value)
    assert why in str(info.value)
    assert "hunter2" not in str(info.value)


def test_prefixes_may_not_overlap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        load(tmp_path, "proxy:\n  - {prefix: hub, upstream: 'https://a.example'}\n"
                       "  - {prefix: hub/x, upstream: 'https://b.example'}\n")


def test_credentials_from_the_environment_or_a_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_PW", "s3cret")
    creds = upstream_credentials(0, ProxyCredentials(username="u", password_env="UP_PW"))
    assert (creds.username, creds.password) == ("u", "s3cret")
    assert "s3cret" not in repr(creds)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("UP_USER", "v")
    creds = upstream_credentials(1, ProxyCredentials(username_env="UP_USER",
                                                     password_file=secret))
    assert (creds.username, creds.password) == ("v", "from-file")
    monkeypatch.delenv("UP_PW")
    with pytest.raises(ValueError, match=r"proxy\.2\.credentials\.password_env: .*UP_PW"):
        upstream_credentials(2, ProxyCredentials(username="u", password_env="UP_PW"))


def test_cache_retention_comes_before_the_configured_rules(tmp_path: Path) -> None:
    s = load(tmp_path, "proxy:\n  - {prefix: hub, upstream: 'https://a.example', "
                       "retention: 7d}\n  - {prefix: q, upstream: 'https://b.example', "
                       "retention: null}\n"
                       "retention:\n  rules:\n    - {repositories: 'q/*', keep_last: 1}\n"
                       "    - {repositories: '**', keep_last: 2}\n")
    rules = configured_rules(s)
    hub = rule_for(rules, "hub/library/nginx")
    assert hub is not None
    assert hub.keep_pulled_within == hub.delete_older_than == timedelta(days=7)
    assert rule_for(rules, "hub/a/b/c") is hub  # the cache's rule takes all its depths
    assert rule_for(rules, "q/x") == s.retention.rules[0]
    assert rule_for(rules, "q/x/y") == s.retention.rules[1]
    assert rule_for(rules, "hubx/y") == s.retention.rules[1]


def test_serve_refuses_to_start_without_an_upstream_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_TOKEN", raising=False)
    config = tmp_path / "config.yml"
    config.write_text("proxy:\n  - prefix: hub\n    upstream: https://hub.example\n"
                      "    credentials: {username: u, password_env: HUB_TOKEN}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), "--data",
                                       str(tmp_path / "data"), "--listen",
                                       f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 2
    assert "proxy.0.credentials.password_env" in result.output
    assert "HUB_TOKEN is not set" in result.output
    assert not (tmp_path / "data").exists()  # nothing started


def test_an_upstreams_unusable_certs_d_stops_the_start_naming_the_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client certificate in the upstream's certs.d directory that cannot be used is
    a start error naming the rule (each worker would otherwise die building its
    client); a *.crt with no certificate is passed over, as podman does."""
    from dockyard.backends import check_upstreams

    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(overrides={"proxy": [
        {"prefix": "hub", "upstream": "https://upstream.example:8443"}]})
    check_upstreams(settings)  # no directory: the system's CAs
    certs_d = tmp_path / ".config" / "containers" / "certs.d" / "upstream.example:8443"
    certs_d.mkdir(parents=True)
    (certs_d / "ca.crt").write_text("not a certificate\n")
    check_upstreams(settings)
    (certs_d / "client.cert").write_text("not a certificate either\n")
    with pytest.raises(ValueError, match=r"^proxy\.0\.upstream: .*client\.cert: client "
                                         r"certificate without its key client\.key$"):
        check_upstreams(settings)
    plain = load_settings(overrides={"proxy": [
        {"prefix": "hub", "upstream": "https://upstream.example:8443", "tls_verify": False}]})
    check_upstreams(plain)  # not verified: nothing read


def test_a_certs_d_broken_after_the_start_leaves_the_upstream_on_the_systems_cas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A worker (re)started after the upstream's certs.d broke still serves: the error
    is logged naming the rule, and the upstream is reached with the system's CAs (a
    worker that died on it would take the others down with the supervisor)."""
    import asyncio

    from dockyard.backends import build_upstreams

    monkeypatch.setenv("HOME", str(tmp_path))
    certs_d = tmp_path / ".config" / "containers" / "certs.d" / "upstream.example"
    certs_d.mkdir(parents=True)
    (certs_d / "client.cert").write_text("no key beside it\n")
    settings = load_settings(overrides={"proxy": [
        {"prefix": "hub", "upstream": "https://upstream.example"}]})

    async def build() -> int:
        upstreams = build_upstreams(settings)
        for _, upstream in upstreams:
            await upstream.close()
        return len(upstreams)

    assert asyncio.run(build()) == 1
    assert "proxy.0.upstream: " in caplog.text
    assert "client certificate without its key client.key; the system's CAs are used" in \
        caplog.text
