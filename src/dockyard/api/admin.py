"""Dockyard's admin extension of the API: `DELETE /admin/v1/repositories/<name>`.

Deletes a whole repository — tags, manifests, blob links and upload sessions — in one
transaction; it leaves the catalog at once and the collector frees its bytes. Answers
202 with a JSON summary, 404 NAME_UNKNOWN when there is no such repository. Needs the
`delete` permission on the repository.
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
