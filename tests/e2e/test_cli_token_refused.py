"""Commands that talk to another registry, when its token service refuses them (a wrong
password at a token-auth Dockyard, the common case): one `Error:` line and exit 1, where
`dockyard rm` printed a traceback and `dockyard replicate` ended on one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli_usage import dockyard
from tests.support.authenv import get_token, token_auth, write_config, write_htpasswd
from tests.support.oci_api import push_image
from tests.support.servers import Server, start_dockyard


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("token-refused")
    config = write_config(tmp / "config.yml", auth={
        **token_auth(write_htpasswd(tmp / "htpasswd")), "admin": ["group:admins"]})
    server = start_dockyard(tmp / "data", config=config)
    yield server
    server.stop()


def test_rm_with_a_wrong_password_is_one_line(primary: Server) -> None:
    # the tags list anonymously (pull is open); the delete's token is refused
    token = get_token(primary.url, ["repository:some/repo:pull,push"], "builder")
    with httpx.Client(base_url=primary.url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        push_image(c, "some/repo", "v1")
    proc = dockyard("rm", "--registry", primary.url, "--username", "admin", "--password",
                    "not-the-password", "--yes", "some/repo:v1")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # each target's failure is its own line, as a refused DELETE's
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith("some/repo:v1: token service "), line


def test_replicate_with_a_wrong_password_is_one_line(primary: Server, tmp_path: Path) -> None:
    proc = dockyard("replicate", "--data", str(tmp_path / "replica"), "--from", primary.url,
                    "--username", "admin", "--password-env", "PRIMARY_PW", "--once",
                    env={"PRIMARY_PW": "not-the-password"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after the start's log lines
    assert line.startswith(f"Error: {primary.url}: token service "), line
