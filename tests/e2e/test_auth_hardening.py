"""Hardening of access control, against a real `dockyard serve`: long passwords and
malformed hashes, refresh tokens bound to the password, the failed-login budget shared by
workers, and a catalog that lists only what the caller may pull."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import jwt
import pytest

from tests.support.authenv import (
    PLATFORM_ACCESS,
    USERS,
    basic_auth,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.oci_api import push_image
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
        # 80-byte passwords: a plain 401, counted by the failed-login limiter (two
        # different ones: a repeat of one found wrong is not counted again)
        for letter in "pq":
            r = httpx.get(url, headers=basic("reader", letter * 80))
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


def test_an_unknown_user_takes_as_long_as_some_real_user(tmp_path: Path) -> None:
    """With mixed bcrypt costs, unknown names are no longer all as slow as the dearest
    entry (which set them apart from every cheaper real user): like real users, some
    are quick and some slow, and one name is the same every time. The margins are wide:
    cost 12 takes hundreds of milliseconds, cost 4 a few."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        f"cheap:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=4)).decode()}\n"
        f"dear:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=12)).decode()}\n")
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd), "ratelimit": {"failures": 1000, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            guesses = itertools.count()

            def seconds(user: str) -> float:
                # a new wrong password each time: a repeat is known wrong, not checked
                start = time.monotonic()
                assert c.get("/v2/", headers=basic(
                    user, f"wrong-{next(guesses)}")).status_code == 401
                return time.monotonic() - start

            slow = min(seconds("dear") for _ in range(2))
            quick = {f"nobody-{i}": seconds(f"nobody-{i}") < slow / 3 for i in range(16)}
            assert any(quick.values()), quick  # before: every unknown name took `slow`
            assert not all(quick.values()), quick
            for name, was_quick in list(quick.items())[:4]:
                assert (seconds(name) < slow / 3) == was_quick, name
    finally:
        server.stop()


# ---------------------------------------------------------------- refresh tokens


def _password_grant(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/auth/token", data={
        "grant_type": "password", "username": user, "password": password,
        "service": "dockyard", "client_id": "test", "access_type": "offline",
        "scope": "repository:public/app:pull"})


def _refresh_grant(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": token, "service": "dockyard",
        "client_id": "test", "scope": "repository:public/app:pull"})


