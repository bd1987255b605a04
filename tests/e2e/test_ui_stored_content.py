"""The web UI shows whatever a push stored, and reads any form body, without a 500.

A real `dockyard serve` (no auth), content pushed over HTTP that the registry accepts
but that used to break a page for every visitor: JSON strings that are lone surrogates
(valid JSON escapes, not valid UTF-8), a layer whose tar header holds a base-256 mode
and a file name that is not UTF-8, an SBOM whose `licenses` is a number, a config blob
nested past Python's recursion limit; a layer whose file was removed under the storage
tree; and a login form posted as multipart with a part encoding no browser sends.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import httpx
import pytest

from tests.support.oci_api import descriptor, digest_of, image_manifest, push_blob, put_manifest
from tests.support.servers import Server, start_dockyard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LONE = "\ud800"
"""A lone surrogate: `json.dumps` writes it as the escape `\\ud800`, which JSON allows."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_dockyard(tmp_path_factory.mktemp("ui-content") / "data")
    yield s
    s.stop()
    assert "Traceback" not in s.log.read_text(errors="replace")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def page(client: httpx.Client, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r.text


def test_lone_surrogates_in_a_manifest_are_shown_replaced(client: httpx.Client) -> None:
    built = image_manifest(client, "odd/text", extra={"annotations": {
        "org.opencontainers.image.source": LONE, "note": f"a{LONE}b"}})
    assert b"\\ud800" in built.payload
    assert put_manifest(client, "odd/text", "v1", built.payload, OCI_MANIFEST).status_code == 201
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": built.digest, "size": len(built.payload),
        "platform": {"os": LONE, "architecture": "amd64"}}]}).encode()
    assert put_manifest(client, "odd/text", "multi", index, OCI_INDEX).status_code == 201
    assert "a\ufffdb" in page(client, "/ui/r/odd/text/-/tags/v1")
    page(client, "/ui/r/odd/text")
    page(client, "/ui/r/odd/text/-/tags/multi")


def odd_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        info = tarfile.TarInfo("negative-mode")
        info.mode = -1  # written in base-256
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
        latin = tarfile.TarInfo("caf\udce9.txt")  # the Latin-1 bytes caf\xe9.txt
        latin.size = 2
        tar.addfile(latin, io.BytesIO(b"y\n"))
    return out.getvalue()


def test_a_layer_with_a_base256_mode_and_a_latin1_name_is_listed(
        client: httpx.Client) -> None:
    layer = odd_layer()
    digest = push_blob(client, "odd/layer", layer)
    built = image_manifest(client, "odd/layer", extra={"layers": [
        descriptor("application/vnd.oci.image.layer.v1.tar", layer)]})
    assert put_manifest(client, "odd/layer", "v1", built.payload, OCI_MANIFEST).status_code == 201
    text = page(client, f"/ui/r/odd/layer/-/blobs/{digest}")
    assert "negative-mode" in text
    assert "caf\ufffd.txt" in text


def test_a_layer_whose_bytes_were_removed_is_said_missing_not_a_500(
        server: Server, client: httpx.Client) -> None:
    """Its file removed by hand under the storage tree (what the old setup's `rm -r`
    did): the layer page says so, without the path, where it answered 500."""
    layer = odd_layer() + b"\0" * 1024  # a blob of its own
    digest = push_blob(client, "odd/removed", layer)
    built = image_manifest(client, "odd/removed", extra={"layers": [
        descriptor("application/vnd.oci.image.layer.v1.tar", layer)]})
    assert put_manifest(client, "odd/removed", "v1", built.payload,
                        OCI_MANIFEST).status_code == 201
    hexa = digest.removeprefix("sha256:")
    (server.data / "blobs" / "sha256" / hexa[:2] / hexa / "data").unlink()
    text = page(client, f"/ui/r/odd/removed/-/blobs/{digest}")
    assert "they are missing from storage" in text
    assert str(server.data) not in text


def test_an_sbom_with_odd_licenses_and_a_config_nested_too_deep_still_show(
        client: httpx.Client) -> None:
    sbom = json.dumps({"spdxVersion": "SPDX-2.3", "packages": [
        {"name": "numbered", "versionInfo": "1", "licenses": 1},
        {"name": "flagged", "versionInfo": "2", "licenses": True}]}).encode()
    empty = b"{}"
    push_blob(client, "odd/sbom", empty)
    push_blob(client, "odd/sbom", sbom)
    doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "artifactType": "application/spdx+json",
                      "config": descriptor("application/vnd.oci.empty.v1+json", empty),
                      "layers": [descriptor("application/spdx+json", sbom)]}).encode()
    assert put_manifest(client, "odd/sbom", "sbom", doc, OCI_MANIFEST).status_code == 201
    text = page(client, "/ui/r/odd/sbom/-/tags/sbom")
    assert "numbered" in text
    assert "flagged" in text
    deep = b"[" * 200_000 + b"]" * 200_000  # valid JSON, deeper than the recursion limit
    built = image_manifest(client, "odd/deep", config=deep)
    assert put_manifest(client, "odd/deep", "v1", built.payload, OCI_MANIFEST).status_code == 201
    page(client, "/ui/r/odd/deep/-/tags/v1")
    page(client, f"/ui/r/odd/deep/-/manifests/{digest_of(built.payload)}")


def test_a_multipart_login_no_browser_sends_is_400(client: httpx.Client) -> None:
    body = (b"--X\r\nContent-Disposition: form-data; name=\"username\"\r\n"
            b"Content-Transfer-Encoding: x-foo\r\n\r\nadmin\r\n--X--\r\n")
    r = client.post("/ui/login", content=body,
                    headers={"Content-Type": "multipart/form-data; boundary=X"})
    assert r.status_code == 400, r.text[:300]


def test_the_pages_stay_whole_after_all_that(client: httpx.Client) -> None:
    for path in ("/ui/", "/ui/repositories", "/ui/search?q=odd"):
        page(client, path)
