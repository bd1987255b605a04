"""Client input never gets a 500: manifests, query parameters, range headers, token requests.

Explicit cases for each defect found, then hypothesis fuzzing over a real socket: any
answer below 500 is the protocol's own (an OCI error envelope on /v2, an OAuth2 or
OCI error on /auth/token).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.oci import mediatypes as mt
from tests.support.authenv import USERS, token_auth, write_config, write_htpasswd
from tests.support.fuzz import FRAMINGS, HEADER_TEXT, MANIFESTS, QUERY_TEXT, nested
from tests.support.oci_api import (
    assert_error,
    blob_bytes,
    canonical,
    descriptor,
    digest_of,
    push_blob,
    upload_location,
)
from tests.support.postgres import postgres_unavailable, running_postgres
from tests.support.prom import samples
from tests.support.servers import Server, start_dockyard

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
REPO = "fuzz/r"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metadata(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Each test runs on both metadata stores: PostgreSQL refuses text SQLite takes (a
    NUL character), so what is harmless on one can be a 500 on the other."""
    if request.param == "sqlite":
        yield {}
        return
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as url:
        yield {"DOCKYARD_DATABASE_URL": url}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, metadata: dict[str, str]
          ) -> Iterator[Server]:
    """A registry of its own: the fuzzing leaves sessions and repositories behind."""
    server = start_dockyard(tmp_path_factory.mktemp("plain") / "data", workers=2,
                            env=metadata)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory, metadata: dict[str, str]
           ) -> Iterator[Server]:
    """The built-in token service; the failed-login limit is high, so fuzzing gets 401s."""
    tmp = tmp_path_factory.mktemp("tokens")
    config = write_config(tmp / "config.yml", auth={
        **token_auth(write_htpasswd(tmp / "htpasswd")),
        "ratelimit": {"failures": 100000}})
    server = start_dockyard(tmp / "data", config=config, env=metadata)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(plain: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plain.url, timeout=60) as c:
        yield c


def _protocol_answer(resp: httpx.Response) -> None:
    """Not a server error; an error status carries the OCI envelope."""
    assert resp.status_code < 500, (resp.request.method, resp.request.url, resp.text[:300])
    if resp.status_code >= 400 and resp.request.method != "HEAD":
        assert_error(resp, resp.status_code)


# --- manifests that other clients cannot read ----------------------------------------


