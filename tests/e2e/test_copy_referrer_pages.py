"""`dockyard copy --referrers` from a registry that pages its referrers list.

The paging registry is a small aiohttp server on a loopback socket in front of a real
`dockyard serve` (whose own pages hold 1,000 descriptors: one page here): it passes
manifests and blobs through and splits each referrers answer into pages of one
descriptor, its `Link` in a form of its own (the distribution spec gives the client no
`n` for referrers, only the registry's `Link: <url>; rel="next"`). Before the client
followed `Link`, the copy brought the first referrer only. Dockyard's own pages
(`limits.referrers_page_size`) are copied in `test_referrer_pages.py`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.images import Layout, add_signature, random_layout
from tests.support.servers import Server

PASSED = ("Content-Type", "Docker-Content-Digest", "Content-Length")


def _add_referrers(layout: Layout, count: int) -> list[str]:
    """Attach `count` signature-like artifacts to the layout's image (listed in
    index.json, where a layout's referrers are found)."""
    return [add_signature(layout, f'{{"signature": {n}, "image": "{layout.digest}"}}'.encode())
            for n in range(count)]


async def dockyard_copy(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dockyard", "copy", "--src-tls-verify=false",
        "--dest-tls-verify=false", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode(errors="replace")


def listed_referrers(server: Server, repo: str, digest: str) -> list[str]:
    resp = httpx.get(f"{server.url}/v2/{repo}/referrers/{digest}")
    resp.raise_for_status()
    return sorted(m["digest"] for m in resp.json()["manifests"])


class PagingFront:
    """The paging registry: Dockyard's answers, its referrers one descriptor a page."""

    def __init__(self, upstream: Server) -> None:
        self.upstream = upstream
        self.referrer_pages = 0
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        if "/referrers/" in request.path:
            return await self.referrers(request)
        async with self.session.request(
                request.method, self.upstream.url + request.path_qs,
                headers={"Accept": request.headers.get("Accept", "*/*")},
                allow_redirects=False) as resp:
            body = await resp.read()
            headers = {k: resp.headers[k] for k in PASSED if k in resp.headers}
        response = web.Response(status=resp.status, headers=headers)
        if request.method != "HEAD":
            response.body = body
        return response

    async def referrers(self, request: web.Request) -> web.Response:
        assert self.session is not None
        async with self.session.get(self.upstream.url + request.path) as resp:
            if resp.status != 200:
                return web.Response(status=resp.status, body=await resp.read())
            doc = await resp.json(content_type=None)
        self.referrer_pages += 1
        page = int(request.query.get("page", "0"))
        whole = doc["manifests"]
        doc["manifests"] = whole[page:page + 1]
        headers = {}
        if page + 1 < len(whole):
            headers["Link"] = f'<{request.path}?page={page + 1}>; rel="next"'
        return web.json_response(doc, headers=headers,
                                 content_type="application/vnd.oci.image.index.v1+json")


@pytest.fixture
async def paging(dockyard: Server) -> AsyncIterator[tuple[PagingFront, TestServer]]:
    front = PagingFront(dockyard)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front.handle)
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            TestServer(app, host="127.0.0.1") as srv:
        front.session = session
        yield front, srv


async def test_every_page_of_referrers_is_copied(
        dockyard: Server, paging: tuple[PagingFront, TestServer], tmp_path: Path) -> None:
    front, srv = paging
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(1024,))
    signatures = _add_referrers(layout, 3)
    code, out = await dockyard_copy("--referrers", layout.ref,
                                    f"{dockyard.host}/pages/src:v1")
    assert code == 0, out
    assert listed_referrers(dockyard, "pages/src", layout.digest) == sorted(signatures)

    code, out = await dockyard_copy("--referrers", f"127.0.0.1:{srv.port}/pages/src:v1",
                                    f"{dockyard.host}/pages/dst:v1")
    assert code == 0, out
    assert "3 referrer(s)" in out, out
    assert listed_referrers(dockyard, "pages/dst", layout.digest) == sorted(signatures)
    assert front.referrer_pages >= 3  # the list did come in pages
