"""Bad input to the CLI: a usage error is one line and exit 2, a failure one line and
exit 1, never a traceback (cases a review found printing one, each run through click's
runner on the real command)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from dockyard.cli.common import run_with_registry
from dockyard.cli.main import main
from dockyard.config.settings import load_settings
from dockyard.core.leases import LeaseLost
from dockyard.oci.errors import ReadOnlyReplica, StorageFull


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def error_line(result: Result) -> str:
    """The `Error: ...` line, asserting it is the only one after click's usage header."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = [ln for ln in result.output.strip().splitlines()
             if not ln.startswith(("Usage:", "Try '")) and ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize(("text", "said"), [
    ("storage:\n  driver: nosuch\n", "storage.driver"),
    ("database:\n  url: notaurl\n", "database.url"),
    ("database:\n  url: mysql://u@h/db\n", "database.url"),
    ("database:\n  url: 'sqlite:///:memory:'\n", "database.url"),
    ("http:\n  addr: 127.0.0.1:99999\n", "http.addr"),
    ("replica:\n  primary: http://127.0.0.1:99999\n", "replica.primary"),
    ("gc:\n  grace: 99999999999999999999d\n", "too long a duration"),
])
def test_config_check_refuses_what_later_crashed(tmp_path: Path, text: str, said: str
                                                 ) -> None:
    config = tmp_path / "c.yml"
    config.write_text(text)
    result = run("config", "check", str(config))
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_yaml_and_encoding_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("http: [\n")
    line = error_line(result := run("config", "check", str(broken)))
    assert result.exit_code == 2
    assert "invalid YAML" in line
    assert "line 2, column 1" in line
    latin = tmp_path / "latin.yml"
    latin.write_bytes(b"http:\n  addr: \"\xff\"\n")
    line = error_line(result := run("config", "check", str(latin)))
    assert result.exit_code == 2
    assert "not UTF-8 text" in line


def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # a command that makes a registry (a new replica's) where none is
    line = error_line(result := run("replicate", "--once", "--from", "http://127.0.0.1:9",
                                    "--data", str(blocker / "sub")))
    assert result.exit_code == 1
    assert "Not a directory" in line


@pytest.mark.parametrize("command", [["fsck"], ["gc"], ["du"], ["retention", "--dry-run"],
                                     ["promote"], ["status"]])
def test_a_command_on_a_registry_refuses_a_data_directory_not_there(
        tmp_path: Path, command: list[str]) -> None:
    """A mistyped `--data` made a new, empty registry there: `fsck` said "no problems
    found", `gc` collected nothing, and the directory was left behind."""
    config = tmp_path / "c.yml"
    config.write_text("retention:\n  rules:\n    - {repositories: '**', keep_last: 1}\n")
    typo = tmp_path / "tpyo"
    line = error_line(result := run(*command, "--config", str(config), "--data", str(typo)))
    assert result.exit_code == 1
    assert line.startswith(f"Error: no registry at {typo}: "), line
    assert not typo.exists()


def test_a_duration_past_timedelta_is_a_usage_error(tmp_path: Path) -> None:
    result = run("gc", "--dry-run", "--data", str(tmp_path / "d"),
                 "--grace", "99999999999999999999d")
    assert result.exit_code == 2
    assert "too long a duration" in error_line(result)


@pytest.mark.parametrize("registry", ["127.0.0.1:9", "", "ftp://x",
                                      "http://127.0.0.1:99999", "http://[zz]"])
def test_rm_refuses_a_registry_that_is_no_url(registry: str) -> None:
    result = run("rm", "--registry", registry, "x")
    assert result.exit_code == 2
    assert "--registry" in error_line(result)


@pytest.mark.parametrize("source", ["reg.example:notaport/x", "127.0.0.1:99999/x",
                                    "[zz]:9/x"])
def test_copy_refuses_a_registry_host_that_is_no_host(source: str, tmp_path: Path) -> None:
    result = run("copy", source, f"oci:{tmp_path / 'lay'}:v1")
    assert result.exit_code == 2
    assert "invalid registry host" in error_line(result)


