"""Settings: YAML loading, validation errors naming keys, env overrides, `config check`."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from dockyard.backends import build_driver
from dockyard.cli.main import main
from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.drivers.filesystem import FilesystemDriver


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray DOCKYARD_* variable from the caller's shell may leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("DOCKYARD_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert s.http.addr == "127.0.0.1:5000"
    assert s.storage.driver == "filesystem"
    assert s.storage.delete.enabled is True
    assert s.storage.uploads.expiry == timedelta(hours=24)
    assert s.limits.manifest_max_size == 4 * 1024 * 1024
    assert s.database_url == f"sqlite:///{Path('var/dockyard') / 'metadata.db'}"


def test_yaml_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
http:
  addr: 0.0.0.0:5001
  workers: 3
storage:
  filesystem:
    rootdirectory: /srv/registry
  delete:
    enabled: false
  uploads:
    expiry: 1h30m
    chunk_buffer: 4MiB
database:
  url: postgresql://u:p@db/dockyard
limits:
  manifest_max_size: 512k
log:
  level: debug
""")
    s = load_settings(path, env={})
    assert s.http.addr == "0.0.0.0:5001"
    assert s.http.workers == 3
    assert s.data_dir == Path("/srv/registry")
    assert s.storage.delete.enabled is False
    assert s.storage.uploads.expiry == timedelta(hours=1, minutes=30)
    assert s.storage.uploads.chunk_buffer == 4 * 1024 * 1024
    assert s.limits.manifest_max_size == 512 * 1024
    assert s.database_url == "postgresql://u:p@db/dockyard"
    assert s.log.level == "debug"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env={}) == Settings()


def test_settings_are_frozen() -> None:
    s = load_settings(env={})
    with pytest.raises(ValueError):
        s.http.addr = "x"  # type: ignore[misc]


def test_distribution_style_version_float(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "version: 0.1\n"), env={})
    assert s.version == "0.1"


def test_version_as_string(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, 'version: "0.1"\n'), env={}).version == "0.1"


def test_unknown_top_level_key_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bogus: unknown key"):
        load_settings(write(tmp_path, "bogus: 1\n"), env={})


def test_unknown_nested_key_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  filesystem:\n    rootdir: /x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert "storage.filesystem.rootdir: unknown key" in message
    assert str(path) in message


