"""`RegistryClient.referrers` against a real aiohttp server on loopback that splits its
answer into pages, as the distribution spec lets a registry do (`Link: <url>;
rel="next"`). Dockyard's own referrers endpoint answers in one page (the spec gives the
client no `n` for referrers), so the paging registry is this small server; the copy of
an image's referrers from one is in tests/e2e/test_copy_referrer_pages.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.remote import client as client_module
from dockyard.remote.client import RegistryClient, RegistryClientError

SUBJECT = "sha256:" + "a" * 64
INDEX = "application/vnd.oci.image.index.v1+json"


def _desc(n: int) -> dict[str, Any]:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{n:064x}", "size": 100 + n,
            "artifactType": "application/vnd.example.sig"}


def _index(descs: list[dict[str, Any]], link: str | None = None) -> web.Response:
    return web.json_response({"schemaVersion": 2, "mediaType": INDEX, "manifests": descs},
                             content_type=INDEX, headers={"Link": link} if link else None)


async def _paged(request: web.Request) -> web.Response:
    """Seven referrers, three to a page; the next page's URL is absolute once, relative
    otherwise (both resolve on this server)."""
    page = int(request.query.get("page", "0"))
    descs = [_desc(n) for n in range(7)][page * 3:page * 3 + 3]
    if page == 0:
        link = f'<{request.url.with_query(page=1)}>; rel="next"'
    elif page == 1:
        link = f'<{request.path}?page=2>; rel="next"'
    else:
        link = None
    return _index(descs, link)


async def _looping(request: web.Request) -> web.Response:
    return _index([_desc(1)], f'<{request.path}>; rel="next"')  # itself


async def _away(request: web.Request) -> web.Response:
    return _index([_desc(1)], f'<http://127.0.0.2:9{request.path}?page=1>; rel="next"')


async def _second_page_gone(request: web.Request) -> web.Response:
    if request.query.get("page") == "1":
        return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
    return _index([_desc(1)], f'<{request.path}?page=1>; rel="next"')


async def _second_page_garbage(request: web.Request) -> web.Response:
    if request.query.get("page") == "1":
        return web.Response(text="<html>maintenance</html>", content_type="text/html")
    return _index([_desc(1)], f'<{request.path}?page=1>; rel="next"')


async def _endless(request: web.Request) -> web.Response:
    page = int(request.query.get("page", "0"))
    return _index([_desc(page)], f'<{request.path}?page={page + 1}>; rel="next"')


async def _no_api(request: web.Request) -> web.Response:
    return web.Response(text="<html>not JSON</html>", content_type="text/html")


@pytest.fixture
async def registry() -> AsyncIterator[TestServer]:
    app = web.Application()
    for name, handler in (("paged", _paged), ("loop", _looping), ("away", _away),
                          ("gone", _second_page_gone), ("garbage", _second_page_garbage),
                          ("endless", _endless), ("html", _no_api)):
        app.router.add_get(f"/v2/{name}/app/referrers/{{digest}}", handler)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


def client(server: TestServer) -> RegistryClient:
    made = RegistryClient(str(server.make_url("")))
    made.small_timeouts = aiohttp.ClientTimeout(total=10, sock_connect=5)
    return made


async def test_every_page_of_referrers_is_followed(registry: TestServer) -> None:
    # the client read the first page only: three of seven signatures and SBOMs
    async with client(registry) as c:
        found = await c.referrers("paged/app", SUBJECT)
    assert found == [_desc(n) for n in range(7)]


async def test_referrer_pages_that_loop_are_an_error_not_a_hang(registry: TestServer) -> None:
    async with client(registry) as c:
        with pytest.raises(RegistryClientError, match="loop"):
            await c.referrers("loop/app", SUBJECT)


async def test_referrer_pages_are_bounded(registry: TestServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_PAGES", 5)
    async with client(registry) as c:
        with pytest.raises(RegistryClientError, match="pass 5"):
            await c.referrers("endless/app", SUBJECT)


async def test_a_next_page_of_referrers_on_another_server_is_refused(
        registry: TestServer) -> None:
    async with client(registry) as c:
        with pytest.raises(RegistryClientError, match="another server"):
            await c.referrers("away/app", SUBJECT)


@pytest.mark.parametrize(("repo", "error"), [
    ("gone/app", "404: NAME_UNKNOWN"),
    ("garbage/app", "page 2 of the referrers is no image index"),
])
async def test_a_later_page_that_fails_is_an_error_not_a_shorter_list(
        registry: TestServer, repo: str, error: str) -> None:
    # None would send the copy to the sha256-<hex> fallback tag; a partial list would
    # silently leave referrers behind
    async with client(registry) as c:
        with pytest.raises(RegistryClientError, match=error):
            await c.referrers(repo, SUBJECT)


async def test_a_registry_without_the_api_still_means_none(registry: TestServer) -> None:
    async with client(registry) as c:
        assert await c.referrers("html/app", SUBJECT) is None  # 200 with no index
        assert await c.referrers("nothing/app", SUBJECT) is None  # 404
