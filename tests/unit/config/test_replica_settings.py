"""`replica:` and `feed:` settings: credentials by reference, clear errors naming keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.config.settings import ConfigError, load_settings


def test_defaults_make_no_replica() -> None:
    settings = load_settings(env={})
    assert settings.replica.primary is None
    assert settings.feed.keep.days == 7
    assert settings.feed.max_wait.total_seconds() == 30


def test_password_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(env={"DOCKYARD_REPLICA_PRIMARY": "https://reg.example/",
                                  "DOCKYARD_REPLICA_PASSWORD_ENV": "PRIMARY_PW"})
    assert settings.replica.primary == "https://reg.example"
    with pytest.raises(ValueError, match=r"replica.password_env: \$PRIMARY_PW is not set"):
        settings.replica.password()
    monkeypatch.setenv("PRIMARY_PW", "s3cret")
    assert settings.replica.password() == "s3cret"


def test_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    settings = load_settings(overrides={"replica.password_file": str(secret)}, env={})
    assert settings.replica.password() == "from-file"
    missing = load_settings(overrides={"replica.password_file": str(tmp_path / "no")},
                            env={})
    with pytest.raises(ValueError, match=r"replica\.password_file: cannot read"):
        missing.replica.password()


def test_both_references_are_refused(tmp_path: Path) -> None:
    settings = load_settings(overrides={"replica.password_file": str(tmp_path / "pw"),
                                        "replica.password_env": "X"}, env={})
    with pytest.raises(ValueError, match="password_env or password_file, not both"):
        settings.replica.password()


@pytest.mark.parametrize(("key", "value"), [
    ("replica.primary", "ftp://reg.example"),
    ("replica.primary", "reg.example"),
    ("replica.password_env", "NOT A NAME"),
    ("replica.batch", "0"),
    ("replica.password", "inline"),  # no inline secrets: an unknown key
])
def test_bad_values_name_their_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(overrides={key: value}, env={})