@pytest.fixture(scope="module")
def image(client: httpx.Client) -> dict[str, Any]:
    """A manifest whose blobs are in REPO (so only the parser can refuse a variant)."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', blob_bytes(300)
    push_blob(client, REPO, config)
    push_blob(client, REPO, layer)
    return {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": descriptor(mt.OCI_CONFIG, config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)]}


def _put(client: httpx.Client, payload: bytes, tag: str = "t") -> httpx.Response:
    return client.put(f"/v2/{REPO}/manifests/{tag}", content=payload,
                      headers={"Content-Type": mt.OCI_MANIFEST})


def test_the_manifest_itself_is_accepted(client: httpx.Client, image: dict[str, Any]) -> None:
    assert _put(client, canonical(image)).status_code == 201


def test_size_beyond_int64_is_manifest_invalid(client: httpx.Client,
                                               image: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(image))
    doc["layers"][0]["size"] = 2**63
    assert_error(_put(client, canonical(doc)), 400, "MANIFEST_INVALID")


def test_byte_order_mark_is_manifest_invalid(client: httpx.Client,
                                             image: dict[str, Any]) -> None:
    assert_error(_put(client, b"\xef\xbb\xbf" + canonical(image)), 400, "MANIFEST_INVALID")
    utf16 = canonical(image).decode().encode("utf-16")
    assert_error(_put(client, utf16), 400, "MANIFEST_INVALID")


def test_deep_nesting_is_manifest_invalid(client: httpx.Client,
                                          image: dict[str, Any]) -> None:
    for brackets in ("[]", "{}"):
        text = nested(json.dumps({**image, "x": None}), 100_000, brackets)
        assert_error(_put(client, text.encode()), 400, "MANIFEST_INVALID")


def test_keys_parsers_read_differently_are_manifest_invalid(
        client: httpx.Client, image: dict[str, Any]) -> None:
    # Go clients take the last of two `layers` (or a `Layers` beside it): the registry
    # must not keep one list of blobs while clients pull another
    body = canonical(image)
    twice = body.replace(b'"layers":', b'"layers":[],"layers":', 1)
    cased = body.replace(b'"layers":', b'"Layers":[],"layers":', 1)
    for payload, why in ((twice, "key 'layers' appears twice"),
                         (cased, "keys 'Layers' and 'layers' differ only in case")):
        resp = _put(client, payload, "dup")
        assert_error(resp, 400, "MANIFEST_INVALID")
        assert why in resp.json()["errors"][0]["message"]
    assert client.get(f"/v2/{REPO}/manifests/dup",
                      headers={"Accept": mt.OCI_MANIFEST}).status_code == 404


@pytest.mark.parametrize("media_type", ["\ud800", "a/" + "b" * 300])
def test_unstorable_media_type_is_manifest_invalid(client: httpx.Client, image: dict[str, Any],
                                                   media_type: str) -> None:
    doc = json.loads(json.dumps(image))
    doc["config"]["mediaType"] = media_type
    assert_error(_put(client, json.dumps(doc).encode()), 400, "MANIFEST_INVALID")


@FUZZ
@given(doc=MANIFESTS, prefix=FRAMINGS, depth=st.sampled_from([0, 10, 5000]),
       content_type=st.one_of(st.sampled_from(sorted(mt.MANIFESTS)), HEADER_TEXT))
def test_fuzzed_manifest_puts_never_5xx(client: httpx.Client, doc: dict[str, Any],
                                        prefix: bytes, depth: int, content_type: str) -> None:
    payload = prefix + nested(json.dumps({**doc, "x": None}), depth, "[]").encode()
    resp = client.put(f"/v2/{REPO}/manifests/fz", content=payload,
                      headers={"Content-Type": content_type})
    _protocol_answer(resp)


# --- query parameters and range headers ----------------------------------------------


def test_content_range_beyond_int64_is_range_invalid(client: httpx.Client) -> None:
    location = upload_location(client, REPO)
    resp = client.patch(location, content=b"abc",
                        headers={"Content-Range": "0-" + "9" * 5000})
    assert_error(resp, 416, "RANGE_INVALID")
    client.delete(location)


def test_range_end_beyond_int64_means_to_the_end(client: httpx.Client) -> None:
    data = blob_bytes(50)
    digest = push_blob(client, REPO, data)
    resp = client.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=10-" + "9" * 5000})
    assert resp.status_code == 206, resp.text
    assert resp.content == data[10:]


def _by_status(server: Server) -> dict[tuple[str, str, str], float]:
    """(route, method, status) -> requests answered, from the server's `/metrics`."""
    out: dict[tuple[str, str, str], float] = {}
    for (name, labels), value in samples(httpx.get(f"{server.url}/metrics").text).items():
        if name == "dockyard_http_requests_total":
            d = dict(labels)
            out[d["route"], d["method"], d["status"]] = value
    return out


