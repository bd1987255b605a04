"""OCI distribution-spec: manifest push/pull/delete, content negotiation and referrers.

Covers OCI image manifests and indexes, Docker schema 2 manifests and manifest lists,
artifacts (artifactType, custom config media types), the `subject` field with the
OCI-Subject header and the referrers API, and every manifest error code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)
from tests.support.oci_api import (
    EMPTY_JSON,
    SKOPEO_ACCEPT,
    Pushed,
    assert_error,
    blob_bytes,
    canonical,
    descriptor,
    digest_of,
    image_manifest,
    index_of,
    new_repo,
    push_blob,
    push_image,
    put_manifest,
    raw_request,
)
from tests.support.servers import Server

ARTIFACT_CONFIG = "application/vnd.example.config.v1+json"
SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


@pytest.fixture
def client(registry: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        yield c


@pytest.fixture
def oci11(registry: Server) -> None:
    """Skip on registries older than distribution-spec 1.1 (referrers, OCI-Subject)."""
    if registry.name != "dockyard":
        pytest.skip(f"{registry.name} predates distribution-spec 1.1")


def _assert_served(client: httpx.Client, repo: str, reference: str, pushed: Pushed) -> None:
    """GET and HEAD of `reference` answer with `pushed`, byte for byte, and its headers."""
    resp = client.get(f"/v2/{repo}/manifests/{reference}",
                      headers={"Accept": pushed.media_type})
    assert resp.status_code == 200, resp.text
    assert resp.content == pushed.payload
    assert resp.headers["content-type"] == pushed.media_type
    assert resp.headers["docker-content-digest"] == pushed.digest
    assert resp.headers["content-length"] == str(pushed.size)
    assert pushed.digest in resp.headers["etag"]

    head = client.head(f"/v2/{repo}/manifests/{reference}",
                       headers={"Accept": pushed.media_type})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == pushed.media_type
    assert head.headers["docker-content-digest"] == pushed.digest
    assert head.headers["content-length"] == str(pushed.size)


def _artifact(client: httpx.Client, repo: str, *, artifact_type: str | None = SBOM,
              subject: Pushed | None = None, config_type: str = OCI_EMPTY,
              annotations: dict[str, str] | None = None) -> Pushed:
    """Build (not push) an artifact manifest; its blobs are pushed to `repo`."""
    push_blob(client, repo, EMPTY_JSON)
    layer = blob_bytes(200)
    push_blob(client, repo, layer)
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, EMPTY_JSON),
        "layers": [descriptor("application/vnd.example.data.v1", layer)],
    }
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if subject is not None:
        doc["subject"] = {"mediaType": subject.media_type, "digest": subject.digest,
                          "size": subject.size}
    if annotations:
        doc["annotations"] = annotations
    payload = canonical(doc)
    return Pushed(payload, digest_of(payload), OCI_MANIFEST)


# --- push and pull --------------------------------------------------------------------


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_image_manifest_by_tag(client: httpx.Client, repo: str, docker: bool) -> None:
    built = image_manifest(client, repo, docker=docker, layers=2)
    resp = put_manifest(client, repo, "v1", built.payload, built.media_type)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == built.digest
    assert resp.headers["location"].endswith(f"/v2/{repo}/manifests/{built.digest}")
    _assert_served(client, repo, "v1", built)
    _assert_served(client, repo, built.digest, built)


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_image_manifest_by_digest(client: httpx.Client, repo: str, docker: bool) -> None:
    built = image_manifest(client, repo, docker=docker)
    resp = put_manifest(client, repo, built.digest, built.payload, built.media_type)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == built.digest
    assert resp.headers["location"].endswith(f"/v2/{repo}/manifests/{built.digest}")
    _assert_served(client, repo, built.digest, built)


def test_manifest_digest_with_encoded_colon(registry: Server, client: httpx.Client,
                                            repo: str) -> None:
    """`manifests/sha256%3A<hex>` is the digest, not a tag: PUT, GET, HEAD, DELETE."""
    built = image_manifest(client, repo)
    path = f"/v2/{repo}/manifests/{built.digest.replace(':', '%3A')}"
    put = raw_request(registry.port, "PUT", path, body=built.payload,
                      headers={"Content-Type": built.media_type})
    assert put.status == 201, put.body[:500]
    assert put.headers["Docker-Content-Digest"] == built.digest
    got = raw_request(registry.port, "GET", path, headers={"Accept": built.media_type})
    assert got.status == 200, got.body[:500]
    assert got.body == built.payload
    head = raw_request(registry.port, "HEAD", path, headers={"Accept": built.media_type})
    assert head.status == 200
    assert head.headers["Docker-Content-Digest"] == built.digest
    assert raw_request(registry.port, "DELETE", path).status == 202
    assert_error(client.get(f"/v2/{repo}/manifests/{built.digest}"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_index(client: httpx.Client, repo: str, docker: bool) -> None:
    children = [push_image(client, repo, docker=docker) for _ in range(3)]
    index = index_of(children, docker=docker)
    resp = put_manifest(client, repo, "multi", index.payload, index.media_type)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == index.digest
    _assert_served(client, repo, "multi", index)
    _assert_served(client, repo, index.digest, index)
    for child in children:
        _assert_served(client, repo, child.digest, child)


def test_index_by_digest(client: httpx.Client, repo: str) -> None:
    index = index_of([push_image(client, repo)])
    resp = put_manifest(client, repo, index.digest, index.payload, index.media_type)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, index.digest, index)


def test_index_of_indexes(client: httpx.Client, repo: str) -> None:
    inner = index_of([push_image(client, repo)])
    assert put_manifest(client, repo, inner.digest, inner.payload, OCI_INDEX).status_code == 201
    outer = index_of([inner])
    resp = put_manifest(client, repo, "nested", outer.payload, OCI_INDEX)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "nested", outer)


def test_artifact_with_artifact_type(client: httpx.Client, repo: str) -> None:
    built = _artifact(client, repo, artifact_type=SBOM)
    resp = put_manifest(client, repo, "sbom", built.payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "sbom", built)


def test_artifact_with_custom_config_media_type(client: httpx.Client, repo: str) -> None:
    built = _artifact(client, repo, artifact_type=None, config_type=ARTIFACT_CONFIG)
    resp = put_manifest(client, repo, "custom", built.payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "custom", built)


def test_manifest_without_media_type_field(client: httpx.Client, repo: str) -> None:
    """mediaType is optional in an OCI manifest; Content-Type then says what it is."""
    config = b'{"os":"linux","architecture":"amd64"}'
    push_blob(client, repo, config)
    payload = canonical({"schemaVersion": 2, "config": descriptor(OCI_CONFIG, config),
                         "layers": []})
    resp = put_manifest(client, repo, "nomt", payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "nomt", Pushed(payload, digest_of(payload), OCI_MANIFEST))


def test_served_byte_for_byte(client: httpx.Client, repo: str) -> None:
    """Pretty-printed JSON with odd whitespace and key order comes back untouched."""
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = blob_bytes(100)
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    template = (
        '{\r\n\t"layers" :  [ {"size":LSIZE ,\n "digest": "LDIGEST",   "mediaType":"LTYPE"} ],'
        '\n\n   "schemaVersion":2,"mediaType": "MTYPE" ,\t"config":{"mediaType":"CTYPE",'
        '"digest":"CDIGEST","size":CSIZE},  "annotations":{"note":"caf\\u00e9 \u2615"}'
        "   }\n\n  "
    )
    payload = template
    for key, value in (("LSIZE", len(layer)), ("LDIGEST", digest_of(layer)),
                       ("LTYPE", OCI_LAYER), ("MTYPE", OCI_MANIFEST), ("CTYPE", OCI_CONFIG),
                       ("CDIGEST", digest_of(config)), ("CSIZE", len(config))):
        payload = payload.replace(key, str(value))
    raw = payload.encode()
    json.loads(raw)  # valid JSON
    assert raw != canonical(json.loads(raw))
    resp = put_manifest(client, repo, "pretty", raw, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == digest_of(raw)
    _assert_served(client, repo, "pretty", Pushed(raw, digest_of(raw), OCI_MANIFEST))


def test_repeated_accept_headers(client: httpx.Client, repo: str) -> None:
    """skopeo sends each accepted media type as its own Accept header line."""
    image = push_image(client, repo, "img")
    index = index_of([image])
    assert put_manifest(client, repo, "idx", index.payload, OCI_INDEX).status_code == 201
    docker = push_image(client, repo, "dock", docker=True)
    headers = [("Accept", media_type) for media_type in SKOPEO_ACCEPT]
    for tag, pushed in (("img", image), ("idx", index), ("dock", docker)):
        request = client.build_request("GET", f"/v2/{repo}/manifests/{tag}", headers=headers)
        assert request.headers.get_list("accept") == list(SKOPEO_ACCEPT)
        resp = client.send(request)
        assert resp.status_code == 200, resp.text
        assert resp.content == pushed.payload
        assert resp.headers["content-type"] == pushed.media_type
        assert resp.headers["docker-content-digest"] == pushed.digest
        head = client.send(client.build_request("HEAD", f"/v2/{repo}/manifests/{tag}",
                                                headers=headers))
        assert head.status_code == 200
        assert head.headers["docker-content-digest"] == pushed.digest


def test_retag(client: httpx.Client, repo: str) -> None:
    first = push_image(client, repo, "moving")
    second = push_image(client, repo, "moving")
    assert first.digest != second.digest
    _assert_served(client, repo, "moving", second)
    _assert_served(client, repo, first.digest, first)


def test_same_manifest_pushed_twice(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)
    for _ in range(2):
        resp = put_manifest(client, repo, "again", built.payload, built.media_type)
        assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "again", built)


def test_foreign_layers_need_not_be_pushed(client: httpx.Client, repo: str) -> None:
    config = b'{"os":"windows","architecture":"amd64"}'
    push_blob(client, repo, config)
    payload = canonical({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", config),
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": digest_of(b"foreign " + repo.encode()), "size": 1234,
            "urls": ["https://example.invalid/layer"],
        }],
    })
    resp = put_manifest(client, repo, "foreign", payload, DOCKER_MANIFEST)
    assert resp.status_code == 201, resp.text


# --- manifest errors ------------------------------------------------------------------


def test_unknown_manifest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "exists")
    assert_error(client.get(f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    missing = digest_of(b"no such manifest")
    assert_error(client.get(f"/v2/{repo}/manifests/{missing}"), 404, "MANIFEST_UNKNOWN")
    head = client.head(f"/v2/{repo}/manifests/nope")
    assert head.status_code == 404
    assert head.content == b""


def test_manifest_in_unknown_repository(client: httpx.Client) -> None:
    resp = client.get(f"/v2/{new_repo()}/manifests/latest")
    assert_error(resp, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


SCHEMA1_DOC = {
    "schemaVersion": 1, "name": "library/old", "tag": "latest", "architecture": "amd64",
    "fsLayers": [{"blobSum": digest_of(b"old layer")}],
    "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
}


@pytest.mark.parametrize("media_type", [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED])
def test_schema1_refused(client: httpx.Client, repo: str, media_type: str) -> None:
    doc = dict(SCHEMA1_DOC)
    if media_type == DOCKER_SCHEMA1_SIGNED:
        doc["signatures"] = [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}]
    resp = put_manifest(client, repo, "old", canonical(doc), media_type)
    assert_error(resp, 400, "MANIFEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/old"), 404, "MANIFEST_UNKNOWN",
                 "NAME_UNKNOWN")


def test_media_type_content_type_mismatch(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)  # mediaType: OCI manifest
    resp = put_manifest(client, repo, "mismatch", built.payload, DOCKER_MANIFEST)
    assert_error(resp, 400, "MANIFEST_INVALID")
    index = index_of([push_image(client, repo)])
    resp = put_manifest(client, repo, "mismatch", index.payload, OCI_MANIFEST)
    assert_error(resp, 400, "MANIFEST_INVALID")
    assert client.head(f"/v2/{repo}/manifests/mismatch").status_code == 404


def test_missing_layer(client: httpx.Client, repo: str) -> None:
    config = b'{"os":"linux"}'
    push_blob(client, repo, config)
    layer = blob_bytes(100)  # never pushed
    payload = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": descriptor(OCI_CONFIG, config),
                         "layers": [descriptor(OCI_LAYER, layer)]})
    resp = put_manifest(client, repo, "broken", payload, OCI_MANIFEST)
    assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/broken").status_code == 404
    assert client.head(f"/v2/{repo}/manifests/{digest_of(payload)}").status_code == 404


def test_missing_config(client: httpx.Client, repo: str) -> None:
    layer = blob_bytes(100)
    push_blob(client, repo, layer)
    payload = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": descriptor(OCI_CONFIG, b'{"never":"pushed"}'),
                         "layers": [descriptor(OCI_LAYER, layer)]})
    assert_error(put_manifest(client, repo, "broken", payload, OCI_MANIFEST), 400,
                 "MANIFEST_BLOB_UNKNOWN")


def test_blob_in_other_repository_is_missing(client: httpx.Client, repo: str) -> None:
    other = new_repo()
    built = image_manifest(client, other)  # blobs live in `other` only
    push_blob(client, repo, b"something")
    assert_error(put_manifest(client, repo, "borrowed", built.payload, built.media_type), 400,
                 "MANIFEST_BLOB_UNKNOWN")


def test_missing_index_child(client: httpx.Client, repo: str) -> None:
    present = push_image(client, repo)
    absent = image_manifest(client, repo)  # blobs pushed, manifest not
    index = index_of([present, absent])
    resp = put_manifest(client, repo, "idx", index.payload, OCI_INDEX)
    assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/idx").status_code == 404


@pytest.mark.parametrize("payload", [
    b"",
    b"not json",
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"',
    b"[1, 2, 3]",
    b"\xff\xfe\x00garbage",
])
def test_invalid_json(client: httpx.Client, repo: str, payload: bytes) -> None:
    push_blob(client, repo, b"x")
    assert_error(put_manifest(client, repo, "bad", payload, OCI_MANIFEST), 400,
                 "MANIFEST_INVALID")


@pytest.mark.parametrize("change", [
    {"layers": "not a list"},
    {"config": None},
    {"schemaVersion": 3},
    {"config": {"mediaType": OCI_CONFIG, "digest": "sha256:short", "size": 2}},
    {"config": {"mediaType": OCI_CONFIG, "digest": digest_of(b"{}"), "size": -1}},
], ids=["layers", "config", "schema-version", "digest", "size"])
def test_invalid_manifest_shape(client: httpx.Client, repo: str,
                                change: dict[str, object]) -> None:
    built = image_manifest(client, repo)
    doc = {**json.loads(built.payload), **change}
    if doc["config"] is None:
        del doc["config"]
    resp = put_manifest(client, repo, "bad", canonical(doc), OCI_MANIFEST)
    assert_error(resp, 400, "MANIFEST_INVALID")


def test_put_by_wrong_digest(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)
    wrong = digest_of(built.payload + b" ")
    resp = put_manifest(client, repo, wrong, built.payload, built.media_type)
    assert_error(resp, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/manifests/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/manifests/{built.digest}").status_code == 404


def test_put_by_malformed_digest(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)
    resp = put_manifest(client, repo, "sha256:1234", built.payload, built.media_type)
    assert_error(resp, 400, "DIGEST_INVALID", "TAG_INVALID")


def test_manifest_too_large(registry: Server, client: httpx.Client, repo: str) -> None:
    if registry.name != "dockyard":
        pytest.skip("the 4 MiB limit is Dockyard's setting")
    built = image_manifest(client, repo)
    doc = json.loads(built.payload)
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    payload = canonical(doc)
    resp = put_manifest(client, repo, "huge", payload, OCI_MANIFEST)
    assert_error(resp, 413)
    # the same without Content-Length (chunked): still refused
    request = client.build_request(
        "PUT", f"/v2/{repo}/manifests/huge",
        content=iter([payload[i:i + 65536] for i in range(0, len(payload), 65536)]),
        headers={"Content-Type": OCI_MANIFEST})
    assert request.headers["transfer-encoding"] == "chunked"
    assert_error(client.send(request), 413)
    assert client.head(f"/v2/{repo}/manifests/huge").status_code == 404


def test_manifest_just_under_limit(registry: Server, client: httpx.Client, repo: str) -> None:
    if registry.name != "dockyard":
        pytest.skip("the 4 MiB limit is Dockyard's setting")
    built = image_manifest(client, repo)
    doc = json.loads(built.payload)
    doc["annotations"] = {"padding": ""}
    room = 4 * 1024 * 1024 - len(canonical(doc))
    doc["annotations"]["padding"] = "x" * room
    payload = canonical(doc)
    assert len(payload) == 4 * 1024 * 1024
    resp = put_manifest(client, repo, "big", payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "big", Pushed(payload, digest_of(payload), OCI_MANIFEST))


@pytest.mark.parametrize("tag", ["-leading-dash", ".leading-dot", "a" * 129, "bad!tag",
                                 "sp%20ace"])
def test_tag_invalid(client: httpx.Client, repo: str, tag: str) -> None:
    built = image_manifest(client, repo)
    resp = put_manifest(client, repo, tag, built.payload, built.media_type)
    assert_error(resp, 400, "TAG_INVALID", "MANIFEST_INVALID")


def test_longest_tag(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)
    tag = "_" + "A.b-" * 31 + "xyz"
    assert len(tag) == 128
    resp = put_manifest(client, repo, tag, built.payload, built.media_type)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, tag, built)


# --- delete ---------------------------------------------------------------------------


def test_delete_by_digest_removes_every_tag(client: httpx.Client, repo: str) -> None:
    built = push_image(client, repo, "one")
    assert put_manifest(client, repo, "two", built.payload, built.media_type).status_code == 201
    keep = push_image(client, repo, "keep")
    resp = client.delete(f"/v2/{repo}/manifests/{built.digest}")
    assert resp.status_code == 202
    for reference in ("one", "two", built.digest):
        assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    tags = client.get(f"/v2/{repo}/tags/list").json()["tags"]
    assert tags == ["keep"]
    _assert_served(client, repo, "keep", keep)
    assert_error(client.delete(f"/v2/{repo}/manifests/{built.digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_tag_removes_only_that_tag(client: httpx.Client, repo: str) -> None:
    built = push_image(client, repo, "one")
    assert put_manifest(client, repo, "two", built.payload, built.media_type).status_code == 201
    resp = client.delete(f"/v2/{repo}/manifests/one")
    assert resp.status_code == 202
    assert_error(client.get(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")
    _assert_served(client, repo, "two", built)
    _assert_served(client, repo, built.digest, built)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["two"]
    assert_error(client.delete(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")


def test_delete_unknown_manifest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "exists")
    assert_error(client.delete(f"/v2/{repo}/manifests/{digest_of(b'none')}"), 404,
                 "MANIFEST_UNKNOWN")


def test_deleted_manifest_can_be_pushed_again(client: httpx.Client, repo: str) -> None:
    built = push_image(client, repo, "again")
    assert client.delete(f"/v2/{repo}/manifests/{built.digest}").status_code == 202
    resp = put_manifest(client, repo, "again", built.payload, built.media_type)
    assert resp.status_code == 201
    _assert_served(client, repo, "again", built)


# --- subject and referrers ------------------------------------------------------------


@pytest.mark.usefixtures("oci11")
def test_referrers(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "app")
    sbom = _artifact(client, repo, artifact_type=SBOM, subject=subject,
                     annotations={"org.example.kind": "sbom"})
    resp = put_manifest(client, repo, sbom.digest, sbom.payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    assert resp.headers["oci-subject"] == subject.digest
    # no artifactType: the config media type stands in for it
    sig = _artifact(client, repo, artifact_type=None, config_type=SIGNATURE, subject=subject)
    resp = put_manifest(client, repo, sig.digest, sig.payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    assert resp.headers["oci-subject"] == subject.digest

    resp = client.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] == OCI_INDEX
    assert "oci-filters-applied" not in resp.headers
    doc = resp.json()
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in doc["manifests"]}
    assert set(by_digest) == {sbom.digest, sig.digest}
    assert by_digest[sbom.digest] == {
        "mediaType": OCI_MANIFEST, "digest": sbom.digest, "size": sbom.size,
        "artifactType": SBOM, "annotations": {"org.example.kind": "sbom"},
    }
    assert by_digest[sig.digest]["artifactType"] == SIGNATURE
    assert by_digest[sig.digest]["size"] == sig.size
    assert "annotations" not in by_digest[sig.digest]

    resp = client.get(f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": SBOM})
    assert resp.status_code == 200
    assert resp.headers["oci-filters-applied"] == "artifactType"
    assert [m["digest"] for m in resp.json()["manifests"]] == [sbom.digest]

    resp = client.get(f"/v2/{repo}/referrers/{subject.digest}",
                      params={"artifactType": "application/vnd.example.none"})
    assert resp.status_code == 200
    assert resp.headers["oci-filters-applied"] == "artifactType"
    assert resp.json()["manifests"] == []


@pytest.mark.usefixtures("oci11")
def test_referrers_none(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "lonely")
    for digest in (subject.digest, digest_of(b"never pushed " + repo.encode())):
        resp = client.get(f"/v2/{repo}/referrers/{digest}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].split(";")[0] == OCI_INDEX
        assert resp.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


@pytest.mark.usefixtures("oci11")
def test_referrers_invalid_digest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "x")
    assert_error(client.get(f"/v2/{repo}/referrers/sha256:bad"), 400, "DIGEST_INVALID")


@pytest.mark.usefixtures("oci11")
def test_subject_may_not_exist_yet(client: httpx.Client, repo: str) -> None:
    """A referrer may be pushed before its subject; it is listed all the same."""
    ghost = Pushed(b'{"ghost":true}', digest_of(b'{"ghost":true}'), OCI_MANIFEST)
    art = _artifact(client, repo, subject=ghost)
    resp = put_manifest(client, repo, "early", art.payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    assert resp.headers["oci-subject"] == ghost.digest
    found = client.get(f"/v2/{repo}/referrers/{ghost.digest}").json()["manifests"]
    assert [m["digest"] for m in found] == [art.digest]


@pytest.mark.usefixtures("oci11")
def test_index_as_referrer(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "base")
    index = index_of([push_image(client, repo)],
                     extra={"artifactType": SBOM,
                            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest,
                                        "size": subject.size}})
    resp = put_manifest(client, repo, index.digest, index.payload, OCI_INDEX)
    assert resp.status_code == 201, resp.text
    assert resp.headers["oci-subject"] == subject.digest
    found = client.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"]
    assert found == [{"mediaType": OCI_INDEX, "digest": index.digest, "size": index.size,
                      "artifactType": SBOM}]


@pytest.mark.usefixtures("oci11")
def test_referrers_are_per_repository(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "app")
    art = _artifact(client, repo, subject=subject)
    assert put_manifest(client, repo, art.digest, art.payload, OCI_MANIFEST).status_code == 201
    other = new_repo()
    push_image(client, other, "app")
    resp = client.get(f"/v2/{other}/referrers/{subject.digest}")
    assert resp.status_code in (200, 404)
    if resp.status_code == 200:
        assert resp.json()["manifests"] == []


@pytest.mark.usefixtures("oci11")
def test_deleted_referrer_is_no_longer_listed(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "app")
    art = _artifact(client, repo, subject=subject)
    assert put_manifest(client, repo, art.digest, art.payload, OCI_MANIFEST).status_code == 201
    assert client.delete(f"/v2/{repo}/manifests/{art.digest}").status_code == 202
    assert client.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"] == []


@pytest.mark.usefixtures("oci11")
def test_a_chain_of_a_thousand_signatures_goes_with_its_subject(client: httpx.Client,
                                                                repo: str) -> None:
    """Each signature the subject of the next, 1,100 deep: deleting the image answered
    500 for good (the tree was deleted by recursion, past Python's limit)."""
    subject = push_image(client, repo, "app")
    push_blob(client, repo, EMPTY_JSON)
    chain, above = [], subject
    for i in range(1100):
        payload = canonical({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE,
            "config": descriptor(OCI_EMPTY, EMPTY_JSON), "layers": [],
            "subject": {"mediaType": above.media_type, "digest": above.digest,
                        "size": above.size}, "annotations": {"n": str(i)}})
        above = Pushed(payload, digest_of(payload), OCI_MANIFEST)
        resp = put_manifest(client, repo, above.digest, payload, OCI_MANIFEST)
        assert resp.status_code == 201, resp.text
        chain.append(above.digest)
    resp = client.delete(f"/v2/{repo}/manifests/{subject.digest}")
    assert resp.status_code == 202, resp.text
    for digest in (subject.digest, chain[0], chain[550], chain[-1]):
        assert client.head(f"/v2/{repo}/manifests/{digest}").status_code == 404, digest
    assert client.get(f"/v2/{repo}/referrers/{chain[-2]}").json()["manifests"] == []


def test_manifest_without_subject_has_no_oci_subject_header(client: httpx.Client,
                                                            repo: str) -> None:
    built = image_manifest(client, repo)
    resp = put_manifest(client, repo, "plain", built.payload, built.media_type)
    assert resp.status_code == 201
    assert "oci-subject" not in resp.headers


def test_put_without_content_type(client: httpx.Client, repo: str) -> None:
    """With no Content-Type the payload's mediaType says what the manifest is."""
    built = image_manifest(client, repo)
    resp = client.put(f"/v2/{repo}/manifests/noct", content=built.payload)
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "noct", built)


