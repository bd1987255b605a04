"""Hardening of access control, against a real `dockyard serve`: long passwords and
malformed hashes, refresh tokens bound to the password, the failed-login budget shared by
workers, and a catalog that lists only what the caller may pull."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx

from tests.support.authenv import USERS, basic_auth, write_config, write_htpasswd
from tests.support.servers import start_dockyard


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---------------------------------------------------------------- passwords and hashes


def test_long_passwords_are_401_and_counted_malformed_hashes_reported(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    long = "L" * 72 + "-tail-80"  # 80 bytes
    made_by_htpasswd_b = subprocess.run(["htpasswd", "-nbB", "-C", "4", "longpw", long],
                                        check=True, capture_output=True, text=True).stdout
    with htpasswd.open("a") as f:
        f.write("mallory:$2y$05$garbage:admins\n")  # line 4
        f.write(made_by_htpasswd_b.strip() + "\n")
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd), "ratelimit": {"failures": 3, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        url = f"{server.url}/v2/"
        log = server.log.read_text()
        assert f"{htpasswd}:4: user 'mallory' has a malformed bcrypt hash" in log
        # the others log in; mallory cannot, whatever she sends
        assert httpx.get(url, headers=basic("admin", USERS["admin"][0])).status_code == 200
        # what `htpasswd -B` made of an 80-byte password logs in with it
        assert httpx.get(url, headers=basic("longpw", long)).status_code == 200
        r = httpx.get(url, headers=basic("mallory", "garbage"))
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # 80-byte passwords: a plain 401, counted by the failed-login limiter
        for _ in range(2):
            r = httpx.get(url, headers=basic("reader", "p" * 80))
            assert r.status_code == 401, r.text
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # (the third failure of this address: the malformed entry's try counted too)
        r = httpx.get(url, headers=basic("reader", USERS["reader"][0]))
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        log = server.log.read_text()
        assert "Traceback" not in log
        assert " 500 " not in log
    finally:
        server.stop()
