"""`received.py` against a real aiohttp server on loopback: pieces of a body end on every
kind of body (bodiless ones again and again in one process), and bodies read whole are
bounded."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.received import BodyTooLarge, discard, pieces, read_at_most

BIG = 8 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(BIG // 65536):
        await resp.write(b"x" * 65536)
    await resp.write_eof()
    return resp


def _answer(status: int = 200, body: bytes = b"") -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    return handler


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/empty", _answer())
    app.router.add_route("HEAD", "/head", _answer(body=b"abc"))
    app.router.add_get("/no-content", _answer(204))
    app.router.add_get("/small", _answer(body=b"hello"))
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/declared", _answer(body=b"y" * BIG))
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def test_pieces_end_on_bodiless_answers_every_time(server: TestServer) -> None:
    """aiohttp shares one reader among all bodiless answers, and it reports an end of
    body only the first time: later ones must end all the same (they spun forever)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            for method, path in (("GET", "/empty"), ("HEAD", "/head"), ("GET", "/no-content")):
                async with session.request(method, server.make_url(path)) as resp:
                    with deadline():
                        got = [p async for p in pieces(resp.content)]
                assert got == [], (method, path)


async def test_pieces_pass_a_chunked_body_on_whole(server: TestServer) -> None:
    async with aiohttp.ClientSession() as session, \
            session.get(server.make_url("/chunked")) as resp:
        with deadline():
            total = sum([len(p) async for p in pieces(resp.content)])
    assert total == BIG


async def test_read_at_most_returns_a_body_within_its_limit(server: TestServer) -> None:
    async with aiohttp.ClientSession() as session, \
            session.get(server.make_url("/small")) as resp:
        assert await read_at_most(resp, 5) == b"hello"


@pytest.mark.parametrize("path", ["/chunked", "/declared"])
async def test_read_at_most_refuses_a_longer_body(server: TestServer, path: str) -> None:
    async with aiohttp.ClientSession() as session, \
            session.get(server.make_url(path)) as resp:
        with pytest.raises(BodyTooLarge, match="larger than 1 MiB"):
            await read_at_most(resp, 1024 * 1024)
        assert resp.connection is None  # closed, not drained for another request


async def test_discard_reads_what_is_short_and_closes_what_is_not(server: TestServer
                                                                  ) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # bodiless answers, again and again (see above)
            async with session.head(server.make_url("/head")) as resp:
                with deadline():
                    await discard(resp)
        async with session.get(server.make_url("/chunked")) as resp:
            with deadline():
                await discard(resp)  # 8 MiB: past 1 MiB it just closes
            assert resp.connection is None


@contextlib.contextmanager
def deadline(seconds: float = 10.0) -> Iterator[None]:
    """Fail the test instead of hanging: a loop that never awaits cannot be timed out by
    the event loop, so a timer signal interrupts it."""

    def expired(*_: object) -> None:
        raise TimeoutError("the body never ended")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
