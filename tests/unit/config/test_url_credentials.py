"""A URL in the config never carries credentials: `http://user:password@host` was taken
(aiohttp logs in with it) and then shown wherever the URL is (the replica's log lines,
`dockyard status`, `/admin/v1/replica`, the error a refused push answers to anyone).
Refused at its key, and the message does not repeat the password."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.config.settings import ConfigError, load_settings

SECRET = "S3CRETPW"


@pytest.mark.parametrize(("overrides", "key"), [
    ({"replica.primary": f"http://bob:{SECRET}@127.0.0.1:5000"}, "replica.primary"),
    ({"replica.primary": f"https://{SECRET}@primary.example"}, "replica.primary"),
    ({"notifications": {"endpoints": [{"name": "hook",
                                       "url": f"http://u:{SECRET}@127.0.0.1:9/"}]}},
     "notifications.endpoints.0.url"),
    ({"proxy": [{"prefix": "hub", "upstream": f"https://u:{SECRET}@registry.example"}]},
     "proxy.0.upstream"),
])
def test_a_url_with_user_information_is_refused(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides=overrides)
    message = str(caught.value)
    assert key in message
    assert "user:password@" in message
    assert SECRET not in message


def test_a_plain_url_is_taken() -> None:
    settings = load_settings(env={}, overrides={"replica.primary": "http://127.0.0.1:5000/"})
    assert settings.replica.primary == "http://127.0.0.1:5000"


@pytest.mark.parametrize("args", [["status", "--url"], ["rm", "x", "--registry"]])
def test_the_cli_refuses_them_without_repeating_the_password(args: list[str]) -> None:
    from click.testing import CliRunner

    from dockyard.cli.main import main

    result = CliRunner().invoke(main, [*args, f"http://bob:{SECRET}@127.0.0.1:5000"])
    assert result.exit_code == 2, result.output
    assert "user:password@" in result.output
    assert SECRET not in result.output