def test_a_password_change_revokes_refresh_tokens(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    # (the polls for the new password below fail until it is read: no limit for them)
    config = write_config(tmp_path / "config.yml", auth={
        **token_auth(htpasswd), "ratelimit": {"failures": 10000}})
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        r = _password_grant(server.url, "reader", USERS["reader"][0])
        assert r.status_code == 200, r.text
        refresh = r.json()["refresh_token"]
        r = _refresh_grant(server.url, refresh)
        assert r.status_code == 200, r.text
        renewed = r.json()["refresh_token"]
        admin = _password_grant(server.url, "admin", USERS["admin"][0]).json()["refresh_token"]
        # the reader's password changes (the file is rewritten; the server re-reads it)
        new_hash = bcrypt.hashpw(b"reader-new-pw", bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text("".join(
            f"reader:{new_hash}\n" if line.startswith("reader:") else line + "\n"
            for line in htpasswd.read_text().splitlines()))
        deadline = time.monotonic() + 5
        while _password_grant(server.url, "reader", "reader-new-pw").status_code != 200:
            assert time.monotonic() < deadline, "the new password was not picked up"
            time.sleep(0.2)
        for token in (refresh, renewed):
            r = _refresh_grant(server.url, token)
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "invalid_grant"
        # other users' refresh tokens still work
        assert _refresh_grant(server.url, admin).status_code == 200
        r = _password_grant(server.url, "reader", "reader-new-pw")
        assert _refresh_grant(server.url, r.json()["refresh_token"]).status_code == 200
    finally:
        server.stop()


def test_a_refresh_chain_ends_after_refresh_max_lifetime(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth=token_auth(
        htpasswd, refresh_expiration="1h", refresh_max_lifetime="4s"))
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        started = time.time()
        token = _password_grant(server.url, "reader", USERS["reader"][0]).json()[
            "refresh_token"]
        # each refresh hands out a new refresh token, but none outlives the chain
        renewed = []
        while time.time() < started + 2:
            r = _refresh_grant(server.url, token)
            assert r.status_code == 200, r.text
            token = r.json()["refresh_token"]
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["exp"] <= int(started) + 5
            renewed.append(token)
            time.sleep(0.5)
        assert len(renewed) >= 3
        time.sleep(max(0.0, started + 5.5 - time.time()))
        r = _refresh_grant(server.url, token)
        assert r.status_code == 401, r.text
        # a password login starts a new chain
        assert _password_grant(server.url, "reader", USERS["reader"][0]).status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- the failed-login budget


@pytest.mark.parametrize("way", ["v2", "token"])
def test_a_mistyped_password_sent_again_and_again_is_401_not_a_lockout(
        tmp_path: Path, way: str) -> None:
    """A client repeating one wrong password once per layer (skopeo checks each of 130
    layers) spent the address's whole budget: its 429s were retried for 12 minutes, and
    every other account at the address was locked out. A repeat of an attempt found
    wrong is a plain 401, neither checked nor counted again; different passwords (a
    guesser's) still are."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    auth = token_auth(htpasswd) if way == "token" else basic_auth(htpasswd)
    config = write_config(tmp_path / "config.yml", auth={
        **auth, "ratelimit": {"failures": 3, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    path = "/auth/token?service=dockyard" if way == "token" else "/v2/"
    try:
        for _ in range(30):  # a new connection each: both workers see it
            r = httpx.get(server.url + path, headers=basic("builder", "typo"))
            assert r.status_code == 401, r.text
        checked = server.log.read_text().count("failed login for user 'builder'")
        assert 1 <= checked <= 2, checked  # once per worker at most
        r = httpx.get(server.url + path, headers=basic("reader", USERS["reader"][0]))
        assert r.status_code == 200, r.text
        # a guesser's different passwords still spend the budget
        statuses = [httpx.get(server.url + path, headers=basic("builder", f"guess{i}"))
                    .status_code for i in range(4)]
        assert statuses[-1] == 429, statuses
    finally:
        server.stop()


def test_two_workers_share_one_failed_login_budget(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd), "ratelimit": {"failures": 4, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    try:
        url = f"{server.url}/v2/"
        # every request on a new connection: the kernel spreads them over both workers
        for i in range(4):
            r = httpx.get(url, headers=basic(f"guess{i}", "wrong"))
            assert r.status_code == 401, r.text
        for _ in range(12):
            r = httpx.get(url, headers=basic("reader", USERS["reader"][0]))
            assert r.status_code == 429, r.text
            assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        workers = {line.split()[2] for line in server.log.read_text().splitlines()
                   if "serving on" in line}
        assert len(workers) == 2
    finally:
        server.stop()


PARALLEL_GUESSES = 120


async def _guess_in_parallel(url: str, way: str) -> list[tuple[int, str]]:
    """PARALLEL_GUESSES wrong passwords for `reader` at once, each on its own connection,
    by `way`: Basic on /v2/, Basic on /auth/token, or the web UI's login form; each
    answer's status and body."""
    limits = httpx.Limits(max_connections=PARALLEL_GUESSES + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        form: dict[str, str] = {}
        if way == "ui":
            page = await c.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None, page.text[:2000]
            form = {"csrf": csrf.group(1), "next": "/ui/", "username": "reader"}

        async def guess(i: int) -> tuple[int, str]:
            if way == "v2":
                r = await c.get("/v2/", headers=basic("reader", f"wrong-{i}"))
            elif way == "token":
                r = await c.get("/auth/token", params={"service": "dockyard"},
                                headers=basic("reader", f"wrong-{i}"))
            else:
                r = await c.post("/ui/login", data={**form, "password": f"wrong-{i}"})
            return r.status_code, r.text

        return list(await asyncio.gather(*(guess(i) for i in range(PARALLEL_GUESSES))))


@pytest.mark.parametrize("way", ["v2", "token", "ui"])
def test_parallel_wrong_passwords_get_no_more_checks_than_the_budget(tmp_path: Path,
                                                                     way: str) -> None:
    """Guesses sent at once cannot all slip past the failed-login limit before the
    first failure is recorded, nor refuse one another: exactly `failures` are checked
    (401), the rest are 429, and the right password then waits too."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    auth = token_auth(htpasswd) if way == "token" else basic_auth(htpasswd)
    config = write_config(tmp_path / "config.yml", auth={
        **auth, "ratelimit": {"failures": 10, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    try:
        answers = asyncio.run(_guess_in_parallel(server.url, way))
        statuses = [status for status, _ in answers]
        assert sorted(statuses) == [401] * 10 + [429] * (PARALLEL_GUESSES - 10), statuses
        # some are refused before any login, at `http.unauthenticated_connections`
        at_the_cap = sum("too many connections" in body for _, body in answers)
        failed = server.log.read_text().count("failed login for user 'reader'")
        assert failed == 10
        path = "/auth/token?service=dockyard" if way == "token" else "/v2/"
        r = httpx.get(server.url + path, headers=basic("reader", USERS["reader"][0]))
        assert r.status_code == 429, r.text
        # every refusal is in the metrics, whichever way it came (the token service and
        # the UI's form counted none)
        want = {"bad_credentials": 10, "rate_limited": PARALLEL_GUESSES - 10 - at_the_cap + 1}
        assert _auth_failures(server.url, want) == want
        text = httpx.get(server.url + "/metrics").text
        assert (f'dockyard_rate_limited_total{{limit="connections"}} {float(at_the_cap)}'
                in text) is (at_the_cap > 0)
    finally:
        server.stop()


def _auth_failures(url: str, want: dict[str, int]) -> dict[str, int]:
    """`dockyard_auth_failures_total` by reason, once it reads `want` (the workers'
    counts are gathered a moment later) or after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        text = httpx.get(url + "/metrics").text
        found = {m.group(1): int(float(m.group(2))) for m in re.finditer(
            r'^dockyard_auth_failures_total\{reason="([a-z_]+)"\} (\S+)$', text, re.M)}
        if found == want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_robot_account_logging_in_from_many_runners_at_once_is_not_refused(
        tmp_path: Path) -> None:
    """Right passwords of one user from many addresses at once: each address is within
    its budget, and a right password is no failure of the user's (reserving the user's
    budget before the check refused runners past `failures` with 429)."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", http={"trusted_proxies": ["127.0.0.1/32"]},
                          auth={**basic_auth(htpasswd),
                                "ratelimit": {"failures": 5, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)

    async def logins() -> list[int]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            async def one(i: int) -> int:
                r = await c.get("/v2/", headers={**basic("reader", USERS["reader"][0]),
                                                 "X-Forwarded-For": f"192.0.2.{i + 1}"})
                return r.status_code
            return list(await asyncio.gather(*(one(i) for i in range(30))))

    try:
        statuses = asyncio.run(logins())
        assert statuses == [200] * 30, statuses
    finally:
        server.stop()


@pytest.mark.parametrize("way", ["v2", "token"])
def test_many_pulls_starting_at_once_from_one_address_are_not_refused(
        tmp_path: Path, way: str) -> None:
    """Right passwords from one address at once (CI runners behind one NAT, a client's
    parallel layer requests after a restart): the identical attempts in flight share
    one check, so they spend one failure of the address's budget, not one each (30 at
    once against a budget of 5 got 25 times 429). Wrong ones still spend it."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    auth = token_auth(htpasswd) if way == "token" else basic_auth(htpasswd)
    config = write_config(tmp_path / "config.yml", auth={
        **auth, "ratelimit": {"failures": 5, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    path = "/auth/token?service=dockyard" if way == "token" else "/v2/"

    async def at_once(password: str) -> list[int]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            async def one() -> int:
                return (await c.get(path, headers=basic("reader", password))).status_code
            return list(await asyncio.gather(*(one() for _ in range(30))))

    try:
        assert asyncio.run(at_once(USERS["reader"][0])) == [200] * 30
        assert server.log.read_text().count("failed login for user") == 0
        # a wrong one is no failure until checked, and sharing keeps the budget: the
        # 30 make a check each time none is in flight, and never more than 5 checks
        wrong = asyncio.run(at_once("wrong"))
        assert set(wrong) <= {401, 429}, wrong
        assert 401 in wrong, wrong
        checked = server.log.read_text().count("failed login for user 'reader'")
        assert 1 <= checked <= 5, checked
    finally:
        server.stop()


# ---------------------------------------------------------------- the catalog

TEAM_ACCESS = [
    {"repository": "team/secret-*", "allow": {"group:admins": ["*"]}},
    {"repository": "team/**", "allow": {"teamer": ["pull"], "group:admins": ["*"]}},
    {"repository": "**", "allow": {"group:admins": ["*"]}},
]
CATALOG_NAMES = ["aaa/x", "team/a", *[f"team/secret-{i:02}" for i in range(30)], "team/z",
                 "zzz/y"]


def _walk_catalog(url: str, headers: dict[str, str], n: int) -> list[list[str]]:
    """Every page of the catalog, following the Link headers."""
    pages: list[list[str]] = []
    path = f"/v2/_catalog?n={n}"
    while path:
        r = httpx.get(url + path, headers=headers)
        assert r.status_code == 200, r.text
        pages.append(r.json()["repositories"])
        link = r.headers.get("Link", "")
        path = link[1:link.index(">")] if link else ""
        assert len(pages) < 100
    return pages


@pytest.mark.parametrize("method", ["htpasswd", "token"])
def test_the_catalog_lists_only_what_the_caller_may_pull(tmp_path: Path, method: str
                                                         ) -> None:
    users = {**USERS, "teamer": ("teamer-secret-pw", [])}
    htpasswd = write_htpasswd(tmp_path / "htpasswd", users)
    config = write_config(tmp_path / "config.yml", auth={
        "method": method, "htpasswd": {"path": htpasswd}, "access": TEAM_ACCESS,
        "catalog": ["authenticated"]})
    server = start_dockyard(tmp_path / "data", config=config)

    def credentials(user: str) -> dict[str, str]:
        password = users[user][0]
        if method == "htpasswd":
            return basic(user, password)
        scopes = ["registry:catalog:*", *[f"repository:{n}:*" for n in CATALOG_NAMES]]
        r = httpx.get(f"{server.url}/auth/token", auth=(user, password),
                      params=[("service", "dockyard"), *[("scope", s) for s in scopes]])
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    try:
        admin = credentials("admin")
        blob = b"catalog-test"
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        with httpx.Client(base_url=server.url, headers=admin) as c:
            for name in CATALOG_NAMES:
                r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest},
                           content=blob)
                assert r.status_code == 201, r.text
        teamer = credentials("teamer")
        # one name a page, through the 30 hidden names between the two visible ones
        assert _walk_catalog(server.url, teamer, 1) == [["team/a"], ["team/z"]]
        assert _walk_catalog(server.url, teamer, 2) == [["team/a", "team/z"]]
        r = httpx.get(f"{server.url}/v2/_catalog", headers=teamer)
        assert r.json()["repositories"] == ["team/a", "team/z"]
        # a user the policy lets pull nothing lists nothing; an admin lists everything
        r = httpx.get(f"{server.url}/v2/_catalog", headers=credentials("reader"))
        assert r.json()["repositories"] == []
        assert [n for page in _walk_catalog(server.url, admin, 7) for n in page] \
            == CATALOG_NAMES
        if method == "token":
            # a token made for one repository lists that one in the web UI, not the
            # rest of its user's view (the admin's whole registry here); without the
            # catalog scope the API's catalog refuses it
            r = httpx.get(f"{server.url}/auth/token", auth=("admin", users["admin"][0]),
                          params={"service": "dockyard", "scope": "repository:team/a:pull"})
            narrow = {"Authorization": f"Bearer {r.json()['token']}"}
            page = httpx.get(f"{server.url}/ui/repositories", headers=narrow)
            assert page.status_code == 200
            listed = set(re.findall(r'href="/ui/r/([^"]+)"', page.text))
            assert listed == {"team/a"}, listed
            found = httpx.get(f"{server.url}/ui/search",
                              params={"q": "secret", "partial": "1"}, headers=narrow)
            assert found.status_code == 200
            assert "team/secret" not in found.text
            r = httpx.get(f"{server.url}/v2/_catalog", headers=narrow)
            assert r.status_code == 401, r.text
            # the catalog scope gives back the user's view
            page = httpx.get(f"{server.url}/ui/repositories", headers=admin)
            listed = set(re.findall(r'href="/ui/r/([^"]+)"', page.text))
            assert listed == set(CATALOG_NAMES), listed
    finally:
        server.stop()


# ---------------------------------------------------------------- names of policy subjects

SUBJECT_NAMES = ("anonymous, authenticated, * and kind:value names such as group:admins")


@pytest.mark.parametrize("name", ["anonymous", "authenticated", "*", "group:admins"])
def test_user_add_refuses_the_name_of_a_policy_subject(tmp_path: Path, name: str) -> None:
    path = tmp_path / "htpasswd"
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "user", "add", "--file", str(path),
         "--password-stdin", name], input="pw\n", capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")] == [
        f"Error: {name!r} is a policy subject, not a user name (no user may be called "
        f"{SUBJECT_NAMES})"]
    assert not path.exists()


def test_a_user_named_like_a_policy_subject_can_be_removed_with_user_rm(
        tmp_path: Path) -> None:
    """A file that holds one (written by hand, or before such names were refused) stops
    the server, and the message says to remove the entry: `dockyard user ls` shows it,
    `passwd` refuses it, `rm` removes it and keeps the others."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"builder": USERS["builder"],
                                                     "anonymous": ("pw", [])})

    def user(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dockyard", "user", *args, "--file",
                               str(htpasswd)], input="pw2\n", capture_output=True,
                              text=True, timeout=60)

    listed = user("ls")
    assert listed.returncode == 0, listed.stderr
    assert "anonymous\t\t(named like a policy subject: cannot log in" in listed.stdout
    assert "builder\t" in listed.stdout
    refused = user("passwd", "--password-stdin", "anonymous")
    assert refused.returncode == 2
    assert "remove it with `dockyard user rm`" in refused.stderr
    removed = user("rm", "anonymous")
    assert removed.returncode == 0, removed.stderr
    assert htpasswd.read_text().startswith("builder:")
    assert "anonymous" not in htpasswd.read_text()
    server = start_dockyard(tmp_path / "data", config=write_config(
        tmp_path / "config.yml", auth=basic_auth(htpasswd)))
    try:
        assert httpx.get(f"{server.url}/v2/", auth=("builder", USERS["builder"][0])
                         ).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["anonymous", "authenticated", "*"])
def test_an_htpasswd_user_named_like_a_policy_subject_stops_the_start(
        tmp_path: Path, name: str) -> None:
    """Such a user logged in as one: `*` got what a rule granted to `*` (which reads as
    everyone; such a rule is now refused itself), `anonymous` was logged and audited as
    anonymous, and the built-in token service gave `anonymous`/`authenticated` tokens
    every request then refused. The file does not load: the server does not start,
    naming the file, the line and the user."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"builder": USERS["builder"],
                                                     name: ("pw", [])})
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd),
        "access": [{"repository": "**", "allow": {"builder": ["pull"]}}]})
    server = start_dockyard(tmp_path / "data", config=config, wait=False)
    try:
        status = server.proc.wait(timeout=30)
    finally:
        server.stop()
    log = server.log.read_text()
    assert status == 2, log[-3000:]
    assert [ln for ln in log.splitlines() if ln.startswith("Error:")] == [
        f"Error: auth.htpasswd.path: {htpasswd}:2: user {name!r} is named like a policy "
        f"subject ({SUBJECT_NAMES}), which would read as that subject: rename or remove "
        f"the entry"], log[-3000:]