def test_every_bad_key_named(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  workers: -1\n  adr: x\nlog:\n  level: loud\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert "http.workers" in message
    assert "http.adr: unknown key" in message
    assert "log.level" in message


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(write(tmp_path, "http: [unclosed\n"), env={})


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yml", env={})


# --- environment -------------------------------------------------------------

def test_env_http_addr() -> None:
    s = load_settings(env={"DOCKYARD_HTTP_ADDR": "0.0.0.0:6000"})
    assert s.http.addr == "0.0.0.0:6000"


def test_env_nested_rootdirectory() -> None:
    s = load_settings(env={"DOCKYARD_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/data/reg"})
    assert s.data_dir == Path("/data/reg")
    assert s.database_url == "sqlite:////data/reg/metadata.db"


@pytest.mark.parametrize("root", ["/data/reg", "rel/dir", "/a b/c+d", "/%40@:?#x", "/ü/日本"])
def test_default_database_url_is_sqlalchemys(root: str) -> None:
    """The default URL is rendered without SQLAlchemy, exactly as its `URL` would."""
    from sqlalchemy.engine import URL, make_url

    s = load_settings(env={"DOCKYARD_STORAGE_FILESYSTEM_ROOTDIRECTORY": root})
    path = str(Path(root) / "metadata.db")
    assert s.database_url == URL.create("sqlite", database=path).render_as_string()
    assert make_url(s.database_url).database == path


def test_env_nested_duration() -> None:
    s = load_settings(env={"DOCKYARD_STORAGE_UPLOADS_EXPIRY": "2h"})
    assert s.storage.uploads.expiry == timedelta(hours=2)


def test_env_field_name_with_underscore() -> None:
    s = load_settings(env={"DOCKYARD_STORAGE_UPLOADS_PURGE_INTERVAL": "30s",
                           "DOCKYARD_HTTP_KEEPALIVE_TIMEOUT": "5s",
                           "DOCKYARD_LIMITS_MANIFEST_MAX_SIZE": "1MiB"})
    assert s.storage.uploads.purge_interval == timedelta(seconds=30)
    assert s.http.keepalive_timeout == timedelta(seconds=5)
    assert s.limits.manifest_max_size == 1024 * 1024


def test_env_typed_values() -> None:
    s = load_settings(env={"DOCKYARD_HTTP_WORKERS": "4",
                           "DOCKYARD_STORAGE_DELETE_ENABLED": "false"})
    assert s.http.workers == 4
    assert s.storage.delete.enabled is False


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  addr: 1.2.3.4:5\n  workers: 2\n")
    s = load_settings(path, env={"DOCKYARD_HTTP_ADDR": "0.0.0.0:7"})
    assert s.http.addr == "0.0.0.0:7"
    assert s.http.workers == 2  # the rest of the section survives


def test_overrides_beat_env() -> None:
    s = load_settings(env={"DOCKYARD_HTTP_ADDR": "a:1"}, overrides={"http.addr": "b:2"})
    assert s.http.addr == "b:2"


def test_unknown_env_variable_named() -> None:
    with pytest.raises(ConfigError, match="DOCKYARD_HTTP_NOPE: no such setting"):
        load_settings(env={"DOCKYARD_HTTP_NOPE": "1"})


def test_non_dockyard_env_ignored() -> None:
    assert load_settings(env={"HTTP_ADDR": "x", "DOCKYARDX": "y"}) == Settings()


def test_invalid_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.workers"):
        load_settings(env={"DOCKYARD_HTTP_WORKERS": "many"})


def test_list_settings_from_env_between_commas_or_as_yaml() -> None:
    # lists were settable only in the file: "Input should be a valid list"
    s = load_settings(env={
        "DOCKYARD_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "DOCKYARD_METRICS_ALLOW_FROM": "[127.0.0.1/32, '::1']",
        "DOCKYARD_AUTH_ADMIN": "",
        "DOCKYARD_HTTP_TLS_CLIENTCAS": "/etc/a.pem,/etc/b.pem",
        "DOCKYARD_PROXY": '[{"prefix": "hub", "upstream": "https://registry-1.docker.io"}]',
    })
    assert s.http.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert s.metrics.allow_from == ["127.0.0.1/32", "::1"]
    assert s.auth.admin == []
    assert s.http.tls.clientcas == [Path("/etc/a.pem"), Path("/etc/b.pem")]
    assert [(r.prefix, r.upstream) for r in s.proxy] == [
        ("hub", "https://registry-1.docker.io")]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DOCKYARD_MIRROR", "[unclosed", "DOCKYARD_MIRROR: not a YAML list: expected ','"),
    ("DOCKYARD_RETENTION_RULES", "keep: 3",
     "DOCKYARD_RETENTION_RULES: a list of mappings, written as YAML or JSON"),
    ("DOCKYARD_HTTP_TRUSTED_PROXIES", "[a: b]", "DOCKYARD_HTTP_TRUSTED_PROXIES "
     r"\(http.trusted_proxies.0\): Input should be a valid string"),
    ("DOCKYARD_PROXY", '[{"prefix": "hub"}]',
     r"DOCKYARD_PROXY \(proxy.0.upstream\): Field required"),
])
def test_a_bad_list_from_env_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={name: value})


def test_os_environ_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_HTTP_ADDR", "9.9.9.9:9")
    assert load_settings().http.addr == "9.9.9.9:9"


# --- durations and sizes -----------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("5m5s", timedelta(minutes=5, seconds=5)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations(tmp_path: Path, text: object, expected: timedelta) -> None:
    path = write(tmp_path, f"storage:\n  uploads:\n    expiry: {text}\n")
    assert load_settings(path, env={}).storage.uploads.expiry == expected


