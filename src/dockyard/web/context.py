"""The UI sub-application's typed state and per-request helpers."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from dockyard.api.access import ACCESS, Access, identity, may
from dockyard.api.context import REGISTRY
from dockyard.core.registry import Registry
from dockyard.web.sessions import Sessions

UI_SESSIONS = web.AppKey("ui_sessions", Sessions)
TEMPLATES = web.AppKey("ui_templates", jinja2.Environment)


def registry(request: web.Request) -> Registry:
    return request.config_dict[REGISTRY]


def sessions(request: web.Request) -> Sessions:
    return request.config_dict[UI_SESSIONS]


def render(request: web.Request, template: str, status: int = 200, **context: Any
           ) -> web.Response:
    """The page `template` with `context` and what every page shows (who is logged in,
    the CSRF token of its forms)."""
    env = request.config_dict[TEMPLATES]
    who = identity(request)
    page = env.get_template(template).render(
        user=who.user, auth=request.config_dict.get(ACCESS) is not None,
        operator=may(request, Access.CATALOG, ""),
        csrf=sessions(request).csrf(request), path=request.path, **context)
    return web.Response(body=_utf8(page), status=status,
                        content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": CSP,
                                 "Referrer-Policy": "same-origin",
                                 "X-Frame-Options": "DENY"})


def _utf8(page: str) -> bytes:
    """The page in UTF-8. Text a push stored may hold lone surrogates (JSON allows the
    escape "\ud800"; tar names decode with surrogateescape): each is shown as U+FFFD,
    not a 500 (a well-formed pair written as two escapes becomes its character)."""
    try:
        return page.encode("utf-8")
    except UnicodeEncodeError:
        whole = page.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return whole.encode("utf-8")


#: only our own styles and script; no inline script, no framing
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
