"""A flood of refused connections holds a bounded number of sockets: past
`REFUSED_LINGERING_MAX` lingering refusals a worker writes its 429 and closes at once
(over TLS: aborts, where a close waits for the client's close_notify), where every
refusal used to hold its socket for the linger (rate x 2 s sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from dockyard.api import connections as connections_module
from dockyard.api.connections import Connections
from dockyard.config.settings import HttpSettings
from tests.support.authenv import make_pki


def _sockets() -> int:
    """This process's open sockets, server and client ends alike."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def _refused(port: int, tls: ssl.SSLContext | None
                   ) -> tuple[bytes, socket.socket]:
    """Open a connection and read what the server says until it stops sending (b""
    when it reset the connection first); the client's end is left open, as a flood's
    would be, and over TLS never answers the server's close_notify."""
    return await asyncio.to_thread(_refused_now, port, tls)


def _connect(port: int, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock if tls is None else tls.wrap_socket(sock, server_hostname="127.0.0.1")


def _refused_now(port: int, tls: ssl.SSLContext | None) -> tuple[bytes, socket.socket]:
    sock = _connect(port, tls)
    out = b""
    try:
        while piece := sock.recv(65536):
            out += piece
    except (ConnectionResetError, ssl.SSLError):
        return b"", sock
    return out, sock


def _is_429(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    return (head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
            and b"\r\nRetry-After: 5" in head
            and [e["code"] for e in json.loads(body)["errors"]] == ["TOOMANYREQUESTS"])


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_flood_lingers_at_most_the_cap_then_closes_at_once(
        tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections_module, "REFUSED_LINGERING_MAX", 4)
    monkeypatch.setattr(connections_module, "REFUSED_LINGER", 30.0)
    conns = Connections(HttpSettings(unauthenticated_connections=1))
    server_tls = client_tls = None
    if tls:
        pki = make_pki(tmp_path / "pki")
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(pki.cert, pki.key)
        client_tls = ssl.create_default_context(cafile=str(pki.ca))

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    # a TLS close waits this long for the client's close_notify (the serve's is 5 s)
    server = await asyncio.get_running_loop().create_server(
        conns.factory(web.Server(handler)), "127.0.0.1", 0, ssl=server_tls,
        ssl_shutdown_timeout=30.0 if tls else None)
    port = server.sockets[0].getsockname()[1]
    try:
        # one connection takes the address's only unauthenticated place
        holder = await asyncio.to_thread(_connect, port, client_tls)
        await asyncio.sleep(0.1)
        before = _sockets()
        flood = [await _refused(port, client_tls) for _ in range(20)]
        answers = [answer for answer, _ in flood]
        # the 4 that linger read the whole 429; past them, a plain connection still
        # reads it (flushed, then closed) and a TLS one may see a reset instead
        assert all(_is_429(a) for a in answers[:4])
        assert all(_is_429(a) or (tls and a == b"") for a in answers[4:])
        await asyncio.sleep(0.2)
        # the 20 client ends are still open; of the server's, 4 linger (for 30 s) and
        # the 16 past the cap were closed at once
        assert conns.lingering == 4
        assert _sockets() - before == 20 + 4
        for _, sock in flood:  # a client closing ends its linger
            sock.close()
        await asyncio.sleep(0.3)
        assert conns.lingering == 0
        assert _sockets() == before
        holder.close()
    finally:
        server.close()
        await server.wait_closed()