def test_a_client_closing_mid_request_is_no_500_and_no_traceback(
        plain: Server, client: httpx.Client) -> None:
    """A push interrupted mid-body (every kind of upload, a manifest) and a download
    stopped mid-blob: one INFO line each and a 499 in the metrics, where each logged a
    traceback and counted a 500 (which the error-rate alert reads as a fault)."""
    blob = blob_bytes(8 << 20)
    push_blob(client, REPO, blob)
    zero = "sha256:" + "0" * 64
    cuts = [("upload", "PATCH", None, "Content-Length: 100"),
            ("upload", "PATCH", None, "Transfer-Encoding: chunked"),
            ("upload", "PUT", f"?digest={zero}", "Content-Length: 1000000"),
            ("upload-start", "POST", None, "Content-Length: 1000000"),
            ("manifest", "PUT", None, "Content-Length: 1000")]
    before, log_at = _by_status(plain), plain.log.stat().st_size
    for route, method, query, framing in cuts:
        if route == "upload":
            path = upload_location(client, REPO) + (query or "")
        elif route == "upload-start":
            path = f"/v2/{REPO}/blobs/uploads/?digest={zero}"
        else:
            path = f"/v2/{REPO}/manifests/cut"
        with socket.create_connection(("127.0.0.1", plain.port)) as sock:
            part = b"5\r\naaaaa\r\n" if "chunked" in framing else b"a" * 10
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n"
                         .encode() + part)
            time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", plain.port)) as sock:  # a download
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /v2/{REPO}/blobs/{digest_of(blob)} HTTP/1.1\r\nHost: x\r\n\r\n"
                     .encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.3)
    expected = {("upload", "PATCH"): 2, ("upload", "PUT"): 1, ("upload-start", "POST"): 1,
                ("manifest", "PUT"): 1, ("blob", "GET"): 1}
    deadline = time.monotonic() + 10
    while True:  # the server sees each close when it next reads or writes
        after = _by_status(plain)
        gone = {(r, m): after.get((r, m, "499"), 0) - before.get((r, m, "499"), 0)
                for r, m in expected}
        if gone == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert gone == expected
    assert not [k for k, v in after.items() if k[2].startswith("5") and v != before.get(k, 0)]
    logged = plain.log.read_bytes()[log_at:].decode(errors="replace")
    assert "Traceback" not in logged
    assert logged.count("the client closed the connection") == 6


def test_encoded_newline_in_a_path_gets_an_oci_error(client: httpx.Client) -> None:
    assert_error(client.get("/v2/a%0Ab/tags/list"), 400, "NAME_INVALID")
    assert_error(client.delete("/admin/v1/repositories/%0A"), 400, "NAME_INVALID")
    assert_error(client.get(f"/v2/{REPO}/manifests/%0A"), 404, "MANIFEST_UNKNOWN")


def test_a_nul_in_a_query_value_is_no_500(client: httpx.Client,
                                          image: dict[str, Any]) -> None:
    """What PostgreSQL refuses in text: every query value that reaches a query."""
    assert _put(client, canonical(image), "nul").status_code == 201  # REPO has a tag
    nul = "a\x00b"
    blob = digest_of(b"x")
    for path, params in ((f"/v2/{REPO}/tags/list", {"last": nul}),
                         ("/v2/_catalog", {"last": nul}),
                         (f"/v2/{REPO}/referrers/{blob}", {"artifactType": nul}),
                         ("/admin/v1/sync", {"source": nul}),
                         ("/admin/v1/jobs", {"job": nul})):
        resp = client.get(path, params=params)
        assert resp.status_code == 200, (path, resp.text[:300])
    for path, params in (("/ui/", {"q": nul}), ("/ui/search", {"q": nul}),
                         ("/ui/repositories", {"q": nul})):
        resp = client.get(path, params=params)
        assert resp.status_code == 200, (path, resp.text[:300])


@FUZZ
@given(n=QUERY_TEXT, last=QUERY_TEXT, digest=QUERY_TEXT, source=QUERY_TEXT,
       artifact_type=QUERY_TEXT, rng=HEADER_TEXT)
def test_fuzzed_queries_and_headers_never_5xx(client: httpx.Client, n: str, last: str,
                                              digest: str, source: str, artifact_type: str,
                                              rng: str) -> None:
    blob = digest_of(b"x")
    segment, name = quote(digest, safe=""), quote(last, safe="")  # in a path
    for resp in (
        client.get("/v2/_catalog", params={"n": n, "last": last}),
        client.get(f"/v2/{REPO}/tags/list", params={"n": n, "last": last}),
        client.get(f"/v2/{REPO}/referrers/{blob}", params={"artifactType": artifact_type}),
        client.get(f"/v2/{REPO}/referrers/{segment}"),
        client.get(f"/v2/{REPO}/blobs/{segment}", headers={"Range": rng}),
        client.delete(f"/admin/v1/repositories/{name}"),
    ):
        _protocol_answer(resp)
    for params in ({"mount": digest, "from": source}, {"digest": digest}):
        resp = client.post(f"/v2/{REPO}/blobs/uploads/", params=params, content=b"x")
        _protocol_answer(resp)
        if resp.status_code == 202:
            client.delete(resp.headers["Location"])
    for path, params in (("/admin/v1/sync", {"n": n, "source": source}),
                         ("/admin/v1/jobs", {"n": n, "job": source}),
                         ("/admin/v1/events", {"after": n, "limit": last, "wait": "0"})):
        _protocol_answer(client.get(path, params=params))
    for path, params in (("/ui/", {"q": last}), ("/ui/search", {"q": last, "partial": n}),
                         ("/ui/repositories", {"q": last, "sort": source,
                                               "order": artifact_type, "page": n}),
                         ("/ui/login", {"next": last}),
                         (f"/ui/r/{REPO}/-/blobs/{blob}", {"path": last})):
        resp = client.get(path, params=params)  # the web UI's pages: HTML
        assert resp.status_code < 500, (resp.request.url, resp.text[:300])
    location = upload_location(client, REPO)
    for resp in (client.patch(location, content=b"abc", headers={"Content-Range": rng}),
                 client.put(location, params={"digest": digest}, content=b"",
                            headers={"Content-Range": rng})):
        _protocol_answer(resp)
    client.delete(location)


