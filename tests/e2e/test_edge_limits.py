"""Limits at the HTTP edge, against a real `dockyard serve` with token auth and short timeouts.

Stalled request heads and bodies are closed at `http.header_timeout` / `http.body_timeout`
(a stalled upload stays resumable from its stored offset); one address may hold only
`http.unauthenticated_connections` connections before logging in; responses name no
library versions; a hostile Host header stays inside one quoted realm; an oversized
Authorization header gets a clean 4xx and never reaches the log.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.authenv import (
    TlsServer,
    get_token,
    make_pki,
    start_tls_dockyard,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.oci_api import blob_bytes, digest_of
from tests.support.servers import Server, start_dockyard

HEADER_TIMEOUT, BODY_TIMEOUT, CAP = 2.0, 1.0, 4
REPO = "edge/app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("edge")
    config = write_config(
        tmp / "config.yml", auth=token_auth(write_htpasswd(tmp / "htpasswd")),
        http={"header_timeout": f"{HEADER_TIMEOUT}s", "body_timeout": f"{BODY_TIMEOUT}s",
              "unauthenticated_connections": CAP})
    server = start_dockyard(tmp / "data", workers=1, config=config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, str]:
    token = get_token(server.url, [f"repository:{REPO}:*"], "admin")
    return {"Authorization": f"Bearer {token}"}


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start, out = time.monotonic(), b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return out, time.monotonic() - start


def _server_sockets_to(server: Server, port: int) -> int:
    """How many sockets the server's processes hold to our local `port`."""
    import psutil

    main = psutil.Process(server.proc.pid)
    return sum(1 for proc in [main, *main.children()]
               for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == port)


def wait_closed_by_server(server: Server, sock: socket.socket, seconds: float) -> None:
    """Wait until the server holds no socket to `sock`'s port; fail after `seconds`."""
    port = sock.getsockname()[1]
    deadline = time.monotonic() + seconds
    while _server_sockets_to(server, port):
        assert time.monotonic() < deadline, f"the server held the connection past {seconds} s"
        time.sleep(0.2)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response with a Content-Length body, leaving the connection open."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed after {buf!r}"
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


# ---------------------------------------------------------------- finding 3: time bounds


def test_stalled_token_body_is_closed(server: Server) -> None:
    """60000 bytes announced, 15 sent, before any login: 408 and closed at body_timeout."""
    sock = connect(server)
    sock.sendall(b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=pass")
    out, took = read_until_closed(sock)
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    assert BODY_TIMEOUT - 0.2 < took < BODY_TIMEOUT + 2


@pytest.mark.parametrize("trickle", [False, True])
def test_stalled_header_is_closed(server: Server, trickle: bool) -> None:
    """Half a request head, sent at once or a byte every 0.3 s: closed at header_timeout."""
    sock = connect(server)
    start = time.monotonic()
    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    if trickle:
        with pytest.raises(OSError):  # noqa: PT012 - sending until the server hangs up
            for _ in range(int(HEADER_TIMEOUT / 0.3) + 30):
                sock.sendall(b"X")
                time.sleep(0.3)
    read_until_closed(sock)
    assert time.monotonic() - start < HEADER_TIMEOUT + 2


def test_stalled_header_of_a_later_request_is_closed_at_its_own_deadline(
        server: Server) -> None:
    """Keep-alive: one whole request, then 0.6 of the timeout later half a head. The clock
    starts at that head's first byte: the connection survives the first request's
    deadline and is closed one header_timeout after the half head, not never."""
    sock = connect(server)
    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = read_response(sock)
    assert status == 401
    time.sleep(HEADER_TIMEOUT * 0.6)
    start = time.monotonic()
    sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    out, _ = read_until_closed(sock)
    took = time.monotonic() - start
    assert out == b""
    assert HEADER_TIMEOUT - 0.2 < took < HEADER_TIMEOUT + 2


@pytest.mark.parametrize("path", ["/ui/login", "/ui/logout"])
def test_a_stalled_ui_form_is_cut_off_at_the_body_timeout(server: Server, path: str) -> None:
    """The web UI read its forms with aiohttp's `request.post()`, which waits for a body
    with no limit: a login form announced and never sent held its connection for good,
    before any credentials. It is read like every body now: 408 at `body_timeout`."""
    sock = connect(server)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
                 "username=a".encode())
    out, took = read_until_closed(sock)
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    assert took < BODY_TIMEOUT + 2
    sock.close()


