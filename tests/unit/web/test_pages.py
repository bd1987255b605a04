"""The repository list's paging and sorting, in-process on a real socket (no auth)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from dockyard.web import views
from dockyard.web.app import install_ui
from tests.support.mediatypes import OCI_CONFIG, OCI_MANIFEST


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(views, "PER_PAGE", 2)
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    app = create_app(settings)
    install_ui(app, settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url("")).rstrip("/")) as c:
        yield c
    await server.close()


async def _push(client: httpx.AsyncClient, repo: str, tags: int) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                          content=config)
    assert r.status_code == 201
    for t in range(tags):
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
               "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
               "annotations": {"t": str(t)}}
        r = await client.put(f"/v2/{repo}/manifests/t{t}", content=json.dumps(doc),
                             headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201


def _names(html: str) -> list[str]:
    return re.findall(r'<td><a href="/ui/r/[^"]+">([^<]+)</a></td>', html)


async def test_pages_and_sorts(client: httpx.AsyncClient) -> None:
    for repo, tags in (("a/one", 1), ("b/three", 3), ("c/two", 2)):
        await _push(client, repo, tags)
    first = await client.get("/ui/repositories")
    assert _names(first.text) == ["a/one", "b/three"]
    assert "Page 1 of 2" in first.text
    assert 'rel="next"' in first.text
    second = await client.get("/ui/repositories?page=2")
    assert _names(second.text) == ["c/two"]
    assert 'rel="prev"' in second.text
    by_tags = await client.get("/ui/repositories?sort=tags&order=desc")
    assert _names(by_tags.text) == ["b/three", "c/two"]
    assert 'aria-sort="descending"' in by_tags.text
    # out-of-range and malformed numbers land on a real page
    assert _names((await client.get("/ui/repositories?page=99")).text) == ["c/two"]
    assert _names((await client.get("/ui/repositories?page=x")).text) == ["a/one", "b/three"]
    assert _names((await client.get("/ui/repositories?q=*/t*")).text) == ["b/three", "c/two"]
    # globs as in the access rules: `*` within one component, `**` for any number
    assert _names((await client.get("/ui/repositories?q=*")).text) == []
    assert _names((await client.get("/ui/repositories?q=**/t*")).text) == ["b/three", "c/two"]
    hostile = "/".join(["**", "*a*a*a*a*"] * 12) + "/b"
    assert _names((await client.get("/ui/repositories", params={"q": hostile})).text) == []


def _tags(html: str) -> list[str]:
    return re.findall(r'<td><a href="/ui/r/[^"]+/-/tags/[^"]+">([^<]+)</a></td>', html)


async def test_a_repository_pages_its_tags(client: httpx.AsyncClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A repository with more tags than a page shows them a page at a time, counted
    in full; its delete confirmation names the first ones and counts the rest."""
    monkeypatch.setattr(views, "TAGS_PER_PAGE", 2)
    monkeypatch.setattr(views, "NAMED", 2)
    await _push(client, "many/tags", 5)  # t0..t4, by name
    first = await client.get("/ui/r/many/tags")
    assert _tags(first.text) == ["t0", "t1"]
    assert "(5; page 1 of 3)" in first.text
    assert 'href="?page=2" rel="next"' in first.text
    assert _tags((await client.get("/ui/r/many/tags?page=3")).text) == ["t4"]
    assert _tags((await client.get("/ui/r/many/tags?page=99")).text) == ["t4"]
    assert _tags((await client.get("/ui/r/many/tags?page=-1")).text) == ["t0", "t1"]
    huge = await client.get("/ui/r/many/tags", params={"page": "9" * 30})
    assert _tags(huge.text) == ["t4"]
    confirm = await client.get("/ui/r/many/tags/-/delete")
    assert "5 tags go with it" in confirm.text
    assert "<li>t0</li><li>t1</li><li>and 3 more</li>" in confirm.text


async def test_a_mirrored_tag_says_where_it_came_from(client: httpx.AsyncClient,
                                                      tmp_path: Path) -> None:
    """The sync's record of a tag's origin shows on the repository page; HTML in it is
    text."""
    from dockyard.backends import close_registry, open_registry
    from dockyard.metadata.mirrors import TagOrigin

    await _push(client, "mirror/app", 2)
    page = await client.get("/ui/r/mirror/app")
    assert "From</th>" not in page.text  # nothing mirrored: no column
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    other = await open_registry(settings)  # what `dockyard sync` records, as it does
    try:
        tag = await other.manifests.get("mirror/app", "t0", pull=False)
        await other.mirrors.set_origin(TagOrigin(
            "mirror/app", "t0", "app", "quay.io/org/<b>app</b>:t0", tag.digest, 1.0e9))
    finally:
        await close_registry(other)
    page = await client.get("/ui/r/mirror/app")
    assert "From</th>" in page.text
    assert "mirrored from" in page.text
    assert "quay.io/org/&lt;b&gt;app&lt;/b&gt;:t0" in page.text
    assert "<b>app</b>" not in page.text


def _referrers(html: str) -> tuple[list[str], str]:
    """The digests the image page's Referrers section links to, and its text."""
    section = html[html.index('id="ref-h"'):]
    section = section[:section.index("</section>")]
    return re.findall(r'/-/manifests/(sha256%3A[0-9a-f]+|sha256:[0-9a-f]+)"', section), section


async def test_the_image_page_lists_the_first_referrers_only(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone who may push can attach any number of artifacts to an image: its page
    lists the first ones (in the referrers API's order) and says there are more."""
    from dockyard.core import browse

    monkeypatch.setattr(browse, "REFERRERS_SHOWN", 2)
    await _push(client, "many/refs", 1)
    subject = await client.get("/v2/many/refs/manifests/t0", headers={"Accept": OCI_MANIFEST})
    config = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert (await client.post("/v2/many/refs/blobs/uploads/", params={"digest": config},
                              content=b"{}")).status_code == 201
    attached = []
    for n in range(3):
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "a/b",
               "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                          "digest": config, "size": 2}, "layers": [],
               "subject": {"mediaType": OCI_MANIFEST, "size": len(subject.content),
                           "digest": subject.headers["Docker-Content-Digest"]},
               "annotations": {"n": str(n)}}
        body = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        r = await client.put(f"/v2/many/refs/manifests/{digest}", content=body,
                             headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        attached.append(digest.replace(":", "%3A"))
        listed, text = _referrers((await client.get("/ui/r/many/refs/-/tags/t0")).text)
        assert listed == attached[:2]
        assert ("More artifacts refer to this manifest: the first 2 are listed" in text) == \
            (n == 2)
