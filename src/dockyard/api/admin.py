"""Dockyard's admin extension of the API, under `/admin/v1/`.

- `DELETE /admin/v1/repositories/<name>` deletes a whole repository — tags, manifests,
  blob links and upload sessions — in one transaction; it leaves the catalog at once and
  the collector frees its bytes. Answers 202 with a JSON summary, 404 NAME_UNKNOWN when
  there is no such repository. Needs the `delete` permission on the repository.
- `GET /admin/v1/events?after=N&limit=M&wait=S` reads the change feed: the events after
  cursor N in order, waiting up to S seconds (capped by `feed.max_wait`) when there are
  none yet; `next` is the cursor to ask with next, `head` the newest event id. 410
  CURSOR_EXPIRED when N is outside the events kept (compare in full), 400 CURSOR_INVALID
  for a cursor that is no event id.
- `GET /admin/v1/replica`: this registry as a replica (primary, promoted, cursor, lag).

These two need `registry:admin:*` (`auth.admin`).

`GET /admin/v1/tags/<name>[?n=N&last=TAG]`: the tags list with each tag's digest and
push time (`{"tag", "digest", "pushed_at"}`, by tag, paged with `Link` as the tags list
is); needs `pull`. A replica's full comparison reads it (`api/listing.py`).

`GET /admin/v1/cache/<name>[?n=N&last=TAG]`: the provenance of a pull-through cache
repository's tags (upstream, digest, when fetched and last checked), JSON, paged as the
tags list is; needs `pull`.

- `GET /admin/v1/sync[?source=NAME][&n=N]`: the last runs of the mirror sources (all,
  or one), newest first, each with its report (at most 1,000 tags named of each kind,
  `counts` counting them all). Needs `registry:catalog:*`, and like
  the catalog it shows only what the caller may pull: the runs of the sources whose
  destination repository that is.
- `GET /admin/v1/sync/repositories/<name>[?n=N&last=TAG]`: where each mirrored tag of
  the repository came from and when (tags it has now, paged as the tags list is; 404
  NAME_UNKNOWN without the repository). Needs `pull` on the repository.
- `GET /admin/v1/jobs[?job=NAME][&n=N]`: the last N runs (default 10, at most the 50
  kept) of each recorded background job (or one), newest first: holder, start, end,
  outcome (`ok`, `failed`, `lost`, `cancelled`) and summary. Needs
  `registry:catalog:*`, as the operations page that shows them; filtered like the
  catalog (`core.jobruns.JobHistory.recent`): a mirror source's job only for those who
  may pull its destination, other jobs' summaries ("") only for those who may pull
  everything.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from dockyard.api.access import catalog_filter
from dockyard.api.context import Match, registry
from dockyard.api.listing import page_of, page_query
from dockyard.core import jobruns
from dockyard.core.mirrors import RUNS_KEPT, visible_runs
from dockyard.oci.errors import CursorInvalid, PaginationInvalid

#: events answered at most per request
MAX_LIMIT = 1000
_INT64 = 2 ** 63 - 1


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store", **(headers or {})})


async def delete_repository(request: web.Request, match: Match) -> web.StreamResponse:
    deleted = await registry(request).repositories.delete(match.name)
    body = {"name": deleted.name, "tags": deleted.tags, "manifests": deleted.manifests,
            "blobs": deleted.blobs, "uploads": len(deleted.uploads)}
    return _json(body, 202)


def _cursor(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > _INT64:
        raise CursorInvalid(f"after must be an event id (a non-negative integer), not "
                            f"{text[:20]!r}", {"after": text[:20]})
    return int(text)


_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _number(query: Any, key: str, default: float, *, integer: bool) -> float:
    """A query number in plain ASCII digits (Python's `int`/`float` also took `1_0`,
    ` 1`, `1e3`, `inf` or other scripts' digits); PaginationInvalid otherwise."""
    text = query.get(key)
    if text is None:
        return default
    shape = _INTEGER if integer else _DECIMAL
    if not shape.fullmatch(text) or len(text) > 30:
        raise PaginationInvalid(f"{key} must be a non-negative number, not {text[:20]!r}")
    return int(text) if integer else float(text)


async def events(request: web.Request, _match: Match) -> web.StreamResponse:
    query = request.rel_url.query
    after = _cursor(query.get("after", "0"))
    limit = int(min(_number(query, "limit", 100, integer=True), MAX_LIMIT))
    wait = _number(query, "wait", 0.0, integer=False)
    # the worker's `api.connections.Connections` (not imported: it imports the routes)
    draining = getattr(request.protocol, "connections", None)
    # a wait ends when the worker drains (SIGTERM): the follower simply asks again
    page = await registry(request).feed.changes(
        after, limit, wait, stop=(lambda: draining.draining) if draining else None)
    doc = {"events": [{"id": e.id, "at": e.at, "kind": e.kind, "repository": e.repository,
                       "tag": e.tag, "digest": e.digest, "mediaType": e.media_type,
                       "actor": e.actor}
                      for e in page.events],
           "next": page.next, "head": page.head}
    return _json(doc)


async def replica_status(request: web.Request, _match: Match) -> web.StreamResponse:
    replica = registry(request).replica
    status = await replica.status()
    status["read_only"] = await replica.read_only() is not None
    return _json(status)


async def cache_provenance(request: web.Request, match: Match) -> web.StreamResponse:
    """A page of a cache's tags with their provenance, paged as the tags list is."""
    n, last = page_query(request)
    cached, headers = page_of(
        await registry(request).cache.provenance(match.name, after=last, limit=n + 1), n,
        f"/admin/v1/cache/{match.name}", lambda c: c.tag)
    return _json({"name": match.name, "tags": [
        {"tag": c.tag, "upstream": c.upstream, "digest": c.digest,
         "fetched_at": c.fetched_at, "checked_at": c.checked_at} for c in cached]},
        headers=headers)


async def sync_runs(request: web.Request, match: Match) -> web.StreamResponse:
    n = int(min(_number(request.rel_url.query, "n", RUNS_KEPT, integer=True), 1000))
    source = request.query.get("source") or None
    runs = await visible_runs(registry(request).mirrors, source, n, catalog_filter(request))
    return _json({"runs": [{"source": r.source, "started_at": r.started_at,
                            "finished_at": r.finished_at, "status": r.status,
                            "report": report} for r, report in runs]})


#: job runs answered per job by default
JOB_RUNS = 10


async def job_runs(request: web.Request, _match: Match) -> web.StreamResponse:
    n = int(min(_number(request.rel_url.query, "n", JOB_RUNS, integer=True),
                jobruns.RUNS_KEPT))
    job = request.query.get("job") or None
    recent = await registry(request).job_runs.recent(n, job, catalog_filter(request))
    return _json({"jobs": [
        {"name": name, "runs": [
            {"holder": r.holder, "started_at": r.started_at, "finished_at": r.finished_at,
             "duration": round(r.duration, 3), "outcome": r.outcome, "summary": r.summary}
            for r in runs]}
        for name, runs in sorted(recent.items())]})


async def sync_provenance(request: web.Request, match: Match) -> web.StreamResponse:
    """Origins of the tags the repository has now (404 NAME_UNKNOWN: no repository),
    paged as the tags list is."""
    services = registry(request)
    n, last = page_query(request)
    await services.manifests.tags(match.name, 1, None)  # NAME_UNKNOWN
    found, headers = page_of(
        await services.mirrors.origins(repository=match.name, current=True, after=last,
                                       limit=n + 1), n,
        f"/admin/v1/sync/repositories/{match.name}", lambda o: o.tag)
    return _json({"name": match.name, "tags": [
        {"tag": o.tag, "source": o.source, "upstream": o.upstream, "digest": o.digest,
         "mirrored_at": o.mirrored_at} for o in found]}, headers=headers)
