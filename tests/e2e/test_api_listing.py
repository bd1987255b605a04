"""OCI distribution-spec: the base endpoint, tag lists, the catalog, repository names,
unknown routes and methods, and the error envelope.

Invalid names are sent with http.client so that nothing on the client side normalises
`..`, `//` or `%2F` before the server sees them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.support.authenv import write_config
from tests.support.clients import Skopeo
from tests.support.oci_api import (
    assert_error,
    assert_raw_error,
    digest_of,
    image_manifest,
    new_repo,
    push_image,
    put_manifest,
    raw_request,
)
from tests.support.servers import Server, start_dockyard

LINK = re.compile(r'<([^>]+)>;\s*rel="?next"?')


@pytest.fixture
def client(registry: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        yield c


def _next(resp: httpx.Response) -> str | None:
    link = resp.headers.get("link")
    if link is None:
        return None
    m = LINK.search(link)
    assert m, link
    return m.group(1)


def _walk(client: httpx.Client, url: str) -> tuple[list[list[str]], list[str]]:
    """Follow `Link: <...>; rel="next"` from `url`; the pages and the links followed."""
    pages: list[list[str]] = []
    links: list[str] = []
    key = "repositories" if "/_catalog" in url else "tags"
    while True:
        resp = client.get(url)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].split(";")[0] == "application/json"
        pages.append(resp.json()[key])
        link = _next(resp)
        if link is None:
            return pages, links
        links.append(link)
        url = urljoin(str(resp.url), link)
        assert len(pages) < 100, "pagination does not end"


# --- base -----------------------------------------------------------------------------


def test_base(client: httpx.Client) -> None:
    resp = client.get("/v2/")
    assert resp.status_code == 200
    assert resp.headers["docker-distribution-api-version"] == "registry/2.0"
    if resp.content:
        resp.json()
    head = client.head("/v2/")
    assert head.status_code == 200
    assert head.headers["docker-distribution-api-version"] == "registry/2.0"


# --- tags -----------------------------------------------------------------------------

TAGS = ["latest", "v1.0", "v1.10", "v1.2", "V2", "_hidden", "a-b", "a.b", "a_b", "A", "Z",
        "0", "9", "b"]


@pytest.fixture
def tagged(client: httpx.Client, repo: str) -> str:
    built = image_manifest(client, repo)
    for tag in TAGS:
        resp = put_manifest(client, repo, tag, built.payload, built.media_type)
        assert resp.status_code == 201, resp.text
    return repo


def test_tags_list_sorted(client: httpx.Client, tagged: str) -> None:
    resp = client.get(f"/v2/{tagged}/tags/list")
    assert resp.status_code == 200
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    assert resp.json() == {"name": tagged, "tags": sorted(TAGS)}
    assert "link" not in resp.headers


@pytest.mark.parametrize("n", [1, 3, 5, len(TAGS) - 1])
def test_tags_list_pagination(client: httpx.Client, tagged: str, n: int) -> None:
    pages, links = _walk(client, f"/v2/{tagged}/tags/list?n={n}")
    assert [tag for page in pages for tag in page] == sorted(TAGS)
    assert all(len(page) == n for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= n
    for link in links:
        url = httpx.URL(urljoin("http://host/", link))
        assert url.path == f"/v2/{tagged}/tags/list"
        assert url.params["n"] == str(n)
        assert url.params["last"]


def test_tags_list_n_equal_to_count_has_no_link(client: httpx.Client, tagged: str) -> None:
    resp = client.get(f"/v2/{tagged}/tags/list", params={"n": len(TAGS)})
    assert resp.json()["tags"] == sorted(TAGS)
    # a final page may still carry a Link; following it must give an empty page
    link = _next(resp)
    if link is not None:
        assert client.get(urljoin(str(resp.url), link)).json()["tags"] in ([], None)


def test_tags_list_last(client: httpx.Client, tagged: str) -> None:
    after = sorted(TAGS)[4]
    resp = client.get(f"/v2/{tagged}/tags/list", params={"last": after})
    assert resp.status_code == 200
    assert resp.json()["tags"] == sorted(TAGS)[5:]
    resp = client.get(f"/v2/{tagged}/tags/list", params={"n": 2, "last": after})
    assert resp.json()["tags"] == sorted(TAGS)[5:7]
    assert _next(resp) is not None
    # `last` need not be an existing tag
    resp = client.get(f"/v2/{tagged}/tags/list", params={"last": "v1.1"})
    assert resp.json()["tags"] == [t for t in sorted(TAGS) if t > "v1.1"]
    resp = client.get(f"/v2/{tagged}/tags/list", params={"last": "zzz"})
    assert resp.json()["tags"] in ([], None)


def test_tags_list_n_zero(client: httpx.Client, tagged: str) -> None:
    resp = client.get(f"/v2/{tagged}/tags/list", params={"n": 0})
    assert resp.status_code == 200
    assert resp.json()["tags"] in ([], None)


@pytest.mark.parametrize("n", ["-1", "abc"])
def test_tags_list_bad_n(client: httpx.Client, tagged: str, n: str) -> None:
    assert_error(client.get(f"/v2/{tagged}/tags/list", params={"n": n}), 400)


@pytest.mark.parametrize("n", ["1_0", " 1", "1 ", "+1", "\uff11", "\u0661"])
def test_n_is_ascii_digits_only(client: httpx.Client, tagged: str, n: str) -> None:
    """What Python's int() takes besides ASCII digits is no `n` (tags and catalog)."""
    for path in (f"/v2/{tagged}/tags/list", "/v2/_catalog"):
        assert_error(client.get(path, params={"n": n}), 400, "PAGINATION_NUMBER_INVALID")