def test_idle_connection_without_request_is_closed(server: Server) -> None:
    sock = connect(server)
    out, took = read_until_closed(sock)
    assert out == b""
    assert HEADER_TIMEOUT - 0.2 < took < HEADER_TIMEOUT + 2


def test_stalled_patch_then_resumes_from_the_stored_offset(server: Server,
                                                           admin: dict[str, str]) -> None:
    first, second = blob_bytes(3000, "edge-first"), blob_bytes(5000, "edge-second")
    with httpx.Client(base_url=server.url, headers=admin) as c:
        r = c.post(f"/v2/{REPO}/blobs/uploads/")
        assert r.status_code == 202
        session = r.headers["Location"]
        r = c.patch(session, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202, r.text

        # the second chunk stalls after its first 1000 bytes
        sock = connect(server)
        sock.sendall(
            f"PATCH {session} HTTP/1.1\r\nHost: x\r\nAuthorization: {admin['Authorization']}"
            f"\r\nContent-Length: {len(second)}\r\n"
            f"Content-Range: {len(first)}-{len(first) + len(second) - 1}\r\n\r\n".encode()
            + second[:1000])
        out, took = read_until_closed(sock)
        assert out.startswith(b"HTTP/1.1 408 "), out[:200]
        assert took < BODY_TIMEOUT + 2

        r = c.get(session)
        assert r.status_code == 204
        offset = int(r.headers["Range"].split("-")[1]) + 1
        assert offset == len(first)
        data = first + second
        r = c.patch(session, content=data[offset:],
                    headers={"Content-Range": f"{offset}-{len(data) - 1}"})
        assert r.status_code == 202, r.text
        r = c.put(session, params={"digest": digest_of(data)})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest_of(data)
        assert c.get(f"/v2/{REPO}/blobs/{digest_of(data)}").content == data


def test_unauthenticated_connections_are_capped_per_address(server: Server,
                                                            admin: dict[str, str]) -> None:
    # a connection that logged in no longer counts
    logged_in = connect(server)
    logged_in.sendall(f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: "
                      f"{admin['Authorization']}\r\n\r\n".encode())
    assert read_response(logged_in)[0] == 200
    held = [connect(server) for _ in range(CAP)]
    for sock in held:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 401  # served, and still not logged in

    refused = connect(server)
    out, _ = read_until_closed(refused)
    assert out.startswith(b"HTTP/1.1 429 "), out[:200]
    assert json.loads(out.partition(b"\r\n\r\n")[2])["errors"][0]["code"] == "TOOMANYREQUESTS"

    held.pop().close()
    time.sleep(0.2)
    again = connect(server)
    again.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(again)[0] == 401
    for sock in [*held, again, logged_in]:
        sock.close()


def test_a_client_refused_at_the_cap_reads_its_429_not_a_reset(server: Server) -> None:
    """A refused connection's request arrives after the 429 was written: closed at once,
    the socket answered it with a reset, which can discard the 429 still queued (seen
    once as an httpx `ReadError` under load); the 429 and its `Retry-After` must arrive
    every time, and a silent client's socket must still be closed after the linger."""
    held = [connect(server) for _ in range(CAP)]
    try:
        for sock in held:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 401
        # requests already waiting when the server gets to their connections
        burst = [connect(server) for _ in range(40)]
        for sock in burst:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in burst:
            status, headers, body = read_response(sock)
            assert status == 429, body
            assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert headers["retry-after"] == "5"
            sock.close()
        # a request with a body still on its way (an upload's first PATCH): the client
        # finishes sending it and reads the answer, no reset midway
        body = b"x" * (4 << 20)
        for _ in range(3):
            r = httpx.post(f"{server.url}/v2/{REPO}/blobs/uploads/", content=body, timeout=10)
            assert r.status_code == 429, r.text
            assert r.headers["Retry-After"] == "5"
        # a client that sends nothing and keeps its end open: the server's socket is
        # closed after the linger, not held for good
        quiet = connect(server)
        out, _ = read_until_closed(quiet)  # the answer, then the server's half-close
        assert out.startswith(b"HTTP/1.1 429 "), out[:200]
        wait_closed_by_server(server, quiet, 10)  # a refused connection's linger ends
        quiet.close()
    finally:
        for sock in held:
            sock.close()
        time.sleep(0.2)


def test_the_cap_holds_for_the_node_and_forgets_a_killed_worker(tmp_path: Path) -> None:
    # each worker counted only its own connections: two workers let an address hold
    # twice the cap (SO_REUSEPORT spreads one client's connections over both)
    import psutil

    config = write_config(tmp_path / "config.yml",
                          auth=token_auth(write_htpasswd(tmp_path / "htpasswd")),
                          http={"unauthenticated_connections": CAP})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    try:
        def hold(count: int) -> tuple[list[socket.socket], int]:
            """Open `count` connections; those served, and how many were refused."""
            served, refused = [], 0
            for _ in range(count):
                sock = connect(server)
                sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                status = read_response(sock)[0]
                assert status in (401, 429), status
                if status == 401:
                    served.append(sock)
                else:
                    refused += 1
                    sock.close()
            return served, refused

        served, refused = hold(4 * CAP)
        assert (len(served), refused) == (CAP, 3 * CAP)
        workers = psutil.Process(server.proc.pid).children()
        assert len(workers) == 2
        for worker in workers:  # their connections die with them
            worker.kill()
        for sock in served:
            sock.close()
        deadline = time.monotonic() + 20
        while {p.pid for p in psutil.Process(server.proc.pid).children()} & {
                w.pid for w in workers} or len(psutil.Process(server.proc.pid).children()) < 2:
            assert time.monotonic() < deadline, "the workers were not restarted"
            time.sleep(0.2)
        server.wait_ready()
        served, refused = hold(CAP + 1)  # the dead workers' counts went with them
        assert (len(served), refused) == (CAP, 1)
        # 13 refusals: a line for the first of each worker's spell, not one each
        lines = server.log.read_text().count("refused a connection from 127.0.0.1")
        assert 1 <= lines <= 3
        for sock in served:
            sock.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """The same limits, with Dockyard serving TLS itself."""
    tmp = tmp_path_factory.mktemp("edge-tls")
    pki = make_pki(tmp / "pki")
    config = write_config(tmp / "config.yml",
                          auth=token_auth(write_htpasswd(tmp / "htpasswd")),
                          http={"header_timeout": f"{HEADER_TIMEOUT}s",
                                "unauthenticated_connections": CAP,
                                "tls": {"certificate": pki.cert, "key": pki.key}})
    server = start_tls_dockyard(tmp / "data", config, pki.ca)
    yield server
    server.stop()


def tls_context(server: TlsServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca))


