"""The UI's pages: each handler reads through `core` services and renders a template.

Each handler declares the access it needs with `requires(..., browser=True)`; the
authorization middleware decides before it runs (a repository's pages need `pull` on
it, its delete pages `delete`). Lists and search show only what the caller may pull.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dockyard.api.access import (
    ACCESS,
    Access,
    AiohttpHandler,
    catalog_filter,
    count_auth_failure,
    may,
    requires,
)
from dockyard.api.blobs import CACHE_CONTROL, send_blob
from dockyard.api.proxy import client_address, public_base
from dockyard.api.token_form import MAX_FORM, read_form
from dockyard.auth.service import RateLimited, Unauthenticated
from dockyard.core.browse import SORTS
from dockyard.core.mirrors import MirrorRun, report_counts, visible_runs
from dockyard.web.context import registry, render, sessions

PER_PAGE = 50
#: tags on one page of a repository (CI pushes a tag per commit: 100,000 is no surprise)
TAGS_PER_PAGE = 100
#: tags a confirmation page names (the rest are counted)
NAMED = 50
#: mirror sync runs read for the operations page (the newest of each source shown)
SYNC_RUNS = 200
#: runs of each background job read for the operations page (the build runs listed)
JOB_RUNS = 10
#: the scheduled rebuild's job (`dockyard.jobs.builder_job`), whose runs are listed
BUILD_JOB = "builder.rebuild"


def _ui(access: Access, audit: str | None = None, reference: str = ""
        ) -> Callable[[AiohttpHandler], AiohttpHandler]:
    """A page's declared access (a browser route: sessions and UI refusals)."""
    return requires(access, audit=audit, browser=True, reference=reference)


def _registry_host(request: web.Request) -> str:
    """The host:port clients pull from (the public URL without its scheme)."""
    return public_base(request).split("://", 1)[-1].rstrip("/")


def _csrf_refused(request: web.Request) -> web.Response:
    return render(request, "error.html", status=403, title="Refused",
                  message="This form is stale or was not sent from this site "
                          "(its CSRF token does not match your session). Reload the "
                          "page and try again.")


#: the only form encoding the UI's forms send
FORM_TYPE = "application/x-www-form-urlencoded"


async def _form(request: web.Request) -> dict[str, str] | None:
    """The POSTed form, or None when its CSRF token does not match the session.

    Read like every request body (`api.bodies`: at most `MAX_FORM` bytes, cut off with
    408 when no byte comes for `http.body_timeout`): aiohttp's `request.post()` waited
    for it with no limit, so a form announced and never sent, the login's before any
    credentials included, held its connection for good. 400 for a form no browser sends
    from these pages: another encoding than `FORM_TYPE`, another charset than UTF-8,
    bytes that are not UTF-8; 413 past `MAX_FORM`.
    """
    typed = "Content-Type" in request.headers  # none: an empty form (no fields)
    if typed and request.content_type != FORM_TYPE:
        raise _unreadable(f"send {FORM_TYPE}, as the page's form does")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise _unreadable(f"charset {charset[:40]!r} is not UTF-8")
    body = await read_form(request)
    if body is None:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM,
                                            actual_size=request.content_length or 0)
    if body and not typed:
        raise _unreadable(f"send {FORM_TYPE}, as the page's form does")
    try:
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                           encoding="utf-8", errors="strict"))
    except ValueError as exc:  # UnicodeDecodeError, raw or percent-encoded
        raise _unreadable(str(exc)) from None
    token = form.get("csrf")
    if token is None or not sessions(request).csrf_ok(request, token):
        return None
    return form


def _unreadable(why: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"the form could not be read: {why[:100]}")


@_ui(Access.ANYONE)
async def home(request: web.Request) -> web.StreamResponse:
    visible = catalog_filter(request)
    browse = registry(request).browse
    q = request.query.get("q", "")
    names, pairs = await browse.search(q, visible)
    return render(request, "home.html", title="Dockyard", home=await browse.home(visible),
                  q=q, names=names, pairs=pairs)


@_ui(Access.ANYONE)
async def search(request: web.Request) -> web.StreamResponse:
    q = request.query.get("q", "")
    names, pairs = await registry(request).browse.search(q, catalog_filter(request))
    template = "search_results.html" if request.query.get("partial") else "search.html"
    return render(request, template, title=f"Search: {q}" if q else "Search", q=q,
                  names=names, pairs=pairs)


