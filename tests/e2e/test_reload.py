"""SIGHUP reloads the access policy, the htpasswd file and the log level in every
worker, says what it reloaded, and keeps serving."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import bcrypt
import httpx
import psutil

from tests.support.servers import start_dockyard


def _config(path: Path, users: Path, *, anonymous: list[str], level: str) -> None:
    path.write_text(
        f"log:\n  level: {level}\n"
        f"auth:\n  method: htpasswd\n  htpasswd:\n    path: {users}\n  admin: [ci]\n"
        "  access:\n    - repository: '**'\n      allow:\n"
        f"        anonymous: {anonymous}\n        ci: ['*']\n")


def _user(name: str, password: bytes) -> str:
    return f"{name}:{bcrypt.hashpw(password, bcrypt.gensalt(4)).decode()}\n"


def test_sighup_reloads_policy_users_and_log_level(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(_user("ci", b"one"))
    cfg = tmp_path / "c.yml"
    _config(cfg, users, anonymous=[], level="info")
    s = start_dockyard(tmp_path / "data", workers=2, config=cfg)
    try:
        url = s.url + "/v2/any/thing/tags/list"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, auth=("ops", "two")).status_code == 401
        feed = s.url + "/admin/v1/events?after=0&limit=1&wait=0"
        assert httpx.get(feed, auth=("ci", "one")).status_code == 200
        _config(cfg, users, anonymous=["pull"], level="debug")
        users.write_text(_user("ci", b"one") + _user("ops", b"two"))
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while s.log.read_text().count("SIGHUP: worker") < 2:
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            time.sleep(0.2)
        for _ in range(10):  # new connections: every worker answers with the new policy
            with httpx.Client() as c:
                assert c.get(url).status_code == 404  # anonymous may pull now
                assert c.get(url, auth=("ops", "two")).status_code == 404
                # `auth.admin` survives the reload (it was dropped: replicas refused)
                assert c.get(feed, auth=("ci", "one")).status_code == 200
        log = s.log.read_text()
        line = next(x for x in log.splitlines() if "SIGHUP: worker" in x)
        assert "log level debug" in line
        assert "access policy (1 rules)" in line
        assert f"htpasswd {users}" in line
        assert "take effect at the next restart" not in log
    finally:
        s.stop()


def test_sighup_keeps_the_running_configuration_when_the_file_is_broken(
        tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text(_user("ci", b"one"))
    cfg = tmp_path / "c.yml"
    _config(cfg, users, anonymous=["pull"], level="info")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    try:
        cfg.write_text("log:\n  level: loud\n")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "SIGHUP: worker" not in s.log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        log = s.log.read_text()
        assert "keeping the running configuration" in log
        assert "log.level" in log
        assert httpx.get(s.url + "/v2/any/thing/tags/list").status_code == 404
    finally:
        s.stop()


def alive(proc: psutil.Process) -> bool:
    """Whether `proc` runs (not gone, not a zombie waiting to be reaped)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_sighup_while_a_worker_starts_does_not_kill_it(tmp_path: Path) -> None:
    """A worker the supervisor restarts gets SIGHUPs (a logrotate hook, the supervisor
    passing one on) from the moment it exists: it neither dies of one before its loop
    handles them nor misses it: the reload happens once the handler is in place."""
    s = start_dockyard(tmp_path / "data", workers=2)
    try:
        supervisor = psutil.Process(s.proc.pid)
        deadline = time.monotonic() + 30
        while len(old := {c.pid for c in supervisor.children()}) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(min(old), signal.SIGKILL)
        new: psutil.Process | None = None
        while new is None:  # the supervisor notices within 0.2 s and starts another
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            new = next((c for c in supervisor.children() if c.pid not in old), None)
        hups = 0
        while f"worker {new.pid} serving" not in s.log.read_text():
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            assert alive(new), s.log.read_text()[-3000:]
            os.kill(new.pid, signal.SIGHUP)
            hups += 1
            time.sleep(0.005)
        assert hups > 10  # its whole start was under fire
        while f"SIGHUP: worker {new.pid} reloaded" not in s.log.read_text():
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            time.sleep(0.05)
        assert alive(new)
        log = s.log.read_text()
        assert "exited with -1;" not in log, log[-3000:]  # -1: killed by SIGHUP
        assert httpx.get(s.url + "/v2/").status_code == 200
    finally:
        s.stop()


