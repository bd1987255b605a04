"""A flood of refused connections holds a bounded number of sockets: past
`REFUSED_LINGERING_MAX` lingering refusals a worker writes its 429 and closes at once,
where every refusal used to hold its socket for the linger (rate x 2 s sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest
from aiohttp import web

from dockyard.api import connections as connections_module
from dockyard.api.connections import Connections
from dockyard.config.settings import HttpSettings


def _sockets() -> int:
    """This process's open sockets, server and client ends alike."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def _refused(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    """Open a connection and read what the server says until it stops sending; the
    client's end is left open, as a flood's would be."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.wait_for(reader.read(), 5), writer


async def test_a_flood_lingers_at_most_the_cap_then_closes_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections_module, "REFUSED_LINGERING_MAX", 4)
    monkeypatch.setattr(connections_module, "REFUSED_LINGER", 30.0)
    conns = Connections(HttpSettings(unauthenticated_connections=1))

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    server = await asyncio.get_running_loop().create_server(
        conns.factory(web.Server(handler)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # one connection takes the address's only unauthenticated place
        _, holder = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.1)
        before = _sockets()
        flood = await asyncio.gather(*(_refused(port) for _ in range(20)))
        # every client of the flood read its whole 429, lingered or not
        for answer, _ in flood:
            assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
            assert b"Retry-After: 5\r\n" in answer
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert [e["code"] for e in body["errors"]] == ["TOOMANYREQUESTS"]
        await asyncio.sleep(0.2)
        # the 20 client ends are still open; of the server's, 4 linger (for 30 s) and
        # the 16 past the cap were closed at once
        assert conns.lingering == 4
        assert _sockets() - before == 20 + 4
        for _, writer in flood:  # a client closing ends its linger
            writer.close()
        await asyncio.sleep(0.2)
        assert conns.lingering == 0
        assert _sockets() == before
        holder.close()
    finally:
        server.close()
        await server.wait_closed()
