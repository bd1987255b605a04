"""The docker engine's commands, against a stand-in `docker` on PATH that records its
arguments and answers as the CLI does. There is no Docker daemon on the machines these
tests run on, so this checks the command lines and the parsing of docker's answers;
the builder's end-to-end tests run buildah and podman."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from dockyard.builder.engine import BuildRequest, EngineError, make_engine

FAKE = r'''#!{python}
import io, json, os, sys, tarfile
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "config": os.environ.get("DOCKER_CONFIG")}}) + "\n")
if args[:2] == ["image", "inspect"] and "RepoDigests" in args[3]:
    print(json.dumps(["other/app@sha256:" + "0" * 64, "reg.example/app@sha256:" + "a" * 64]))
elif args[:2] == ["image", "inspect"]:
    print(json.dumps(["sha256:" + "1" * 64, "sha256:" + "2" * 64]))
elif args[0] == "create":
    print("cid123")
elif args[0] == "cp":
    if not args[1].endswith("/var/lib/dpkg/status"):
        sys.stderr.write("no such file\n"); sys.exit(1)
    data = b"Package: busybox\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("status"); info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    sys.stdout.buffer.write(buf.getvalue())
elif args[0] == "build" and "--fail" in os.environ.get("FAKE_DOCKER_MODE", ""):
    sys.exit(3)
elif args[0] == "run" and "--hang" in os.environ.get("FAKE_DOCKER_MODE", ""):
    import time; time.sleep(60)
'''


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "docker"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_build_push_and_inspect_command_lines(docker: Path, tmp_path: Path) -> None:
    auth = tmp_path / "engine" / "auth.json"
    auth.parent.mkdir()
    auth.write_text('{"auths": {}}')
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth)}
    engine = make_engine("docker", env, tls_verify=False)
    log = tmp_path / "app.log"
    await engine.build(BuildRequest(
        dockerfile=tmp_path / "Dockerfile", context=tmp_path / "ctx",
        tags=["reg.example/app:latest"], build_args={"A": "1"},
        labels={"org.dockyard.build.key": "k"}, annotations={"ignored": "x"},
        timestamp=1700000000, no_cache=True), log)
    digest = await engine.push("reg.example/app:latest", "reg.example/app:latest", log)
    assert digest == "sha256:" + "a" * 64
    assert await engine.layers("reg.example/app:latest", log) == [
        "sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert await engine.read_file("reg.example/app:latest", "/var/lib/dpkg/status",
                                  log) == b"Package: busybox\n"
    assert await engine.read_file("reg.example/app:latest", "/lib/apk/db/installed",
                                  log) is None
    seen = calls(docker)
    build = seen[0]["argv"]
    assert build == ["build", "-f", str(tmp_path / "Dockerfile"), "-t",
                     "reg.example/app:latest", "--build-arg", "A=1", "--build-arg",
                     "SOURCE_DATE_EPOCH=1700000000", "--label", "org.dockyard.build.key=k",
                     "--no-cache", str(tmp_path / "ctx")]
    assert [c["argv"][0] for c in seen[1:]] == [
        "push", "image", "image", "create", "cp", "rm", "create", "cp", "rm"]
    # the builder's credentials reach docker as its config directory
    config = Path(str(seen[0]["config"]))
    assert (config / "config.json").resolve() == auth.resolve()


async def test_a_failed_build_names_its_log(docker: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKER_MODE", "--fail")
    engine = make_engine("docker", dict(os.environ), tls_verify=True)
    log = tmp_path / "bad.log"
    with pytest.raises(EngineError, match=r"docker build exited with 3 \(log: .*bad\.log\)"):
        await engine.build(BuildRequest(dockerfile=tmp_path / "Dockerfile",
                                        context=tmp_path, tags=["r/x:1"]), log)


async def test_push_under_another_name_tags_it_first(docker: Path, tmp_path: Path) -> None:
    engine = make_engine("docker", dict(os.environ), tls_verify=True)
    await engine.push("local/app:1", "reg.example/app:1", tmp_path / "p.log")
    assert [c["argv"][:2] for c in calls(docker)][:2] == [
        ["tag", "local/app:1"], ["push", "reg.example/app:1"]]


async def test_a_test_stopped_at_its_timeout_removes_its_container(
        docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killing `docker run` leaves its container running in the daemon: a test stopped
    (its `test_timeout`, ^C) removes the container it named."""
    monkeypatch.setenv("FAKE_DOCKER_MODE", "--hang")
    engine = make_engine("docker", dict(os.environ), tls_verify=True)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await engine.run("reg.example/app:latest", "sleep 731", tmp_path / "t.log")
    seen = [c["argv"] for c in calls(docker)]
    run = next(a for a in seen if a[0] == "run")
    name = run[run.index("--name") + 1]
    assert name.startswith("dockyard-test-")
    assert seen[-1] == ["rm", "--force", name]
