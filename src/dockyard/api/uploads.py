"""/v2/<name>/blobs/uploads/: start, mount, PATCH, PUT, status and cancel of uploads."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aiohttp import web

from dockyard.api.access import audit_as, identity, may_pull
from dockyard.api.bodies import body_chunks
from dockyard.api.context import Match, has_body, registry, upload_headers
from dockyard.api.errors import from_exception
from dockyard.api.ranges import parse_content_range
from dockyard.core.uploads import Chunk
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, NameInvalid, RangeInvalid
from dockyard.oci.reference import validate_name


def _created(name: str, digest: Digest) -> web.Response:
    return web.Response(status=201, headers={
        "Location": f"/v2/{name}/blobs/{digest}",
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    })


def session_owner(request: web.Request) -> str:
    """Who a new upload session counts against: the user, else the client address.

    Kept readable in the uploads table when it can be; a long or unprintable user name
    (an external issuer's `sub`) is stored as its hash.
    """
    who = identity(request)
    owner = f"user:{who.user}" if who.user is not None else f"addr:{who.client}"
    if len(owner) > 128 or not owner.isprintable():
        raw = owner.encode("utf-8", "surrogatepass")
        owner = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    return owner


def _mount_source(name: str, query: Mapping[str, str]) -> tuple[Digest, str] | None:
    """The blob and repository a mount names, or None when `mount` or `from` is missing
    or malformed: the registry cannot mount, so a normal session opens (the spec's
    SHOULD; Distribution ignores the mount arguments' errors the same way)."""
    source = query.get("from")
    if not source or source == name:
        return None
    try:
        return Digest.parse(query.get("mount", "")), validate_name(source)
    except (DigestInvalid, NameInvalid):
        return None


def _digest(request: web.Request) -> Digest:
    """The one `?digest=` of an upload; given twice, refused (a proxy in front may read
    the other one, as two JSON parsers read a duplicate key differently)."""
    given = request.rel_url.query.getall("digest")
    if len(given) > 1:
        raise DigestInvalid("?digest= is given more than once")
    return Digest.parse(given[0])


async def start_upload(request: web.Request, match: Match) -> web.StreamResponse:
    reg, name, query = registry(request), match.name, request.rel_url.query
    if "mount" in query:
        found = _mount_source(name, query)
        # without pull on `from`, silently a normal upload session (Distribution does so)
        if (found is not None and may_pull(request, found[1])
                and await reg.blobs.mount(name, *found) is not None):
            audit_as(request, "blob.mount", source=found[1])
            return _created(name, found[0])
    elif "digest" in query:
        digest = _digest(request)
        length = request.content_length if has_body(request) else 0
        # discard: an error answer names no session, so a failure's session could never
        # be resumed, only count against the client's cap until it expired
        await reg.uploads.upload(name, session_owner(request), digest, body_chunks(request),
                                 Chunk(length=length), discard=True)
        return _created(name, digest)
    record = await reg.uploads.start(name, session_owner(request))
    headers = upload_headers(name, record.id, 0)
    headers["Content-Length"] = "0"
    headers["OCI-Chunk-Min-Length"] = "0"
    return web.Response(status=202, headers=headers)


async def upload_status(request: web.Request, match: Match) -> web.StreamResponse:
    record = await registry(request).uploads.get(match.name, match.reference)
    headers = upload_headers(match.name, record.id, record.offset)
    headers["Content-Length"] = "0"
    return web.Response(status=204, headers=headers)


def _out_of_range(match: Match, exc: RangeInvalid) -> web.StreamResponse:
    """A 416 telling the client where the upload really is, so it can resume there."""
    return from_exception(exc, headers=upload_headers(match.name, match.reference,
                                                      exc.offset))


async def patch_upload(request: web.Request, match: Match) -> web.StreamResponse:
    chunk = parse_content_range(request.headers.get("Content-Range"), request.content_length)
    try:
        record = await registry(request).uploads.append(
            match.name, match.reference, body_chunks(request), chunk
        )
    except RangeInvalid as exc:
        return _out_of_range(match, exc)
    headers = upload_headers(match.name, record.id, record.offset)
    headers["Content-Length"] = "0"
    return web.Response(status=202, headers=headers)


async def finish_upload(request: web.Request, match: Match) -> web.StreamResponse:
    if "digest" not in request.rel_url.query:
        raise DigestInvalid("PUT to finish an upload needs ?digest=")
    digest = _digest(request)
    body = body_chunks(request) if has_body(request) else None
    chunk = parse_content_range(request.headers.get("Content-Range"), request.content_length)
    try:
        await registry(request).uploads.finish(match.name, match.reference, digest, body,
                                               chunk)
    except RangeInvalid as exc:
        return _out_of_range(match, exc)
    return _created(match.name, digest)


async def cancel_upload(request: web.Request, match: Match) -> web.StreamResponse:
    await registry(request).uploads.cancel(match.name, match.reference)
    return web.Response(status=204, headers={"Content-Length": "0",
                                             "Docker-Upload-UUID": match.reference})
