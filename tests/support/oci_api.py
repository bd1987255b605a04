"""Helpers for the raw OCI distribution-spec API tests (tests/e2e/test_api_*.py).

Everything here speaks plain HTTP to a real server: a synchronous httpx client for
ordinary requests, http.client for paths that must reach the server unnormalised.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)

#: The six Accept values skopeo sends, each as its own header line.
SKOPEO_ACCEPT = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

EMPTY_JSON = b"{}"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def new_repo(prefix: str = "api") -> str:
    """A repository name no other test uses."""
    return f"{prefix}/r{uuid.uuid4().hex[:12]}"


def blob_bytes(size: int, seed: str = "") -> bytes:
    """`size` bytes that differ from test to test (so digests never collide)."""
    out = bytearray()
    counter = 0
    salt = (seed or uuid.uuid4().hex).encode()
    while len(out) < size:
        out += hashlib.sha512(salt + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def error_codes(resp: httpx.Response) -> list[str]:
    """The codes of an OCI error envelope, checking the envelope's shape on the way."""
    assert resp.headers.get("content-type", "").split(";")[0].strip() == "application/json", (
        resp.status_code, resp.headers, resp.text[:500])
    doc = resp.json()
    assert isinstance(doc, dict), doc
    assert isinstance(doc.get("errors"), list), doc
    assert doc["errors"], doc
    for entry in doc["errors"]:
        assert isinstance(entry, dict), doc
        assert isinstance(entry.get("code"), str), doc
        assert isinstance(entry.get("message"), str), doc
    return [entry["code"] for entry in doc["errors"]]


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], *codes: str) -> None:
    """`resp` has one of `status` and an OCI error body whose first code is one of `codes`."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text[:500])
    found = error_codes(resp)
    if codes:
        assert found[0] in codes, (found, resp.text[:500])


def with_digest(location: str, digest: str) -> str:
    """`location` (which may carry a query of its own) with `digest=` added."""
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


def upload_location(client: httpx.Client, repo: str) -> str:
    """POST a new upload session; its Location."""
    resp = client.post(f"/v2/{repo}/blobs/uploads/")
    assert resp.status_code == 202, resp.text
    return resp.headers["location"]


def push_blob(client: httpx.Client, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    """Push `data` as one blob (POST then PUT with the body); its digest."""
    digest = digest_of(data, algorithm)
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, digest), content=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    return digest


def put_manifest(
    client: httpx.Client, repo: str, reference: str, payload: bytes, media_type: str | None
) -> httpx.Response:
    headers = {"Content-Type": media_type} if media_type else {}
    return client.put(f"/v2/{repo}/manifests/{reference}", content=payload, headers=headers)


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


@dataclass(frozen=True)
class Pushed:
    """A manifest pushed by a helper: its bytes, digest and media type."""

    payload: bytes
    digest: str
    media_type: str

    @property
    def size(self) -> int:
        return len(self.payload)


def image_manifest(
    client: httpx.Client, repo: str, *, docker: bool = False, layers: int = 1,
    config: bytes | None = None, extra: dict[str, Any] | None = None,
) -> Pushed:
    """Push a config and `layers` layers to `repo` and build (not push) their manifest."""
    config = config if config is not None else json.dumps(
        {"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
    push_blob(client, repo, config)
    layer_docs = []
    for _ in range(layers):
        data = blob_bytes(512)
        push_blob(client, repo, data)
        layer_docs.append(descriptor(DOCKER_LAYER if docker else OCI_LAYER, data))
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": layer_docs,
        **(extra or {}),
    }
    payload = canonical(doc)
    return Pushed(payload, digest_of(payload), media_type)


def push_image(client: httpx.Client, repo: str, reference: str | None = None,
               **kwargs: Any) -> Pushed:
    """Push an image manifest (and its blobs) by `reference` (default: by digest)."""
    built = image_manifest(client, repo, **kwargs)
    resp = put_manifest(client, repo, reference or built.digest, built.payload, built.media_type)
    assert resp.status_code == 201, resp.text
    return built


def index_of(children: list[Pushed], *, docker: bool = False,
             extra: dict[str, Any] | None = None) -> Pushed:
    media_type = DOCKER_LIST if docker else OCI_INDEX
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {"mediaType": c.media_type, "digest": c.digest, "size": c.size,
             "platform": {"architecture": arch, "os": "linux"}}
            for c, arch in zip(children, ["amd64", "arm64", "s390x", "ppc64le"], strict=False)
        ],
        **(extra or {}),
    }
    payload = canonical(doc)
    return Pushed(payload, digest_of(payload), media_type)


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send `path` exactly as given (no normalisation, no quoting) over http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return RawResponse(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def assert_raw_error(resp: RawResponse, status: int | tuple[int, ...], *codes: str) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status in statuses, (resp.status, resp.body[:500])
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
    assert ctype == "application/json", (ctype, resp.body[:500])
    doc = resp.json()
    assert doc["errors"], doc
    assert all(isinstance(e.get("code"), str) and isinstance(e.get("message"), str)
               for e in doc["errors"]), doc
    if codes:
        assert doc["errors"][0]["code"] in codes, doc