def test_n_of_many_digits_is_the_largest_page(client: httpx.Client, tagged: str) -> None:
    """Digits past any page size (more than Python converts) ask for the largest page."""
    resp = client.get(f"/v2/{tagged}/tags/list", params={"n": "9" * 5000})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["tags"] == sorted(TAGS)
    resp = client.get(f"/v2/{tagged}/tags/list", params={"n": "0" * 5000 + "2"})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["tags"] == sorted(TAGS)[:2]


def test_tags_list_unknown_repository(client: httpx.Client) -> None:
    assert_error(client.get(f"/v2/{new_repo()}/tags/list"), 404, "NAME_UNKNOWN")


def test_tags_list_after_deleting_every_tag(client: httpx.Client, repo: str) -> None:
    built = push_image(client, repo, "only")
    assert client.delete(f"/v2/{repo}/manifests/{built.digest}").status_code == 202
    resp = client.get(f"/v2/{repo}/tags/list")
    assert resp.status_code in (200, 404)
    if resp.status_code == 200:
        assert resp.json()["tags"] in ([], None)


# --- catalog --------------------------------------------------------------------------

REPOS = ["b/x", "a", "a/b", "a-b", "a.b", "a_b", "z9", "a/b/c", "0", "a__b", "b"]


@pytest.fixture
def catalog_client(fresh_dockyard: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fresh_dockyard.url, timeout=60) as c:
        for name in REPOS:
            push_image(c, name, "latest")
        yield c


def test_catalog_sorted(catalog_client: httpx.Client) -> None:
    resp = catalog_client.get("/v2/_catalog")
    assert resp.status_code == 200
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    assert resp.json() == {"repositories": sorted(REPOS)}
    assert "link" not in resp.headers


def test_catalog_pagination(catalog_client: httpx.Client) -> None:
    for n in (1, 2, 4, len(REPOS) - 1):
        pages, links = _walk(catalog_client, f"/v2/_catalog?n={n}")
        assert [r for page in pages for r in page] == sorted(REPOS), n
        assert all(len(page) == n for page in pages[:-1])
        for link in links:
            url = httpx.URL(urljoin("http://host/", link))
            assert url.path == "/v2/_catalog"
            assert url.params["n"] == str(n)
    resp = catalog_client.get("/v2/_catalog", params={"n": 3, "last": "a/b"})
    assert resp.json()["repositories"] == sorted(REPOS)[sorted(REPOS).index("a/b") + 1:][:3]


