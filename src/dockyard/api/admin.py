"""Dockyard's admin extension of the API.

`GET /admin/v1/cache/<name>`: the provenance of a pull-through cache repository's tags
(upstream, digest, when fetched and last checked), JSON; needs `pull`.

`DELETE /admin/v1/repositories/<name>` deletes a whole repository — tags, manifests,
blob links and upload sessions — in one transaction; it leaves the catalog at once and
the collector frees its bytes. Answers 202 with a JSON summary, 404 NAME_UNKNOWN when
there is no such repository. Needs the `delete` permission on the repository (also in
a pull-through cache: the way to empty it).
"""

from __future__ import annotations

import json

from aiohttp import web

from dockyard.api.context import Match, registry


async def delete_repository(request: web.Request, match: Match) -> web.StreamResponse:
    deleted = await registry(request).repositories.delete(match.name)
    body = {"name": deleted.name, "tags": deleted.tags, "manifests": deleted.manifests,
            "blobs": deleted.blobs, "uploads": len(deleted.uploads)}
    return web.Response(status=202, body=json.dumps(body).encode(),
                        content_type="application/json")


async def cache_provenance(request: web.Request, match: Match) -> web.StreamResponse:
    cached = await registry(request).cache.provenance(match.name)
    body = {"name": match.name, "tags": [
        {"tag": c.tag, "upstream": c.upstream, "digest": c.digest,
         "fetched_at": c.fetched_at, "checked_at": c.checked_at} for c in cached]}
    return web.Response(status=200, body=json.dumps(body).encode(),
                        content_type="application/json")
