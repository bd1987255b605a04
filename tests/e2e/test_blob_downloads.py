"""Blob downloads that go wrong on the way: bytes missing from storage, clients that stop
reading, and what the connection looks like afterwards.

A blob whose stored bytes are fewer than recorded is never sent short on a connection
that stays open (a pipelined next response would be read as the rest of its body);
clients that never read what they asked for are cut off after `http.body_timeout` and
cannot take the object store's connections from everyone else.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.s3 import S3Server, running_s3
from tests.support.servers import Server, start_dockyard

MIB = 1024 * 1024


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(url: str, repo: str, data: bytes) -> str:
    """A monolithic POST of `data` as a blob of `repo`; its digest."""
    digest = digest_of(data)
    r = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest},
                   content=data, timeout=120)
    assert r.status_code == 201, r.text
    return digest


def blob_file(data: Path, digest: str) -> Path:
    hexa = digest.split(":", 1)[1]
    return data / "blobs" / "sha256" / hexa[:2] / hexa / "data"


def get_line(repo: str, digest: str, extra: str = "") -> bytes:
    return (f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: registry\r\n{extra}\r\n"
            ).encode()


def stalled_socket(port: int, request: bytes) -> socket.socket:
    """A connection that sends `request` and then reads nothing (a tiny receive
    buffer, so the server's writes back up at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def read_to_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True), or until
    `timeout` passes with the connection still open (False)."""
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            got += chunk
    except TimeoutError:
        return bytes(got), False
    except ConnectionResetError:
        pass
    return bytes(got), True


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and what follows the header of the first
    response in `raw`."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


# --- stored bytes shorter than recorded ------------------------------------------------


@pytest.fixture
def fs_server(tmp_path: Path) -> Iterator[Server]:
    server = start_dockyard(tmp_path / "data")
    yield server
    server.stop()


def test_truncated_small_blob_is_unknown_and_the_connection_goes_on(fs_server: Server
                                                                     ) -> None:
    """A blob cut short before the status is sent: 404 BLOB_UNKNOWN, and the next
    request on the same connection is answered as its own response."""
    repo = f"downloads/short-{uuid.uuid4().hex[:8]}"
    digest = push(fs_server.url, repo, os.urandom(100_000))
    os.truncate(blob_file(fs_server.data, digest), 50_000)
    with socket.create_connection(("127.0.0.1", fs_server.port), timeout=10) as sock:
        sock.sendall(get_line(repo, digest) + b"GET /v2/ HTTP/1.1\r\nHost: r\r\n"
                     b"Connection: close\r\n\r\n")
        raw, closed = read_to_eof(sock, 10)
    assert closed
    status, headers, rest = split_response(raw)
    assert status == 404, raw[:500]
    body = rest[:int(headers["content-length"])]
    assert b"BLOB_UNKNOWN" in body
    second, _, _ = split_response(rest[len(body):])
    assert second == 200
    assert "50000 of the 100000 bytes" in fs_server.log.read_text()


def test_blob_truncated_while_sent_closes_the_connection(fs_server: Server) -> None:
    """The file shrinks while its body goes out (the status is sent): the client gets
    fewer bytes than Content-Length and the connection closes; the pipelined request
    behind it is never answered inside that body."""
    repo = f"downloads/cut-{uuid.uuid4().hex[:8]}"
    size = 64 * MIB
    digest = push(fs_server.url, repo, os.urandom(size))
    sock = stalled_socket(fs_server.port, get_line(repo, digest)
                          + b"GET /v2/ HTTP/1.1\r\nHost: r\r\n\r\n")
    with sock:
        time.sleep(1.0)  # the server sent what the socket buffers hold, and waits
        os.truncate(blob_file(fs_server.data, digest), 32 * MIB)
        raw, closed = read_to_eof(sock, 20)
    assert closed, "the connection stayed open after a short body"
    status, headers, rest = split_response(raw)
    assert status == 200
    assert int(headers["content-length"]) == size
    assert len(rest) < size
    assert b"HTTP/1.1 200" not in rest
    assert f"of the {size} bytes from 0" in fs_server.log.read_text()


# --- zero-copy sends from local files --------------------------------------------------


def sendfile_bytes(url: str) -> float:
    """`dockyard_sendfile_bytes_total` as the server reports it (0 before any)."""
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    for line in r.text.splitlines():
        if line.startswith("dockyard_sendfile_bytes_total "):
            return float(line.split()[1])
    return 0.0


def test_filesystem_blob_gets_go_out_with_sendfile(fs_server: Server) -> None:
    """Whole and ranged GETs of a blob on the filesystem are sent by the kernel from
    the file (the sendfile byte counter grows by each body), with the right bytes."""
    repo = f"downloads/sendfile-{uuid.uuid4().hex[:8]}"
    data = os.urandom(5 * MIB + 123)
    digest = push(fs_server.url, repo, data)
    size = len(data)
    before = sendfile_bytes(fs_server.url)
    url = f"{fs_server.url}/v2/{repo}/blobs/{digest}"
    expected = 0
    with httpx.Client(timeout=30) as client:
        r = client.get(url)
        assert r.status_code == 200
        assert r.content == data
        expected += size
        for header, start, end in [("bytes=0-0", 0, 0), ("bytes=1000-1999", 1000, 1999),
                                   (f"bytes={size - 10}-{size - 1}", size - 10, size - 1),
                                   ("bytes=-7", size - 7, size - 1),
                                   ("bytes=4000000-", 4000000, size - 1)]:
            r = client.get(url, headers={"Range": header})
            assert r.status_code == 206, header
            assert r.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
            assert r.content == data[start:end + 1], header
            expected += end + 1 - start
    assert sendfile_bytes(fs_server.url) - before == expected


def test_a_client_that_stops_reading_a_local_file_is_cut_off(tmp_path: Path) -> None:
    """A GET whose client never reads: the server stops waiting for it after
    `http.body_timeout` and closes the connection (no wait without end)."""
    config = tmp_path / "fs.yml"
    config.write_text(yaml.safe_dump({"http": {"body_timeout": "2s"}}))
    server = start_dockyard(tmp_path / "data", config=config)
    try:
        repo = f"downloads/stop-{uuid.uuid4().hex[:8]}"
        size = 64 * MIB
        digest = push(server.url, repo, os.urandom(size))
        with stalled_socket(server.port, get_line(repo, digest)) as sock:
            time.sleep(4.0)
            raw, closed = read_to_eof(sock, 10)
        assert closed, "the server still waits for a client that does not read"
        assert len(raw) < size
        assert "the client took no byte for 2s" in server.log.read_text()
        assert sendfile_bytes(server.url) > 0  # sent by the kernel, up to the stall
    finally:
        server.stop()


# --- on S3: short objects, and clients that never read --------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


def s3_server(tmp_path: Path, s3: S3Server, **http: object) -> tuple[Server, str]:
    storage = s3.storage_section()
    config = tmp_path / "s3.yml"
    config.write_text(yaml.safe_dump({"storage": storage, "http": http,
                                      "log": {"level": "info"}}))
    return start_dockyard(tmp_path / "data", config=config), storage["s3"]["rootdirectory"]


def test_truncated_object_on_s3_closes_the_connection(tmp_path: Path, s3: S3Server
                                                       ) -> None:
    """An object shorter than its blob's recorded size (rewritten in the bucket): the
    body is cut and the connection closed, no pipelined response inside it."""
    server, root = s3_server(tmp_path, s3)
    try:
        repo = f"downloads/s3short-{uuid.uuid4().hex[:8]}"
        size = 3 * MIB
        digest = push(server.url, repo, os.urandom(size))
        hexa = digest.split(":", 1)[1]
        key = f"{root}/blobs/sha256/{hexa[:2]}/{hexa}/data"
        _put_object(s3, key, os.urandom(MIB))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(get_line(repo, digest) + b"GET /v2/ HTTP/1.1\r\nHost: r\r\n\r\n")
            raw, closed = read_to_eof(sock, 20)
        assert closed, "the connection stayed open after a short body"
        status, headers, rest = split_response(raw)
        assert status == 200
        assert int(headers["content-length"]) == size
        assert len(rest) == MIB
        assert f"of the {size} bytes from 0" in server.log.read_text()
    finally:
        server.stop()


def _put_object(s3: S3Server, key: str, data: bytes) -> None:
    import asyncio

    from dockyard.drivers.s3 import S3Driver

    async def put() -> None:
        settings = s3.settings(rootdirectory="")
        driver = S3Driver(settings)
        try:
            client = await driver._s3()
            await client.put_object(Bucket=settings.bucket, Key=key, Body=data)
        finally:
            await driver.close()

    asyncio.run(put())


def test_stalled_downloads_leave_the_store_to_other_requests(tmp_path: Path, s3: S3Server
                                                              ) -> None:
    """70 GETs of a 40 MiB blob whose clients never read: an upload and a ranged GET
    of another client are answered meanwhile, before any stalled client is cut off
    (the stalled bodies cannot take every pooled S3 connection), and the stalled
    clients are cut off once `http.body_timeout` passes, so a whole GET gets its turn."""
    body_timeout = 8.0
    cutoff = f"the client took no byte for {body_timeout:g}s"
    # one client address opens them all: no cap on its unauthenticated connections
    server, _ = s3_server(tmp_path, s3, body_timeout=f"{body_timeout:g}s",
                          unauthenticated_connections=0)
    try:
        repo = f"downloads/stall-{uuid.uuid4().hex[:8]}"
        data = os.urandom(40 * MIB)
        digest = push(server.url, repo, data)
        small = os.urandom(MIB)
        other = push(server.url, repo, small)
        stalled = [stalled_socket(server.port, get_line(repo, digest)) for _ in range(70)]
        try:
            time.sleep(1.5)  # every stalled GET is under way, its socket full
            began = time.monotonic()
            steps: list[str] = []

            def step(name: str) -> None:
                steps.append(f"{name} {time.monotonic() - began:.2f} s")

            with httpx.Client(base_url=server.url, timeout=30) as client:
                r = client.get(f"/v2/{repo}/blobs/{digest}",
                               headers={"Range": "bytes=1000-1999"})
                step("ranged GET")
                assert r.status_code == 206
                assert r.content == data[1000:2000]
                r = client.head(f"/v2/{repo}/blobs/{other}")
                step("HEAD")
                assert r.status_code == 200
                r = client.post(f"/v2/{repo}/blobs/uploads/")
                step("POST")
                assert r.status_code == 202
                r = client.patch(r.headers["Location"], content=os.urandom(6 * MIB),
                                 headers={"Content-Type": "application/octet-stream"})
                step("PATCH")
                assert r.status_code == 202, r.text
            # answered while every stalled client still held its connection: none of
            # these requests waited for a stalled one to be cut off
            assert cutoff not in server.log.read_text(), f"answered after a cut-off: {steps}"
            # a whole GET waits for a streaming slot: the stalled ones free theirs
            r = httpx.get(f"{server.url}/v2/{repo}/blobs/{other}", timeout=30)
            assert r.status_code == 200
            assert r.content == small
            assert cutoff in server.log.read_text()
            # past the body timeout the stalled clients are cut off, the connection
            # closed with most of the body unsent (those that waited for a streaming
            # slot stall one body timeout later than the first)
            done: list[tuple[bytes, bool]] = []
            lock = threading.Lock()

            def drain(sock: socket.socket) -> None:
                time.sleep(body_timeout + 2)
                got = read_to_eof(sock, 20)
                with lock:
                    done.append(got)

            threads = [threading.Thread(target=drain, args=(s,)) for s in stalled]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(closed for _, closed in done)
            assert all(len(raw) < len(data) for raw, _ in done)
        finally:
            for sock in stalled:
                sock.close()
    finally:
        server.stop()


# --- slow but steady clients -----------------------------------------------------------


def read_slowly(port: int, request: bytes, piece: int, pause: float,
                timeout: float) -> bytes:
    """Everything the server sends on a connection read `piece` bytes at a time with a
    `pause` between reads (a small receive buffer, so the server feels the pace), until
    it closes or `timeout` passes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    sock.settimeout(timeout)
    got = bytearray()
    with sock:
        try:
            while chunk := sock.recv(piece):
                got += chunk
                time.sleep(pause)
        except (TimeoutError, ConnectionResetError):
            pass
    return bytes(got)


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_a_slow_but_steady_reader_gets_the_whole_blob(tmp_path: Path, storage: str,
                                                      request: pytest.FixtureRequest
                                                      ) -> None:
    """`http.body_timeout` bounds a client that takes nothing, not a slow one: a client
    reading at ~300 KB/s, far slower than the blob takes to send, gets every byte of it
    with a 2 s body timeout, from a local file (sendfile) and from S3 (a stream)."""
    http = {"body_timeout": "2s"}
    if storage == "s3":
        server, _ = s3_server(tmp_path, request.getfixturevalue("s3"), **http)
    else:
        config = tmp_path / "fs.yml"
        config.write_text(yaml.safe_dump({"http": http}))
        server = start_dockyard(tmp_path / "data", config=config)
    try:
        repo = f"downloads/slow-{uuid.uuid4().hex[:8]}"
        data = os.urandom(2 * MIB)
        digest = push(server.url, repo, data)
        began = time.monotonic()
        raw = read_slowly(server.port, get_line(repo, digest, "Connection: close\r\n"),
                          32 * 1024, 0.1, timeout=60)
        status, headers, body = split_response(raw)
        assert status == 200
        assert int(headers["content-length"]) == len(data)
        assert body == data
        assert time.monotonic() - began > 4.0  # it really was slower than the timeout
        assert "took no byte" not in server.log.read_text()
    finally:
        server.stop()
