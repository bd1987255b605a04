"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: downloads through sendfile, with Range."""

from __future__ import annotations

import asyncio
import os
import socket

from aiohttp import web

from dockyard.api.context import Match, registry
from dockyard.api.errors import error_response
from dockyard.api.ranges import parse_range
from dockyard.oci.digest import Digest


async def get_blob(request: web.Request, match: Match) -> web.StreamResponse:
    digest = Digest.parse(match.reference)
    head = request.method == "HEAD"
    info = await registry(request).blobs.stat(match.name, digest, touch=head)
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    try:
        span = parse_range(request.headers.get("Range"), info.size)
    except ValueError:
        return error_response("RANGE_INVALID", "requested range not satisfiable",
                              status=416, head=head,
                              headers={**headers, "Content-Range": f"bytes */{info.size}"})
    start, end = span if span is not None else (0, info.size - 1)
    count = max(end - start + 1, 0)
    resp = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    resp.content_type = "application/octet-stream"
    resp.content_length = count
    if span is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    if head or count == 0:
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if info.path is not None and sock is not None and not request.secure:
        await _sendfile(request, resp, sock, info.path.as_posix(), start, count)
    else:
        await resp.prepare(request)
        async for data in registry(request).blobstore.read(digest, start, count):
            await resp.write(data)
        await resp.write_eof()
    return resp


async def _sendfile(
    request: web.Request, resp: web.StreamResponse, sock: socket.socket, path: str,
    offset: int, count: int,
) -> None:
    """Zero-copy: headers through aiohttp, then the kernel copies file to socket.

    `loop.sendfile` is not implemented by uvloop, so the body goes out with
    `os.sendfile` on a duplicate of the connection's (non-blocking) socket, corked,
    waiting for writability on that duplicate whenever the socket buffer is full.
    """
    loop = asyncio.get_running_loop()
    transport = request.transport
    with open(path, "rb") as fobj:
        writer = await resp.prepare(request)
        assert writer is not None
        assert transport is not None
        await writer.drain()
        # the headers must have left before the kernel writes the body
        while transport.get_write_buffer_size():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.0005)
        await _zero_copy(loop, sock.fileno(), fobj.fileno(), offset, count)
        await resp.write_eof()


async def _zero_copy(
    loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int, offset: int, count: int
) -> None:
    out = socket.socket(fileno=os.dup(sock_fd))
    # corked, the kernel sends only full segments while sendfile refills the socket (what
    # nginx's `tcp_nopush` does); measured over loopback: about 0.3 instead of 0.45 CPU
    # s/GB; uncorking at the end flushes the last partial segment
    corked = _cork(out, True)
    try:
        while count > 0:
            try:
                sent = os.sendfile(out.fileno(), file_fd, offset, min(count, 1 << 30))
            except BlockingIOError:
                await _writable(loop, out.fileno())
                continue
            if sent == 0:
                raise ConnectionResetError("client went away")
            offset += sent
            count -= sent
    finally:
        if corked:
            _cork(out, False)
        out.close()


def _cork(sock: socket.socket, on: bool) -> bool:
    """Set TCP_CORK; False where it does not apply (not TCP, or the peer is gone)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
    except OSError:
        return False
    return True


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until the socket `fd` can take more bytes."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def delete_blob(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).blobs.delete(match.name, Digest.parse(match.reference))
    return web.Response(status=202, headers={"Content-Length": "0"})