def test_catalog_empty(fresh_dockyard: Server) -> None:
    resp = httpx.get(fresh_dockyard.url + "/v2/_catalog")
    assert resp.status_code == 200
    assert resp.json()["repositories"] in ([], None)


# --- repository names -----------------------------------------------------------------

BAD_NAMES = [
    "Upper",
    "lib/Upper",
    "a/../b",
    "..",
    "a/./b",
    "a//b",
    "/a",
    # percent-encoded: decoded, then held to the grammar like any name
    "a%2F%2Fb",
    "a%2f..%2fb",
    "a%2Fb%2F",
    "%41",
    "-a",
    "a-",
    "a.",
    "a/.b",
    "a___b",
    "a%20b",
    "a" * 256,
    "/".join(["abcdefghij"] * 24),  # 263 characters
]

ENDPOINTS = [
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/manifests/latest"),
    ("HEAD", "/v2/{name}/manifests/latest"),
    ("PUT", "/v2/{name}/manifests/latest"),
    ("DELETE", "/v2/{name}/manifests/latest"),
    ("GET", "/v2/{name}/blobs/" + digest_of(b"x")),
    ("DELETE", "/v2/{name}/blobs/" + digest_of(b"x")),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("GET", "/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000"),
    ("GET", "/v2/{name}/referrers/" + digest_of(b"x")),
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: n[:20])
def test_name_invalid(registry: Server, name: str) -> None:
    resp = raw_request(registry.port, "GET", f"/v2/{name}/tags/list")
    assert_raw_error(resp, 400, "NAME_INVALID")


@pytest.mark.parametrize(("method", "template"), ENDPOINTS, ids=lambda x: str(x)[:40])
def test_name_invalid_on_every_endpoint(registry: Server, method: str, template: str) -> None:
    for name in ("Upper", "a/../b", "a//b", "a%2F%2Fb", "a" * 256):
        body = b"{}" if method in ("PUT", "POST") else None
        resp = raw_request(registry.port, method, template.format(name=name), body=body)
        if method == "HEAD":
            assert resp.status == 400, (name, resp.status)
            assert resp.body == b""
        else:
            assert_raw_error(resp, 400, "NAME_INVALID")


@pytest.mark.parametrize("name", [
    "a", "0", "a__b", "a---b", "a.b_c/d-e", "x/y/z/w", "a" * 255,
    "/".join(["abcdefghi"] * 25) + "abcde",  # 255 characters, many components
], ids=lambda n: n[:20])
def test_valid_names(registry: Server, name: str) -> None:
    assert len(name) <= 255
    resp = raw_request(registry.port, "GET", f"/v2/{name}/tags/list")
    assert_raw_error(resp, 404, "NAME_UNKNOWN")


def test_encoded_slash_in_a_name_is_a_slash(registry: Server, client: httpx.Client,
                                            repo: str) -> None:
    """Distribution matches the decoded path: `a%2Fb` names the repository `a/b`."""
    built = push_image(client, repo, "v1")
    for encoded in (repo.replace("/", "%2F"), repo.replace("/", "%2f")):
        resp = raw_request(registry.port, "GET", f"/v2/{encoded}/tags/list")
        assert resp.status == 200, resp.body[:500]
        assert resp.json() == {"name": repo, "tags": ["v1"]}
        resp = raw_request(registry.port, "GET", f"/v2/{encoded}/manifests/v1")
        assert resp.status == 200, resp.body[:500]
        assert resp.body == built.payload
    # an encoded `/` stays inside its group: `manifests%2Fv1` names no manifest
    resp = raw_request(registry.port, "GET", f"/v2/{repo}/manifests%2Fv1")
    assert 400 <= resp.status < 500, resp.status
    assert_raw_error(resp, resp.status)


def test_push_to_valid_unusual_name(client: httpx.Client) -> None:
    name = f"a__b---c.d_e/{new_repo()}"
    built = push_image(client, name, "t")
    assert client.get(f"/v2/{name}/manifests/t").content == built.payload


