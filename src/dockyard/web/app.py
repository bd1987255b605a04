"""The UI sub-application: its route table, static files, and how it joins the root app.

Every route declares its access (`requires(..., browser=True)`); the root app's
authorization middleware decides each request before its handler runs, as for /v2.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from yarl import URL

from dockyard.api.access import SESSIONS, Access, AiohttpHandler, requires
from dockyard.api.context import REGISTRY
from dockyard.api.errors import STATUS, STATUS_BY_CLASS
from dockyard.config.settings import Settings
from dockyard.oci.errors import RegistryError
from dockyard.web import views
from dockyard.web.context import TEMPLATES, UI_SESSIONS, render
from dockyard.web.render import environment
from dockyard.web.sessions import Sessions

#: repository names never hold a component starting with `-`, so `/-/` ends a name
_NAME = "/r/{name:.+?}"
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
                 ".txt": "text/plain"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("dockyard.web") / "static"
    out = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _STATIC_TYPES:
            out[item.name] = (item.read_bytes(), _STATIC_TYPES[suffix])
    return out


def _static_handler() -> AiohttpHandler:
    files = _static_files()

    @requires(Access.PUBLIC)
    async def static(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type,
                            headers={"Cache-Control": "public, max-age=3600",
                                     "X-Content-Type-Options": "nosniff"})

    return static


def refused(request: web.Request, status: int) -> web.StreamResponse:
    """The UI's answer when the policy refuses: log in first (a GET from someone not
    logged in), else a page saying why."""
    if status == 401 and request.method == "GET":
        target = request.rel_url.path_qs
        return web.Response(status=303, headers={
            "Location": str(URL("/ui/login").with_query(next=target))})
    if status == 401:
        status = 403  # a POST the caller may not make: no login dance for a form post
    messages = {403: "You are not allowed to do this.",
                404: "There is nothing here.",
                429: "Too many failed logins; wait a minute and try again."}
    return render(request, "error.html", status=status, title=str(status),
                  message=messages.get(status, "Refused."))


@web.middleware
async def _pages(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
    """Errors of the registry (an unknown repository or tag) as pages, with the API's
    status (404 for unknown names); the session cookie when it is new or changed."""
    try:
        response: web.StreamResponse = await handler(request)
    except RegistryError as exc:
        status = STATUS_BY_CLASS.get(type(exc).__name__, STATUS.get(exc.code, 400))
        response = render(request, "error.html", status=status, title=str(status),
                          message=str(exc))
    # a new or changed session's cookie (set here: cookies set while a response is
    # being prepared come too late for its headers)
    request.config_dict[UI_SESSIONS].set_cookie(request, response)
    return response


def ui_app() -> web.Application:
    """The /ui/ sub-application with its route table."""
    app = web.Application(middlewares=[_pages])
    r = app.router
    # each route's name is its route id in /metrics and the access log, as the API's
    r.add_get("/", views.home, name="ui-home")
    r.add_get("/search", views.search, name="ui-search")
    r.add_get("/repositories", views.repositories, name="ui-repositories")
    r.add_get("/login", views.login_form, name="ui-login")
    r.add_post("/login", views.login, name="ui-login")
    r.add_post("/logout", views.logout, name="ui-logout")
    r.add_get("/operations", views.operations, name="ui-operations")
    r.add_get("/static/{file}", _static_handler(), name="ui-static")
    # the most specific first: a repository's own page matches any name
    r.add_get(_NAME + "/-/tags/{reference}", views.image_by_tag, name="ui-image-tag")
    r.add_get(_NAME + "/-/manifests/{reference}", views.image_by_digest,
              name="ui-image-digest")
    r.add_get(_NAME + "/-/blobs/{reference}", views.layer, name="ui-layer")
    r.add_get(_NAME + "/-/blobs/{reference}/download", views.layer_download,
              name="ui-layer-download")
    r.add_get(_NAME + "/-/delete-tag/{reference}", views.confirm_delete_tag,
              name="ui-delete-tag")
    r.add_post(_NAME + "/-/delete-tag/{reference}", views.delete_tag, name="ui-delete-tag")
    r.add_get(_NAME + "/-/delete", views.confirm_delete_repository,
              name="ui-delete-repository")
    r.add_post(_NAME + "/-/delete", views.delete_repository, name="ui-delete-repository")
    r.add_get(_NAME, views.repository, name="ui-repository")
    return app


def install_ui(root: web.Application, settings: Settings) -> None:
    """Mount the UI under /ui/ and redirect / there (when `ui.enabled`)."""
    if not settings.ui.enabled:
        return
    sessions = Sessions(b"", settings.ui.session_lifetime.total_seconds(), refused)

    async def session_key(app: web.Application) -> None:
        # after the lifespan opened the registry (registered before this)
        sessions.key = await app[REGISTRY].secrets.key("ui.session-key")
        sessions.revocations = app[REGISTRY].sessions

    root.on_startup.append(session_key)
    root[SESSIONS] = sessions
    root[UI_SESSIONS] = sessions
    root[TEMPLATES] = environment()

    @requires(Access.PUBLIC)
    async def to_ui(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/ui/"})

    root.router.add_get("/", to_ui, name="ui-redirect")
    root.router.add_get("/ui", to_ui, name="ui-redirect-slash")
    root.add_subapp("/ui", ui_app())
