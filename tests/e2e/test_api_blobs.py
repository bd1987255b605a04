"""OCI distribution-spec: blob pull (GET/HEAD, Range), blob delete, uploads and mounts.

Each test speaks raw HTTP to a real server with a synchronous httpx client. The
expectations come from the spec's "Pulling blobs", "Pushing blobs" (monolithic,
POST+PUT, chunked), "Mounting a blob from another repository" and "Deleting blobs".
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.oci_api import (
    assert_error,
    blob_bytes,
    digest_of,
    new_repo,
    push_blob,
    raw_request,
    upload_location,
    with_digest,
)
from tests.support.servers import Server


@pytest.fixture
def client(registry: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        yield c


def _offset(resp: httpx.Response) -> int:
    """The next byte an upload expects, from its `Range: 0-<last>` header."""
    m = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers["range"])
    assert m, resp.headers["range"]
    return int(m.group(1)) + 1


def _uuid_of(location: str) -> str:
    return httpx.URL(location).path.rstrip("/").rsplit("/", 1)[-1]


# --- pull ---------------------------------------------------------------------------


def test_blob_get_and_head(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(3000)
    digest = push_blob(client, repo, data)

    resp = client.get(f"/v2/{repo}/blobs/{digest}")
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["docker-content-digest"] == digest
    assert resp.headers["content-length"] == str(len(data))
    assert digest in resp.headers["etag"]
    assert resp.headers["content-type"] == "application/octet-stream"

    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["docker-content-digest"] == digest
    assert head.headers["content-length"] == str(len(data))
    assert digest in head.headers["etag"]


@pytest.mark.parametrize("colon", ["%3A", "%3a"])
def test_blob_digest_with_encoded_colon(registry: Server, client: httpx.Client, repo: str,
                                        colon: str) -> None:
    """`sha256%3A<hex>` is the digest `sha256:<hex>` (the path is read decoded)."""
    data = blob_bytes(300)
    digest = push_blob(client, repo, data)
    path = f"/v2/{repo}/blobs/{digest.replace(':', colon)}"
    head = raw_request(registry.port, "HEAD", path)
    assert head.status == 200, head.status
    assert head.headers["Docker-Content-Digest"] == digest
    got = raw_request(registry.port, "GET", path)
    assert got.status == 200, got.body[:500]
    assert got.body == data


def test_unknown_blob(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, blob_bytes(10))
    missing = digest_of(b"never pushed " + repo.encode())
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    head = client.head(f"/v2/{repo}/blobs/{missing}")
    assert head.status_code == 404
    assert head.content == b""


def test_blob_in_unknown_repository(client: httpx.Client) -> None:
    resp = client.get(f"/v2/{new_repo()}/blobs/{digest_of(b'x')}")
    assert_error(resp, 404, "BLOB_UNKNOWN", "NAME_UNKNOWN")


def test_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"")
    assert digest == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    resp = client.get(f"/v2/{repo}/blobs/{digest}")
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["content-length"] == "0"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=1000-", 1000, 1999),
        ("bytes=-300", 1700, 1999),
        ("bytes=1990-5000", 1990, 1999),
        ("bytes=1999-1999", 1999, 1999),
    ],
)
def test_blob_range(client: httpx.Client, repo: str, header: str, start: int, end: int) -> None:
    data = blob_bytes(2000)
    digest = push_blob(client, repo, data)
    resp = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert resp.status_code == 206, resp.text
    assert resp.content == data[start:end + 1]
    assert resp.headers["content-range"] == f"bytes {start}-{end}/2000"
    assert resp.headers["content-length"] == str(end - start + 1)
    assert resp.headers["docker-content-digest"] == digest


def test_blob_range_suffix_longer_than_blob(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(100)
    digest = push_blob(client, repo, data)
    resp = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=-500"})
    assert resp.status_code == 206
    assert resp.content == data
    assert resp.headers["content-range"] == "bytes 0-99/100"


@pytest.mark.parametrize("header", ["bytes=2000-", "bytes=5000-6000", "bytes=-0"])
def test_blob_range_not_satisfiable(client: httpx.Client, repo: str, header: str) -> None:
    digest = push_blob(client, repo, blob_bytes(2000))
    resp = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == "bytes */2000"


@pytest.mark.parametrize(("if_range", "status"), [
    ("{etag}", 206),                            # the client holds this blob: its piece
    ('"sha256:' + "0" * 64 + '"', 200),         # another representation: the whole blob
    ("W/{etag}", 200),                          # weak: never matches (RFC 9110 13.1.5)
    ("Sat, 05 Dec 2026 00:00:00 GMT", 200),     # a date: no Last-Modified to match
])
def test_blob_range_under_if_range(client: httpx.Client, repo: str, if_range: str,
                                   status: int) -> None:
    """A resumed download (curl -C, a browser) names what it holds: a Range is
    honoured only when that is this blob, else the whole blob comes back with 200."""
    data = blob_bytes(2000)
    digest = push_blob(client, repo, data)
    etag = client.head(f"/v2/{repo}/blobs/{digest}").headers["etag"]
    assert etag == f'"{digest}"'
    resp = client.get(f"/v2/{repo}/blobs/{digest}", headers={
        "Range": "bytes=100-199", "If-Range": if_range.format(etag=etag)})
    assert resp.status_code == status
    assert resp.content == (data[100:200] if status == 206 else data)
    assert ("content-range" in resp.headers) == (status == 206)


def test_blob_range_resumable_pull(client: httpx.Client, repo: str) -> None:
    """The spec's resumable pull: fetch in pieces with Range and reassemble."""
    data = blob_bytes(10_000)
    digest = push_blob(client, repo, data)
    got = bytearray()
    while len(got) < len(data):
        resp = client.get(f"/v2/{repo}/blobs/{digest}",
                          headers={"Range": f"bytes={len(got)}-{len(got) + 2999}"})
        assert resp.status_code == 206
        got += resp.content
    assert bytes(got) == data


