"""The /v2 route table (data, in one place), the authorization middleware, the dispatcher.

Repository names contain slashes, so routes are matched on the raw path with regular
expressions, the way the distribution-spec writes them; the name and reference are then
percent-decoded (`sha256%3A...` is a digest, `team%2Fapp` the name `team/app`, as
Distribution reads them) and validated against the spec's grammar before any handler
runs. Matching the raw path means an encoded `/` or keyword never changes which route
a path takes: it is part of the group it sits in.

Each endpoint (a route and a method) carries what it needs and what it records as data:
the access it requires (`Access`) and the audit event of a success. Nothing is decided
from the path's text: a repository may be called `team/blobs/uploads/x`, and
`DELETE /v2/team/blobs/uploads/x/manifests/<digest>` is a manifest delete all the same.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from dockyard.api import admin, blobs, listing, manifests, notifying, uploads
from dockyard.api.access import (
    ACCESS,
    GUARD,
    SESSIONS,
    Access,
    AiohttpHandler,
    BrowserSessions,
    Guard,
    audit_response,
    authorize,
    cross_site,
    refuse_cross_site,
)
from dockyard.api.context import Match, registry
from dockyard.api.errors import error_response, from_exception
from dockyard.core.metrics import metrics
from dockyard.oci.errors import RegistryError, TooManyRequests
from dockyard.oci.reference import validate_name

log = logging.getLogger("dockyard.api")

Handler = Callable[[web.Request, Match], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    """One method of a route: its handler, the access it needs, the audit event it logs.

    `audit_status`, when set, is the only status that is audited (a POST that only
    opens an upload session stores nothing yet).
    """

    handler: Handler
    access: Access
    audit: str | None = None
    audit_status: int | None = None
    #: writes an upload session's bytes (counted in `dockyard_uploads_in_flight`)
    upload: bool = False


@dataclass(frozen=True)
class Route:
    """A path pattern and its endpoints by method.

    `reference` says what the path's `reference` group holds: `tag-or-digest`,
    `digest`, `session` (an upload session id) or nothing.
    """

    id: str
    pattern: re.Pattern[str]
    endpoints: Mapping[str, Endpoint]
    named: bool = True
    reference: str = ""


def _r(id_: str, pattern: str, *, named: bool = True, reference: str = "",
       **endpoints: Endpoint) -> Route:
    return Route(id_, re.compile(pattern), endpoints, named, reference)


_E = Endpoint
_NAME = r"/v2/(?P<name>.+)"

ROUTES: tuple[Route, ...] = (
    _r("base", r"/v2/?", named=False,
       GET=_E(listing.base, Access.DISCOVER), HEAD=_E(listing.base, Access.DISCOVER)),
    _r("catalog", r"/v2/_catalog", named=False, GET=_E(listing.catalog, Access.CATALOG)),
    _r("tags", _NAME + r"/tags/list", GET=_E(listing.list_tags, Access.PULL)),
    _r("manifest", _NAME + r"/manifests/(?P<reference>[^/]*)", reference="tag-or-digest",
       GET=_E(manifests.get_manifest, Access.PULL),
       HEAD=_E(manifests.get_manifest, Access.PULL),
       PUT=_E(manifests.put_manifest, Access.PUSH, "push"),
       DELETE=_E(manifests.delete_manifest, Access.DELETE, "delete")),
    _r("upload-start", _NAME + r"/blobs/uploads/?",
       POST=_E(uploads.start_upload, Access.PUSH, "blob.push", audit_status=201,
               upload=True)),
    _r("upload", _NAME + r"/blobs/uploads/(?P<reference>[^/]+)", reference="session",
       # every endpoint of an upload session needs push, its status too (Distribution)
       GET=_E(uploads.upload_status, Access.PUSH),
       PATCH=_E(uploads.patch_upload, Access.PUSH, upload=True),
       PUT=_E(uploads.finish_upload, Access.PUSH, "blob.push", upload=True),
       # cancelling one's own upload session is part of pushing
       DELETE=_E(uploads.cancel_upload, Access.PUSH)),
    _r("blob", _NAME + r"/blobs/(?P<reference>[^/]+)", reference="digest",
       GET=_E(blobs.get_blob, Access.PULL), HEAD=_E(blobs.get_blob, Access.PULL),
       DELETE=_E(blobs.delete_blob, Access.DELETE, "blob.delete")),
    _r("referrers", _NAME + r"/referrers/(?P<reference>[^/]+)", reference="digest",
       GET=_E(listing.referrers, Access.PULL)),
    _r("admin-cache", r"/admin/v1/cache/(?P<name>.+)",
       GET=_E(admin.cache_provenance, Access.PULL)),
    _r("admin-repository", r"/admin/v1/repositories/(?P<name>.+)",
       DELETE=_E(admin.delete_repository, Access.DELETE, "repository.delete")),
    _r("admin-tags", r"/admin/v1/tags/(?P<name>.+)",
       GET=_E(listing.tag_records, Access.PULL)),
    _r("admin-events", r"/admin/v1/events", named=False, GET=_E(admin.events, Access.ADMIN)),
    _r("admin-replica", r"/admin/v1/replica", named=False,
       GET=_E(admin.replica_status, Access.ADMIN)),
    _r("admin-sync", r"/admin/v1/sync/?", named=False,
       GET=_E(admin.sync_runs, Access.CATALOG)),
    _r("admin-jobs", r"/admin/v1/jobs/?", named=False,
       GET=_E(admin.job_runs, Access.CATALOG)),
    _r("admin-sync-repository", r"/admin/v1/sync/repositories/(?P<name>.+)",
       GET=_E(admin.sync_provenance, Access.PULL)),
)

#: the name of the aiohttp route that hands /admin/v1 paths to `dispatch` (its unknown
#: paths are UNSUPPORTED; a /v2 one names a repository that has no such endpoint)
ADMIN_RESOURCE = "admin-v1"

#: what a read-only replica refuses (the endpoints that write)
_WRITES = frozenset({Access.PUSH, Access.DELETE})


def resolve(path: str) -> tuple[Route, re.Match[str]] | None:
    """The first route whose pattern matches the whole raw path, in table order."""
    for route in ROUTES:
        m = route.pattern.fullmatch(path)
        if m:
            return route, m
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    route: Route
    endpoint: Endpoint
    match: Match


TARGET = web.RequestKey("target", _Target)
"""The table endpoint a request matched (its route id labels the request's metrics)."""


def _decoded(group: str) -> str:
    """A path group percent-decoded once (bytes that are no UTF-8 become U+FFFD, which
    no name, tag, digest or session id holds, so they are refused as invalid)."""
    return unquote(group, errors="replace") if "%" in group else group


@functools.lru_cache(maxsize=1024)
def _route_of(path: str) -> tuple[Route, Match] | None:
    """The route of a raw path and what it names, decoded (the name validated:
    `NameInvalid`).

    A pure function of the raw path, kept for the paths asked most (a popular image's
    manifest, its blobs): pulls skip the table's regular expressions. Keyed on the raw
    path, the route never depends on what its groups decode to."""
    found = resolve(path)
    if found is None:
        return None
    route, m = found
    groups = m.groupdict()
    name = validate_name(_decoded(groups["name"])) if route.named else ""
    return route, Match(name, _decoded(groups.get("reference") or ""))


def _resolve_table(request: web.Request) -> _Target | web.StreamResponse:
    """The /v2 (and /admin/v1) endpoint of the raw path, or the error to answer."""
    found = _route_of(request.rel_url.raw_path)
    if found is None:
        # which of the app's dispatch routes took the request, not the path's text
        resource = request.match_info.route.resource
        admin_path = resource is not None and resource.name == ADMIN_RESOURCE
        return error_response("UNSUPPORTED" if admin_path else "NAME_UNKNOWN",
                              "no such endpoint", status=404, head=request.method == "HEAD")
    route, match = found
    endpoint = route.endpoints.get(request.method)
    if endpoint is None:
        return error_response("UNSUPPORTED", f"{request.method} is not supported here",
                              headers={"Allow": ", ".join(route.endpoints)},
                              head=request.method == "HEAD")
    return _Target(route, endpoint, match)


@web.middleware
async def authorization(request: web.Request, handler: AiohttpHandler
                        ) -> web.StreamResponse:
    """Decide every request from its matched route's declared access, before its handler.

    /v2 and /admin/v1 paths are matched against the route table here (repository
    names hold slashes, so aiohttp's router cannot); any other route, a
    sub-application's included, declares its access with `requires`.
    """
    matched = request.match_info
    if matched.http_exception is not None:  # no route at all: answered in OCI JSON too
        exc = matched.http_exception
        allow = exc.headers.get("Allow")
        return error_response("UNSUPPORTED", "no such endpoint" if exc.status == 404
                              else f"{request.method} is not supported here",
                              status=exc.status, head=request.method == "HEAD",
                              headers={"Allow": allow} if allow else None)
    guard: Guard | None = None
    sessions: BrowserSessions | None = None
    try:
        if matched.handler is dispatch:
            target = _resolve_table(request)
            if not isinstance(target, _Target):
                return target
            request[TARGET] = target
            access, match = target.endpoint.access, target.match
            # before credentials are looked at: a browser attaches cached Basic
            # credentials to another site's forms, and /v2 has no CSRF token
            why = cross_site(request)
            if why:
                return refuse_cross_site(request, why)
        else:
            guard = getattr(matched.handler, GUARD, None)
            if guard is None:
                log.error("refused %s %s: its route declares no access", request.method,
                          matched.route.resource.canonical if matched.route.resource
                          else "?")
                return error_response("DENIED", "requested access to the resource is denied",
                                      head=request.method == "HEAD")
            if guard.access is Access.PUBLIC:
                return await handler(request)
            access = guard.access
            if guard.browser:
                sessions = request.config_dict.get(SESSIONS)
            match = Match(validate_name(matched["name"]) if "name" in matched else "",
                          matched.get("reference", ""))
    except RegistryError as exc:
        if sessions is not None:
            return sessions.refused(request, 404)
        return from_exception(exc, head=request.method == "HEAD")
    # without access control (`auth.method: none`) there is nothing to decide but
    # for metrics scrapes: checked here, to save a coroutine on every request
    control = request.app.get(ACCESS)
    if control is not None or access is Access.METRICS:
        refused = await authorize(request, control, access, match, sessions)
        if refused is not None:
            return refused
    notifying.bind(request)
    response = await handler(request)
    if guard is not None and guard.audit is not None:
        audit_response(request, guard.audit, match, reference=guard.reference,
                       response=response)
    return response


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Run the table endpoint `authorization` matched and allowed; audit; map errors."""
    head = request.method == "HEAD"
    target = request[TARGET]
    route, endpoint, match = target.route, target.endpoint, target.match
    writing = endpoint.upload
    if writing:
        metrics().requests_stats.uploads += 1
    try:
        if endpoint.access in _WRITES:
            await registry(request).replica.check_writable()
        response = await endpoint.handler(request, match)
        if endpoint.audit is not None and (endpoint.audit_status is None
                                           or response.status == endpoint.audit_status):
            audit_response(request, endpoint.audit, match, reference=route.reference,
                           response=response)
        return response
    except RegistryError as exc:
        if exc.server_fault and exc.log_each:
            log.warning("%s %s: %s", request.method, route.id, exc)
        if isinstance(exc, TooManyRequests):
            metrics().rate_limited.labels("upload_sessions").inc()
        return from_exception(exc, head=head)
    finally:
        if writing:
            metrics().requests_stats.uploads -= 1

