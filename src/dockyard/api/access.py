"""Access control at the HTTP edge: every route's scope, challenges, the token endpoint, audit.

The dispatcher calls `authorize` for every request after the route and name are known,
with the `Access` the matched endpoint declares in the route table (`api/routes.py`);
nothing here looks at the path's text:

| `Access` | scope needed |
| --- | --- |
| `DISCOVER` (`/v2/`) | any valid credentials (how clients discover auth) |
| `ANYONE` (the web UI's lists) | nothing; the identity is established for filtering |
| `CATALOG` | `registry:catalog:*` |
| `PULL` (GET/HEAD on a repository) | `repository:<name>:pull` |
| `PUSH` (POST/PATCH/PUT, and cancelling an upload) | `repository:<name>:pull,push` |
| `DELETE` (manifests, tags, blobs, repositories) | `repository:<name>:delete` |
| `ADMIN` (the change feed, replica status) | `registry:admin:*` (`auth.admin` subjects) |
| `METRICS` (`/metrics`) | an address in `metrics.allow_from`, or a subject in `metrics.allow` |
| `PUBLIC` (`/healthz`, `/readyz`, `/auth/token`) | nothing |

Unauthenticated (or anonymous and not allowed) → 401 `UNAUTHORIZED` with
`WWW-Authenticate: Basic realm=...` or `Bearer realm=...,service=...,scope=...`; a token
that lacks a scope its user would be granted → 401 with `error="insufficient_scope"` (the
client fetches a wider token, as with Distribution); logged in and not allowed by the
policy → 403 `DENIED`; too many failed logins → 429 `TOOMANYREQUESTS` with
`Retry-After`. With `auth.method: none` nothing is checked and everyone is anonymous.
Browser routes (the web UI's, `requires(..., browser=True)`) are also authenticated by
the UI's session cookie, and their refusals are the UI's pages (`BrowserSessions`).
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from yarl import URL

from dockyard.api.context import REGISTRY, SETTINGS, Match
from dockyard.api.errors import error_response
from dockyard.api.proxy import (
    PROXIES,
    TrustedProxies,
    absolute_locations,
    client_address,
    public_base,
)
from dockyard.api.token_form import parse_form, read_form
from dockyard.auth import audit
from dockyard.auth.identity import Identity, Scope
from dockyard.auth.service import (
    CATALOG_SCOPE,
    AccessControl,
    Decision,
    RateLimited,
    Unauthenticated,
    parse_basic,
)
from dockyard.config.settings import Settings
from dockyard.core.metrics import metrics
from dockyard.oci.reference import is_tag

ACCESS = web.AppKey("access", AccessControl)
IDENTITY = web.RequestKey("identity", Identity)

class Access(enum.Enum):
    """What an endpoint needs, declared beside it in the route table (or on a
    sub-application's handler with `api.routes.requires`)."""

    PUBLIC = "public"  # nothing at all: the token endpoint, where credentials are sent
    ANYONE = "anyone"  # anyone, anonymous or not: the identity is established, no scope
    DISCOVER = "discover"
    CATALOG = "catalog"
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    ADMIN = "admin"  # registry-wide admin API: `registry:admin:*`, `auth.admin` subjects
    METRICS = "metrics"  # operators' scrapes: by client address or listed subjects


_ACTIONS = {Access.PULL: frozenset({"pull"}), Access.PUSH: frozenset({"pull", "push"}),
            Access.DELETE: frozenset({"delete"})}
_ADMIN = Scope("registry", "admin", frozenset({"*"}))


@dataclass(frozen=True)
class Guard:
    """What a sub-application's handler needs, set by `requires`; the repository name
    of a repository scope is the route's `{name}` match."""

    access: Access
    audit: str | None = None
    #: a browser route (the web UI): a session cookie authenticates too, and a refusal
    #: is the UI's page (a login redirect, a 403 page), not an OCI error and challenge
    browser: bool = False
    #: what the route's `{reference}` holds, for the audit line (see `api.routes.Route`)
    reference: str = ""


class BrowserSessions(Protocol):
    """Browser sessions, installed by the web UI as `SESSIONS` on the root app."""

    async def identity(self, request: web.Request, control: AccessControl
                       ) -> Identity | None:
        """The logged-in user of the request's session cookie, if valid and not logged
        out; else None."""
        ...

    def refused(self, request: web.Request, status: int) -> web.StreamResponse:
        """The page for a refusal: 401 (log in), 403 (not allowed), 429 (slow down)."""
        ...


SESSIONS = web.AppKey("sessions", BrowserSessions)

GUARD = "__dockyard_guard__"

AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(access: Access, *, audit: str | None = None, browser: bool = False,
             reference: str = "") -> Callable[[AiohttpHandler], AiohttpHandler]:
    """Declare the access an aiohttp handler outside the /v2 table needs (the token
    endpoint, a sub-application such as the web UI). A handler that declares nothing
    is refused: authorization fails closed."""

    def mark(handler: AiohttpHandler) -> AiohttpHandler:
        # a wrapper of its own, so one function served on two routes keeps two guards
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if access in (Access.PUSH, Access.DELETE) and request.method not in (
                    "GET", "HEAD"):
                # as the /v2 table's writes: an unpromoted replica changes nothing
                # (a web UI delete there was lost at the next failover)
                await request.config_dict[REGISTRY].replica.check_writable()
            return await handler(request)

        setattr(guarded, GUARD, Guard(access, audit, browser, reference))
        return guarded

    return mark


def required_scope(access: Access, name: str) -> Scope | None:
    """The scope an endpoint declaring `access` needs on repository `name`."""
    if access in (Access.DISCOVER, Access.PUBLIC, Access.METRICS, Access.ANYONE):
        return None
    if access is Access.CATALOG:
        return CATALOG_SCOPE
    if access is Access.ADMIN:
        return _ADMIN
    return Scope("repository", name, _ACTIONS[access])


#: methods that change nothing, which a cross-site request may use
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: `Sec-Fetch-Site` values of requests a page of another site did not make
_OWN_FETCH = frozenset({"same-origin", "none"})


def _origin_of(url: str) -> tuple[str, str, int | None] | None:
    """`(scheme, host, port)` of an origin or base URL; None when it is not one."""
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if not parsed.scheme or not parsed.host:
        return None
    return parsed.scheme.lower(), parsed.host.lower().rstrip("."), parsed.port


def cross_site(request: web.Request) -> str:
    """Why a state-changing request came from another site's page ("" when it did not).

    A browser attaches cached Basic credentials to a form a page of any site posts, so
    /v2 and /admin take no write a browser marks as cross-site (`Sec-Fetch-Site` other
    than `same-origin`/`none`) or sends with an `Origin` other than this registry's own
    (`http.host`, else what a trusted proxy forwarded, else the request's own scheme and
    host). Registry clients (docker, podman, skopeo, crane, oras) send neither header.
    """
    if request.method in SAFE_METHODS:
        return ""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in _OWN_FETCH:
        return f"Sec-Fetch-Site: {fetch_site[:40]}"
    origin = request.headers.get("Origin")
    if origin is not None:
        own = _origin_of(public_base(request))
        if own is None or _origin_of(origin.strip()) != own:
            return f"Origin: {origin[:100]}"
    return ""


def refuse_cross_site(request: web.Request, why: str) -> web.StreamResponse:
    """403 `DENIED` for a write a page of another site made (`cross_site`)."""
    metrics().auth_failures.labels("cross_site").inc()
    return error_response("DENIED", f"cross-site requests may not change this registry "
                          f"({why}); registry clients send no Origin or Sec-Fetch-Site "
                          f"header", head=request.method == "HEAD")


def identity(request: web.Request) -> Identity:
    found = request.get(IDENTITY)
    return found if isinstance(found, Identity) else Identity(client=client_address(request))


def _realm(request: web.Request, control: AccessControl) -> str:
    return control.settings.token.realm or f"{public_base(request)}/auth/token"


def _quoted(value: object) -> str:
    """An RFC 9110 quoted-string: a `"` or `\\` in a Host header cannot end the value."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(request: web.Request, control: AccessControl, scope: Scope | None,
              error: str = "") -> str:
    if control.method == "htpasswd":
        return f'Basic realm={_quoted(control.realm)}, charset="UTF-8"'
    parts = [f"realm={_quoted(_realm(request, control))}",
             f"service={_quoted(control.settings.token.service)}"]
    if scope is not None:
        parts.append(f"scope={_quoted(scope)}")
    if error:
        parts.append(f"error={_quoted(error)}")
    return "Bearer " + ",".join(parts)


def _unauthorized(request: web.Request, control: AccessControl, scope: Scope | None,
                  message: str, error: str = "") -> web.StreamResponse:
    detail = [s.claim() for s in [scope] if s is not None] or None
    return error_response("UNAUTHORIZED", message, detail, head=request.method == "HEAD",
                          headers={"WWW-Authenticate": challenge(request, control, scope,
                                                                 error)})


def _rate_limited(request: web.Request, exc: RateLimited) -> web.StreamResponse:
    return error_response("TOOMANYREQUESTS", "too many failed logins",
                          head=request.method == "HEAD",
                          headers={"Retry-After": str(exc.retry_after)})


async def authorize(request: web.Request, control: AccessControl | None, access: Access,
                    match: Match, sessions: BrowserSessions | None = None
                    ) -> web.StreamResponse | None:
    """None when the request may go on (its identity stored); else the error to send.

    `control` is the app's access control; without one (`auth.method: none`) only
    metrics scrapes have anything to decide, and the caller does not ask for the rest
    (everyone is anonymous; `identity()` builds it when asked). With `sessions` (a
    browser route) a session cookie authenticates when no `Authorization` header is
    sent, and refusals are the sessions' pages."""
    refused = await _authorize(request, control, access, match, sessions)
    # a challenge to a request that sent no credentials is how clients discover auth,
    # not a failure
    if refused is not None and (refused.status != 401 or "Authorization" in request.headers):
        count_auth_failure(refused.status)
    return refused


def count_auth_failure(status: int) -> None:
    """Count a refused authentication by its status in `dockyard_auth_failures_total`
    (and a 429 as a login rate limit): requests, the token service and the UI's form."""
    reason = {401: "bad_credentials", 403: "denied", 429: "rate_limited"}.get(status, "other")
    metrics().auth_failures.labels(reason).inc()
    if status == 429:
        metrics().rate_limited.labels("logins").inc()


async def _authorize(request: web.Request, control: AccessControl | None, access: Access,
                     match: Match, sessions: BrowserSessions | None
                     ) -> web.StreamResponse | None:
    if access is Access.METRICS:
        return await _authorize_scrape(request, control)
    assert control is not None
    client = client_address(request)
    scope = required_scope(access, match.name)
    header = request.headers.get("Authorization")
    try:
        if sessions is not None and not header:
            who = await sessions.identity(request, control) or Identity(client=client)
        else:
            who = await control.authenticate(header, client)
    except RateLimited as exc:
        return sessions.refused(request, 429) if sessions else _rate_limited(request, exc)
    except Unauthenticated as exc:
        if sessions is not None:
            return sessions.refused(request, 401)
        return _unauthorized(request, control, scope, "authentication required",
                             "invalid_token" if exc.invalid_token else "")
    request[IDENTITY] = who
    if access is Access.ANYONE:
        return None
    decision = control.decide(who, scope)
    if decision is Decision.ALLOW:
        return None
    if sessions is not None:
        return sessions.refused(request, 401 if decision is Decision.UNAUTHENTICATED
                                else 403)
    if decision is Decision.UNAUTHENTICATED:
        return _unauthorized(request, control, scope, "authentication required")
    if decision is Decision.INSUFFICIENT_SCOPE:
        return _unauthorized(request, control, scope, "the token does not grant this access",
                             "insufficient_scope")
    return _denied(request, control, scope)


def _denied(request: web.Request, control: AccessControl | None, scope: Scope | None
            ) -> web.StreamResponse:
    detail = [scope.claim()] if scope is not None else None
    headers = ({"WWW-Authenticate": challenge(request, control, scope, "insufficient_scope")}
               if control is not None and control.method == "token" and scope is not None
               else None)
    return error_response("DENIED", "requested access to the resource is denied", detail,
                          head=request.method == "HEAD", headers=headers)


#: the networks `metrics.allow_from` names
SCRAPERS = web.AppKey("scrapers", TrustedProxies)


async def _authorize_scrape(request: web.Request, control: AccessControl | None
                            ) -> web.StreamResponse | None:
    """`Access.METRICS`: a client address in `metrics.allow_from` (as the trusted
    proxies tell it), or credentials of a subject in `metrics.allow`; with
    `auth.method: none` only the addresses."""
    client = client_address(request)
    scrapers = request.config_dict.get(SCRAPERS)
    if scrapers is not None and scrapers.trusts(client):
        return None
    allowed = frozenset(request.config_dict[SETTINGS].metrics.allow)
    if control is None or not allowed:
        return _denied(request, None, None)
    try:
        who = await control.authenticate(request.headers.get("Authorization"), client)
    except RateLimited as exc:
        return _rate_limited(request, exc)
    except Unauthenticated as exc:
        return _unauthorized(request, control, None, "authentication required",
                             "invalid_token" if exc.invalid_token else "")
    request[IDENTITY] = who
    if control.subjects(who) & allowed:
        return None
    if not who.authenticated:
        return _unauthorized(request, control, None, "authentication required")
    return _denied(request, None, None)


def may(request: web.Request, access: Access, repository: str) -> bool:
    """Whether this request's identity may take `access` on `repository` (what a page
    offers: a delete button only to those the policy lets delete)."""
    control = request.config_dict.get(ACCESS)
    if control is None:
        return True
    return control.decide(identity(request), required_scope(access, repository)) \
        is Decision.ALLOW


def may_pull(request: web.Request, repository: str) -> bool:
    """Whether this request's identity may read `repository` (cross-repository mounts)."""
    return may(request, Access.PULL, repository)


def catalog_filter(request: web.Request) -> Callable[[str], bool] | None:
    """Which names this request's catalog may show (None: all of them)."""
    control = request.config_dict.get(ACCESS)
    return None if control is None else control.catalog_filter(identity(request))


#: the event (and details) a handler names for its success with `audit_as`
_AUDIT = web.RequestKey("audit", tuple)


def audit_as(request: web.Request, event: str, **detail: Any) -> None:
    """Let a handler name the event its success records, when its endpoint's default
    does not say what happened (a POST that mounted a blob instead of uploading it)."""
    request[_AUDIT] = (event, detail)


def audit_response(request: web.Request, event: str, match: Match, *, reference: str,
                   response: web.StreamResponse) -> None:
    """One audit line for a push, tag change or delete that succeeded.

    `reference` is what the route's reference holds (`tag-or-digest`, `digest`,
    `session`; see `api.routes.Route`), so a session id is never logged as a tag.
    """
    if response.status >= 300:
        return
    detail: dict[str, Any] = {}
    if _AUDIT in request:
        event, detail = request[_AUDIT]
    ref = match.reference
    tag = ref if reference == "tag-or-digest" and ref and is_tag(ref) else None
    digest = response.headers.get("Docker-Content-Digest") or (
        ref if reference in ("tag-or-digest", "digest") and ref and tag is None else None)
    audit.record(event, identity(request), match.name, tag=tag, digest=digest, **detail)


# ---------------------------------------------------------------- the token endpoint


def _json(doc: object, status: int = 200, headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store", **(headers or {})})


#: distinct scopes one token request may ask for: each is in the token, and a token of
#: 2,000 scopes (167 KB) was issued that no server takes back in a header (431)
MAX_SCOPES = 100


class TooManyScopes(ValueError):
    """A token request asks for more than `MAX_SCOPES` distinct scopes."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} scopes asked for; at most {MAX_SCOPES} in one token")


def _scopes(values: list[str]) -> list[Scope]:
    """The distinct scopes asked for (`TooManyScopes` past `MAX_SCOPES`)."""
    out: dict[str, Scope] = {}
    for value in values:
        for item in value.split(" "):
            scope = Scope.parse(item) if item else None
            if scope is not None:
                out.setdefault(item, scope)
    if len(out) > MAX_SCOPES:
        raise TooManyScopes(len(out))
    return list(out.values())


async def token_get(request: web.Request) -> web.StreamResponse:
    """`GET /auth/token?service=&scope=...` with Basic credentials or anonymously."""
    control = request.app[ACCESS]
    client = client_address(request)
    query = request.rel_url.query
    service = query.get("service")
    if service and service != control.settings.token.service:
        return error_response("DENIED", f"this token service issues tokens for "
                              f"{control.settings.token.service!r}, not {service[:100]!r}")
    header = request.headers.get("Authorization", "")
    try:
        if header.lower().startswith("basic "):
            user, password = parse_basic(header[6:])
            who = await control.login(user, password, client)
        elif header:
            raise Unauthenticated("send Basic credentials or none")
        else:
            who = Identity(client=client)
    except RateLimited as exc:
        count_auth_failure(429)
        return _rate_limited(request, exc)
    except Unauthenticated:
        count_auth_failure(401)
        return error_response("UNAUTHORIZED", "authentication required", headers={
            "WWW-Authenticate": f'Basic realm="{control.realm}", charset="UTF-8"'})
    offline = query.get("offline_token", "").lower() == "true"
    try:
        scopes = _scopes(query.getall("scope", []))
    except TooManyScopes as exc:
        return error_response("UNSUPPORTED", str(exc), status=400)
    return _json(control.issue(who, scopes, offline=offline))


async def token_post(request: web.Request) -> web.StreamResponse:
    """The OAuth2 form (docker, podman): `grant_type=password|refresh_token`."""
    control = request.app[ACCESS]
    client = client_address(request)
    body = await read_form(request)
    if body is None:
        return _json({"error": "invalid_request",
                      "error_description": "the form is larger than 64 KiB"}, 400)
    form = parse_form(body)
    service = form.get("service")
    if service and service != control.settings.token.service:
        return _json({"error": "invalid_request",
                      "error_description": "unknown service"}, 400)
    grant_type = form.get("grant_type", "")
    try:
        if grant_type == "password":
            who = await control.login(form.get("username", ""), form.get("password", ""),
                                      client)
        elif grant_type == "refresh_token":
            who = control.refresh(form.get("refresh_token", ""), client)
        else:
            return _json({"error": "unsupported_grant_type"}, 400)
    except RateLimited as exc:
        count_auth_failure(429)
        return _json({"error": "invalid_grant", "error_description": str(exc)}, 429,
                     {"Retry-After": str(exc.retry_after)})
    except Unauthenticated:
        count_auth_failure(401)
        return _json({"error": "invalid_grant",
                      "error_description": "wrong user name, password or refresh token"}, 401)
    offline = form.get("access_type") == "offline" or grant_type == "refresh_token"
    try:
        scopes = _scopes([form.get("scope", "")])
    except TooManyScopes as exc:
        return _json({"error": "invalid_scope", "error_description": str(exc)}, 400)
    return _json(control.issue(who, scopes, offline=offline))


def install_access(app: web.Application, settings: Settings) -> None:
    """Wire access control, trusted proxies, absolute Locations and the token endpoint."""
    app[PROXIES] = TrustedProxies(settings.http.trusted_proxies)
    app[SCRAPERS] = TrustedProxies(settings.metrics.allow_from)
    if not settings.http.relativeurls:
        app.on_response_prepare.append(absolute_locations)
    if settings.auth.method == "none":
        return
    control = AccessControl(settings.auth, settings.data_dir)
    app[ACCESS] = control
    if control.issuer is not None:
        public = requires(Access.PUBLIC)
        app.router.add_get("/auth/token", public(token_get), allow_head=False,
                           name="token")
        app.router.add_post("/auth/token", public(token_post), name="token")
