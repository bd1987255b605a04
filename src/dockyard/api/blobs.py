"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: downloads through sendfile, with Range."""

from __future__ import annotations

import asyncio

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
    if info.path is not None and request.transport is not None and not request.secure:
        await _sendfile(request, resp, info.path.as_posix(), start, count)
    else:
        await resp.prepare(request)
        async for data in registry(request).blobstore.read(digest, start, count):
            await resp.write(data)
        await resp.write_eof()
    return resp


async def _sendfile(
    request: web.Request, resp: web.StreamResponse, path: str, offset: int, count: int
) -> None:
    """Zero-copy: headers through aiohttp, then the kernel copies file to socket."""
    loop = asyncio.get_running_loop()
    with open(path, "rb") as fobj:
        writer = await resp.prepare(request)
        assert writer is not None
        await writer.drain()
        transport = request.transport
        assert transport is not None
        try:
            await loop.sendfile(transport, fobj, offset, count)
        except (NotImplementedError, RuntimeError):
            fobj.seek(offset)
            remaining = count
            while remaining:
                data = await asyncio.to_thread(fobj.read, min(remaining, 1 << 20))
                if not data:
                    break
                remaining -= len(data)
                await writer.write(data)
        await resp.write_eof()


async def delete_blob(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).blobs.delete(match.name, Digest.parse(match.reference))
    return web.Response(status=202, headers={"Content-Length": "0"})



