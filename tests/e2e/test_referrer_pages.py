"""The referrers API a page at a time, from a real `dockyard serve` whose page holds 3
descriptors (`limits.referrers_page_size`), over a real socket.

A subject with more referrers than a page: every page holds at most the page size, the
`Link: <...>; rel="next"` chain visits every referrer exactly once in one order, an
`artifactType` filter holds across pages (the Link keeps it, every page says
`OCI-Filters-Applied`), a `last` cursor the registry did not make is a 400 with an OCI
error body, and `dockyard copy --referrers` from that registry to another brings them all.
Before the pages, every referrer came in one answer however many there were.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.e2e.test_copy_referrer_pages import dockyard_copy
from tests.support.mediatypes import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from tests.support.oci_api import (
    Pushed,
    assert_error,
    canonical,
    digest_of,
    new_repo,
    push_blob,
    push_image,
    put_manifest,
)
from tests.support.servers import Server, start_dockyard

PAGE = 3
SIG = "application/vnd.example.signature.v1"
SBOM = "application/spdx+json"
NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Dockyard whose referrers API answers pages of PAGE descriptors."""
    server = start_dockyard(tmp_path_factory.mktemp("referrer-pages") / "data",
                            env={"DOCKYARD_LIMITS_REFERRERS_PAGE_SIZE": str(PAGE)})
    yield server
    server.stop()


@pytest.fixture
def api(paged: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=paged.url, timeout=30) as client:
        yield client


def attach(client: httpx.Client, repo: str, subject: Pushed, kinds: list[str]
           ) -> list[str]:
    """Push one artifact per entry of `kinds` (its artifactType) with `subject` as its
    subject, in that order; their digests."""
    push_blob(client, repo, b"{}")
    empty = {"mediaType": OCI_EMPTY, "digest": digest_of(b"{}"), "size": 2}
    pushed = []
    for n, kind in enumerate(kinds):
        payload = canonical({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": empty, "layers": [empty],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                        "size": subject.size},
            "annotations": {"org.example.n": str(n)}})
        resp = put_manifest(client, repo, digest_of(payload), payload, OCI_MANIFEST)
        assert resp.status_code == 201, resp.text
        assert resp.headers.get("OCI-Subject") == subject.digest
        pushed.append(digest_of(payload))
    return pushed


def walk(client: httpx.Client, path: str) -> list[httpx.Response]:
    """Every page of a referrers listing, from `path` along the `rel="next"` links."""
    pages: list[httpx.Response] = []
    url: str | None = path
    while url is not None:
        assert len(pages) < 100, "the links do not end"
        resp = client.get(url)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].split(";")[0] == OCI_INDEX
        pages.append(resp)
        link = resp.headers.get("Link")
        url = None
        if link is not None:
            match = NEXT.fullmatch(link)
            assert match is not None, link
            url = match[1]
    return pages


