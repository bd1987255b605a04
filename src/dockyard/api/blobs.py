"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: downloads with Range, zero-copy when local."""

from __future__ import annotations

import logging

from aiohttp import web

from dockyard.api.context import Match, registry
from dockyard.api.errors import error_response
from dockyard.api.ranges import parse_range
from dockyard.api.sendfile import send_file, usable
from dockyard.core.blobs import LocalFile, Redirect
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError

log = logging.getLogger("dockyard.api")


async def get_blob(request: web.Request, match: Match) -> web.StreamResponse:
    digest = Digest.parse(match.reference)
    head = request.method == "HEAD"
    blobs = registry(request).blobs
    info = await blobs.stat(match.name, digest, touch=head)
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
    sock = usable(request)
    body = await blobs.open(info, start, count, local=sock is not None)
    if isinstance(body, Redirect):
        return web.Response(status=307, headers={**headers, "Location": body.url,
                                                 "Content-Length": "0"})
    if isinstance(body, LocalFile):
        assert sock is not None
        await send_file(request, resp, sock, body.path, body.offset, body.length)
        return resp
    await resp.prepare(request)
    try:
        async for data in body.chunks:
            await resp.write(data)
    except RegistryError as exc:
        # the status line is out: the only way left to say "failed" is to cut the
        # connection short of Content-Length (a pull-through fetch that failed midway)
        log.warning("GET %s: %s; cutting the response short", digest, exc.message)
        if request.transport is not None:
            request.transport.abort()
        return resp  # aiohttp's own write_eof then meets the closed connection, quietly
    await resp.write_eof()
    return resp


async def delete_blob(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).blobs.delete(match.name, Digest.parse(match.reference))
    return web.Response(status=202, headers={"Content-Length": "0"})



