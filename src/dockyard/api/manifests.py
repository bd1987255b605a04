"""/v2/<name>/manifests/<reference>: push, pull (GET/HEAD) and delete of manifests."""

from __future__ import annotations

from aiohttp import web

from dockyard.api.access import identity
from dockyard.api.bodies import read_body
from dockyard.api.context import SETTINGS, Match, registry
from dockyard.api.errors import HeadResponse
from dockyard.api.ranges import none_match
from dockyard.oci.errors import PayloadTooLarge

#: What a pull-through cache adds to a manifest it could not re-check upstream.
STALE_HEADERS = {"Warning": '110 - "Response is Stale"', "X-Dockyard-Cache": "stale"}


async def get_manifest(request: web.Request, match: Match) -> web.StreamResponse:
    head = request.method == "HEAD"
    pulled = await registry(request).manifests.pull(match.name, match.reference,
                                                    payload=not head)
    record = pulled.record
    headers = {
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
        "Content-Type": record.media_type,
    }
    if pulled.stale:
        headers.update(STALE_HEADERS)
    if none_match(request.headers.get("If-None-Match"), headers["ETag"]):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    if head:
        return HeadResponse(200, record.size, headers)
    return web.Response(status=200, headers=headers, body=record.payload)


async def put_manifest(request: web.Request, match: Match) -> web.StreamResponse:
    limit = request.app[SETTINGS].limits.manifest_max_size
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"manifest is larger than {limit} bytes")
    payload = await read_body(request, limit,
                              PayloadTooLarge(f"manifest is larger than {limit} bytes"))
    result = await registry(request).manifests.put(
        match.name, match.reference, payload, request.headers.get("Content-Type"),
        by=identity(request).user,
    )
    headers = {
        "Location": f"/v2/{match.name}/manifests/{result.digest}",
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).manifests.delete(match.name, match.reference)
    return web.Response(status=202, headers={"Content-Length": "0"})