def test_a_worker_restarted_after_a_sighup_serves_the_reloaded_policy(
        tmp_path: Path) -> None:
    """The supervisor starts a worker that replaces a dead one from the configuration of
    the last SIGHUP, not of the start; from a broken file it keeps the one it has."""
    users = tmp_path / "htpasswd"
    users.write_text(_user("ci", b"one"))
    cfg = tmp_path / "c.yml"
    _config(cfg, users, anonymous=[], level="info")
    s = start_dockyard(tmp_path / "data", workers=2, config=cfg)
    url = s.url + "/v2/any/thing/tags/list"
    supervisor = psutil.Process(s.proc.pid)

    def restart_all_workers() -> None:
        """Kill every worker; return once both replacements serve."""
        old = {c.pid for c in supervisor.children()}
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            new = [c.pid for c in supervisor.children() if c.pid not in old]
            log = s.log.read_text()
            if len(new) == 2 and all(f"worker {pid} serving" in log for pid in new):
                return
            time.sleep(0.1)

    try:
        assert httpx.get(url).status_code == 401
        _config(cfg, users, anonymous=["pull"], level="info")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while s.log.read_text().count("SIGHUP: worker") < 2:
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            time.sleep(0.2)
        restart_all_workers()
        for _ in range(10):  # new connections, to either new worker
            with httpx.Client() as c:
                assert c.get(url).status_code == 404  # anonymous may pull: reloaded

        cfg.write_text("log:\n  level: loud\n")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "restarted workers keep the running configuration" not in s.log.read_text():
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            time.sleep(0.2)
        restart_all_workers()
        for _ in range(10):
            with httpx.Client() as c:
                assert c.get(url).status_code == 404  # still the last good policy
    finally:
        s.stop()


def test_sighup_names_the_auth_changes_it_does_not_reload(tmp_path: Path) -> None:
    """A change to `auth.token.*`, `auth.ratelimit` or `auth.realm` waits for a restart:
    the SIGHUP says so, naming each key, beside what it did reload."""
    users = tmp_path / "htpasswd"
    users.write_text(_user("ci", b"one"))
    cfg = tmp_path / "c.yml"

    def config(expiration: str, failures: int, realm: str) -> None:
        cfg.write_text(
            f"auth:\n  method: htpasswd\n  realm: {realm}\n  htpasswd:\n    path: {users}\n"
            f"  ratelimit:\n    failures: {failures}\n"
            f"  token:\n    expiration: {expiration}\n"
            "  access:\n    - repository: '**'\n      allow:\n        ci: ['*']\n")

    config("5m", 10, "dockyard")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    try:
        config("1m", 3, "elsewhere")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "SIGHUP: worker" not in s.log.read_text():
            assert time.monotonic() < deadline, s.log.read_text()[-3000:]
            time.sleep(0.2)
        log = s.log.read_text()
        warning = next((x for x in log.splitlines() if "next restart" in x), "")
        for key in ("auth.token.expiration", "auth.ratelimit.failures", "auth.realm"):
            assert key in warning, log[-3000:]
        assert "auth.access" not in warning  # reloaded, not waiting
        line = next(x for x in log.splitlines() if "SIGHUP: worker" in x)
        assert "access policy (1 rules)" in line
        # the running realm is still the old one, as the warning says
        assert httpx.get(s.url + "/v2/").headers["WWW-Authenticate"].startswith(
            'Basic realm="dockyard"')
    finally:
        s.stop()
