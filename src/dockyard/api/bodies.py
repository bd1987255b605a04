"""Request bodies read with an idle timeout (`http.body_timeout`), before login included.

Every handler reads its body through here, so a client that announces a body and stops
sending it cannot hold a request, a worker's memory or an upload's lock for good: when
no byte arrives for `body_timeout`, the read raises `BodyStalled`, which the app answers
with 408 and closes the connection. An upload cut off this way keeps its stored offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from dockyard.api.context import SETTINGS


class BodyStalled(Exception):
    """No byte of the request body arrived for `http.body_timeout`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no byte of the request body arrived for {seconds:g}s")
        self.seconds = seconds


def body_timeout(request: web.Request) -> float:
    """`http.body_timeout` in seconds: how long a request body may send no byte, and
    a response body (a blob download) may go untaken by its client."""
    return request.config_dict[SETTINGS].http.body_timeout.total_seconds()


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (Content-Length or chunked), never buffered whole."""
    seconds = body_timeout(request)
    content = request.content
    while True:
        try:
            async with asyncio.timeout(seconds):
                data = await content.readany()
        except TimeoutError:
            raise BodyStalled(seconds) from None
        if not data:
            return
        yield data


async def read_body(request: web.Request, limit: int, too_large: Exception) -> bytes:
    """The whole body, at most `limit` bytes; `too_large` is raised past that."""
    buf = bytearray()
    async for data in body_chunks(request):
        buf += data
        if len(buf) > limit:
            raise too_large
    return bytes(buf)
