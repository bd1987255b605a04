"""`storage.redirect`: a blob GET answers 307 to the store's signed URL; HEAD never.

In-process app on a real socket over real stores; the filesystem driver is given a
`url_for` as an object store has (the URL itself is proven against a real S3 server in
tests/unit/core/test_blobs.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from dockyard.drivers.filesystem import FilesystemDriver


@asynccontextmanager
async def holding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes,
                  **storage: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app over a filesystem store that signs URLs, `storage` settings
    given, with `data` pushed as a blob of repository r/x."""
    async def signed(_self: FilesystemDriver, key: str, expires: int = 900) -> str:
        return f"http://store.invalid/{key}?expires={expires}&signature=x"

    monkeypatch.setattr(FilesystemDriver, "url_for", signed)
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        **{f"storage.{key}": value for key, value in storage.items()}})
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(server.make_url(""))) as c:
            r = await c.post("/v2/r/x/blobs/uploads/", params={"digest": _digest(data)},
                             content=data)
            assert r.status_code == 201
            yield c
    finally:
        await server.close()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("redirect", [True, False])
async def test_blob_get_redirects_when_the_store_signs_urls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redirect: bool) -> None:
    data = b"redirected bytes"
    digest = _digest(data)
    async with holding(tmp_path, monkeypatch, data, redirect=redirect,
                       redirect_expiry="90s") as c:
        r = await c.get(f"/v2/r/x/blobs/{digest}")
        if redirect:
            assert r.status_code == 307
            assert r.headers["Location"] == (
                f"http://store.invalid/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
                "?expires=90&signature=x")
            assert r.headers["Docker-Content-Digest"] == digest
        else:
            assert r.status_code == 200
            assert r.content == data
        head = await c.head(f"/v2/r/x/blobs/{digest}")
        assert head.status_code == 200  # metadata only: no redirect, no store call
        assert head.headers["Content-Length"] == str(len(data))


@pytest.mark.parametrize(("if_range", "redirected"), [(True, True), (False, False)],
                         ids=["if-range-matches", "if-range-differs"])
async def test_a_range_under_a_stale_if_range_is_served_whole_not_redirected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, if_range: bool,
        redirected: bool) -> None:
    """Redirected, the client sends its Range and If-Range on to the store, which
    compares its own ETag (or none): the registry serves the whole blob itself when the
    client's copy is another one, and redirects as usual when it is this blob."""
    data = b"bytes the client holds another version of"
    digest = _digest(data)
    async with holding(tmp_path, monkeypatch, data, redirect=True) as c:
        r = await c.get(f"/v2/r/x/blobs/{digest}", headers={
            "Range": "bytes=5-9",
            "If-Range": f'"{digest}"' if if_range else '"sha256:' + "0" * 64 + '"'})
        if redirected:
            assert r.status_code == 307
        else:
            assert r.status_code == 200
            assert r.content == data
