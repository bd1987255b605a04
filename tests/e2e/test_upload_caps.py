"""Caps on open upload sessions: per user (anonymous: per client address) and in total.

Past either, POST /v2/<name>/blobs/uploads/ answers 429 TOOMANYREQUESTS with
Retry-After; a finished or cancelled session frees its slot at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.authenv import USERS, basic_auth, write_config, write_htpasswd
from tests.support.oci_api import assert_error, blob_bytes, digest_of, with_digest
from tests.support.servers import Server, start_dockyard


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Server]:
    """Logins required (builder and admin may push); 3 sessions a user, 5 in all."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth=basic_auth(htpasswd), storage={
        "uploads": {"max_sessions": 5, "max_sessions_per_user": 3}})
    server = start_dockyard(tmp_path / "data", config=config, workers=2)
    yield server
    server.stop()


def _client(server: Server, user: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(user, USERS[user][0]), timeout=30)


def _open(client: httpx.Client, repo: str = "caps/a", **headers: str) -> httpx.Response:
    return client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)


def _refused(resp: httpx.Response) -> None:
    assert_error(resp, 429, "TOOMANYREQUESTS")
    assert int(resp.headers["Retry-After"]) >= 1


def test_per_user_and_global_caps(capped: Server) -> None:
    with _client(capped, "builder") as builder, _client(capped, "admin") as admin:
        opened = [_open(builder, f"caps/r{i}") for i in range(3)]
        assert [r.status_code for r in opened] == [202, 202, 202]
        _refused(_open(builder))  # the fourth session of one user
        _refused(_open(builder, "caps/elsewhere"))  # whatever the repository

        # cancelling frees the slot
        assert builder.delete(opened[0].headers["Location"]).status_code == 204
        again = _open(builder)
        assert again.status_code == 202
        _refused(_open(builder))

        # finishing frees it too
        data = blob_bytes(100)
        done = builder.put(with_digest(again.headers["Location"], digest_of(data)),
                           content=data)
        assert done.status_code == 201, done.text
        assert _open(builder).status_code == 202

        # another user still may: 3 of builder + 2 of admin fill the global cap of 5
        assert _open(admin).status_code == 202
        assert _open(admin).status_code == 202
        _refused(_open(admin))
        # a monolithic upload opens a session too, and is refused alike
        data = blob_bytes(10)
        _refused(admin.post(f"/v2/caps/a/blobs/uploads/?digest={digest_of(data)}",
                            content=data))
        assert builder.delete(opened[1].headers["Location"]).status_code == 204
        assert _open(admin).status_code == 202


@pytest.fixture
def anonymous(tmp_path: Path) -> Iterator[Server]:
    """No logins; the test client passes as a trusted proxy to be several addresses."""
    config = write_config(tmp_path / "config.yml",
                          http={"trusted_proxies": ["127.0.0.1/32"]},
                          storage={"uploads": {"max_sessions_per_user": 2}})
    server = start_dockyard(tmp_path / "data", config=config)
    yield server
    server.stop()


def test_anonymous_sessions_count_per_client_address(anonymous: Server) -> None:
    with httpx.Client(base_url=anonymous.url, timeout=30) as client:
        first = {"X-Forwarded-For": "192.0.2.1"}
        assert _open(client, **first).status_code == 202
        assert _open(client, **first).status_code == 202
        _refused(_open(client, **first))
        assert _open(client, **{"X-Forwarded-For": "192.0.2.2"}).status_code == 202


def test_failed_monolithic_uploads_do_not_hold_sessions(capped: Server) -> None:
    # an error answer to `POST ?digest=` names no session, so nobody can resume it: it
    # stayed open until it expired (a day), and a client retrying through failures
    # used up its cap and was refused every push
    import base64
    import socket
    import time

    password = USERS["builder"][0]
    token = base64.b64encode(f"builder:{password}".encode()).decode()
    data = blob_bytes(1000)
    for _ in range(4):  # the body stops short: the client went away mid-upload
        with socket.create_connection((capped.host.split(":")[0],
                                       int(capped.host.rsplit(":", 1)[1]))) as sock:
            sock.sendall(
                f"POST /v2/caps/mono/blobs/uploads/?digest={digest_of(data)} HTTP/1.1\r\n"
                f"Host: {capped.host}\r\nAuthorization: Basic {token}\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:100])
            time.sleep(0.2)
    with _client(capped, "builder") as builder:
        deadline = time.monotonic() + 10
        while (r := _open(builder, "caps/after")).status_code == 429:  # the cut noticed
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert r.status_code == 202
        assert _open(builder, "caps/after").status_code == 202
        assert _open(builder, "caps/after").status_code == 202