# --- the token endpoint ----------------------------------------------------------------


def _token_answer(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.request.url, resp.text[:300])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:300]
    resp.json()


def test_a_nul_in_a_user_name_is_wrong_not_a_500(tokens: Server) -> None:
    """The failed login is counted under its user name: in PostgreSQL too."""
    for auth in (("re\x00ader", "pw"), ("reader\x00", USERS["reader"][0])):
        resp = httpx.get(f"{tokens.url}/auth/token", params={"service": "dockyard"},
                         auth=auth)
        assert resp.status_code == 401, resp.text[:300]
    resp = httpx.post(f"{tokens.url}/auth/token", data={
        "grant_type": "password", "service": "dockyard", "client_id": "t",
        "username": "re\x00ader", "password": "pw"})
    assert resp.status_code in (400, 401), resp.text[:300]


def test_long_password_is_wrong_not_a_500(tokens: Server) -> None:
    url = f"{tokens.url}/auth/token"
    long = USERS["builder"][0] + "x" * 100
    resp = httpx.get(url, auth=("builder", long), params={"service": "dockyard"})
    assert_error(resp, 401, "UNAUTHORIZED")
    resp = httpx.post(url, data={"grant_type": "password", "username": "nobody",
                                 "password": "y" * 1000})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_grant"


def test_oversized_chunked_form_is_invalid_request(tokens: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"grant_type=password&username=builder&password="
        for _ in range(80):
            yield b"a" * 1024

    resp = httpx.post(f"{tokens.url}/auth/token", content=chunks(),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"


#: around bcrypt's 72-byte input limit
LONG = st.integers(60, 300).map(lambda n: "é" * (n // 2) if n % 3 == 0 else "p" * n)
FORM_FIELDS = st.dictionaries(
    st.sampled_from(["grant_type", "username", "password", "refresh_token", "scope",
                     "service", "access_type", "client_id"]),
    st.one_of(st.sampled_from(["password", "refresh_token", "builder", "dockyard",
                               USERS["builder"][0], "repository:a/b:pull,push"]),
              st.text(max_size=120), LONG))


@FUZZ
@given(fields=FORM_FIELDS, raw=st.binary(max_size=200))
def test_fuzzed_token_posts_never_5xx(tokens: Server, fields: dict[str, str],
                                      raw: bytes) -> None:
    url = f"{tokens.url}/auth/token"
    _token_answer(httpx.post(url, data=fields))
    _token_answer(httpx.post(url, content=raw,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}))


@FUZZ
@given(query=st.lists(st.tuples(st.sampled_from(["service", "scope", "offline_token",
                                                 "account", "client_id"]), QUERY_TEXT),
                      max_size=5),
       user=st.one_of(st.none(), st.sampled_from(sorted(USERS)), st.text(max_size=40)),
       password=st.one_of(st.just(USERS["builder"][0]), st.text(max_size=80), LONG))
def test_fuzzed_token_gets_never_5xx(tokens: Server, query: list[tuple[str, str]],
                                     user: str | None, password: str) -> None:
    auth = (user, password) if user is not None else None
    _token_answer(httpx.get(f"{tokens.url}/auth/token", params=query, auth=auth))
