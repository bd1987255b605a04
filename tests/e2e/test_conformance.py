"""A Python port of the OCI distribution-spec conformance suite, v1.1.1.

Source: github.com/opencontainers/distribution-spec, directory ``conformance/``:
``setup.go`` (test data, client), ``image.go`` (JSON shapes), ``01_pull_test.go``,
``02_push_test.go``, ``03_discovery_test.go`` and ``04_management_test.go``. Each test
below names the Ginkgo spec it mirrors (``Go: <Context> / "<Specify text>"``); the four
workflows run in the order ``00_conformance_suite_test.go`` registers them, and inside a
workflow the tests run in the Go order and share state the way the Go specs do (a later
test may use what an earlier one stored).

Differences from the Go suite, all deliberate:

* Each workflow uses its own repository (and the push workflow its own cross-mount
  repository), so the module can share one server with other tests. The Go suite runs all
  four workflows in one ``OCI_NAMESPACE``; since every workflow deletes what it created in
  its teardown, the requests and expectations are the same.
* Only the environment switches that change what is sent are honoured:
  ``OCI_AUTOMATIC_CROSSMOUNT`` and ``OCI_DELETE_MANIFEST_BEFORE_BLOBS``. Specs the Go suite
  skips by default (the "no push" variants that read digests/tags from the environment)
  are kept and skipped the same way.
* ``CONFORMANCE_TARGET=distribution`` runs the module against Debian's docker-registry
  (CNCF Distribution 2.8) instead of Dockyard, to check the port itself.

What goes on the wire is what the Go client (reggie on resty v2 on net/http) sends:

* A non-empty request body is streamed with ``Transfer-Encoding: chunked``: reggie wraps
  the body in an ``io.NopCloser``, so net/http does not know its length, and net/http
  never writes a ``Content-Length`` set through the header map. The ``Content-Length``
  headers the Go specs set are therefore kept in the specs below for reference, but the
  client drops them.
* An empty POST/PUT/PATCH carries ``Content-Length: 0``; GET/HEAD/DELETE carry no body.
  resty drops a body given to a GET (the "400 response body" spec sets one).
* Redirects are followed (Go's default client policy), the User-Agent is
  ``distribution-spec-conformance-tests``, and a ``Location`` is used the way reggie's
  ``GetRelativeLocation`` does: its path and query are appended to the registry's root URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.servers import Server

TARGET = os.environ.get("CONFORMANCE_TARGET", "dockyard")

# --------------------------------------------------------------------------------------
# setup.go: constants and test data
# --------------------------------------------------------------------------------------

USER_AGENT = "distribution-spec-conformance-tests"
EMPTY_LAYER_TEST_TAG = "emptylayer"
TEST_TAG_NAME = "tagtest0"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
INVALID_MANIFEST_CONTENT = b"blablabla"
ARTIFACT_TYPE_FILTER = "artifactType"
TEST_ANNOTATION_KEY = "org.opencontainers.conformance.test"
REF_ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
REF_ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
REF_ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_EMPTY = "application/vnd.oci.empty.v1+json"

# `pull = 1 << iota ... numWorkflows` makes numWorkflows 16: the Go suite builds 16
# configs and 16 manifests and uses indexes 0..4.
NUM_WORKFLOWS = 16

# A gzipped tarball of one small text file (setup.go's layerBase64String).
LAYER_BASE64 = (
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA"
)

# setup.go builds errorCodes with `errorCodes = []string{BLOB_UNKNOWN: ..., ...}`, where the
# error constants continue the `iota` of the workflow bits and so start at 5: indexes 0..4
# of the Go slice hold "". The "400 response body" spec checks membership in that slice,
# so "" is a member there too; kept for fidelity.
ERROR_CODES = [
    "", "", "", "", "",
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
    "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
    "UNSUPPORTED",
]

DELETE_MANIFEST_BEFORE_BLOBS = os.environ.get(
    "OCI_DELETE_MANIFEST_BEFORE_BLOBS", "true").strip().lower() in ("1", "t", "true")
RUN_AUTOMATIC_CROSSMOUNT_TEST = "OCI_AUTOMATIC_CROSSMOUNT" in os.environ
AUTOMATIC_CROSSMOUNT_ENABLED = os.environ.get(
    "OCI_AUTOMATIC_CROSSMOUNT", "").strip().lower() in ("1", "t", "true")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def go_json(obj: Any) -> bytes:
    """Bytes as Go's ``json.MarshalIndent(v, "", "\\t")`` writes them for our shapes."""
    return json.dumps(obj, indent="\t").encode()


def go_bytes(value: bytes | None) -> str | None:
    """A Go ``[]byte`` field: base64 text, or null when nil."""
    return None if value is None else base64.b64encode(value).decode()


def descriptor(media_type: str, digest: str, size: int, *, data: bytes | None = None,
               new_unspecified: bytes | None = None) -> dict[str, Any]:
    """image.go's ``descriptor``: urls/annotations/data/platform/artifactType are omitempty,
    ``newUnspecifiedField`` is not (it is ``null`` when unset)."""
    out: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if data:
        out["data"] = go_bytes(data)
    out["newUnspecifiedField"] = go_bytes(new_unspecified)
    return out


def manifest(config: dict[str, Any], layers: list[dict[str, Any]], *, media_type: str = "",
             artifact_type: str = "", subject: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None) -> bytes:
    """image.go's ``manifest``, field order and omitempty rules included."""
    out: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        out["mediaType"] = media_type
    if artifact_type:
        out["artifactType"] = artifact_type
    out["config"] = config
    out["layers"] = layers
    if subject is not None:
        out["subject"] = subject
    if annotations:
        out["annotations"] = dict(sorted(annotations.items()))
    return go_json(out)


def random_string(n: int) -> str:
    letters = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
    return "".join(secrets.choice(letters) for _ in range(n))


@dataclass
class ConfBlob:
    content: bytes
    digest: str

    @property
    def content_length(self) -> str:
        return str(len(self.content))


@dataclass
class ChunkedBlob:
    """setup.go's setupChunkedBlob: testBlobB split after size/2+1 bytes."""

    blob: bytes
    digest: str
    chunk1: bytes
    chunk2: bytes
    chunk1_range: str
    chunk2_range: str

    @classmethod
    def random(cls, size: int) -> ChunkedBlob:
        blob = secrets.token_bytes(size)
        cut = size // 2 + 1
        return cls(blob, sha256_digest(blob), blob[:cut], blob[cut:],
                   f"0-{cut - 1}", f"{cut}-{size - 1}")


