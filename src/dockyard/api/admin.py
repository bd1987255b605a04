"""Dockyard's admin extension of the API, under `/admin/v1/`.

- `DELETE /admin/v1/repositories/<name>` deletes a whole repository — tags, manifests,
  blob links and upload sessions — in one transaction; it leaves the catalog at once and
  the collector frees its bytes. Answers 202 with a JSON summary, 404 NAME_UNKNOWN when
  there is no such repository. Needs the `delete` permission on the repository.
- `GET /admin/v1/sync[?source=NAME][&n=N]`: the last runs of the mirror sources (all,
  or one), newest first, each with its report. Needs `registry:catalog:*`.
- `GET /admin/v1/sync/repositories/<name>`: where each mirrored tag of the repository
  came from and when (tags it has now; 404 NAME_UNKNOWN without the repository). Needs
  `pull` on the repository.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from dockyard.api.context import Match, registry
from dockyard.core.mirrors import RUNS_KEPT
from dockyard.oci.errors import PaginationInvalid


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json")


async def delete_repository(request: web.Request, match: Match) -> web.StreamResponse:
    deleted = await registry(request).repositories.delete(match.name)
    return _json({"name": deleted.name, "tags": deleted.tags, "manifests": deleted.manifests,
                  "blobs": deleted.blobs, "uploads": len(deleted.uploads)}, status=202)


async def sync_runs(request: web.Request, match: Match) -> web.StreamResponse:
    text = request.query.get("n", "")
    n = RUNS_KEPT
    if text:
        if not text.isdigit():
            raise PaginationInvalid(f"n must be a non-negative integer, not {text[:20]!r}")
        n = min(int(text), 1000)
    source = request.query.get("source") or None
    runs = await registry(request).mirrors.runs(source, n)
    return _json({"runs": [{"source": r.source, "started_at": r.started_at,
                            "finished_at": r.finished_at, "status": r.status,
                            "report": json.loads(r.report)} for r in runs]})


async def sync_provenance(request: web.Request, match: Match) -> web.StreamResponse:
    """Origins of the tags the repository has now (404 NAME_UNKNOWN: no repository)."""
    services = registry(request)
    present = set(await services.manifests.tags(match.name, None, None))
    found = await services.mirrors.origins(repository=match.name)
    return _json({"name": match.name, "tags": [
        {"tag": o.tag, "source": o.source, "upstream": o.upstream, "digest": o.digest,
         "mirrored_at": o.mirrored_at} for o in found if o.tag in present]})