def test_a_user_named_like_a_policy_subject_added_to_a_running_server_changes_nothing(
        tmp_path: Path) -> None:
    """An edit that adds one keeps the previous users in force (re-read on change and
    on SIGHUP), logged with the file and the user; the new entry never logs in."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"builder": USERS["builder"]})
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd),
        "access": [{"repository": "**", "allow": {"builder": ["pull"]}}]})
    server = start_dockyard(tmp_path / "data", config=config)
    url = f"{server.url}/v2/star/x/blobs/uploads/"
    builder = ("builder", USERS["builder"][0])
    try:
        assert httpx.post(url, auth=builder).status_code == 403
        write_htpasswd(htpasswd, {"builder": USERS["builder"], "*": ("pw", []),
                                  "reader": USERS["reader"]})
        why = (f"{htpasswd}:2: user '*' is named like a policy subject ({SUBJECT_NAMES}), "
               f"which would read as that subject: rename or remove the entry")
        deadline = time.monotonic() + 10
        while f"keeping the previous users: {why}" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            # a login looks at the file (once a second)
            assert httpx.get(f"{server.url}/v2/", auth=builder).status_code == 200
            time.sleep(0.3)
        assert httpx.post(url, auth=("*", "pw")).status_code == 401
        assert httpx.post(url, auth=("reader", USERS["reader"][0])).status_code == 401
        assert httpx.get(f"{server.url}/v2/", auth=builder).status_code == 200
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "SIGHUP: worker" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.2)
        assert f"SIGHUP: keeping the previous users of {htpasswd}: {why}" in \
            server.log.read_text()
        assert httpx.post(url, auth=("*", "pw")).status_code == 401
        assert httpx.get(f"{server.url}/v2/", auth=builder).status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- dockyard rm


def test_rm_of_exact_names_needs_no_catalog_access(tmp_path: Path) -> None:
    """A CI account that may delete in its own repositories, but not read the catalog,
    removes its tags and repositories by exact name or tag glob (the catalog is read
    only for a repository glob, and that then says what was refused)."""
    users = {**USERS, "ci": ("ci-secret-pw", [])}
    htpasswd = write_htpasswd(tmp_path / "htpasswd", users)
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd),
        "access": [{"repository": "ci/**", "allow": {"ci": ["*"]}}, *PLATFORM_ACCESS]})
    server = start_dockyard(tmp_path / "data", config=config)
    creds = httpx.BasicAuth("ci", "ci-secret-pw")

    def rm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dockyard", "rm", "--registry", server.url, "--username",
             "ci", "--password", "ci-secret-pw", "--yes", *args],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    def tags(repo: str) -> list[str] | None:
        r = httpx.get(f"{server.url}/v2/{repo}/tags/list", auth=creds)
        return None if r.status_code == 404 else sorted(r.json()["tags"] or [])

    try:
        with httpx.Client(base_url=server.url, auth=creds, timeout=30) as c:
            assert c.get("/v2/_catalog").status_code in (401, 403)
            for tag in ("pr-1", "pr-2", "main"):
                push_image(c, "ci/app", tag)
            push_image(c, "ci/old", "v1")

        done = rm("ci/app:pr-1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["deleted ci/app:pr-1"]
        assert rm("ci/app:pr-*").returncode == 0
        assert tags("ci/app") == ["main"]
        gone = rm("ci/old")
        assert gone.returncode == 0, gone.stderr
        assert tags("ci/old") is None
        nothing = rm("ci/never")
        assert nothing.returncode == 1
        assert "nothing matches ci/never" in nothing.stderr
        globbed = rm("ci/*")
        assert globbed.returncode == 1
        assert "403: reading the catalog, which a repository glob needs: 403: DENIED" in \
            globbed.stderr, globbed.stderr
        assert tags("ci/app") == ["main"]
    finally:
        server.stop()