def descriptors(pages: list[httpx.Response]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in pages:
        doc = page.json()
        assert doc["schemaVersion"] == 2, doc
        assert doc["mediaType"] == OCI_INDEX, doc
        out += doc["manifests"]
    return out


@pytest.fixture
def subject(api: httpx.Client) -> tuple[str, Pushed, list[str], list[str]]:
    """A tagged image with 11 artifacts attached (7 signatures, 4 SBOMs, interleaved):
    (repository, image, the digests in push order, their kinds)."""
    repo = new_repo("pages")
    image = push_image(api, repo, "v1")
    kinds = [SIG, SBOM, SIG, SIG, SBOM, SIG, SIG, SBOM, SIG, SBOM, SIG]
    return repo, image, attach(api, repo, image, kinds), kinds


def test_the_links_visit_every_referrer_once_a_page_at_a_time(
        api: httpx.Client, subject: tuple[str, Pushed, list[str], list[str]]) -> None:
    repo, image, pushed, kinds = subject
    pages = walk(api, f"/v2/{repo}/referrers/{image.digest}")
    sizes = [len(p.json()["manifests"]) for p in pages]
    assert sizes == [3, 3, 3, 2]  # 11 referrers, at most PAGE a page, only the last short
    assert "Link" not in pages[-1].headers
    found = descriptors(pages)
    # each once, oldest first, as pushed
    assert [d["digest"] for d in found] == pushed
    assert [d["artifactType"] for d in found] == kinds
    assert [d["annotations"]["org.example.n"] for d in found] == [str(n) for n in range(11)]
    for page in pages:
        assert "OCI-Filters-Applied" not in page.headers
    # the next page starts past the last one's position, so a referrer pushed while a
    # client pages shows up once, on the last page
    later = attach(api, repo, image, [SBOM])
    again = descriptors(walk(api, f"/v2/{repo}/referrers/{image.digest}"))
    assert [d["digest"] for d in again] == pushed + later


def test_an_artifact_type_filter_holds_across_pages(
        api: httpx.Client, subject: tuple[str, Pushed, list[str], list[str]]) -> None:
    repo, image, pushed, kinds = subject
    pages = walk(api, f"/v2/{repo}/referrers/{image.digest}?artifactType={SIG}")
    assert [len(p.json()["manifests"]) for p in pages] == [3, 3, 1]
    for page in pages:
        assert page.headers.get("OCI-Filters-Applied") == "artifactType"
    for page in pages[:-1]:
        link = NEXT.fullmatch(page.headers["Link"])
        assert link is not None
        target = urlsplit(link[1])
        assert target.path == f"/v2/{repo}/referrers/{image.digest}"
        assert parse_qs(target.query)["artifactType"] == [SIG]
    found = descriptors(pages)
    assert [d["digest"] for d in found] == [d for d, k in zip(pushed, kinds, strict=True)
                                            if k == SIG]
    assert {d["artifactType"] for d in found} == {SIG}
    # a type with a `+` (`application/spdx+json`): the Link must keep it encoded
    pages = walk(api, f"/v2/{repo}/referrers/{image.digest}?{urlencode({'artifactType': SBOM})}")
    assert [len(p.json()["manifests"]) for p in pages] == [3, 1]
    assert [d["digest"] for d in descriptors(pages)] == [
        d for d, k in zip(pushed, kinds, strict=True) if k == SBOM]


def test_a_cursor_the_registry_did_not_make_is_a_400(
        api: httpx.Client, subject: tuple[str, Pushed, list[str], list[str]]) -> None:
    repo, image, _, _ = subject
    path = f"/v2/{repo}/referrers/{image.digest}"
    first = api.get(path)
    link = NEXT.fullmatch(first.headers["Link"])
    assert link is not None
    cursor = parse_qs(urlsplit(link[1]).query)["last"][0]
    for bad in ("x", "1", cursor + "0" * 11, "41D0000000000000.1", cursor.replace(".", ":"),
                "7ff8000000000000.1",  # NaN
                "7ff0000000000000.1",  # infinity
                "41d0000000000000.2147483648",  # an id past a 32-bit INTEGER
                "41d0000000000000.-1", "41d0000000000000.+1", " " + cursor, cursor + "\x00",
                "\x00", "é" * 40, "f" * 4000, cursor + "&last=x"):
        resp = api.get(path, params={"last": bad})
        assert_error(resp, 400, "PAGINATION_NUMBER_INVALID")
        assert resp.json()["errors"][0]["detail"] == {"last": bad[:100]}
    # a well-formed cursor past every referrer: an empty index and no Link
    past = api.get(path, params={"last": "7fefffffffffffff.2147483647"})
    assert past.status_code == 200, past.text
    assert past.json()["manifests"] == []
    assert "Link" not in past.headers
    # the page a cursor names does not depend on the filter it came with
    page = api.get(path, params={"last": cursor, "artifactType": SBOM})
    assert page.status_code == 200
    assert page.headers.get("OCI-Filters-Applied") == "artifactType"


def test_copy_brings_every_page_of_referrers(
        paged: Server, dockyard: Server, api: httpx.Client,
        subject: tuple[str, Pushed, list[str], list[str]]) -> None:
    repo, image, pushed, _ = subject
    code, out = asyncio.run(dockyard_copy("--referrers", f"{paged.host}/{repo}:v1",
                                          f"{dockyard.host}/{repo}:v1"))
    assert code == 0, out
    assert f"{len(pushed)} referrer(s)" in out, out
    pages = walk(api, f"/v2/{repo}/referrers/{image.digest}")
    assert len(pages) == 4  # the source answers in pages: the copy followed them
    source = descriptors(pages)
    with httpx.Client(base_url=dockyard.url, timeout=30) as dest:
        copied = descriptors(walk(dest, f"/v2/{repo}/referrers/{image.digest}"))
        for d in pushed:
            resp = dest.get(f"/v2/{repo}/manifests/{d}", headers={"Accept": OCI_MANIFEST})
            assert resp.status_code == 200
            assert resp.content == api.get(f"/v2/{repo}/manifests/{d}", headers={
                "Accept": OCI_MANIFEST}).content
    assert len(source) == len(pushed)
    assert sorted(copied, key=lambda d: d["digest"]) == sorted(source,
                                                                 key=lambda d: d["digest"])
