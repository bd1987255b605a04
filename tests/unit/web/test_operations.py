"""The operations page shows a catalog holder only the names they may pull."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from dockyard.web.app import install_ui
from tests.support.authenv import write_htpasswd
from tests.support.mediatypes import OCI_CONFIG, OCI_MANIFEST

USERS = {"reader": ("reader-pw", []), "admin": ("admin-pw", ["admins"])}


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "auth.method": "htpasswd",
        "auth.htpasswd.path": str(write_htpasswd(tmp_path / "htpasswd", USERS)),
        "auth.access": [{"repository": "secret/**", "allow": {"group:admins": ["*"]}},
                        {"repository": "**", "allow": {"authenticated": ["pull"],
                                                       "group:admins": ["*"]}}],
        "auth.catalog": ["authenticated"]})
    app = create_app(settings)
    install_ui(app, settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def _push(client: httpx.AsyncClient, repo: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                          content=config)
    assert r.status_code == 201
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
           "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)}}
    r = await client.put(f"/v2/{repo}/manifests/v1", content=json.dumps(doc),
                         headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    r = await client.post(f"/v2/{repo}/blobs/uploads/")  # left open
    assert r.status_code == 202


async def test_operations_lists_only_pullable_names(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, auth=("admin", "admin-pw")) as admin:
        await _push(admin, "open/app")
        await _push(admin, "secret/app")
        page = (await admin.get("/ui/operations")).text
        assert page.count("secret/app") == 2  # the largest repositories, the uploads
    async with httpx.AsyncClient(base_url=base, auth=("reader", "reader-pw")) as reader:
        r = await reader.get("/ui/operations")
        assert r.status_code == 200  # `auth.catalog: [authenticated]`
        assert "open/app" in r.text
        assert "secret/app" not in r.text
        assert "Operations</a>" in r.text
    async with httpx.AsyncClient(base_url=base) as anonymous:
        home = await anonymous.get("/ui/")
        assert "Operations</a>" not in home.text


async def test_operations_shows_the_last_sync_of_each_mirror_source(
        base: str, tmp_path: Path) -> None:
    from dockyard.backends import close_registry, open_registry
    from dockyard.core.mirrors import MirrorRun

    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    other = await open_registry(settings)  # what `dockyard sync` records, as it does
    try:
        for at, status, report in (
                (1.0e9, "failed", {"error": "upstream <down>", "added": []}),
                (1.1e9, "ok", {"added": ["v1", "v2"], "updated": ["latest"], "failed": {}}),
                (1.0e9, "partial", {"added": [], "failed": {"v3": "bad manifest"}})):
            source = "nginx" if status != "partial" else "redis"
            await other.mirrors.add_run(MirrorRun(source, at - 5, at, status,
                                                  json.dumps(report)), 20)
    finally:
        await close_registry(other)
    async with httpx.AsyncClient(base_url=base, auth=("admin", "admin-pw")) as admin:
        page = (await admin.get("/ui/operations")).text
    assert "Mirror syncs" in page
    rows = page.split("Mirror syncs", 1)[1].split("</table>", 1)[0]
    assert rows.count("<tr>") == 3  # the header and one row per source
    nginx = rows.split(">nginx<", 1)[1].split("</tr>", 1)[0]
    assert "<td>ok" in nginx  # the newest run of the source
    assert "upstream &lt;down&gt;" not in rows  # an older run
    redis = rows.split(">redis<", 1)[1].split("</tr>", 1)[0]
    assert "partial" in redis
    assert '<td class="num">1</td>' in redis  # one tag failed


async def test_the_repository_page_says_who_pushed_each_tag(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, auth=("admin", "admin-pw")) as admin:
        await _push(admin, "open/pushed")
        page = (await admin.get("/ui/r/open/pushed")).text
    assert 'by <span class="name">admin</span>' in page
    async with httpx.AsyncClient(base_url=base, auth=("reader", "reader-pw")) as reader:
        page = (await reader.get("/ui/r/open/pushed")).text  # whoever may pull sees it
    assert 'by <span class="name">admin</span>' in page