@dataclass
class SuiteData:
    """Everything setup.go's init() computes."""

    configs: list[ConfBlob] = field(default_factory=list)
    manifests: list[ConfBlob] = field(default_factory=list)
    annotation_values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for _ in range(NUM_WORKFLOWS):
            config = {
                "author": random_string(16),
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
            content = go_json(config)
            self.configs.append(ConfBlob(content, sha256_digest(content)))

        self.layer = base64.b64decode(LAYER_BASE64)
        self.layer_digest = sha256_digest(self.layer)
        self.layer_length = str(len(self.layer))
        layers = [descriptor(MT_LAYER_GZIP, self.layer_digest, len(self.layer))]

        for cfg in self.configs:
            content = manifest(
                descriptor(MT_CONFIG, cfg.digest, len(cfg.content), data=cfg.content,
                           new_unspecified=b"hello world"),
                layers, media_type=MT_MANIFEST)
            self.manifests.append(ConfBlob(content, sha256_digest(content)))

        # push test: a manifest with no layers (and, as in Go, no mediaType field)
        cfg1 = self.configs[1]
        self.empty_layer_manifest = manifest(
            descriptor(MT_CONFIG, cfg1.digest, len(cfg1.content), data=cfg1.content,
                       new_unspecified=b"hello world"),
            [])
        self.empty_layer_manifest_digest = sha256_digest(self.empty_layer_manifest)

        self.blob_a = secrets.token_bytes(42)
        self.blob_a_digest = sha256_digest(self.blob_a)
        self.blob_a_length = str(len(self.blob_a))
        self.chunked = ChunkedBlob.random(42)

        # referrers test data (artifacts with a subject)
        self.empty_json = b"{}"
        self.empty_json_descriptor = descriptor(
            MT_EMPTY, sha256_digest(self.empty_json), len(self.empty_json))
        self.ref_blob_a = b"NHL Peanut Butter on my NHL bagel"
        self.ref_blob_a_digest = sha256_digest(self.ref_blob_a)
        self.ref_blob_b = b"NBA Strawberry Jam on my NBA croissant"
        self.ref_blob_b_digest = sha256_digest(self.ref_blob_b)

        m3, m4 = self.manifests[3], self.manifests[4]
        subject4 = descriptor(MT_MANIFEST, m4.digest, len(m4.content))
        subject3 = descriptor(MT_MANIFEST, m3.digest, len(m3.content))

        def artifact(config: dict[str, Any], layers: list[dict[str, Any]], subject: dict[str, Any],
                     artifact_type: str = "", annotation: str = "") -> tuple[bytes, str]:
            annotations = {TEST_ANNOTATION_KEY: annotation} if annotation else None
            content = manifest(config, layers, media_type=MT_MANIFEST,
                               artifact_type=artifact_type, subject=subject,
                               annotations=annotations)
            digest = sha256_digest(content)
            if annotation:
                self.annotation_values[digest] = annotation
            return content, digest

        ref_a_desc = descriptor(REF_ARTIFACT_TYPE_A, self.ref_blob_a_digest, len(self.ref_blob_a))
        ref_b_desc = descriptor(REF_ARTIFACT_TYPE_B, self.ref_blob_b_digest, len(self.ref_blob_b))
        # config.mediaType = artifactType
        self.refs_a_config, self.refs_a_config_digest = artifact(
            ref_a_desc, [self.empty_json_descriptor], subject4, annotation="test config a")
        self.refs_b_config, self.refs_b_config_digest = artifact(
            ref_b_desc, [self.empty_json_descriptor], subject4, annotation="test config b")
        # artifactType set, config = empty JSON
        self.refs_a_layer, self.refs_a_layer_digest = artifact(
            self.empty_json_descriptor, [ref_a_desc], subject4, REF_ARTIFACT_TYPE_A,
            "test layer a")
        self.refs_b_layer, self.refs_b_layer_digest = artifact(
            self.empty_json_descriptor, [ref_b_desc], subject4, REF_ARTIFACT_TYPE_B,
            "test layer b")
        # like B layer, but its subject (manifests[3]) is never pushed in this workflow
        self.refs_c_layer, self.refs_c_layer_digest = artifact(
            self.empty_json_descriptor, [ref_b_desc], subject3, REF_ARTIFACT_TYPE_B)

        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "artifactType": REF_ARTIFACT_TYPE_INDEX,
            "manifests": [
                descriptor(MT_MANIFEST, self.refs_a_config_digest, len(self.refs_a_config)),
                descriptor(MT_MANIFEST, self.refs_a_layer_digest, len(self.refs_a_layer)),
            ],
            "subject": subject4,
            "annotations": {TEST_ANNOTATION_KEY: "test index"},
        }
        self.refs_index = go_json(index)
        self.refs_index_digest = sha256_digest(self.refs_index)
        self.annotation_values[self.refs_index_digest] = "test index"

        self.dummy_digest = sha256_digest(b"hello world")


DATA = SuiteData()

# --------------------------------------------------------------------------------------
# the client: what reggie does, over httpx
# --------------------------------------------------------------------------------------


def _stream(body: bytes) -> Iterator[bytes]:
    yield body


