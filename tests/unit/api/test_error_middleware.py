"""The error middleware on a real socket: a fault before the answer starts is a 500 in
the OCI format; a fault after part of the answer went out cuts the connection, where a
second response was written into the first one's body (and the client waited for the
rest of it until its timeout)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from dockyard.api.app import _errors
from dockyard.api.connections import Connections
from dockyard.config.settings import HttpSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _early(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug before the answer")


async def _midway(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200)
    resp.content_length = 100
    await resp.prepare(request)
    await resp.write(b"x" * 10)
    raise (ConnectionResetError if request.query.get("reset") else RuntimeError)(
        "a connection of the registry's own, or a bug, after 10 bytes")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(middlewares=[_errors(Connections(HttpSettings()))])
    app.router.add_get("/early", _early)
    app.router.add_get("/midway", _midway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


def _exchange(port: int, path: str) -> bytes:
    """Send one request on a keep-alive connection; everything until the server closes
    it (or 5 s of silence, which is the failure this guards against)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        out = b""
        try:
            while piece := sock.recv(65536):
                out += piece
        except TimeoutError:
            out += b"<no close within 5 s>"
        except ConnectionResetError:
            out += b"<reset>"
        return out


async def test_a_fault_before_the_answer_is_a_500_in_the_oci_format(port: int) -> None:
    out = await asyncio.to_thread(_exchange_one_response, port, "/early")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert json.loads(body)["errors"][0]["code"] == "UNKNOWN"


def _exchange_one_response(port: int, path: str) -> bytes:
    """One request and its whole answer, read by its Content-Length."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        out = b""
        while b"\r\n\r\n" not in out:
            out += sock.recv(65536)
        head, _, body = out.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += sock.recv(65536)
        return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("path", ["/midway", "/midway?reset=1"], ids=["bug", "reset"])
async def test_a_fault_midway_cuts_the_connection_not_a_second_answer(
        port: int, path: str) -> None:
    out = await asyncio.to_thread(_exchange, port, path)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body in (b"x" * 10, b"x" * 10 + b"<reset>")  # then the server closed it
