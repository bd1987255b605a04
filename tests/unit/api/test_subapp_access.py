"""Authorization is middleware: a sub-application's routes get the same checks.

The app runs in-process on a real socket with htpasswd auth and a policy; a
sub-application (as the web UI will be) declares each route's access with `requires`,
and a route that declares nothing is refused.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.api.access import Access, requires
from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from tests.support.authenv import write_htpasswd

USERS = {"reader": ("reader-pw", []), "admin": ("admin-pw", ["admins"])}


def basic(user: str) -> dict[str, str]:
    raw = f"{user}:{USERS[user][0]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def _show(request: web.Request) -> web.Response:
    return web.Response(text=f"repository {request.match_info['name']}")


async def _login(_request: web.Request) -> web.Response:
    return web.Response(text="login form")


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", USERS)
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "auth.method": "htpasswd", "auth.htpasswd.path": str(htpasswd),
        "auth.access": [{"repository": "team/**",
                         "allow": {"reader": ["pull"], "group:admins": ["*"]}}]})
    app = create_app(settings)
    ui = web.Application()
    ui.router.add_get("/repo/{name:.+}", requires(Access.PULL)(_show))
    ui.router.add_post("/repo/{name:.+}/delete",
                       requires(Access.DELETE, audit="repository.delete")(_show))
    ui.router.add_get("/login", requires(Access.PUBLIC)(_login))
    ui.router.add_get("/forgotten", _login)  # declares nothing
    app.add_subapp("/ui/", ui)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url(""))
    await server.close()


async def test_sub_application_routes_are_authorized(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/ui/repo/team/app")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        r = await c.get("/ui/repo/team/app", headers=basic("reader"))
        assert r.status_code == 200
        assert r.text == "repository team/app"
        r = await c.get("/ui/repo/other/app", headers=basic("reader"))
        assert r.status_code == 403
        r = await c.post("/ui/repo/team/app/delete", headers=basic("reader"))
        assert r.status_code == 403
        r = await c.post("/ui/repo/team/app/delete", headers=basic("admin"))
        assert r.status_code == 200
        r = await c.get("/ui/repo/Bad..Name", headers=basic("admin"))
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "NAME_INVALID"
        assert (await c.get("/ui/login")).status_code == 200  # public
        r = await c.get("/ui/forgotten", headers=basic("admin"))
        assert r.status_code == 403  # fails closed


async def test_paths_no_route_serves_get_an_oci_error(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        for path in ("/", "/admin/", "/nothing/here", "/ui/nothing"):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert r.json()["errors"][0]["code"] == "UNSUPPORTED", path
        r = await c.delete("/ui/login")
        assert r.status_code == 405
        assert "GET" in r.headers["Allow"]
        assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
        # paths the /v2 and /admin/v1 tables do not know: told apart by the route that
        # took them, so a repository named like an admin path is still a repository
        for path, code in (("/admin/v1/nothing", "UNSUPPORTED"),
                           ("/v2/team/app/nothing", "NAME_UNKNOWN"),
                           ("/v2/admin/v1/nothing", "NAME_UNKNOWN")):
            r = await c.get(path, headers=basic("admin"))
            assert r.status_code == 404, path
            assert r.json()["errors"][0]["code"] == code, path
