"""Browser sessions of the web UI, in-process on a real socket: login, tampering,
expiry, a password change ending sessions, Basic credentials, and `ui.enabled: false`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from dockyard.web.app import install_ui
from dockyard.web.sessions import COOKIE, Session, Sessions
from tests.support.authenv import write_htpasswd
from tests.support.mediatypes import OCI_CONFIG, OCI_MANIFEST

USERS = {"reader": ("reader-pw", []), "admin": ("admin-pw", ["admins"])}
PRIVATE = "/ui/r/team/app"  # the policy lets only logged-in users pull team/**


def _settings(tmp_path: Path, **extra: Any) -> Any:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", USERS)
    return load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "auth.method": "htpasswd", "auth.htpasswd.path": str(htpasswd),
        "auth.access": [{"repository": "team/**", "allow": {"authenticated": ["pull"]}},
                        {"repository": "**", "allow": {"anonymous": ["pull"]}}],
        **extra})


Serve = Callable[..., Any]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(**extra: Any) -> str:
        settings = _settings(tmp_path, **extra)
        app = create_app(settings)
        install_ui(app, settings)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _log_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post("/ui/login", data={
        "csrf": _csrf(form.text), "username": user, "password": password,
        "next": PRIVATE})


async def test_login_opens_a_session_that_a_tampered_cookie_does_not(serve: Serve) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get(PRIVATE)
        assert r.status_code == 303
        assert r.headers["Location"] == "/ui/login?next=/ui/r/team/app"
        r = await _log_in(client, "reader", "reader-pw")
        assert (r.status_code, r.headers["Location"]) == (303, PRIVATE)
        assert "HttpOnly" in r.headers["Set-Cookie"]
        assert "SameSite=Strict" in r.headers["Set-Cookie"]
        assert "Secure" not in r.headers["Set-Cookie"]  # plain http here
        r = await client.get(PRIVATE)
        assert r.status_code == 404  # allowed; the repository just does not exist
        assert "Signed in as <strong>reader</strong>" in r.text
        # the same cookie with one character of its payload changed is nobody's
        value = client.cookies[COOKIE]
        forged = ("A" if value[0] != "A" else "B") + value[1:]
        client.cookies.clear()
        client.cookies.set(COOKIE, forged)
        assert (await client.get(PRIVATE)).status_code == 303


async def test_wrong_password_and_stale_csrf_are_refused(serve: Serve) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        r = await _log_in(client, "reader", "nope")
        assert r.status_code == 401
        assert COOKIE in client.cookies
        r = await client.post("/ui/login", data={"csrf": "x", "username": "reader",
                                                 "password": "reader-pw"})
        assert r.status_code == 403
    async with httpx.AsyncClient(base_url=base) as fresh:  # no cookie: no session to match
        r = await fresh.post("/ui/login", data={"csrf": "x", "username": "reader",
                                                "password": "reader-pw"})
        assert r.status_code == 403


async def test_a_password_change_ends_the_session(serve: Serve, tmp_path: Path) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        await _log_in(client, "reader", "reader-pw")
        assert (await client.get(PRIVATE)).status_code == 404
        write_htpasswd(tmp_path / "htpasswd", {**USERS, "reader": ("changed-pw", [])})
        deadline = time.monotonic() + 5
        while (await client.get(PRIVATE)).status_code != 303:
            assert time.monotonic() < deadline, "the old session still works"
            await asyncio.sleep(0.2)


async def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(
        serve: Serve) -> None:
    # two servers over the same stores: two workers or two nodes
    first, second = await serve(), await serve()
    async with httpx.AsyncClient(base_url=first) as client:
        await _log_in(client, "reader", "reader-pw")
        page = await client.get(PRIVATE)
        assert "Signed in as <strong>reader</strong>" in page.text
        copied = client.cookies[COOKIE]
        r = await client.post("/ui/logout", data={"csrf": _csrf(page.text)})
        assert r.status_code == 303
        assert copied not in r.headers["Set-Cookie"]  # a new, anonymous session
        assert (await client.get(PRIVATE)).status_code == 303
        # logging in again opens a new session that works
        await _log_in(client, "reader", "reader-pw")
        assert (await client.get(PRIVATE)).status_code == 404
    for base in (first, second):
        async with httpx.AsyncClient(base_url=base) as thief:
            thief.cookies.set(COOKIE, copied)
            r = await thief.get(PRIVATE)
            assert (r.status_code, r.headers["Location"]) == (
                303, "/ui/login?next=/ui/r/team/app")


async def test_basic_credentials_work_on_ui_routes_too(serve: Serve) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get(PRIVATE, auth=("reader", "reader-pw"))).status_code == 404
        assert (await client.get(PRIVATE, auth=("reader", "bad"))).status_code == 303


async def test_root_and_bare_prefix_redirect_to_the_ui(serve: Serve) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/", "/ui"):
            r = await client.get(path)
            assert (r.status_code, r.headers["Location"]) == (302, "/ui/"), path


async def test_ui_can_be_turned_off(serve: Serve) -> None:
    base = await serve(**{"ui.enabled": False})
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/ui/")).status_code == 404
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/v2/", auth=("reader", "reader-pw"))).status_code == 200


def test_an_expired_session_is_anonymous() -> None:
    sessions = Sessions(b"k" * 32, lifetime=60, refused=lambda _r, _s: None)  # type: ignore
    now = int(time.time())
    fresh = sessions.decode(sessions.encode(Session("sid", "reader", "cred", now)))
    assert fresh == Session("sid", "reader", "cred", now)
    old = sessions.decode(sessions.encode(Session("sid", "reader", "cred", now - 61)))
    assert old == Session("sid")
    other = Sessions(b"x" * 32, lifetime=60, refused=lambda _r, _s: None)  # type: ignore
    assert other.decode(sessions.encode(Session("sid", "reader", "cred", now))) is None


async def test_token_method_logs_in_with_the_same_credentials(serve: Serve) -> None:
    base = await serve(**{"auth.method": "token"})
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get(PRIVATE)).status_code == 303
        r = await _log_in(client, "reader", "reader-pw")
        assert r.status_code == 303
        page = await client.get(PRIVATE)
        assert page.status_code == 404
        assert "Signed in as <strong>reader</strong>" in page.text


async def test_without_auth_forms_still_need_their_csrf_token(serve: Serve) -> None:
    base = await serve(**{"auth.method": "none"})
    async with httpx.AsyncClient(base_url=base) as client:
        config = b'{"architecture":"amd64","os":"linux"}'
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        r = await client.post("/v2/team/app/blobs/uploads/", params={"digest": digest},
                              content=config)
        assert r.status_code == 201
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                    "config": {"mediaType": OCI_CONFIG, "digest": digest,
                               "size": len(config)}}
        r = await client.put("/v2/team/app/manifests/v1", content=json.dumps(manifest),
                             headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        home = await client.get("/ui/")
        assert "Log in" not in home.text  # nobody logs in: everyone may do everything
        confirm = await client.get("/ui/r/team/app/-/delete")
        assert confirm.status_code == 200
        r = await client.post("/ui/r/team/app/-/delete", data={"csrf": "forged"})
        assert r.status_code == 403
        assert (await client.get("/v2/team/app/tags/list")).status_code == 200
        r = await client.post("/ui/r/team/app/-/delete", data={"csrf": _csrf(confirm.text)})
        assert r.status_code == 200
        assert (await client.get("/v2/team/app/tags/list")).status_code == 404


async def test_a_form_no_browser_sends_is_a_400_not_a_500(serve: Serve) -> None:
    base = await serve(**{"auth.method": "none"})  # every form reaches its handler
    multipart = "multipart/form-data; boundary=b"
    bodies = [
        # a multipart part without a name
        (multipart, b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"csrf=x"),
        ("application/x-www-form-urlencoded", b"csrf=\xff\xfe"),  # not UTF-8
    ]
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/ui/login", "/ui/logout", "/ui/r/team/app/-/delete"):
            for content_type, body in bodies:
                r = await client.post(path, content=body,
                                      headers={"Content-Type": content_type})
                assert r.status_code == 400, (path, content_type, r.text[:200])
                assert "the form could not be read" in r.text
        # a form that reads is still judged by its token
        r = await client.post("/ui/logout", data={"csrf": "forged"})
        assert r.status_code == 403


async def test_an_odd_cookie_or_login_target_is_no_500(serve: Serve) -> None:
    base = await serve()
    async with httpx.AsyncClient(base_url=base) as client:
        # a cookie that is not one of ours, in characters hmac cannot compare: a visitor
        for value in ("a.\u00e9".encode(), "\u00e9.\u00e9".encode(), b'"a.\\351"'):
            r = await client.get("/ui/", headers={"Cookie": COOKIE.encode() + b"=" + value})
            assert r.status_code == 200, (value, r.text[:200])
        # a login target with a control character: the login lands on the UI's home
        form = await client.get("/ui/login", params={"next": "/ui/\nx"})
        assert 'name="next" value="/ui/"' in form.text
        r = await client.post("/ui/login", data={
            "csrf": _csrf(form.text), "username": "reader", "password": "reader-pw",
            "next": "/ui/r/team/app\r\nSet-Cookie: x=y"})
        assert (r.status_code, r.headers["Location"]) == (303, "/ui/")


async def test_delete_pages_show_nothing_to_who_may_not_pull(serve: Serve) -> None:
    """`reader` may delete in team/** but not pull there: the confirmation pages (which
    list tags and digests) are refused, as the repository page is."""
    base = await serve(**{"auth.method": "htpasswd", "auth.access": [
        {"repository": "team/**", "allow": {"reader": ["delete"], "admin": ["*"]}}]})
    async with httpx.AsyncClient(base_url=base) as admin:
        assert (await _log_in(admin, "admin", "admin-pw")).status_code == 303
        config = b'{"architecture":"amd64","os":"linux"}'
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        auth = ("admin", "admin-pw")
        r = await admin.post("/v2/team/app/blobs/uploads/", params={"digest": digest},
                             content=config, auth=auth)
        assert r.status_code == 201
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                    "config": {"mediaType": OCI_CONFIG, "digest": digest,
                               "size": len(config)}}
        r = await admin.put("/v2/team/app/manifests/secret-tag", auth=auth,
                            content=json.dumps(manifest),
                            headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        page = await admin.get("/ui/r/team/app/-/delete")
        assert "secret-tag" in page.text  # who may pull sees what goes
    async with httpx.AsyncClient(base_url=base) as reader:
        assert (await _log_in(reader, "reader", "reader-pw")).status_code == 303
        for path in ("/ui/r/team/app/-/delete", "/ui/r/team/app/-/delete-tag/secret-tag",
                     "/ui/r/team/app"):
            r = await reader.get(path)
            assert r.status_code == 403, (path, r.status_code)
            assert "secret-tag" not in r.text
            assert digest not in r.text
