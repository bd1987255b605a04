"""The /v2 route table (data, in one place) and the dispatcher that applies it.

Repository names contain slashes, so routes are matched on the raw path with regular
expressions, the way the distribution-spec writes them; the name and reference are
validated against the spec's grammar before any handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from dockyard.api import admin, blobs, listing, manifests, uploads
from dockyard.api.access import audit_response, authorize
from dockyard.api.context import Match
from dockyard.api.errors import error_response, from_exception
from dockyard.oci.errors import RegistryError
from dockyard.oci.reference import validate_name

Handler = Callable[[web.Request, Match], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """A path pattern, the methods it answers and whether it carries a repository name."""

    pattern: re.Pattern[str]
    methods: dict[str, Handler]
    named: bool = True


def _r(pattern: str, named: bool = True, **methods: Handler) -> Route:
    return Route(re.compile(pattern), methods, named)


ROUTES: tuple[Route, ...] = (
    _r(r"/v2/?", named=False, GET=listing.base, HEAD=listing.base),
    _r(r"/v2/_catalog", named=False, GET=listing.catalog),
    _r(r"/v2/(?P<name>.+)/tags/list", GET=listing.list_tags),
    _r(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]*)", GET=manifests.get_manifest,
       HEAD=manifests.get_manifest, PUT=manifests.put_manifest,
       DELETE=manifests.delete_manifest),
    _r(r"/v2/(?P<name>.+)/blobs/uploads/?", POST=uploads.start_upload),
    _r(r"/v2/(?P<name>.+)/blobs/uploads/(?P<reference>[^/]+)", GET=uploads.upload_status,
       PATCH=uploads.patch_upload, PUT=uploads.finish_upload, DELETE=uploads.cancel_upload),
    _r(r"/v2/(?P<name>.+)/blobs/(?P<reference>[^/]+)", GET=blobs.get_blob, HEAD=blobs.get_blob,
       DELETE=blobs.delete_blob),
    _r(r"/v2/(?P<name>.+)/referrers/(?P<reference>[^/]+)", GET=listing.referrers),
    _r(r"/admin/v1/repositories/(?P<name>.+)", DELETE=admin.delete_repository),
)


def resolve(path: str) -> tuple[Route, re.Match[str]] | None:
    for route in ROUTES:
        m = route.pattern.fullmatch(path)
        if m:
            return route, m
    return None


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Find the route for the raw path, check the name, run the handler, map errors."""
    head = request.method == "HEAD"
    found = resolve(request.rel_url.raw_path)
    if found is None:
        return error_response("NAME_UNKNOWN" if request.rel_url.raw_path.startswith("/v2/")
                              else "UNSUPPORTED", "no such endpoint", status=404, head=head)
    route, m = found
    handler = route.methods.get(request.method)
    if handler is None:
        return error_response("UNSUPPORTED", f"{request.method} is not supported here",
                              headers={"Allow": ", ".join(route.methods)}, head=head)
    groups = m.groupdict()
    try:
        match = Match(validate_name(groups["name"]) if route.named else "",
                      groups.get("reference") or "")
        refused = await authorize(request, match)
        if refused is not None:
            return refused
        response = await handler(request, match)
        audit_response(request, handler.__name__, match, response)
        return response
    except RegistryError as exc:
        return from_exception(exc, head=head)