@_ui(Access.ANYONE)
async def repositories(request: web.Request) -> web.StreamResponse:
    query = request.query
    pattern = query.get("q", "")[:200]
    sort = query.get("sort", "name")
    sort = sort if sort in SORTS else "name"
    order = "desc" if query.get("order") == "desc" else "asc"
    found = await registry(request).browse.repositories(
        catalog_filter(request), pattern=pattern, sort=sort, descending=order == "desc")
    pages = max(1, math.ceil(len(found) / PER_PAGE))
    page = _page(query, pages)
    shown = found[(page - 1) * PER_PAGE: page * PER_PAGE]

    def link(**changes: str | int) -> str:
        params = {"q": pattern, "sort": sort, "order": order, "page": page, **changes}
        return "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v})

    return render(request, "repositories.html", title="Repositories", repos=shown,
                  total=len(found), page=page, pages=pages, q=pattern, sort=sort,
                  order=order, link=link)


@_ui(Access.PULL)
async def repository(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    services = registry(request)
    asked = _page(request.query, 1_000_000)
    tags, total = await services.browse.tags(name, offset=(asked - 1) * TAGS_PER_PAGE,
                                             limit=TAGS_PER_PAGE)
    pages = max(1, math.ceil(total / TAGS_PER_PAGE))
    page = min(asked, pages)
    if page != asked:  # past the last page: the last one
        tags, total = await services.browse.tags(name, offset=(page - 1) * TAGS_PER_PAGE,
                                                 limit=TAGS_PER_PAGE)
    # where tags came from: a mirror list's sync, or a pull-through cache's upstream
    origins = {o.tag: ("mirrored from", o.upstream, o.mirrored_at)
               for o in await services.mirrors.origins(repository=name, current=True)}
    if services.cache.route(name) is not None:
        origins.update((c.tag, ("cached from", c.upstream, c.fetched_at))
                       for c in await services.cache.provenance(name))
    return render(request, "repository.html", title=name, name=name, tags=tags,
                  total=total, page=page, pages=pages, link=lambda page: f"?page={page}",
                  origins=origins, host=_registry_host(request),
                  can_delete=may(request, Access.DELETE, name))


async def _image(request: web.Request) -> web.StreamResponse:
    name, reference = request.match_info["name"], request.match_info["reference"]
    view = await registry(request).browse.image(name, reference)
    return render(request, "image.html", title=f"{name}@{view.digest}", image=view,
                  reference=reference, host=_registry_host(request),
                  pkg=request.query.get("pkg", "")[:200],
                  can_delete=may(request, Access.DELETE, name))


image_by_tag = _ui(Access.PULL)(_image)
image_by_digest = _ui(Access.PULL)(_image)


@_ui(Access.PULL)
async def layer(request: web.Request) -> web.StreamResponse:
    name, reference = request.match_info["name"], request.match_info["reference"]
    view = await registry(request).browse.layer(name, reference)
    path = request.query.get("path", "")[:200]
    return render(request, "layer.html", title=f"{name}@{view.digest}", layer=view,
                  filter=path)


@_ui(Access.PULL)
async def layer_download(request: web.Request) -> web.StreamResponse:
    """The blob's bytes, as the API's blob GET sends them (Range, zero-copy, redirect)."""
    name, reference = request.match_info["name"], request.match_info["reference"]
    # `private`: a shared cache in front may not keep it for others, as the request may
    # be authorized by a session cookie (caches skip only those with `Authorization`)
    return await send_blob(request, registry(request).blobs, name, reference,
                           cache_control=f"private, {CACHE_CONTROL}")


def _unseen(request: web.Request, name: str) -> web.StreamResponse | None:
    """A confirmation page lists what it would delete (tags, digests): to those who may
    see them, as the repository page, not to every caller the policy lets delete."""
    return None if may(request, Access.PULL, name) else sessions(request).refused(request,
                                                                                   403)


@_ui(Access.DELETE)
async def confirm_delete_tag(request: web.Request) -> web.StreamResponse:
    name, tag = request.match_info["name"], request.match_info["reference"]
    if (refused := _unseen(request, name)) is not None:
        return refused
    view = await registry(request).browse.image(name, tag)
    at_digest, _ = await registry(request).browse.tags(name, digest=view.digest,
                                                        limit=NAMED + 1)
    others = [t.tag for t in at_digest if t.tag != tag][:NAMED]
    return render(request, "confirm_tag.html", title=f"Delete {name}:{tag}", name=name,
                  tag=tag, image=view, others=others)


@_ui(Access.DELETE, audit="delete", reference="tag-or-digest")
async def delete_tag(request: web.Request) -> web.StreamResponse:
    name, tag = request.match_info["name"], request.match_info["reference"]
    if await _form(request) is None:
        return _csrf_refused(request)
    await registry(request).manifests.delete(name, tag)
    return render(request, "done.html", title="Tag deleted", name=name,
                  message=f"The tag {name}:{tag} is deleted.", back=f"/ui/r/{name}")


@_ui(Access.DELETE)
async def confirm_delete_repository(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if (refused := _unseen(request, name)) is not None:
        return refused
    tags, total = await registry(request).browse.tags(name, limit=NAMED)
    return render(request, "confirm_repository.html", title=f"Delete {name}", name=name,
                  tags=tags, total=total)


@_ui(Access.DELETE, audit="repository.delete")
async def delete_repository(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if await _form(request) is None:
        return _csrf_refused(request)
    gone = await registry(request).repositories.delete(name)
    return render(request, "done.html", title="Repository deleted", name=name,
                  message=f"The repository {name} is deleted: {gone.tags} tag(s), "
                          f"{gone.manifests} manifest(s). Its storage is freed by the next "
                          "collection.", back="/ui/repositories")


def _page(query: Any, pages: int) -> int:
    """The `page` asked for, within 1..pages (1 for anything that is no number)."""
    try:
        return min(max(1, int(query.get("page", "1"))), pages)
    except ValueError:
        return 1


def _next(target: str | None) -> str:
    """Where to go after logging in: a path of the UI only (never another site), in
    printable ASCII (a control character would make the redirect's header unsendable)."""
    if (target and target.startswith("/ui/") and "//" not in target and "\\" not in target
            and target.isascii() and target.isprintable() and " " not in target):
        return target
    return "/ui/"


@requires(Access.PUBLIC)
async def login_form(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", title="Log in", error="",
                  next=_next(request.query.get("next")), username="")


@requires(Access.PUBLIC)
async def login(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    if form is None:
        return _csrf_refused(request)
    control = request.config_dict.get(ACCESS)
    target = _next(form.get("next"))
    user, password = form.get("username", ""), form.get("password", "")
    if control is None:
        return web.Response(status=303, headers={"Location": target})
    error, status, cred = "", 200, None
    try:
        who = await control.login(user, password, client_address(request))
        cred = control.credential(who.user or "")
        if cred is None:
            raise Unauthenticated("cannot open a session for this user")
    except RateLimited as exc:
        error, status = f"Too many failed logins; try again in {exc.retry_after} s.", 429
    except Unauthenticated:
        error, status = "Wrong user name or password.", 401
    if error:
        count_auth_failure(status)
        return render(request, "login.html", status=status, title="Log in", error=error,
                      next=target, username=user)
    assert who.user is not None
    assert cred is not None
    sessions(request).log_in(request, who.user, cred)
    return web.Response(status=303, headers={"Location": target})


@_ui(Access.ANYONE)
async def logout(request: web.Request) -> web.StreamResponse:
    if await _form(request) is None:
        return _csrf_refused(request)
    await sessions(request).log_out(request)
    return web.Response(status=303, headers={"Location": "/ui/"})


@_ui(Access.CATALOG)
async def operations(request: web.Request) -> web.StreamResponse:
    services = registry(request)
    # what the caller may see: the names their catalog shows (and of the mirror syncs and
    # jobs, what `core.mirrors.visible_runs` and `JobHistory.recent` keep for them)
    visible = catalog_filter(request)
    ops = await services.browse.operations(visible)
    if not ops.metadata_ok:  # the page says so; the history below is in the same store
        return render(request, "operations.html", title="Operations", ops=ops, syncs=[],
                      jobs=[], builds=[], replica=None)
    # the newest run of each mirror source among the last ones (`dockyard sync`)
    latest: dict[str, tuple[MirrorRun, dict[str, Any], dict[str, int]]] = {}
    for run, report in await visible_runs(services.mirrors, None, SYNC_RUNS, visible):
        if run.source not in latest:
            latest[run.source] = (run, report, report_counts(report))
    # the newest run of each recorded background job, and the last scheduled rebuilds
    recent = await services.job_runs.recent(JOB_RUNS, visible=visible)
    return render(request, "operations.html", title="Operations", ops=ops,
                  syncs=sorted(latest.values(), key=lambda r: r[0].source),
                  jobs=[runs[0] for _, runs in sorted(recent.items())],
                  builds=recent.get(BUILD_JOB, []),
                  # a standby's follower as it last reported (what its alerts read)
                  replica=await services.replica.standby())