# --- delete -------------------------------------------------------------------------


def test_blob_delete(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, blob_bytes(100))
    resp = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert resp.status_code == 202
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_blob_delete_is_per_repository(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(100)
    other = new_repo()
    digest = push_blob(client, repo, data)
    push_blob(client, other, data)
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    resp = client.get(f"/v2/{other}/blobs/{digest}")
    assert resp.status_code == 200
    assert resp.content == data


def test_blob_delete_malformed_digest(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"x")
    assert_error(client.delete(f"/v2/{repo}/blobs/sha256:nothex"), (400, 404),
                 "DIGEST_INVALID", "BLOB_UNKNOWN")


# --- upload session -----------------------------------------------------------------


def test_start_upload_session(client: httpx.Client, repo: str) -> None:
    resp = client.post(f"/v2/{repo}/blobs/uploads/")
    assert resp.status_code == 202
    assert resp.headers["location"]
    assert f"/v2/{repo}/blobs/uploads/" in resp.headers["location"]
    assert resp.headers["range"] == "0-0"
    assert resp.headers["docker-upload-uuid"]
    assert resp.headers["docker-upload-uuid"] == _uuid_of(resp.headers["location"])
    assert resp.headers.get("content-length", "0") == "0"


def test_upload_status(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    resp = client.patch(location, content=blob_bytes(400),
                        headers={"Content-Range": "0-399",
                                 "Content-Type": "application/octet-stream"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    status = client.get(location)
    assert status.status_code == 204
    assert status.content == b""
    assert status.headers["range"] == "0-399"
    assert status.headers["location"]
    assert status.headers["docker-upload-uuid"] == _uuid_of(location)


def test_monolithic_post(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(5000)
    digest = digest_of(data)
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith(f"/v2/{repo}/blobs/{digest}")
    assert resp.headers["docker-content-digest"] == digest
    assert client.get(resp.headers["location"]).content == data


def test_post_then_put(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(5000)
    digest = digest_of(data)
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, digest), content=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith(f"/v2/{repo}/blobs/{digest}")
    assert resp.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    # the session is over
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_patch_with_content_length(client: httpx.Client, repo: str) -> None:
    """A streamed PATCH without Content-Range (Docker's way), then PUT with no body."""
    data = blob_bytes(1_500_000)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data,
                        headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 202, resp.text
    assert resp.headers["range"] == f"0-{len(data) - 1}"
    assert resp.headers["docker-upload-uuid"] == _uuid_of(location)
    digest = digest_of(data)
    resp = client.put(with_digest(resp.headers["location"], digest))
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_patch_chunked_transfer_encoding(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(3_000_000)

    def body() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    location = upload_location(client, repo)
    request = client.build_request("PATCH", location, content=body(),
                                   headers={"Content-Type": "application/octet-stream"})
    assert request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in request.headers
    resp = client.send(request)
    assert resp.status_code == 202, resp.text
    assert _offset(resp) == len(data)
    digest = digest_of(data)
    resp = client.put(with_digest(resp.headers["location"], digest))
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


@pytest.mark.parametrize("form", ["{start}-{end}", "bytes={start}-{end}"])
def test_chunked_upload_content_range(client: httpx.Client, repo: str, form: str) -> None:
    data = blob_bytes(1000)
    location = upload_location(client, repo)
    for start in range(0, 1000, 400):
        chunk = data[start:start + 400]
        end = start + len(chunk) - 1
        resp = client.patch(location, content=chunk, headers={
            "Content-Range": form.format(start=start, end=end),
            "Content-Type": "application/octet-stream",
        })
        assert resp.status_code == 202, resp.text
        assert resp.headers["range"] == f"0-{end}"
        location = resp.headers["location"]
    digest = digest_of(data)
    resp = client.put(with_digest(location, digest))
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_chunked_upload_final_chunk_in_put(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:600], headers={"Content-Range": "0-599"})
    assert resp.status_code == 202
    digest = digest_of(data)
    resp = client.put(with_digest(resp.headers["location"], digest), content=data[600:],
                      headers={"Content-Range": "600-999",
                               "Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_final_chunk_in_put_without_content_range(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:300])
    assert resp.status_code == 202
    digest = digest_of(data)
    resp = client.put(with_digest(resp.headers["location"], digest), content=data[300:])
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_out_of_order_chunk(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:400], headers={"Content-Range": "0-399"})
    assert resp.status_code == 202
    location = resp.headers["location"]

    # a gap: the chunk starts at 500, the upload is at 400
    gap = client.patch(location, content=data[500:600], headers={"Content-Range": "500-599"})
    assert_error(gap, 416, "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
    assert gap.headers["range"] == "0-399"
    assert gap.headers["location"]
    # a repeat of bytes already received is out of order too
    again = client.patch(location, content=data[:400], headers={"Content-Range": "0-399"})
    assert again.status_code == 416
    assert again.headers["range"] == "0-399"

    # nothing was written; the client resumes from where the registry says
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-399"
    resume = _offset(status)
    resp = client.patch(gap.headers["location"], content=data[resume:],
                        headers={"Content-Range": f"{resume}-999"})
    assert resp.status_code == 202, resp.text
    digest = digest_of(data)
    resp = client.put(with_digest(resp.headers["location"], digest))
    assert resp.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_content_range_length_mismatch(client: httpx.Client, repo: str) -> None:
    """Content-Range announces 100 bytes, the body (and Content-Length) holds 50."""
    location = upload_location(client, repo)
    resp = client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    bad = client.patch(location, content=b"b" * 50, headers={"Content-Range": "10-109"})
    assert_error(bad, (400, 416), "SIZE_INVALID", "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
    status = client.get(location)
    assert status.headers["range"] == "0-9"


def test_patch_announcing_more_than_storage_can_hold_keeps_the_session(
        client: httpx.Client, repo: str) -> None:
    """A Content-Range spanning exabytes (a chunked body of 3 bytes) is the client's
    error, refused before a byte is written: the session and its bytes stay."""
    data = blob_bytes(20)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:10], headers={"Content-Range": "0-9"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    huge = client.patch(location, content=iter([data[10:13]]),
                        headers={"Content-Range": "10-9223372036854775806"})
    assert_error(huge, (400, 413, 416), "SIZE_INVALID", "RANGE_INVALID",
                 "BLOB_UPLOAD_INVALID")
    status = client.get(location)
    assert status.status_code == 204, status.text
    assert status.headers["range"] == "0-9"
    resp = client.patch(location, content=data[10:], headers={"Content-Range": "10-19"})
    assert resp.status_code == 202, resp.text
    resp = client.put(with_digest(resp.headers["location"], digest_of(data)))
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest_of(data)}").content == data


def test_put_content_range_length_mismatch(client: httpx.Client, repo: str) -> None:
    """A whole-blob PUT whose Content-Range spans more than its Content-Length is
    refused the same way whatever the body's size (a small one is read before the
    session is held); the session stays at 0 for a retry."""
    for size in (5, 70_000):
        data = blob_bytes(size)
        location = upload_location(client, repo)
        resp = client.put(with_digest(location, digest_of(data)), content=data,
                          headers={"Content-Range": f"0-{size + 94}"})
        assert_error(resp, 416, "RANGE_INVALID")
        assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["range"] == "0-0"
        resp = client.put(with_digest(location, digest_of(data)), content=data,
                          headers={"Content-Range": f"0-{size - 1}"})
        assert resp.status_code == 201, (size, resp.text)


def test_truncated_body_does_not_advance_upload(registry: Server, client: httpx.Client,
                                                repo: str) -> None:
    """Content-Length says 100, the client sends 50 and hangs up: the offset stays put."""
    location = upload_location(client, repo)
    resp = client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"})
    assert resp.status_code == 202
    path = httpx.URL(resp.headers["location"])
    target = path.raw_path.decode()
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        sock.sendall(
            f"PATCH {target} HTTP/1.1\r\nHost: {registry.host}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Range: 10-109\r\n"
            "Content-Length: 100\r\n\r\n".encode() + b"b" * 50
        )
        sock.shutdown(socket.SHUT_WR)
        try:
            reply = sock.recv(65536)
        except OSError:
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 202"), reply[:200]
    status = client.get(resp.headers["location"])
    assert status.status_code == 204
    assert status.headers["range"] == "0-9"
    # and the session is still usable
    data = b"a" * 10 + b"c" * 90
    resp = client.put(with_digest(resp.headers["location"], digest_of(data)),
                      content=data[10:], headers={"Content-Range": "10-99"})
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest_of(data)}").content == data


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    resp = client.patch(location, content=b"abc")
    assert resp.status_code == 202
    location = resp.headers["location"]
    resp = client.delete(location)
    assert resp.status_code == 204
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(location, content=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(with_digest(location, digest_of(b"abc"))), 404,
                 "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_upload_session(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"x")
    for ref in ("00000000-0000-0000-0000-000000000000", "not-a-session"):
        assert_error(client.get(f"/v2/{repo}/blobs/uploads/{ref}"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(client.patch(f"/v2/{repo}/blobs/uploads/{ref}", content=b"x"), 404,
                     "BLOB_UPLOAD_UNKNOWN")


def test_upload_session_belongs_to_its_repository(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    session = _uuid_of(location)
    other = new_repo()
    assert_error(client.get(f"/v2/{other}/blobs/uploads/{session}"), 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_wrong_digest(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    wrong = digest_of(b"something else " + repo.encode())
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, wrong), content=data)
    assert_error(resp, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


def test_monolithic_post_wrong_digest(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    wrong = digest_of(b"something else " + repo.encode())
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert_error(resp, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


@pytest.mark.parametrize("digest", [
    "sha256:abc",
    "sha256:" + "g" * 64,
    "sha256" + "a" * 64,
    "md5:" + "a" * 32,
    "sha256:" + "A" * 64,
    "",
])
def test_put_malformed_digest(client: httpx.Client, repo: str, digest: str) -> None:
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, digest), content=b"data")
    assert_error(resp, 400, "DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "UNSUPPORTED")


def test_monolithic_post_malformed_digest(client: httpx.Client, repo: str) -> None:
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": "sha256:nope"},
                       content=b"data")
    assert_error(resp, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("first", [True, False], ids=["right-first", "right-second"])
def test_a_digest_given_twice_is_digest_invalid(client: httpx.Client, repo: str,
                                                first: bool) -> None:
    """`?digest=` twice, on the closing PUT and on a one-request POST: refused, whichever
    comes first (a proxy in front may read the other one), and no blob is stored."""
    data = blob_bytes(1000)
    right, wrong = digest_of(data), digest_of(b"something else " + repo.encode())
    both = [("digest", right), ("digest", wrong)] if first else \
        [("digest", wrong), ("digest", right)]
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params=both, content=data)
    assert_error(resp, 400, "DIGEST_INVALID")
    location = upload_location(client, repo)
    resp = client.put(location, params=both, content=data)
    assert_error(resp, 400, "DIGEST_INVALID")
    assert "more than once" in resp.json()["errors"][0]["message"]
    assert client.head(f"/v2/{repo}/blobs/{right}").status_code == 404


def test_put_without_digest(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    resp = client.put(location, content=b"data")
    assert_error(resp, 400, "DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


def test_sha512_blob(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(70_000)
    digest = digest_of(data, "sha512")
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == digest
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["docker-content-digest"] == digest


def test_sha512_chunked_upload(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(70_000)
    digest = digest_of(data, "sha512")
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:30_000], headers={"Content-Range": "0-29999"})
    assert resp.status_code == 202
    resp = client.put(with_digest(resp.headers["location"], digest), content=data[30_000:],
                      headers={"Content-Range": "30000-69999"})
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    # the sha256 of the same bytes was not published by the sha512 upload
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


def test_same_blob_pushed_twice(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    assert push_blob(client, repo, data) == push_blob(client, repo, data)
    assert client.get(f"/v2/{repo}/blobs/{digest_of(data)}").content == data


# --- mount ----------------------------------------------------------------------------


def test_blob_not_visible_in_other_repository(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    digest = push_blob(client, repo, data)
    other = new_repo()
    push_blob(client, other, b"other content " + other.encode())
    assert_error(client.get(f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{other}/blobs/{digest}").status_code == 404


def test_cross_repository_mount(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    digest = push_blob(client, repo, data)
    target = new_repo()
    assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    resp = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith(f"/v2/{target}/blobs/{digest}")
    assert resp.headers["docker-content-digest"] == digest
    got = client.get(f"/v2/{target}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data


def test_mount_falls_back_to_upload_when_source_lacks_blob(client: httpx.Client,
                                                           repo: str) -> None:
    data = blob_bytes(1000)
    digest = push_blob(client, repo, data)  # exists in `repo`, not in `source`
    source = new_repo()
    push_blob(client, source, b"unrelated " + source.encode())
    target = new_repo()
    resp = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert resp.status_code == 202, resp.text
    assert resp.headers["location"]
    assert resp.headers["docker-upload-uuid"]
    assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    # the session it opened works
    resp = client.put(with_digest(resp.headers["location"], digest), content=data)
    assert resp.status_code == 201
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data


def test_mount_of_unknown_blob_falls_back(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"x")
    missing = digest_of(b"nowhere " + repo.encode())
    resp = client.post(f"/v2/{new_repo()}/blobs/uploads/",
                       params={"mount": missing, "from": repo})
    assert resp.status_code == 202
    assert resp.headers["location"]


def test_mount_without_from(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    digest = push_blob(client, repo, data)
    target = new_repo()
    resp = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest})
    # the spec lets a registry mount without `from` (201) or open a session (202)
    assert resp.status_code in (201, 202), resp.text
    if resp.status_code == 202:
        assert resp.headers["location"]
        assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    else:
        assert client.get(f"/v2/{target}/blobs/{digest}").content == data


def test_mount_from_invalid_name(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"x")
    resp = client.post(f"/v2/{new_repo()}/blobs/uploads/",
                       params={"mount": digest, "from": "Bad/Name"})
    assert resp.status_code in (202, 400), resp.text
    if resp.status_code == 400:
        assert_error(resp, 400, "NAME_INVALID")


def test_monolithic_post_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = digest_of(b"")
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=b"")
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == b""


def test_monolithic_post_chunked_body(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(200_000)
    digest = digest_of(data)
    resp = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                       content=iter([data[:70_000], data[70_000:]]))
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_put_final_chunk_chunked(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(200_000)
    digest = digest_of(data)
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, digest), content=iter([data[:1000], data[1000:]]))
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_patch_body_longer_than_content_range(client: httpx.Client, repo: str) -> None:
    """A chunked body that runs past the end its Content-Range announced is refused."""
    location = upload_location(client, repo)
    resp = client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    bad = client.patch(location, content=iter([b"b" * 100, b"c" * 100]),
                       headers={"Content-Range": "10-109"})
    assert_error(bad, (400, 416), "SIZE_INVALID", "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
    assert client.get(location).headers["range"] == "0-9"


def test_malformed_content_range(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    resp = client.patch(location, content=b"abc", headers={"Content-Range": "bytes"})
    assert_error(resp, (400, 416))


def test_put_final_chunk_out_of_order(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:500], headers={"Content-Range": "0-499"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    resp = client.put(with_digest(location, digest_of(data)), content=data[600:],
                      headers={"Content-Range": "600-999"})
    assert_error(resp, 416, "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


def test_put_out_of_range_tells_where_the_upload_is(client: httpx.Client, repo: str) -> None:
    """A 416 on the finishing PUT carries Location, Range and Docker-Upload-UUID, as on
    a PATCH, so the client can resume."""
    data = b"abcde"
    location = upload_location(client, repo)
    resp = client.patch(location, content=data[:3], headers={"Content-Range": "0-2"})
    assert resp.status_code == 202
    location = resp.headers["location"]
    resp = client.put(with_digest(location, digest_of(data)), content=data[2:],
                      headers={"Content-Range": "2-4"})
    assert_error(resp, 416, "RANGE_INVALID", "BLOB_UPLOAD_INVALID")
    assert resp.headers["range"] == "0-2"
    assert resp.headers["docker-upload-uuid"] == _uuid_of(location)
    assert _uuid_of(resp.headers["location"]) == _uuid_of(location)
    # the client resumes where it was told
    resp = client.put(with_digest(resp.headers["location"], digest_of(data)),
                      content=data[3:], headers={"Content-Range": "3-4"})
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{repo}/blobs/{digest_of(data)}").content == data


def test_patch_after_finish(client: httpx.Client, repo: str) -> None:
    location = upload_location(client, repo)
    resp = client.put(with_digest(location, digest_of(b"done")), content=b"done")
    assert resp.status_code == 201
    assert_error(client.patch(location, content=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("case", ["bad-digest", "bad-from", "empty-mount", "bad-both"])
def test_mount_with_malformed_arguments_opens_a_session(client: httpx.Client, repo: str,
                                                        case: str) -> None:
    """A registry unable to mount SHOULD answer 202 with a new session (the spec);
    Distribution ignores malformed `mount`/`from` the same way."""
    data = blob_bytes(500)
    digest = push_blob(client, repo, data)
    mount, source = {"bad-digest": ("sha256:bad", repo), "bad-from": (digest, "BAD..name"),
                     "empty-mount": ("", repo), "bad-both": ("nope", "a//b")}[case]
    target = new_repo()
    resp = client.post(f"/v2/{target}/blobs/uploads/",
                       params={"mount": mount, "from": source})
    assert resp.status_code == 202, resp.text
    assert resp.headers["docker-upload-uuid"]
    assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    # the session it opened works
    resp = client.put(with_digest(resp.headers["location"], digest), content=data)
    assert resp.status_code == 201, resp.text
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data


def test_blob_get_malformed_digest(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"x")
    assert_error(client.get(f"/v2/{repo}/blobs/sha256:nothex"), (400, 404),
                 "DIGEST_INVALID", "BLOB_UNKNOWN")


def test_mounted_blob_outlives_delete_in_source(client: httpx.Client, repo: str) -> None:
    data = blob_bytes(1000)
    digest = push_blob(client, repo, data)
    target = new_repo()
    resp = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert resp.status_code == 201
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert client.get(f"/v2/{target}/blobs/{digest}").content == data


@pytest.mark.parametrize(("if_none_match", "status"), [
    ("{etag}", 304),                             # the client holds this blob
    ("W/{etag}", 304),                           # weak comparison (RFC 9110 13.1.2)
    ('"sha256:' + "0" * 64 + '", {etag}', 304),  # one of several
    ("*", 304),
    ('"sha256:' + "0" * 64 + '"', 200),          # another blob: sent
])
def test_a_blob_the_client_holds_is_304(client: httpx.Client, repo: str,
                                        if_none_match: str, status: int) -> None:
    """`If-None-Match` with the blob's own ETag was ignored: caches and pollers that
    revalidate downloaded it whole again."""
    data = blob_bytes(2000)
    digest = push_blob(client, repo, data)
    etag = f'"{digest}"'
    resp = client.get(f"/v2/{repo}/blobs/{digest}", headers={
        "If-None-Match": if_none_match.format(etag=etag), "Range": "bytes=0-9"})
    if status == 304:
        assert resp.status_code == 304, resp.text
        assert resp.content == b""
        assert resp.headers["etag"] == etag
    else:
        assert resp.status_code == 206  # the Range applies when the blob is sent
        assert resp.content == data[:10]
