"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: downloads with Range, zero-copy when local."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dockyard.api.bodies import body_timeout
from dockyard.api.context import Match, registry
from dockyard.api.errors import error_response
from dockyard.api.ranges import none_match, parse_range, range_applies
from dockyard.api.sendfile import ShortBody, Stalled, send_file, usable
from dockyard.core.blobs import BlobService, LocalFile, Redirect
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, RegistryError

log = logging.getLogger(__name__)

PREFETCH = 256 * 1024
"""Bytes of a streamed blob read from the store before the status is sent."""


async def get_blob(request: web.Request, match: Match) -> web.StreamResponse:
    return await send_blob(request, registry(request).blobs, match.name, match.reference)


#: a blob never changes under its digest: clients and caches may keep it for a year
CACHE_CONTROL = "max-age=31536000"


async def send_blob(request: web.Request, blobs: BlobService, name: str, reference: str,
                    *, cache_control: str = CACHE_CONTROL) -> web.StreamResponse:
    """Answer a GET or HEAD of blob `reference` of `name` (the API's, and the UI's
    download, which reaches the registry through its own sub-application)."""
    digest = Digest.parse(reference)
    head = request.method == "HEAD"
    info = await blobs.stat(name, digest, touch=head)
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": cache_control,
    }
    if none_match(request.headers.get("If-None-Match"), headers["ETag"]):
        return web.Response(status=304, headers=headers)  # before Range (RFC 9110 13.2.2)
    wanted = request.headers.get("Range")
    whole = bool(wanted) and not range_applies(request.headers.get("If-Range"),
                                               headers["ETag"])
    if whole:  # served here: a redirect would send the Range on to the store
        wanted = None
    try:
        span = parse_range(wanted, info.size)
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
    body = await blobs.open(info, start, count, local=sock is not None, redirect=not whole)
    seconds = body_timeout(request)
    if isinstance(body, Redirect):
        return web.Response(status=307, headers={**headers, "Location": body.url,
                                                 "Content-Length": "0"})
    try:
        if isinstance(body, LocalFile):
            assert sock is not None
            await send_file(request, resp, sock, body.path, body.offset, body.length,
                            seconds)
        else:
            await stream(request, resp, body.chunks, count, seconds)
    except FileNotFoundError:
        if resp.prepared:
            raise
        # the metadata knows the blob, its bytes are gone (removed by hand under the
        # storage tree): not served, said once here, and fsck marks it
        log.error("blob %s of %s: its bytes are missing from storage; run `dockyard "
                  "fsck` (it marks such blobs, so a push stores them again)", digest, name)
        raise BlobUnknown(f"blob {digest} is not stored", {"digest": str(digest)}) from None
    except ShortBody as exc:
        # fewer bytes stored than recorded (a file truncated under the storage tree)
        log.error("blob %s of %s: storage holds only %d of the %d bytes from %d; run "
                  "`dockyard fsck` (it marks such blobs, so a push stores them again)",
                  digest, name, exc.sent, count, start)
        if not resp.prepared:
            raise BlobUnknown(f"blob {digest} is not stored whole",
                              {"digest": str(digest)}) from None
        cut(request, resp)
    except Stalled:
        log.info("%s %s: the client took no byte for %gs; closing the connection",
                 request.method, request.path, seconds)
        cut(request, resp)
    return resp


def cut(request: web.Request, resp: web.StreamResponse) -> None:
    """Drop the connection now, unsent bytes and all: a body shorter than its
    Content-Length must never be followed by another response on the same connection
    (the client would read that response as the rest of this body)."""
    resp.force_close()
    if request.transport is not None:
        request.transport.abort()


async def stream(request: web.Request, resp: web.StreamResponse,
                 chunks: AsyncIterator[bytes], count: int, seconds: float) -> None:
    """Send the `count` bytes of a blob the store streams: its first `PREFETCH` bytes
    are read before the status goes out, so a store that cannot answer gets the client
    a clean 503 (and a blob that small is sent whole or not at all). Past that the
    status is sent: a store failing mid-body cuts the connection, so the client sees a
    short body, never another response's bytes inside this one. Bytes are counted:
    a store that ends early raises `ShortBody`.

    A client that takes no byte for `seconds` (`http.body_timeout`) raises `Stalled`
    (the caller drops the connection), so it cannot hold the store's stream (an S3
    connection), its buffers or this request for good. The store's stream is closed
    on the way out either way."""
    try:
        head: list[bytes] = []
        held = 0
        async for data in chunks:  # a store error here is answered 503 by `dispatch`
            head.append(data)
            held += len(data)
            if held >= PREFETCH:
                break
        if held < PREFETCH and held != count:
            raise ShortBody(held)
        await resp.prepare(request)
        sent = 0
        try:
            for data in head:
                await _write(resp, data, seconds)
                sent += len(data)
            del head
            if held >= PREFETCH:
                async for data in chunks:
                    await _write(resp, data, seconds)
                    sent += len(data)
        except RegistryError as exc:
            log.warning("%s %s: cut after the status was sent: %s", request.method,
                        request.path, exc)
            resp.force_close()  # the connection closes after this short body
            return
        if sent != count:
            raise ShortBody(sent)
        await _write(resp, b"", seconds, eof=True)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


#: the most of a body written under one deadline: a piece must be taken within
#: `http.body_timeout`, so a client reading slowly but steadily (a few KiB/s) is not cut
#: off in the middle of a 1 MiB chunk
WRITE_PIECE = 256 * 1024


async def _write(resp: web.StreamResponse, data: bytes, seconds: float, *,
                 eof: bool = False) -> None:
    """`resp.write(data)` (with `eof`, `resp.write_eof()`), or `Stalled` when the
    client takes no `WRITE_PIECE` of it within `seconds`."""
    try:
        if eof:
            async with asyncio.timeout(seconds):
                await resp.write_eof()
            return
        view = memoryview(data)
        for start in range(0, len(view), WRITE_PIECE):
            async with asyncio.timeout(seconds):
                await resp.write(view[start:start + WRITE_PIECE])
    except TimeoutError:
        raise Stalled from None


async def delete_blob(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).blobs.delete(match.name, Digest.parse(match.reference))
    return web.Response(status=202, headers={"Content-Length": "0"})