def test_duration_plain_seconds_from_env() -> None:
    s = load_settings(env={"DOCKYARD_STORAGE_UPLOADS_EXPIRY": "90"})
    assert s.storage.uploads.expiry == timedelta(seconds=90)


@pytest.mark.parametrize("text", ["soon", "2x", "h", "-5s", "1h 30m"])
def test_bad_durations_named(text: str) -> None:
    with pytest.raises(ConfigError, match=r"storage\.uploads\.expiry"):
        load_settings(env={"DOCKYARD_STORAGE_UPLOADS_EXPIRY": text})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4MiB", 4 * 1024**2),
        ("512k", 512 * 1024),
        ("1G", 1024**3),
        ("2gb", 2 * 1024**3),
        ("1T", 1024**4),
        ("1000", 1000),
        ("100b", 100),
        (" 3 MiB ", 3 * 1024**2),
        (12345, 12345),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    s = load_settings(env={}, overrides={"storage.guard.reserve": text})
    assert s.storage.guard.reserve == expected


@pytest.mark.parametrize("text", ["4XB", "lots", "-1", "1.5MiB", -1])
def test_bad_sizes_named(text: object) -> None:
    with pytest.raises(ConfigError, match=r"limits\.manifest_max_size"):
        load_settings(env={}, overrides={"limits.manifest_max_size": text})


# --- `dockyard config check` -------------------------------------------------

def test_config_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  addr: 0.0.0.0:5555\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert "0.0.0.0:5555" in result.output
    assert "sqlite" in result.output


def test_config_check_reads_env(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    result = CliRunner().invoke(main, ["config", "check", str(path)],
                                env={"DOCKYARD_HTTP_ADDR": "10.0.0.1:1"})
    assert result.exit_code == 0, result.output
    assert "10.0.0.1:1" in result.output


def test_config_check_bad_key_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  adress: 0.0.0.0:5555\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 2
    assert "http.adress: unknown key" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 6


def test_config_check_warns_of_globs_that_changed_meaning(tmp_path: Path) -> None:
    """Valid, so accepted (exit 0), but said: a retention rule for `"*"` (every
    repository before the one glob dialect, top-level ones now) and an access rule with
    a `**` inside a component (a `*` now)."""
    path = write(tmp_path, "retention:\n  rules:\n    - repositories: team/**\n"
                           "      keep_last: 3\n    - repositories: '*'\n      keep_last: 5\n"
                           "auth:\n  access:\n    - repository: 'team**'\n"
                           "      allow: {authenticated: [pull]}\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: ok (")
    assert result.stderr.splitlines() == [
        f'{path}: warning: retention.rules[1].repositories: "*" names top-level '
        "repositories only (a * stays within one path component; before the one glob "
        "dialect it crossed '/'); write \"**\" for every repository",
        f'{path}: warning: auth.access[0].repository: "team**": a ** inside a path '
        'component is a * (it stays within the component); a ** component of its own, '
        'as in "team/**", spans any number of them']
    clean = write(tmp_path, "retention:\n  rules:\n    - repositories: '**'\n"
                            "      keep_last: 5\n")
    result = CliRunner().invoke(main, ["config", "check", str(clean)], env={})
    assert result.exit_code == 0
    assert result.stderr == ""


def test_config_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "none.yml")], env={})
    assert result.exit_code == 2
    assert "cannot read config file" in result.output