def test_replicate_from_a_primary_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    result = run("replicate", "--data", str(tmp_path / "d"), "--once",
                 "--from", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: http://127.0.0.1:9: Cannot connect")


def test_a_catalogue_or_distribution_config_not_utf8_or_yaml_is_one_line(
        tmp_path: Path) -> None:
    catalogue = tmp_path / "cat"
    catalogue.mkdir()
    (catalogue / "catalogue.yaml").write_bytes(b'registry: "\xff"\n')
    result = run("build", "--catalogue", str(catalogue), "--dry-run")
    assert result.exit_code != 0
    assert "not UTF-8 text" in error_line(result)
    broken = tmp_path / "dist.yml"
    broken.write_text("storage: [\n")
    result = run("import", "--distribution-config", str(broken), "--data",
                 str(tmp_path / "d"))
    assert result.exit_code == 2
    assert "line 2, column 1" in error_line(result)


@pytest.mark.parametrize("url", ["http://my_registry:5000", "http://reg.example.:5000",
                                 "http://host:8080?t=1", "http://[::1]:5000/",
                                 "https://localhost"])
def test_urls_that_worked_before_the_checks_still_do(url: str) -> None:
    # docker-compose service names, a fully qualified name, a query: all taken by the
    # HTTP client, so the configuration takes them (credentials in the URL no longer:
    # every message naming the URL showed them; a webhook's go in its `headers`)
    from dockyard.config.types import http_url

    assert http_url(url)


def test_rm_reads_a_piped_password_and_refuses_none(tmp_path: Path) -> None:
    piped = run("rm", "--registry", "http://127.0.0.1:9", "--username", "u", "x",
                input="secret\n")
    assert piped.exit_code == 1  # on to the registry, which does not answer
    assert "127.0.0.1:9" in error_line(piped)
    empty = run("rm", "--registry", "http://127.0.0.1:9", "--username", "u", "x", input="")
    assert empty.exit_code == 2
    assert "no password" in error_line(empty)


@pytest.mark.parametrize("error", [
    StorageFull("insufficient storage: the registry's data filesystem is full"),
    LeaseLost("lost the lease gc while working"),
    ReadOnlyReplica("this registry is a read-only replica of http://primary"),
])
def test_what_the_registry_refuses_under_a_command_is_one_line(tmp_path: Path,
                                                                error: Exception) -> None:
    """`gc`, `retention` and the other commands run their work in `run_with_registry`
    (over a real store here): an error the registry raises there is its own message
    (exit 1), not a traceback. The real `gc` on a full disk: tests/e2e/
    test_cli_storage_errors.py."""
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})

    async def job(registry: Any) -> None:
        raise error

    with pytest.raises(click.ClickException) as info:
        run_with_registry(settings, job)
    assert info.value.message == str(error)
    assert info.value.exit_code == 1


def test_serve_workers_flag_has_the_settings_limit() -> None:
    """main.py writes http.workers' limit out (importing the settings would slow every
    command): the two must not drift."""
    from dockyard.cli.main import serve
    from dockyard.config.settings import MAX_WORKERS

    option = next(p for p in serve.params if p.name == "workers")
    assert isinstance(option.type, click.IntRange)
    assert (option.type.min, option.type.max) == (0, MAX_WORKERS)


def test_rm_says_a_registry_that_did_not_answer_in_time() -> None:
    """A registry that accepts connections and never answers: after the client's 120 s
    limit the line was `Error: http://host:port: ` (a TimeoutError says nothing)."""
    from dockyard.cli.rm import failure

    assert failure("http://127.0.0.1:9", TimeoutError()) == \
        "http://127.0.0.1:9: no answer in time"
    assert failure("a:b", OSError("Connect call failed\nmore")) == "a:b: Connect call failed"


async def test_a_time_limit_is_said_as_no_answer_in_time_everywhere() -> None:
    """`one_line`, which every command's error line goes through (copy, sync, the stores'
    failures): an expired time limit says nothing, and the line said `TimeoutError`."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from dockyard.oci.errors import one_line

    with pytest.raises(TimeoutError) as expired:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
    assert one_line(expired.value) == "no answer in time"
    wrapped = DBAPIError("SELECT 1", None, TimeoutError())  # SQLAlchemy's, as asyncpg's
    assert one_line(wrapped) == "no answer in time"
    assert one_line(TimeoutError("the registry did not answer within 1 s")) == \
        "the registry did not answer within 1 s"
    assert one_line(ConnectionResetError()) == "ConnectionResetError"


def test_an_engine_that_is_not_installed_leaves_no_password_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--creds` writes the engine's copy of the password before the engine is looked
    # up; a missing engine was a usage error that left that copy on disk
    import shutil
    import subprocess

    from tests.e2e.test_builder import CATALOGUE, GIT

    catalogue = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE, catalogue)
    subprocess.run(["git", "init", "-q", str(catalogue)], check=True)
    subprocess.run([*GIT, "-C", str(catalogue), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(catalogue), "commit", "-qm", "catalogue"], check=True)
    bin_dir = tmp_path / "bin"  # git, and no engine
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    monkeypatch.setenv("PATH", str(bin_dir))
    work = tmp_path / "work"
    result = run("build", "--catalogue", str(catalogue), "--registry", "127.0.0.1:9",
                 "--image-prefix", "t", "--engine", "docker", "--creds", "builder:s3cret",
                 "--work-dir", str(work))
    assert result.exit_code == 2
    assert "Traceback" not in result.output  # after a warning per failed look-up:
    assert result.output.strip().splitlines()[-1] == "Error: docker is not installed"
    assert (work / "engine").is_dir()  # it got that far
    assert not (work / "engine" / "auth.json").exists()


def test_serve_refuses_a_min_free_past_the_filesystem_naming_it(tmp_path: Path) -> None:
    """Every worker failed its start on a BeyondCapacity traceback; now the start is
    refused, exit 2, naming the key (before any worker or listener)."""

    st = os.statvfs(tmp_path)
    config = tmp_path / "config.yml"
    config.write_text(f"storage:\n  guard:\n    min_free: {2 * st.f_blocks * st.f_frsize}\n")
    result = run("serve", "--config", str(config), "--data", str(tmp_path / "data"),
                 "--listen", "127.0.0.1:0", "--workers", "2")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "storage.guard.min_free" in line
    assert "must stay free, but the data filesystem holds" in line