def tls_connect(server: TlsServer) -> ssl.SSLSocket:
    return tls_context(server).wrap_socket(connect(server), server_hostname="127.0.0.1")


def test_a_refusal_over_tls_is_read_and_lingers_no_longer(tls_server: TlsServer) -> None:
    """Over TLS the refused connection's close sends close_notify and reads what the
    client still sends until the client's own close_notify, so the 429 arrives whole;
    a client that never answers was held for the loop's TLS shutdown timeout (30 s),
    now for the same linger as a plain connection."""
    held = [tls_connect(tls_server) for _ in range(CAP)]
    try:
        for sock in held:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 401
        # requests with bodies, sent whole before the server answers
        burst = [tls_connect(tls_server) for _ in range(20)]
        body = b"x" * (256 << 10)
        for sock in burst:
            sock.sendall(f"POST /v2/{REPO}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        for sock in burst:
            status, headers, answer = read_response(sock)
            assert status == 429, answer
            assert headers["retry-after"] == "5"
            sock.close()
        for _ in range(3):
            r = httpx.post(f"{tls_server.url}/v2/{REPO}/blobs/uploads/",
                           content=b"x" * (4 << 20), timeout=10,
                           verify=tls_context(tls_server))
            assert r.status_code == 429, r.text
        quiet = tls_connect(tls_server)  # reads its answer, never sends its close_notify
        out, _ = read_until_closed(quiet)
        assert out.startswith(b"HTTP/1.1 429 "), out[:200]
        wait_closed_by_server(tls_server, quiet, 10)
        quiet.close()
    finally:
        for sock in held:
            sock.close()
        time.sleep(0.2)


@pytest.mark.parametrize("hello", [b"", b"\x16\x03\x01\x02\x00\x01"])
def test_a_tls_handshake_must_end_within_the_header_timeout(tls_server: TlsServer,
                                                            hello: bytes) -> None:
    """A connection is counted and its header clock started only after its handshake:
    a client that connects and never (or never fully) says hello was held for asyncio's
    60 s handshake timeout, outside both bounds."""
    sock = connect(tls_server)
    sock.sendall(hello)
    out, took = read_until_closed(sock)
    assert out == b""
    assert took < HEADER_TIMEOUT + 2
    sock.close()


def test_a_closed_tls_connection_waits_briefly_for_the_clients_close_notify(
        tls_server: TlsServer) -> None:
    """Closed for an idle header (close_notify sent), a connection whose client keeps its
    end open and silent was held 30 s more (asyncio's TLS shutdown timeout), now 5."""
    sock = tls_connect(tls_server)
    out, took = read_until_closed(sock)  # the server's close_notify
    assert out == b""
    assert HEADER_TIMEOUT - 0.2 < took < HEADER_TIMEOUT + 2
    wait_closed_by_server(tls_server, sock, 8)
    sock.close()

# ---------------------------------------------------------------- finding 7: small leaks


def test_responses_name_no_versions(server: Server) -> None:
    with httpx.Client(base_url=server.url) as c:
        responses = [c.get("/v2/"), c.get("/nowhere"), c.get("/v2/a/manifests/b"),
                     c.get("/v2/", headers={"Authorization": "Bearer " + "x" * 9000})]
    assert [r.status_code for r in responses] == [401, 404, 404, 431]
    for r in responses:
        assert r.headers.get("Server", "Dockyard") == "Dockyard"
        for value in r.headers.values():
            assert not re.search(r"python|aiohttp", value, re.IGNORECASE), r.headers


def _auth_params(header: str) -> list[tuple[str, str]]:
    """The auth-params of a challenge, parsed strictly (RFC 9110 quoted-strings)."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    param = re.compile(r'\s*([A-Za-z]+)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
    out, pos = [], 0
    while pos < len(rest):
        m = param.match(rest, pos)
        assert m, f"malformed challenge at {rest[pos:]!r}"
        out.append((m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))))
        pos = m.end()
    return out


def test_challenge_quotes_a_hostile_host(server: Server) -> None:
    host = 'evil.example",service="other, x\\'
    sock = connect(server)
    sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status, headers, _ = read_response(sock)
    sock.close()
    assert status == 401
    params = _auth_params(headers["www-authenticate"])
    assert params == [("realm", f"http://{host}/auth/token"), ("service", "dockyard")]


def test_oversized_authorization_is_refused_and_never_logged(server: Server) -> None:
    secret = "oversized-credential-"
    sock = connect(server)
    sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{(secret * 500)[:9 * 1024]}\r\n\r\n".encode())
    out, _ = read_until_closed(sock)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.split()[1] == b"431", out[:300]
    assert json.loads(body)["errors"][0]["message"]
    assert secret.encode() not in out
    time.sleep(0.2)
    log = Path(server.log).read_text()
    assert secret not in log
    assert "Traceback" not in log
