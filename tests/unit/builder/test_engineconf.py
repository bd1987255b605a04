"""The engine's credentials: the auth file the builder hands buildah/podman."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

from dockyard.builder.engineconf import engine_environment
from dockyard.remote.credentials import Credentials


def _auth(user_password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(user_password.encode()).decode()}


def test_creds_go_over_the_auth_files_in_an_owner_only_copy(tmp_path: Path) -> None:
    mine = tmp_path / "auth.json"
    mine.write_text(json.dumps({"auths": {"reg.example": _auth("old:pw"),
                                          "docker.io": _auth("hub:pw")}}))
    env = engine_environment(tmp_path / "engine", insecure=[], storage=None,
                             credentials={"reg.example": Credentials("ci", "s3cret")},
                             auth_file=mine)
    written = Path(env["REGISTRY_AUTH_FILE"])
    assert written.parent == tmp_path / "engine"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert json.loads(written.read_text()) == {"auths": {"reg.example": _auth("ci:s3cret"),
                                                         "docker.io": _auth("hub:pw")}}
    assert json.loads(mine.read_text())["auths"]["reg.example"] == _auth("old:pw")


def test_without_creds_the_engine_reads_the_given_auth_file_or_its_own(tmp_path: Path
                                                                       ) -> None:
    given = tmp_path / "auth.json"
    env = engine_environment(tmp_path / "a", insecure=[], storage=None, auth_file=given)
    assert env["REGISTRY_AUTH_FILE"] == str(given)
    assert not (tmp_path / "a" / "auth.json").exists()
    env = engine_environment(tmp_path / "b", insecure=[], storage=None)
    assert env.get("REGISTRY_AUTH_FILE") == os.environ.get("REGISTRY_AUTH_FILE")
