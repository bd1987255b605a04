"""Typed application state and per-request helpers shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dockyard.config.settings import Settings
from dockyard.core.registry import Registry

REGISTRY = web.AppKey("registry", Registry)
SETTINGS = web.AppKey("settings", Settings)


@dataclass(frozen=True, slots=True)
class Match:
    """What the route table extracted from the path."""

    name: str
    reference: str = ""


def registry(request: web.Request) -> Registry:
    return request.app[REGISTRY]


def has_body(request: web.Request) -> bool:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return True
    return (request.content_length or 0) > 0


def upload_headers(name: str, session_id: str, offset: int) -> dict[str, str]:
    """Location, Range and Docker-Upload-UUID of an upload session at `offset`."""
    return {
        "Location": f"/v2/{name}/blobs/uploads/{session_id}",
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": session_id,
    }
