"""The web UI: server-rendered pages under /ui/, over `core` services, behind the same
authorization middleware as the API (each route declares its `Access`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from dockyard.config.settings import Settings


def install_ui(root: web.Application, settings: Settings) -> None:
    """`web.app.install_ui` when `ui.enabled`: the pages, their templates and Jinja2 are
    imported only by a server that shows them."""
    if settings.ui.enabled:
        from dockyard.web.app import install_ui as install

        install(root, settings)