def test_direct_writes_reach_the_filesystem_driver(tmp_path: Path) -> None:
    env = {"DOCKYARD_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path)}
    default = build_driver(load_settings(env=env))
    assert isinstance(default, FilesystemDriver)
    assert not default.direct_writes
    driver = build_driver(load_settings(env={**env,
                                             "DOCKYARD_STORAGE_FILESYSTEM_DIRECT_WRITES": "on"}))
    assert isinstance(driver, FilesystemDriver)
    assert driver.direct_writes


def test_guard_min_free_in_bytes_or_percent(tmp_path: Path) -> None:
    guard = load_settings(env={}).storage.guard
    assert guard.min_free == "5%"
    assert guard.reserve == 16 * 1024 * 1024
    assert guard.min_free_bytes(1000) == 50
    cfg = tmp_path / "c.yml"
    cfg.write_text("storage:\n  guard:\n    min_free: 2GiB\n    reserve: 4MiB\n")
    guard = load_settings(cfg, env={}).storage.guard
    assert guard.min_free_bytes(10**15) == 2 * 1024**3
    assert guard.reserve == 4 * 1024 * 1024
    cfg.write_text("storage:\n  guard:\n    min_free: 0\n")
    assert load_settings(cfg, env={}).storage.guard.min_free_bytes(10**12) == 0


@pytest.mark.parametrize("value", ["lots", "100%", "-5%"])
def test_bad_guard_min_free_is_named(tmp_path: Path, value: str) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"storage:\n  guard:\n    min_free: '{value}'\n")
    with pytest.raises(ConfigError, match=r"storage\.guard\.min_free"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(("body", "key"), [
    ("retention:\n  rules:\n    - keep_tags: '(('\n", "retention.rules.0.keep_tags"),
    ("retention:\n  rules:\n    - delete_older_than: soon\n",
     "retention.rules.0.delete_older_than"),
    ("storage:\n  guard:\n    min_free: lots\n", "storage.guard.min_free"),
    # 0 failed every upload (500), 8G had every upload ask for 8 GiB of memory
    ("storage:\n  uploads:\n    chunk_buffer: 0\n", "storage.uploads.chunk_buffer"),
    ("storage:\n  uploads:\n    chunk_buffer: 8G\n", "storage.uploads.chunk_buffer"),
    # what `serve` refused, `config check` passed
    ("http:\n  trusted_proxies: ['10.0.0.0/8', not-a-cidr]\n", "http.trusted_proxies"),
    ("http:\n  tls:\n    certificate: /etc/cert.pem\n", "http.tls"),
    ("http:\n  addr: 127.0.0.1:5000\n  debug:\n    addr: 127.0.0.1:5000\n", "http"),
])
def test_a_bad_value_of_a_shared_type_is_named_by_its_key(tmp_path: Path, body: str,
                                                           key: str) -> None:
    """Durations, sizes and regular expressions have one grammar (`config/types.py`);
    a value outside it is refused under its own key."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, body), env={})
    assert f"{key}: " in str(info.value)


def test_shared_types_parse_the_same_under_every_section(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, (
        "auth:\n  token:\n    expiration: 90s\n"
        "storage:\n  uploads:\n    expiry: 1h30m\n"
        "retention:\n  rules:\n    - keep_tags: 'v[0-9]+'\n      delete_older_than: 7d\n")),
        env={})
    assert s.auth.token.expiration.total_seconds() == 90
    assert s.storage.uploads.expiry.total_seconds() == 5400
    assert s.retention.rules[0].keep_tags == "v[0-9]+"
    assert s.retention.rules[0].delete_older_than is not None
    assert s.retention.rules[0].delete_older_than.days == 7


#: one entry of each list section, for the durations of list entries
_ENTRIES: dict[str, Any] = {
    "proxy": [{"prefix": "hub", "upstream": "https://up.example"}],
    "mirror": [{"registry": "quay.io", "repository": "org/app"}],
    "notifications": {"endpoints": [{"name": "hook", "url": "http://127.0.0.1:9/"}]},
    "retention": {"rules": [{"keep_last": 1}]},
}

#: durations where zero makes no sense: intervals (0 spins), periods, expiries,
#: timeouts, lifetimes
POSITIVE = [
    "http.header_timeout", "http.body_timeout", "http.drain_timeout",
    "http.tls.reload_interval", "gc.interval", "scrub.interval", "scrub.period",
    "retention.pull_flush_interval", "storage.uploads.expiry",
    "storage.uploads.purge_interval", "storage.uploads.publish_expiry",
    "storage.redirect_expiry", "storage.s3.readtimeout", "builder.interval",
    "builder.timeout", "feed.keep", "feed.prune_interval", "feed.max_wait",
    "replica.interval", "replica.wait", "ui.session_lifetime",
    "auth.token.expiration", "auth.token.refresh_expiration",
    "auth.token.refresh_max_lifetime", "auth.ratelimit.window",
    "proxy.0.retention", "proxy.0.fetch_wait", "mirror.0.schedule",
    "mirror.0.retry_backoff", "notifications.endpoints.0.timeout",
    "notifications.endpoints.0.backoff", "database.connect_timeout",
]
#: durations where zero means something (no keep-alive, no grace, re-check always, ...)
NOT_NEGATIVE = [
    "http.keepalive_timeout", "gc.grace", "retention.rules.0.delete_older_than",
    "retention.rules.0.keep_pulled_within", "proxy.0.tag_ttl", "proxy.0.not_found_ttl",
]


def _with(key: str, value: object) -> dict[str, Any]:
    """A config (as data) with `key` (dotted; list entries by index) set to `value`."""
    section = key.split(".")[0]
    data: dict[str, Any] = copy.deepcopy({section: _ENTRIES[section]}) \
        if section in _ENTRIES else {}
    node: Any = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def _durations(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted key of every duration in `model`, list entries as `.0`."""
    keys = []
    for name, info in model.model_fields.items():
        kinds = [info.annotation, *typing.get_args(info.annotation)]
        kinds += [a for k in kinds for a in typing.get_args(k)]
        for kind in kinds:
            if kind is timedelta:
                keys.append(prefix + name)
                break
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                index = ".0" if typing.get_origin(info.annotation) is list else ""
                keys += _durations(kind, f"{prefix}{name}{index}.")
                break
    return keys


def test_every_duration_has_a_declared_lower_bound() -> None:
    """A new duration setting is added to POSITIVE or NOT_NEGATIVE, deciding what 0 means."""
    assert sorted(_durations(Settings)) == sorted(POSITIVE + NOT_NEGATIVE)


@pytest.mark.parametrize("key", POSITIVE + NOT_NEGATIVE)
@pytest.mark.parametrize("value", [-5, "-PT1H"])
def test_no_duration_is_negative(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml.safe_dump(_with(key, value))), env={})
    assert f"{key}: " in str(info.value)


