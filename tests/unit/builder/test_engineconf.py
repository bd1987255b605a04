"""The engine's credentials: the auth file the builder hands buildah/podman."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile
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


def _runroot(env: dict[str, str]) -> str:
    conf = Path(env["CONTAINERS_STORAGE_CONF"]).read_text()
    return next(line.split(" = ", 1)[1].strip('"') for line in conf.splitlines()
                if line.startswith("runroot = "))


def test_a_private_storage_gets_a_run_root_short_enough_for_podman(tmp_path: Path) -> None:
    """podman's container cleanup refuses a runroot over 50 characters (each `podman run`
    then hangs 20 s): a deep storage's run root moves to the runtime directory, one per
    storage; a shallow one keeps its own folder."""
    deep = [tmp_path / ("x" * 40) / str(n) / "storage" for n in (1, 2)]
    roots = [_runroot(engine_environment(s.parent / "engine", insecure=[], storage=s))
             for s in deep]
    try:
        assert all(len(r) <= 50 and Path(r).is_dir() for r in roots), roots
        assert roots[0] != roots[1]
        assert roots[0] == _runroot(engine_environment(tmp_path / "again", insecure=[],
                                                       storage=deep[0]))
    finally:
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
    shallow = Path(tempfile.mkdtemp(prefix="dy-"))
    try:
        env = engine_environment(tmp_path / "engine", insecure=[], storage=shallow)
        assert _runroot(env) == str(shallow / "runroot")
    finally:
        shutil.rmtree(shallow)