class Reggie:
    """Builds requests the way ``reggie.Client.NewRequest`` + ``Do`` do."""

    def __init__(self, root_url: str, name: str) -> None:
        self.root_url = root_url.rstrip("/")
        self.name = name
        self.http = httpx.Client(follow_redirects=True, timeout=60.0,
                                 headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        self.http.close()

    def do(self, method: str, path: str, *, name: str | None = None, reference: str = "",
           digest: str = "", params: dict[str, str] | None = None,
           headers: dict[str, str] | None = None, body: bytes | None = None) -> httpx.Response:
        path = path.replace("<name>", name or self.name)
        if reference:
            path = path.replace("<reference>", reference)
        if digest:
            path = path.replace("<digest>", digest)
        url = httpx.URL(f"{self.root_url}/{path.lstrip('/')}")
        if params:  # resty merges SetQueryParam values into the query already in the path
            url = url.copy_merge_params(params)
        send_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-length"}
        content: bytes | Iterator[bytes] | None = None
        if method in ("GET", "HEAD"):
            content = None
        elif body:
            content = _stream(body)
        elif method in ("POST", "PUT", "PATCH"):
            content = b""
        return self.http.request(method, url, headers=send_headers, content=content)


def relative_location(resp: httpx.Response) -> str:
    """reggie's ``GetRelativeLocation``: path (and query) of the Location header."""
    loc = resp.headers.get("Location", "")
    parts = urlsplit(loc)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def describe(resp: httpx.Response) -> str:
    req = resp.request
    body = resp.content[:600].decode("utf-8", "replace") if req.method != "HEAD" else ""
    interesting = {k: v for k, v in resp.headers.items()
                   if k.lower() in ("location", "range", "content-type", "content-length",
                                    "docker-content-digest", "oci-subject",
                                    "oci-filters-applied", "docker-upload-uuid",
                                    "oci-chunk-min-length")}
    return (f"\n  request: {req.method} {req.url}"
            f"\n  got: {resp.status_code} {interesting} {body!r}")


def expect_status(resp: httpx.Response, ok: Callable[[int], bool], expected: str) -> None:
    assert ok(resp.status_code), f"expected status {expected}{describe(resp)}"


def is_2xx(code: int) -> bool:
    return 200 <= code < 300


def expect_2xx(resp: httpx.Response) -> None:
    expect_status(resp, is_2xx, "2xx")


def expect_eq(resp: httpx.Response, code: int) -> None:
    expect_status(resp, lambda c: c == code, str(code))


def expect_in(resp: httpx.Response, *codes: int) -> None:
    expect_status(resp, lambda c: c in codes, " or ".join(map(str, codes)))


def expect_2xx_or(resp: httpx.Response, *codes: int) -> None:
    expect_status(resp, lambda c: is_2xx(c) or c in codes,
                  "2xx or " + " or ".join(map(str, codes)))


def expect_header(resp: httpx.Response, name: str, value: str) -> None:
    got = resp.headers.get(name, "")
    assert got == value, f"expected header {name}: {value!r}, got {got!r}{describe(resp)}"


def expect_header_set(resp: httpx.Response, name: str) -> None:
    assert resp.headers.get(name, ""), f"expected a non-empty {name} header{describe(resp)}"


def error_codes(resp: httpx.Response) -> list[str]:
    """reggie's ``Response.Errors``: the body must be ``{"errors": [...]}``, non-empty."""
    try:
        doc = json.loads(resp.content)
    except ValueError as exc:
        raise AssertionError(f"error body is not JSON: {exc}{describe(resp)}") from exc
    errors = doc.get("errors") if isinstance(doc, dict) else None
    assert isinstance(errors, list), f"no OCI errors array{describe(resp)}"
    assert errors, f"empty OCI errors array{describe(resp)}"
    codes = []
    for err in errors:
        code = err.get("code", "") if isinstance(err, dict) else None
        assert isinstance(code, str), f"malformed OCI error {err!r}{describe(resp)}"
        codes.append(code)
    return codes


def tag_list(resp: httpx.Response) -> list[str]:
    """setup.go's getTagList: [] when the body is not a tag list."""
    try:
        doc = json.loads(resp.content)
    except ValueError:
        return []
    tags = doc.get("tags") if isinstance(doc, dict) else None
    return list(tags) if isinstance(tags, list) else []


def parse_tag_list_strict(resp: httpx.Response) -> list[str]:
    """``json.Unmarshal(body, &TagList{})`` with the error checked."""
    try:
        doc = json.loads(resp.content)
    except ValueError as exc:
        raise AssertionError(f"tag list is not JSON: {exc}{describe(resp)}") from exc
    assert isinstance(doc, dict), f"tag list is not an object{describe(resp)}"
    tags = doc.get("tags")
    assert tags is None or isinstance(tags, list), f"tags is not a list{describe(resp)}"
    return list(tags or [])


def parse_index(resp: httpx.Response) -> list[dict[str, Any]]:
    """``json.Unmarshal(body, &index)`` with the error checked; returns the manifests."""
    try:
        doc = json.loads(resp.content)
    except ValueError as exc:
        raise AssertionError(f"referrers body is not JSON: {exc}{describe(resp)}") from exc
    assert isinstance(doc, dict), f"referrers body is not an object{describe(resp)}"
    manifests = doc.get("manifests")
    assert manifests is None or isinstance(manifests, list), f"bad manifests{describe(resp)}"
    for m in manifests or []:
        assert isinstance(m, dict), f"bad descriptor {m!r}{describe(resp)}"
        ann = m.get("annotations")
        assert ann is None or isinstance(ann, dict), f"bad annotations {m!r}{describe(resp)}"
    return list(manifests or [])


def expect_referrer_annotations(manifests: list[dict[str, Any]], resp: httpx.Response) -> None:
    for m in manifests:
        ann = m.get("annotations") or {}
        assert len(ann) == 1, f"expected exactly one annotation on {m!r}{describe(resp)}"
        want = DATA.annotation_values.get(m.get("digest", ""), "")
        assert ann.get(TEST_ANNOTATION_KEY, "") == want, (
            f"annotation of {m.get('digest')}: expected {want!r}, got {ann!r}{describe(resp)}")


def warn(message: str) -> None:
    """setup.go's Warn: the spec passes, the registry lacks an optional feature."""
    warnings.warn(message, UserWarning, stacklevel=2)


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def registry(request: pytest.FixtureRequest) -> Server:
    if TARGET not in ("dockyard", "distribution"):
        raise pytest.UsageError(
            f"CONFORMANCE_TARGET must be dockyard or distribution, not {TARGET}")
    server = request.getfixturevalue(TARGET)
    assert isinstance(server, Server)
    return server


@pytest.fixture(scope="class")
def client(request: pytest.FixtureRequest, registry: Server) -> Iterator[Reggie]:
    namespace = f"conformance-{RUN_ID}/{request.cls.WORKFLOW}"
    c = Reggie(registry.url, namespace)
    yield c
    c.close()


def upload_monolithic(client: Reggie, blob: bytes, digest: str) -> None:
    """The setup specs' POST-then-PUT upload, asserting a 2xx on the PUT."""
    resp = client.do("POST", "/v2/<name>/blobs/uploads/")
    resp = client.do("PUT", relative_location(resp), params={"digest": digest},
                     headers={"Content-Type": "application/octet-stream",
                              "Content-Length": str(len(blob))},
                     body=blob)
    expect_2xx(resp)


def put_manifest(client: Reggie, reference: str, content: bytes,
                 media_type: str = MT_MANIFEST) -> httpx.Response:
    return client.do("PUT", "/v2/<name>/manifests/<reference>", reference=reference,
                     headers={"Content-Type": media_type}, body=content)


def delete_manifest(client: Reggie, ref: str) -> httpx.Response:
    return client.do("DELETE", "/v2/<name>/manifests/<digest>", digest=ref)


def delete_blob(client: Reggie, digest: str) -> httpx.Response:
    return client.do("DELETE", "/v2/<name>/blobs/<digest>", digest=digest)


def skip_unless(condition: bool) -> None:
    """setup.go's RunOnlyIf."""
    if not condition:
        pytest.skip("you have skipped this test.")


# --------------------------------------------------------------------------------------
# 01_pull_test.go
# --------------------------------------------------------------------------------------


class TestPull:
    """Go: test01Pull ("Pull")."""

    WORKFLOW = "pull"
    tag = ""

    # --- Setup ---

    def test_setup_populate_registry_with_test_blob_config0(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test blob" (configs[0])
        upload_monolithic(client, DATA.configs[0].content, DATA.configs[0].digest)

    def test_setup_populate_registry_with_test_blob_config1(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test blob" (configs[1])
        upload_monolithic(client, DATA.configs[1].content, DATA.configs[1].digest)

    def test_setup_populate_registry_with_test_layer(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test layer"
        upload_monolithic(client, DATA.layer, DATA.layer_digest)

    def test_setup_populate_registry_with_test_manifest_tag(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test manifest" (manifests[0] as tagtest0)
        type(self).tag = TEST_TAG_NAME
        expect_2xx(put_manifest(client, self.tag, DATA.manifests[0].content))

    def test_setup_populate_registry_with_test_manifest_digest(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test manifest" (manifests[1] by digest)
        m = DATA.manifests[1]
        expect_2xx(put_manifest(client, m.digest, m.content))

    def test_setup_get_tag_name_from_environment(self) -> None:
        # Go: Setup / "Get tag name from environment" (RunOnlyIfNot(runPullSetup))
        skip_unless(False)

    # --- Pull blobs ---

    def test_head_nonexistent_blob_404(self, client: Reggie) -> None:
        # Go: Pull blobs / "HEAD request to nonexistent blob should result in 404 response"
        resp = client.do("HEAD", "/v2/<name>/blobs/<digest>", digest=DATA.dummy_digest)
        expect_eq(resp, 404)

    def test_head_existing_blob_200(self, client: Reggie) -> None:
        # Go: Pull blobs / "HEAD request to existing blob should yield 200"
        resp = client.do("HEAD", "/v2/<name>/blobs/<digest>", digest=DATA.configs[0].digest)
        expect_eq(resp, 200)
        if resp.headers.get("Docker-Content-Digest", ""):
            expect_header(resp, "Docker-Content-Digest", DATA.configs[0].digest)

    def test_get_nonexistent_blob_404(self, client: Reggie) -> None:
        # Go: Pull blobs / "GET nonexistent blob should result in 404 response"
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.dummy_digest)
        expect_eq(resp, 404)

    def test_get_existing_blob_200(self, client: Reggie) -> None:
        # Go: Pull blobs / "GET request to existing blob URL should yield 200"
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.configs[0].digest)
        expect_eq(resp, 200)

    # --- Pull manifests ---

    def test_head_nonexistent_manifest_404(self, client: Reggie) -> None:
        # Go: Pull manifests / "HEAD request to nonexistent manifest should return 404"
        resp = client.do("HEAD", "/v2/<name>/manifests/<reference>",
                         reference=NONEXISTENT_MANIFEST)
        expect_eq(resp, 404)

    @pytest.mark.parametrize("index", [0, 1], ids=["manifest0", "manifest1"])
    def test_head_manifest_digest_200(self, client: Reggie, index: int) -> None:
        # Go: Pull manifests / "HEAD request to manifest[0|1] path (digest) should yield 200"
        m = DATA.manifests[index]
        resp = client.do("HEAD", "/v2/<name>/manifests/<digest>", digest=m.digest,
                         headers={"Accept": MT_MANIFEST})
        expect_eq(resp, 200)
        if resp.headers.get("Docker-Content-Digest", ""):
            expect_header(resp, "Docker-Content-Digest", m.digest)

    def test_head_manifest_tag_200(self, client: Reggie) -> None:
        # Go: Pull manifests / "HEAD request to manifest path (tag) should yield 200 response"
        assert self.tag, "tag is empty"
        resp = client.do("HEAD", "/v2/<name>/manifests/<reference>", reference=self.tag,
                         headers={"Accept": MT_MANIFEST})
        expect_eq(resp, 200)
        if resp.headers.get("Docker-Content-Digest", ""):
            expect_header(resp, "Docker-Content-Digest", DATA.manifests[0].digest)

    def test_get_nonexistent_manifest_404(self, client: Reggie) -> None:
        # Go: Pull manifests / "GET nonexistent manifest should return 404"
        resp = client.do("GET", "/v2/<name>/manifests/<reference>",
                         reference=NONEXISTENT_MANIFEST)
        expect_eq(resp, 404)

    @pytest.mark.parametrize("index", [0, 1], ids=["manifest0", "manifest1"])
    def test_get_manifest_digest_200(self, client: Reggie, index: int) -> None:
        # Go: Pull manifests / "GET request to manifest[0|1] path (digest) should yield 200"
        resp = client.do("GET", "/v2/<name>/manifests/<digest>",
                         digest=DATA.manifests[index].digest, headers={"Accept": MT_MANIFEST})
        expect_eq(resp, 200)

    def test_get_manifest_tag_200(self, client: Reggie) -> None:
        # Go: Pull manifests / "GET request to manifest path (tag) should yield 200 response"
        assert self.tag, "tag is empty"
        resp = client.do("GET", "/v2/<name>/manifests/<reference>", reference=self.tag,
                         headers={"Accept": MT_MANIFEST})
        expect_eq(resp, 200)

    # --- Error codes ---

    def test_400_response_body_has_oci_error_json(self, client: Reggie) -> None:
        # Go: Error codes / "400 response body should contain OCI-conforming JSON message"
        # (the Go spec sets a body on this GET; resty does not send it)
        resp = client.do("GET", "/v2/<name>/manifests/<reference>",
                         reference="sha256:totallywrong",
                         headers={"Content-Type": MT_MANIFEST}, body=INVALID_MANIFEST_CONTENT)
        expect_in(resp, 400, 404)
        if resp.status_code == 400:
            codes = error_codes(resp)
            assert codes[0] in ERROR_CODES, f"unknown error code {codes[0]!r}{describe(resp)}"

    # --- Teardown ---

    @pytest.mark.parametrize("index", [0, 1], ids=["manifest0", "manifest1"])
    def test_teardown_delete_manifest_before_blobs(self, client: Reggie, index: int) -> None:
        # Go: Teardown / "Delete manifest[0|1] created in setup" (deleteManifestBeforeBlobs)
        skip_unless(DELETE_MANIFEST_BEFORE_BLOBS)
        expect_2xx_or(delete_manifest(client, DATA.manifests[index].digest), 405)

    @pytest.mark.parametrize("index", [0, 1], ids=["config0", "config1"])
    def test_teardown_delete_config_blob(self, client: Reggie, index: int) -> None:
        # Go: Teardown / "Delete config[0|1] blob created in setup"
        expect_2xx_or(delete_blob(client, DATA.configs[index].digest), 404, 405)

    def test_teardown_delete_layer_blob(self, client: Reggie) -> None:
        # Go: Teardown / "Delete layer blob created in setup"
        expect_2xx_or(delete_blob(client, DATA.layer_digest), 404, 405)

    @pytest.mark.parametrize("index", [0, 1], ids=["manifest0", "manifest1"])
    def test_teardown_delete_manifest_after_blobs(self, client: Reggie, index: int) -> None:
        # Go: Teardown / "Delete manifest[0|1] created in setup" (!deleteManifestBeforeBlobs)
        skip_unless(not DELETE_MANIFEST_BEFORE_BLOBS)
        expect_2xx_or(delete_manifest(client, DATA.manifests[index].digest), 405)


# --------------------------------------------------------------------------------------
# 02_push_test.go
# --------------------------------------------------------------------------------------


class TestPush:
    """Go: test02Push ("Push")."""

    WORKFLOW = "push"
    CROSSMOUNT_NAMESPACE = f"conformance-{uuid.uuid4()}"
    last_response: httpx.Response | None = None
    prev_response: httpx.Response | None = None
    empty_layer_manifest_ref = ""
    chunked = DATA.chunked

    def _remember(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(type(self), key, value)

    def _last(self) -> httpx.Response:
        assert self.last_response is not None, "no response from the previous spec"
        return self.last_response

    # --- Blob Upload Streamed ---

    def test_streamed_patch_with_blob_in_body_202(self, client: Reggie) -> None:
        # Go: Blob Upload Streamed / "PATCH request with blob in body should yield 202 response"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/")
        expect_header_set(resp, "Location")
        resp = client.do("PATCH", relative_location(resp),
                         headers={"Content-Type": "application/octet-stream"}, body=DATA.blob_a)
        expect_eq(resp, 202)
        self._remember(last_response=resp)

    def test_streamed_put_to_session_url_with_digest_201(self, client: Reggie) -> None:
        # Go: Blob Upload Streamed / "PUT request to session URL with digest should yield 201"
        resp = client.do("PUT", relative_location(self._last()),
                         params={"digest": DATA.blob_a_digest},
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": DATA.blob_a_length})
        expect_eq(resp, 201)
        expect_header_set(resp, "Location")

    # --- Blob Upload Monolithic ---

    def test_monolithic_get_nonexistent_blob_404(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "GET nonexistent blob should result in 404 response"
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.dummy_digest)
        expect_eq(resp, 404)

    def test_monolithic_post_with_digest_and_blob_201_or_202(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "POST request with digest and blob should yield a 201 or 202"
        cfg = DATA.configs[1]
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", params={"digest": cfg.digest},
                         headers={"Content-Length": cfg.content_length,
                                  "Content-Type": "application/octet-stream"},
                         body=cfg.content)
        expect_header_set(resp, "Location")
        expect_in(resp, 201, 202)
        self._remember(last_response=resp)

    def test_monolithic_get_blob_from_prior_request_200_or_404(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "GET request to blob URL from prior request should yield
        # 200 or 404 based on response code"
        last = self._last()
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.configs[1].digest)
        expect_eq(resp, 404 if last.status_code == 202 else 200)

    def test_monolithic_post_yields_session_id(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "POST request should yield a session ID"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/")
        expect_eq(resp, 202)
        self._remember(last_response=resp)

    def test_monolithic_put_upload_of_blob_201(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "PUT upload of a blob should yield a 201 Response"
        cfg = DATA.configs[1]
        resp = client.do("PUT", relative_location(self._last()), params={"digest": cfg.digest},
                         headers={"Content-Length": cfg.content_length,
                                  "Content-Type": "application/octet-stream"},
                         body=cfg.content)
        expect_header_set(resp, "Location")
        expect_eq(resp, 201)

    def test_monolithic_get_existing_blob_200(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "GET request to existing blob should yield 200 response"
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.configs[1].digest)
        expect_eq(resp, 200)

    def test_monolithic_put_upload_of_layer_blob_201(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "PUT upload of a layer blob should yield a 201 Response"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/")
        resp = client.do("PUT", relative_location(resp), params={"digest": DATA.layer_digest},
                         headers={"Content-Length": DATA.layer_length,
                                  "Content-Type": "application/octet-stream"},
                         body=DATA.layer)
        expect_header_set(resp, "Location")
        expect_eq(resp, 201)

    def test_monolithic_get_existing_layer_200(self, client: Reggie) -> None:
        # Go: Blob Upload Monolithic / "GET request to existing layer should yield 200 response"
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.layer_digest)
        expect_eq(resp, 200)

    # --- Blob Upload Chunked ---

    def test_chunked_out_of_order_upload_416(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "Out-of-order blob upload should return 416"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
        expect_header_set(resp, "Location")
        # rebuild the chunked blob if the registry's minimum chunk is above our chunk size
        if min_size := resp.headers.get("OCI-Chunk-Min-Length", ""):
            assert min_size.isdigit(), f"bad OCI-Chunk-Min-Length{describe(resp)}"
            if int(min_size) > len(self.chunked.chunk1):
                self._remember(chunked=ChunkedBlob.random(int(min_size) * 2 - 2))
        ch = self.chunked
        resp = client.do("PATCH", relative_location(resp),
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(len(ch.chunk2)),
                                  "Content-Range": ch.chunk2_range},
                         body=ch.chunk2)
        expect_eq(resp, 416)

    def test_chunked_patch_first_chunk_202(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "PATCH request with first chunk should return 202"
        ch = self.chunked
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
        expect_header_set(resp, "Location")
        self._remember(prev_response=resp)
        resp = client.do("PATCH", relative_location(resp),
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(len(ch.chunk1)),
                                  "Content-Range": ch.chunk1_range},
                         body=ch.chunk1)
        expect_eq(resp, 202)
        expect_header(resp, "Range", ch.chunk1_range)
        self._remember(last_response=resp)

    def test_chunked_retry_previous_chunk_416(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "Retry previous blob chunk should return 416"
        ch = self.chunked
        assert self.prev_response is not None
        resp = client.do("PATCH", relative_location(self.prev_response),
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(len(ch.chunk1)),
                                  "Content-Range": ch.chunk1_range},
                         body=ch.chunk1)
        expect_eq(resp, 416)

    def test_chunked_get_on_stale_upload_204_with_range_and_location(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "Get on stale blob upload should return 204 with a range and
        # location"
        assert self.prev_response is not None
        resp = client.do("GET", relative_location(self.prev_response))
        expect_eq(resp, 204)
        expect_header_set(resp, "Location")
        expect_header(resp, "Range", self.chunked.chunk1_range)
        self._remember(last_response=resp)

    def test_chunked_patch_second_chunk_202(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "PATCH request with second chunk should return 202"
        ch = self.chunked
        resp = client.do("PATCH", relative_location(self._last()),
                         headers={"Content-Length": str(len(ch.chunk2)),
                                  "Content-Range": ch.chunk2_range,
                                  "Content-Type": "application/octet-stream"},
                         body=ch.chunk2)
        expect_eq(resp, 202)
        expect_header_set(resp, "Location")
        self._remember(last_response=resp)

    def test_chunked_put_with_digest_201(self, client: Reggie) -> None:
        # Go: Blob Upload Chunked / "PUT request with digest should return 201"
        resp = client.do("PUT", relative_location(self._last()),
                         params={"digest": self.chunked.digest},
                         headers={"Content-Length": "0",
                                  "Content-Type": "application/octet-stream"})
        expect_eq(resp, 201)
        expect_header_set(resp, "Location")

    # --- Cross-Repository Blob Mount ---

    def test_crossmount_without_from_yields_session_id(self, client: Reggie) -> None:
        # Go: Cross-Repository Blob Mount / "Cross-mounting of a blob without the from argument
        # should yield session id"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", name=self.CROSSMOUNT_NAMESPACE,
                         params={"mount": DATA.dummy_digest})
        expect_eq(resp, 202)
        expect_header_set(resp, "Location")

    def test_crossmount_post_mount_from_another_repository_201_or_202(
            self, client: Reggie) -> None:
        # Go: Cross-Repository Blob Mount / "POST request to mount another repository's blob
        # should return 201 or 202"
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", name=self.CROSSMOUNT_NAMESPACE,
                         params={"mount": DATA.blob_a_digest, "from": client.name})
        expect_in(resp, 201, 202)
        self._remember(last_response=resp)

    def test_crossmount_get_digest_within_crossmount_namespace_200(self, client: Reggie) -> None:
        # Go: Cross-Repository Blob Mount / "GET request to test digest within cross-mount
        # namespace should return 200"
        last = self._last()
        skip_unless(last.status_code == 201)
        want = f"/v2/{self.CROSSMOUNT_NAMESPACE}/blobs/{DATA.blob_a_digest}"
        assert relative_location(last) == want, f"expected Location {want}{describe(last)}"
        resp = client.do("GET", relative_location(last))
        expect_eq(resp, 200)

    def test_crossmount_nonexistent_blob_yields_session_id(self) -> None:
        # Go: Cross-Repository Blob Mount / "Cross-mounting of nonexistent blob should yield
        # session id"
        last = self._last()
        skip_unless(last.status_code == 202)
        want = f"/v2/{self.CROSSMOUNT_NAMESPACE}/blobs/uploads/"
        assert relative_location(last).startswith(want), (
            f"expected Location under {want}{describe(last)}")

    def test_crossmount_without_from_automatic_enabled_201(self, client: Reggie) -> None:
        # Go: Cross-Repository Blob Mount / "Cross-mounting without from, and automatic content
        # discovery enabled should return a 201"
        skip_unless(RUN_AUTOMATIC_CROSSMOUNT_TEST)
        skip_unless(self._last().status_code == 201)
        skip_unless(AUTOMATIC_CROSSMOUNT_ENABLED)
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", name=self.CROSSMOUNT_NAMESPACE,
                         params={"mount": DATA.blob_a_digest})
        expect_eq(resp, 201)

    def test_crossmount_without_from_automatic_disabled_202(self, client: Reggie) -> None:
        # Go: Cross-Repository Blob Mount / "Cross-mounting without from, and automatic content
        # discovery disabled should return a 202"
        skip_unless(RUN_AUTOMATIC_CROSSMOUNT_TEST)
        skip_unless(self._last().status_code == 201)
        skip_unless(not AUTOMATIC_CROSSMOUNT_ENABLED)
        resp = client.do("POST", "/v2/<name>/blobs/uploads/", name=self.CROSSMOUNT_NAMESPACE,
                         params={"mount": DATA.blob_a_digest})
        expect_eq(resp, 202)

    # --- Manifest Upload ---

    def test_manifest_get_nonexistent_404(self, client: Reggie) -> None:
        # Go: Manifest Upload / "GET nonexistent manifest should return 404"
        resp = client.do("GET", "/v2/<name>/manifests/<reference>",
                         reference=NONEXISTENT_MANIFEST)
        expect_eq(resp, 404)

    def test_manifest_put_accepts_upload(self, client: Reggie) -> None:
        # Go: Manifest Upload / "PUT should accept a manifest upload" (tags test0..test3)
        for i in range(4):
            resp = put_manifest(client, f"test{i}", DATA.manifests[1].content)
            expect_header_set(resp, "Location")
            expect_eq(resp, 201)

    def test_manifest_upload_with_no_layers(self, client: Reggie) -> None:
        # Go: Manifest Upload / "Registry should accept a manifest upload with no layers"
        resp = put_manifest(client, EMPTY_LAYER_TEST_TAG, DATA.empty_layer_manifest)
        if resp.status_code == 201:
            location = resp.headers.get("Location", "")
            self._remember(empty_layer_manifest_ref=location)
            expect_header_set(resp, "Location")
        else:
            warn("image manifest with no layers is not supported")

    def test_manifest_get_by_digest_200(self, client: Reggie) -> None:
        # Go: Manifest Upload / "GET request to manifest URL (digest) should yield 200 response"
        resp = client.do("GET", "/v2/<name>/manifests/<digest>",
                         digest=DATA.manifests[1].digest, headers={"Accept": MT_MANIFEST})
        expect_eq(resp, 200)

    # --- Teardown ---

    def _delete_manifests(self, client: Reggie) -> None:
        expect_2xx_or(delete_manifest(client, DATA.manifests[1].digest), 405)
        if self.empty_layer_manifest_ref:
            resp = client.do("DELETE", "/v2/<name>/manifests/<reference>",
                             reference=DATA.empty_layer_manifest_digest)
            expect_2xx_or(resp, 405)

    def test_teardown_delete_manifest_before_blobs(self, client: Reggie) -> None:
        # Go: Teardown / "Delete manifest created in tests" (deleteManifestBeforeBlobs)
        skip_unless(DELETE_MANIFEST_BEFORE_BLOBS)
        self._delete_manifests(client)

    def test_teardown_delete_config_blob(self, client: Reggie) -> None:
        # Go: Teardown / "Delete config blob created in tests"
        expect_2xx_or(delete_blob(client, DATA.configs[1].digest), 404, 405)

    def test_teardown_delete_layer_blob(self, client: Reggie) -> None:
        # Go: Teardown / "Delete layer blob created in setup"
        expect_2xx_or(delete_blob(client, DATA.layer_digest), 404, 405)

    def test_teardown_delete_manifest_after_blobs(self, client: Reggie) -> None:
        # Go: Teardown / "Delete manifest created in tests" (!deleteManifestBeforeBlobs)
        skip_unless(not DELETE_MANIFEST_BEFORE_BLOBS)
        self._delete_manifests(client)


# --------------------------------------------------------------------------------------
# 03_discovery_test.go
# --------------------------------------------------------------------------------------


class TestContentDiscovery:
    """Go: test03ContentDiscovery ("Content Discovery")."""

    WORKFLOW = "discovery"
    num_tags = 4
    tag_list: list[str] = []

    # --- Setup ---

    def test_setup_populate_registry_with_test_blob(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test blob" (configs[2])
        upload_monolithic(client, DATA.configs[2].content, DATA.configs[2].digest)

    def test_setup_populate_registry_with_test_layer(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test layer"
        upload_monolithic(client, DATA.layer, DATA.layer_digest)

    def test_setup_populate_registry_with_test_tags(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test tags" (manifests[2] as test0..test3)
        for i in range(self.num_tags):
            expect_2xx(put_manifest(client, f"test{i}", DATA.manifests[2].content))
        resp = client.do("GET", "/v2/<name>/tags/list")
        type(self).tag_list = tag_list(resp)

    def test_setup_populate_registry_with_test_tags_no_push(self) -> None:
        # Go: Setup / "Populate registry with test tags (no push)" (RunOnlyIfNot(setup))
        skip_unless(False)

    def test_setup_references(self, client: Reggie) -> None:
        # Go: Setup / "References setup"
        m4 = DATA.manifests[4]
        assert DATA.empty_json_descriptor["digest"] == (
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
        # the empty JSON blob
        upload_monolithic(client, DATA.empty_json, DATA.empty_json_descriptor["digest"])
        # a reference blob, before the subject manifest is pushed
        upload_monolithic(client, DATA.ref_blob_a, DATA.ref_blob_a_digest)
        # referrers (config.mediaType = artifactType; artifactType + empty config) and an
        # index referrer, all before their subject exists
        for digest, content, media_type in (
                (DATA.refs_a_config_digest, DATA.refs_a_config, MT_MANIFEST),
                (DATA.refs_a_layer_digest, DATA.refs_a_layer, MT_MANIFEST),
                (DATA.refs_index_digest, DATA.refs_index, MT_INDEX)):
            resp = put_manifest(client, digest, content, media_type)
            expect_2xx(resp)
            expect_header(resp, "OCI-Subject", m4.digest)
        # the subject: config, layer, manifests[4] as tagtest0
        upload_monolithic(client, DATA.configs[4].content, DATA.configs[4].digest)
        upload_monolithic(client, DATA.layer, DATA.layer_digest)
        expect_2xx(put_manifest(client, TEST_TAG_NAME, m4.content))
        # a reference blob after the subject manifest is pushed, then two more referrers
        upload_monolithic(client, DATA.ref_blob_b, DATA.ref_blob_b_digest)
        for digest, content in ((DATA.refs_b_config_digest, DATA.refs_b_config),
                                (DATA.refs_b_layer_digest, DATA.refs_b_layer)):
            resp = put_manifest(client, digest, content)
            expect_2xx(resp)
            expect_header(resp, "OCI-Subject", m4.digest)
        # a referrer to a subject (manifests[3]) that is never pushed here
        resp = put_manifest(client, DATA.refs_c_layer_digest, DATA.refs_c_layer)
        expect_2xx(resp)
        expect_header(resp, "OCI-Subject", DATA.manifests[3].digest)

    # --- Test content discovery endpoints (listing tags) ---

    def test_list_tags_200(self, client: Reggie) -> None:
        # Go: listing tags / "GET request to list tags should yield 200 response"
        resp = client.do("GET", "/v2/<name>/tags/list")
        expect_eq(resp, 200)
        type(self).tag_list = tag_list(resp)
        type(self).num_tags = len(self.tag_list)

    def test_list_tags_limited_by_n(self, client: Reggie) -> None:
        # Go: listing tags / "GET number of tags should be limitable by `n` query parameter"
        num_results = self.num_tags // 2
        resp = client.do("GET", "/v2/<name>/tags/list", params={"n": str(num_results)})
        expect_eq(resp, 200)
        tags = tag_list(resp)
        type(self).tag_list = tags
        assert len(tags) == num_results, (
            f"expected {num_results} tags, got {len(tags)}: {tags}{describe(resp)}")

    def test_list_tags_start_set_by_last(self, client: Reggie) -> None:
        # Go: listing tags / "GET start of tag is set by `last` query parameter"
        # (the Go spec checks the first page, not the page fetched with `last`; so do we)
        num_results = self.num_tags // 2
        first = client.do("GET", "/v2/<name>/tags/list", params={"n": str(num_results)})
        tags = tag_list(first)
        type(self).tag_list = tags
        index = num_results - 1  # Go indexes tagList[numResults-1] and panics if out of range
        assert 0 <= index < len(tags), (
            f"first page has {len(tags)} tags, index {index} out of range{describe(first)}")
        last = tags[index]
        resp = client.do("GET", "/v2/<name>/tags/list",
                         params={"n": str(num_results), "last": last})
        expect_eq(resp, 200)
        assert len(tags) <= num_results, (
            f"expected at most {num_results} tags, got {tags}{describe(first)}")
        assert last in tags

    # --- Test content discovery endpoints (listing references) ---

    def test_referrers_nonexistent_blob_empty_200(self, client: Reggie) -> None:
        # Go: listing references / "GET request to nonexistent blob should result in empty 200
        # response"
        resp = client.do("GET", "/v2/<name>/referrers/<digest>", digest=DATA.dummy_digest)
        expect_eq(resp, 200)
        expect_header(resp, "Content-Type", MT_INDEX)
        manifests = parse_index(resp)
        assert len(manifests) == 0, f"expected no referrers{describe(resp)}"

    def test_referrers_existing_blob_200(self, client: Reggie) -> None:
        # Go: listing references / "GET request to existing blob should yield 200"
        resp = client.do("GET", "/v2/<name>/referrers/<digest>",
                         digest=DATA.manifests[4].digest)
        expect_eq(resp, 200)
        expect_header(resp, "Content-Type", MT_INDEX)
        manifests = parse_index(resp)
        assert len(manifests) == 5, f"expected 5 referrers, got {len(manifests)}{describe(resp)}"
        assert manifests[0].get("digest") != manifests[1].get("digest")
        expect_referrer_annotations(manifests, resp)

    def test_referrers_existing_blob_with_filter_200(self, client: Reggie) -> None:
        # Go: listing references / "GET request to existing blob with filter should yield 200"
        resp = client.do("GET", "/v2/<name>/referrers/<digest>",
                         digest=DATA.manifests[4].digest,
                         params={"artifactType": REF_ARTIFACT_TYPE_A})
        expect_eq(resp, 200)
        expect_header(resp, "Content-Type", MT_INDEX)
        manifests = parse_index(resp)
        if resp.headers.get("OCI-Filters-Applied", ""):
            assert len(manifests) == 2, (
                f"expected 2 filtered referrers, got {len(manifests)}{describe(resp)}")
            expect_header(resp, "OCI-Filters-Applied", ARTIFACT_TYPE_FILTER)
        else:
            assert len(manifests) == 5, (
                f"expected 5 unfiltered referrers, got {len(manifests)}{describe(resp)}")
            warn("filtering by artifact-type is not implemented")
        expect_referrer_annotations(manifests, resp)

    def test_referrers_missing_manifest_200(self, client: Reggie) -> None:
        # Go: listing references / "GET request to missing manifest should yield 200"
        resp = client.do("GET", "/v2/<name>/referrers/<digest>",
                         digest=DATA.manifests[3].digest)
        expect_eq(resp, 200)
        expect_header(resp, "Content-Type", MT_INDEX)
        manifests = parse_index(resp)
        assert len(manifests) == 1, f"expected 1 referrer, got {len(manifests)}{describe(resp)}"
        assert manifests[0].get("digest") == DATA.refs_c_layer_digest, describe(resp)

    # --- Teardown ---

    def _delete_manifests_and_tags(self, client: Reggie) -> None:
        for ref in (DATA.refs_index_digest, DATA.manifests[2].digest, DATA.manifests[4].digest,
                    DATA.refs_a_config_digest, DATA.refs_a_layer_digest, TEST_TAG_NAME,
                    DATA.refs_b_config_digest, DATA.refs_b_layer_digest,
                    DATA.refs_c_layer_digest):
            expect_2xx_or(delete_manifest(client, ref), 405, 404)

    def test_teardown_delete_manifests_and_tags_before_blobs(self, client: Reggie) -> None:
        # Go: Teardown / "Delete created manifest & associated tags" (deleteManifestBeforeBlobs)
        skip_unless(DELETE_MANIFEST_BEFORE_BLOBS)
        self._delete_manifests_and_tags(client)

    def test_teardown_delete_config_blob(self, client: Reggie) -> None:
        # Go: Teardown / "Delete config blob created in tests" (no 404 allowed here)
        expect_2xx_or(delete_blob(client, DATA.configs[2].digest), 405)

    def test_teardown_delete_layer_blob(self, client: Reggie) -> None:
        # Go: Teardown / "Delete layer blob created in setup" (no 404 allowed here)
        expect_2xx_or(delete_blob(client, DATA.layer_digest), 405)

    def test_teardown_delete_manifests_and_tags_after_blobs(self, client: Reggie) -> None:
        # Go: Teardown / "Delete created manifest & associated tags" (!deleteManifestBeforeBlobs)
        skip_unless(not DELETE_MANIFEST_BEFORE_BLOBS)
        self._delete_manifests_and_tags(client)

    def test_teardown_references(self, client: Reggie) -> None:
        # Go: Teardown / "References teardown"
        def delete_referrers() -> None:
            for ref in (DATA.refs_index_digest, DATA.refs_a_config_digest,
                        DATA.refs_a_layer_digest):
                resp = client.do("DELETE", "/v2/<name>/manifests/<reference>", reference=ref)
                expect_2xx_or(resp, 405, 404)
            expect_2xx_or(delete_manifest(client, DATA.manifests[4].digest), 405, 404)
            for ref in (DATA.refs_b_config_digest, DATA.refs_b_layer_digest):
                resp = client.do("DELETE", "/v2/<name>/manifests/<reference>", reference=ref)
                expect_2xx_or(resp, 405, 404)

        if DELETE_MANIFEST_BEFORE_BLOBS:
            delete_referrers()
        for digest in (DATA.configs[4].digest, DATA.ref_blob_a_digest, DATA.ref_blob_b_digest,
                       DATA.empty_json_descriptor["digest"]):
            expect_2xx_or(delete_blob(client, digest), 405, 404)
        if not DELETE_MANIFEST_BEFORE_BLOBS:
            delete_referrers()


# --------------------------------------------------------------------------------------
# 04_management_test.go
# --------------------------------------------------------------------------------------


class TestContentManagement:
    """Go: test04ContentManagement ("Content Management")."""

    WORKFLOW = "management"
    tag_to_delete = ""
    num_tags = 0
    blob_delete_allowed = True

    # --- Setup ---

    def test_setup_populate_registry_with_test_config_blob(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test config blob" (configs[3])
        upload_monolithic(client, DATA.configs[3].content, DATA.configs[3].digest)

    def test_setup_populate_registry_with_test_layer(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test layer"
        upload_monolithic(client, DATA.layer, DATA.layer_digest)

    def test_setup_populate_registry_with_test_tag(self, client: Reggie) -> None:
        # Go: Setup / "Populate registry with test tag" (manifests[3] as tagtest0)
        type(self).tag_to_delete = "tagtest0"
        expect_2xx(put_manifest(client, self.tag_to_delete, DATA.manifests[3].content))

    def test_setup_count_tags_before_delete(self, client: Reggie) -> None:
        # Go: Setup / "Check how many tags there are before anything gets deleted"
        resp = client.do("GET", "/v2/<name>/tags/list")
        expect_eq(resp, 200)
        type(self).num_tags = len(parse_tag_list_strict(resp))

    # --- Manifest delete ---

    def test_delete_manifest_tag_202_unless_disallowed(self, client: Reggie) -> None:
        # Go: Manifest delete / "DELETE request to manifest tag should return 202, unless tag
        # deletion is disallowed (400/405)"
        resp = client.do("DELETE", "/v2/<name>/manifests/<reference>",
                         reference=self.tag_to_delete)
        expect_in(resp, 400, 202, 405)
        if resp.status_code == 400:
            codes = error_codes(resp)
            assert codes[0] == "UNSUPPORTED", f"expected UNSUPPORTED{describe(resp)}"

    def test_delete_manifest_digest_202_unless_already_deleted(self, client: Reggie) -> None:
        # Go: Manifest delete / "DELETE request to manifest (digest) should yield 202 response
        # unless already deleted"
        expect_in(delete_manifest(client, DATA.manifests[3].digest), 202, 404)

    def test_get_deleted_manifest_404_unless_delete_disallowed(self, client: Reggie) -> None:
        # Go: Manifest delete / "GET request to deleted manifest URL should yield 404 response,
        # unless delete is disallowed"
        resp = client.do("GET", "/v2/<name>/manifests/<digest>", digest=DATA.manifests[3].digest)
        expect_in(resp, 404, 200)

    def test_tags_list_reflects_manifest_deletion(self, client: Reggie) -> None:
        # Go: Manifest delete / "GET request to tags list should reflect manifest deletion"
        resp = client.do("GET", "/v2/<name>/tags/list")
        expect_eq(resp, 200)
        tags = parse_tag_list_strict(resp)
        assert len(tags) < self.num_tags, (
            f"expected fewer than {self.num_tags} tags, got {tags}{describe(resp)}")

    # --- Blob delete ---

    def test_delete_blob_202(self, client: Reggie) -> None:
        # Go: Blob delete / "DELETE request to blob URL should yield 202 response"
        expect_in(delete_blob(client, DATA.configs[3].digest), 202, 404, 405)
        resp = delete_blob(client, DATA.layer_digest)
        expect_in(resp, 202, 404, 405)
        if resp.status_code == 405:
            type(self).blob_delete_allowed = False

    def test_get_deleted_blob_404(self, client: Reggie) -> None:
        # Go: Blob delete / "GET request to deleted blob URL should yield 404 response"
        skip_unless(self.blob_delete_allowed)
        resp = client.do("GET", "/v2/<name>/blobs/<digest>", digest=DATA.configs[3].digest)
        expect_eq(resp, 404)