@pytest.mark.parametrize("key", POSITIVE)
@pytest.mark.parametrize("value", [0, "0s"])
def test_intervals_and_expiries_are_longer_than_zero(tmp_path: Path, key: str,
                                                     value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml.safe_dump(_with(key, value))), env={})
    assert f"{key}: " in str(info.value)


@pytest.mark.parametrize("key", NOT_NEGATIVE)
def test_zero_is_taken_where_it_means_something(tmp_path: Path, key: str) -> None:
    load_settings(write(tmp_path, yaml.safe_dump(_with(key, "0s"))), env={})


@pytest.mark.parametrize(("text", "key"), [
    ("auth:\n  access:\n    - repository: '**'\n      allow: {'*': [pull]}\n",
     "auth.access.0.allow"),
    ("auth:\n  catalog: ['*']\n", "auth.catalog"),
    ("auth:\n  admin: [ops, '*']\n", "auth.admin"),
    ("metrics:\n  allow: ['*']\n", "metrics.allow"),
])
def test_star_as_a_subject_is_refused(tmp_path: Path, text: str, key: str) -> None:
    """`*` reads as "everyone" in a rule but is no subject (it matches nobody, and no
    user may be named so): the config names the key and says what to write instead."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert key in message
    assert "'*' is not a subject" in message
    assert "use anonymous for everyone" in message
    checked = subprocess.run([sys.executable, "-m", "dockyard", "config", "check", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2, checked
    assert "'*' is not a subject" in checked.stderr


def test_s3_without_a_bucket_is_refused(tmp_path: Path) -> None:
    """The missing bucket is named when the config is read: before, `serve` started and
    every worker died building the driver until the supervisor gave up."""
    path = write(tmp_path, "storage:\n  driver: s3\n  s3:\n    region: x\n")
    with pytest.raises(ConfigError, match=r"storage\.s3\.bucket is required"):
        load_settings(path, env={})
    served = subprocess.run([sys.executable, "-m", "dockyard", "serve", "--config", str(path),
                             "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert served.returncode == 2, served
    assert "storage: storage.s3.bucket is required with storage.driver: s3" in served.stderr
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize("auth", ["method: htpasswd", "method: token",
                                  "method: token\n  token:\n    builtin: true"])
def test_config_check_refuses_a_password_method_without_its_htpasswd_file(
        tmp_path: Path, auth: str) -> None:
    """`serve` stops at once without the file its logins check: `config check`, which
    validates a config without starting anything, says so too (it said "ok")."""
    path = write(tmp_path, f"auth:\n  {auth}\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 2, result.output
    assert "auth.htpasswd.path is required with auth.method" in result.output
    assert "Traceback" not in result.output
    # an external issuer's tokens need no password file
    path = write(tmp_path, "auth:\n  method: token\n  token:\n    builtin: false\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 0, result.output


def test_config_check_names_the_bucket_of_s3_storage(tmp_path: Path) -> None:
    """With the s3 driver the blobs are in the bucket, not under the filesystem driver's
    directory (which `config check` named: "storage s3 at var/dockyard")."""
    path = write(tmp_path, "storage:\n  driver: s3\n  s3:\n    bucket: registry\n"
                           "    rootdirectory: dockyard\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)], env={})
    assert result.exit_code == 0, result.output
    assert "storage s3 in bucket registry under dockyard/," in result.output
    assert "var/dockyard" not in result.output


def test_a_bad_value_from_the_environment_is_named_by_its_variable(tmp_path: Path) -> None:
    """The error names where the bad value came from: the variable, not the file."""
    path = write(tmp_path, "http:\n  workers: 2\n  trusted_proxies: 7\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"DOCKYARD_HTTP_WORKERS": "many",
                                 "DOCKYARD_STORAGE_UPLOADS_EXPIRY": "soon"})
    message = str(info.value)
    assert "\n" not in message
    lines = message.removeprefix("invalid configuration: ").split("; ")
    assert [ln.strip().split(": ", 1)[0] for ln in lines] == [
        "DOCKYARD_HTTP_WORKERS (http.workers)",
        f"{path}",
        "DOCKYARD_STORAGE_UPLOADS_EXPIRY (storage.uploads.expiry)",
    ], lines
    assert lines[1].strip().startswith(f"{path}: http.trusted_proxies: "), lines


def test_a_sections_own_check_names_the_variables_set_inside_it(tmp_path: Path) -> None:
    """A section's check (loc: the section) failing with a key a variable set: the
    message says that variable took part, besides the file."""
    path = write(tmp_path, "http:\n  workers: 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"DOCKYARD_STORAGE_DRIVER": "s3"})
    assert str(info.value) == (
        f"invalid configuration: {path}: storage: storage.s3.bucket is required with "
        "storage.driver: s3 (with DOCKYARD_STORAGE_DRIVER from the environment)")


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("gc: {interval: true}\n", "gc.interval"),
    ("gc: {grace: false}\n", "gc.grace"),
    ("http: {workers: true}\n", "http.workers"),
    ("limits: {tags_page_max: true}\n", "limits.tags_page_max"),
])
def test_yaml_true_or_false_is_no_number_or_duration(tmp_path: Path, yaml_text: str,
                                                     key: str) -> None:
    """pydantic took `true` for 1 and `false` for 0: a one-second collection, no grace."""
    path = tmp_path / "c.yml"
    path.write_text(yaml_text)
    said = re.escape(f"{key}: a number or a duration, not true/false")
    with pytest.raises(ConfigError, match=said):
        load_settings(path, env={})


@pytest.mark.parametrize("size", ["0", "1000", "65MiB"])
def test_the_manifest_size_limit_is_bounded(size: str) -> None:
    """0 passed `config check` and refused every push (and meant no limit to aiohttp)."""
    with pytest.raises(ConfigError, match=r"limits\.manifest_max_size"):
        load_settings(env={}, overrides={"limits.manifest_max_size": size})