# --- routes, methods and the error envelope -------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/v2/"),
    ("DELETE", "/v2/"),
    ("POST", "/v2/_catalog"),
    ("DELETE", "/v2/x/tags/list"),
    ("POST", "/v2/x/manifests/latest"),
    ("PATCH", "/v2/x/manifests/latest"),
    ("PATCH", "/v2/x/blobs/" + digest_of(b"x")),
    ("PUT", "/v2/x/blobs/" + digest_of(b"x")),
    ("POST", "/v2/x/blobs/uploads/00000000-0000-0000-0000-000000000000"),
    ("PUT", "/v2/x/referrers/" + digest_of(b"x")),
])
def test_unsupported_method(registry: Server, method: str, path: str) -> None:
    resp = raw_request(registry.port, method, path, body=b"")
    assert_raw_error(resp, 405, "UNSUPPORTED")


@pytest.mark.parametrize("path", [
    "/v2/x/nothing/here",
    "/v2/x/manifests/",
    "/v2/x/blobs/",
    "/v2/x/tags/",
    "/v2/_catalog/extra",
])
def test_unknown_route(registry: Server, path: str) -> None:
    resp = raw_request(registry.port, "GET", path)
    assert 400 <= resp.status < 500, resp.status
    assert_raw_error(resp, resp.status)


def test_error_envelope_and_api_version_header(client: httpx.Client) -> None:
    resp = client.get(f"/v2/{new_repo()}/manifests/latest")
    assert resp.status_code == 404
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    doc = resp.json()
    assert set(doc) == {"errors"}
    assert len(doc["errors"]) >= 1
    entry = doc["errors"][0]
    assert {"code", "message"} <= set(entry) <= {"code", "message", "detail"}
    assert entry["code"] == entry["code"].upper()
    assert entry["message"]
    assert resp.headers["docker-distribution-api-version"] == "registry/2.0"


# --- a listing without n --------------------------------------------------------------

SMALL_PAGE = 3


@pytest.fixture(scope="module")
def small_pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A registry whose `limits.tags_page_max` is 3, holding 14 tags and 7 repositories."""
    tmp = tmp_path_factory.mktemp("small-pages")
    config = write_config(tmp / "config.yml", limits={"tags_page_max": SMALL_PAGE})
    server = start_dockyard(tmp / "data", config=config)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        built = image_manifest(c, "paged/tags")
        for tag in TAGS:
            resp = put_manifest(c, "paged/tags", tag, built.payload, built.media_type)
            assert resp.status_code == 201, resp.text
        for name in ("paged/a", "paged/b", "paged/c", "paged/d", "paged/e", "paged/f"):
            push_image(c, name, "latest")
    yield server
    server.stop()


@pytest.mark.parametrize(("path", "key", "want"), [
    ("/v2/paged/tags/tags/list", "tags", sorted(TAGS)),
    ("/v2/_catalog", "repositories",
     ["paged/a", "paged/b", "paged/c", "paged/d", "paged/e", "paged/f", "paged/tags"]),
])
def test_a_listing_without_n_is_one_page_of_the_largest_size(
        small_pages: Server, path: str, key: str, want: list[str]) -> None:
    """Without `n` a tags list or the catalog answered every name at once, whatever
    `limits.tags_page_max` said: now a page of that size, and `Link` to the next."""
    with httpx.Client(base_url=small_pages.url, timeout=60) as c:
        first = c.get(path)
        assert first.status_code == 200, first.text
        assert first.json()[key] == want[:SMALL_PAGE]
        assert _next(first) is not None
        pages, _links = _walk(c, path)
    assert [name for page in pages for name in page] == want
    assert all(len(page) == SMALL_PAGE for page in pages[:-1])


def test_skopeo_lists_every_tag_through_the_pages(small_pages: Server, tmp_path: Path) -> None:
    """A real client follows the pages a listing without `n` now answers."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (make test installs it)")
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[small_pages.host])
    assert skopeo.list_tags(f"docker://{small_pages.host}/paged/tags") == sorted(TAGS)
