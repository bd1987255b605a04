"""Bad input as the real `dockyard` command says it: one `Error: ...` line on stderr and
exit 2 (click's `Usage:`/`Try` header aside), never a traceback, nothing written. Each
case here printed more than one line, reached a registry with a name none could hold,
or went on where it should have stopped (cases the probe of every subcommand found)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port


def dockyard(*args: str, input: str | None = None, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run the real command; stdin is `input`, else closed."""
    return subprocess.run([sys.executable, "-m", "dockyard", *args], text=True,
                          capture_output=True, timeout=120, input=input,
                          stdin=subprocess.DEVNULL if input is None else None,
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith("DOCKYARD_")}, **(env or {})})


def usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line stderr says past click's usage header, asserting exit 2."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.strip() and not ln.startswith(("Usage:", "Try '"))]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def test_a_config_with_one_bad_key_says_it_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("http:\n  workers: many\n")
    line = usage_error(dockyard("config", "check", str(config)))
    assert line.startswith(f"Error: invalid configuration: {config}: http.workers: ")


def test_a_config_with_several_bad_keys_names_each_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("http:\n  addr: 127.0.0.1:99999\n  workers: many\nnosuch: 1\n")
    line = usage_error(dockyard("serve", "--config", str(config),
                                "--data", str(tmp_path / "data")))
    assert f"{config}: http.addr: expected HOST:PORT" in line
    assert f"{config}: http.workers: " in line
    assert f"{config}: nosuch: unknown key" in line
    assert not (tmp_path / "data").exists()


def test_an_environment_variable_past_a_limit_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("")
    line = usage_error(dockyard("config", "check", str(config),
                                env={"DOCKYARD_HTTP_WORKERS": "99999"}))
    assert "DOCKYARD_HTTP_WORKERS (http.workers): " in line
    assert "256" in line


def test_serve_refuses_workers_past_256_before_reading_the_config(tmp_path: Path) -> None:
    """99999 forked until the machine stopped answering. (The config has an unknown
    key: were the flag taken, the command would still stop, on that.)"""
    config = tmp_path / "c.yml"
    config.write_text("nosuch: 1\n")
    line = usage_error(dockyard("serve", "--workers", "99999", "--config", str(config),
                                "--data", str(tmp_path / "data")))
    assert "'--workers': 99999 is not in the range 0<=x<=256" in line


def test_build_jobs_are_bounded_on_the_command_line_and_in_the_config(tmp_path: Path
                                                                      ) -> None:
    line = usage_error(dockyard("build", "--catalogue", str(tmp_path), "--registry",
                                "127.0.0.1:1", "--jobs", "99999", "--dry-run"))
    assert "'--jobs': 99999 is not in the range 1<=x<=64" in line
    config = tmp_path / "c.yml"
    config.write_text(f"builder:\n  catalogue: {tmp_path}\n  jobs: 100\n")
    line = usage_error(dockyard("config", "check", str(config)))
    assert f"{config}: builder.jobs: " in line


def test_build_names_a_catalogue_directory_that_does_not_exist(tmp_path: Path) -> None:
    line = usage_error(dockyard("build", "--catalogue", str(tmp_path / "nope"),
                                "--dry-run"))
    assert "'--catalogue'" in line
    assert "does not exist" in line


@pytest.mark.parametrize(("ref", "said"), [
    ("a::b", "invalid tag ':b'"),
    ("UPPER/case", "invalid repository name 'UPPER/case'"),
    ("a" * 300, "invalid repository name 'aaaa"),
    ("app:" + "v" * 200, "invalid tag 'vvvv"),
    ("app/Bad*", "invalid repository name 'app/Bad*'"),
    ("x@sha256:zz", "invalid sha256 digest"),
])
def test_rm_refuses_a_name_no_registry_could_hold(ref: str, said: str) -> None:
    """Before, the registry was asked (and a glob nothing could match was listed)."""
    line = usage_error(dockyard("rm", "--registry", f"http://127.0.0.1:{free_port()}",
                                "--dry-run", ref))
    assert said in line
    assert len(line) < 250


@pytest.mark.parametrize("ref", ["tools/*:*-rc*", "toollabs-*", "a/b:[0-9]*", "a/b:v1.2_x"])
def test_rm_still_takes_globs_and_tags(ref: str) -> None:
    port = free_port()
    proc = dockyard("rm", "--registry", f"http://127.0.0.1:{port}", "--dry-run", ref)
    assert proc.returncode == 1, proc.stderr  # on to the registry, which is not there
    assert proc.stderr.strip().splitlines() == [
        f"Error: http://127.0.0.1:{port}: Cannot connect to host 127.0.0.1:{port} "
        f"ssl:default [Connect call failed ('127.0.0.1', {port})]"]


def test_rm_still_takes_a_digest() -> None:
    digest = "sha256:" + "0" * 64
    port = free_port()
    proc = dockyard("rm", "--registry", f"http://127.0.0.1:{port}", "--dry-run",
                    f"a/b@{digest}")
    assert proc.returncode == 1, proc.stderr  # on to the registry, to see it is there
    assert proc.stderr.strip().splitlines() == [
        f"Error: http://127.0.0.1:{port}: Cannot connect to host 127.0.0.1:{port} "
        f"ssl:default [Connect call failed ('127.0.0.1', {port})]"]


@pytest.mark.parametrize("command", ["add", "passwd"])
@pytest.mark.parametrize("stdin", [None, "", "only-once\n"])
def test_user_without_a_terminal_or_password_stdin_is_a_usage_error(
        tmp_path: Path, command: str, stdin: str | None) -> None:
    """Was getpass's warnings and `Aborted!` (exit 1)."""
    path = tmp_path / "htpasswd"
    if command == "passwd":
        assert dockyard("user", "add", "--file", str(path), "--password-stdin", "alice",
                        input="old\n").returncode == 0
    before = path.read_bytes() if path.exists() else None
    line = usage_error(dockyard("user", command, "--file", str(path), "alice", input=stdin))
    assert "--password-stdin" in line
    assert (path.read_bytes() if path.exists() else None) == before


def test_user_add_refuses_two_piped_passwords_that_differ(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    line = usage_error(dockyard("user", "add", "--file", str(path), "alice",
                                input="pw\npW\n"))
    assert line == "Error: the two passwords on standard input differ"
    assert not path.exists()


def test_user_add_takes_a_piped_password_twice_without_getpass_warnings(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / "htpasswd"
    proc = dockyard("user", "add", "--file", str(path), "alice", input="pw\npw\n")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr
    assert "pw" not in proc.stdout + proc.stderr.replace("Password", "")
    assert path.read_text().startswith("alice:$2b$")