def test_content_type_with_parameters(client: httpx.Client, repo: str) -> None:
    built = image_manifest(client, repo)
    resp = put_manifest(client, repo, "params", built.payload,
                        f"{OCI_MANIFEST}; charset=utf-8")
    assert resp.status_code == 201, resp.text
    _assert_served(client, repo, "params", built)


def test_index_child_in_other_repository_is_missing(client: httpx.Client, repo: str) -> None:
    other = new_repo()
    child = push_image(client, other)
    push_blob(client, repo, b"x")
    index = index_of([child])
    assert_error(put_manifest(client, repo, "idx", index.payload, OCI_INDEX), 400,
                 "MANIFEST_BLOB_UNKNOWN")


def test_get_manifest_malformed_digest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "x")
    assert_error(client.get(f"/v2/{repo}/manifests/sha256:nothex"), (400, 404),
                 "DIGEST_INVALID", "MANIFEST_UNKNOWN")


def test_manifest_not_visible_in_other_repository(client: httpx.Client, repo: str) -> None:
    built = push_image(client, repo, "mine")
    other = new_repo()
    push_image(client, other, "theirs")
    assert_error(client.get(f"/v2/{other}/manifests/{built.digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{other}/manifests/mine"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_a_manifest_the_client_holds_is_304(client: httpx.Client, repo: str, method: str,
                                            by: str) -> None:
    """`If-None-Match` with the manifest's ETag (a poller asking whether a tag moved)
    was ignored: the manifest came back whole with 200. Another ETag gets it."""
    pushed = push_image(client, repo, "v1")
    reference = "v1" if by == "tag" else pushed.digest
    url = f"/v2/{repo}/manifests/{reference}"
    held = client.request(method, url, headers={
        "Accept": pushed.media_type, "If-None-Match": f'"{pushed.digest}"'})
    assert held.status_code == 304, held.text
    assert held.content == b""
    assert held.headers["etag"] == f'"{pushed.digest}"'
    assert held.headers["docker-content-digest"] == pushed.digest
    other = client.request(method, url, headers={
        "Accept": pushed.media_type, "If-None-Match": '"sha256:' + "0" * 64 + '"'})
    assert other.status_code == 200
    if method == "GET":
        assert other.content == pushed.payload
