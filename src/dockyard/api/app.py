"""The application factory: opens the backends named by settings and wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from dockyard.api.access import install_access
from dockyard.api.bodies import BodyStalled
from dockyard.api.connections import SERVER, Connections
from dockyard.api.context import REGISTRY, SETTINGS
from dockyard.api.errors import error_response
from dockyard.api.routes import dispatch
from dockyard.backends import open_registry
from dockyard.config.settings import Settings
from dockyard.core.registry import Registry
from dockyard.gc.scheduler import gc_loop

log = logging.getLogger(__name__)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
#: this worker's connections (server.py serves them and drains them on SIGTERM)
CONNECTIONS = web.AppKey("connections", Connections)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unexpected failures still answer in the OCI error format, and are logged."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BodyStalled as exc:
        log.info("%s %s: %s; closing the connection", request.method, request.rel_url.path,
                 exc)
        # answer, then close at once: aiohttp would otherwise linger up to 10 s more
        # waiting for the rest of a body that is not coming
        response = error_response("UNKNOWN", str(exc), status=408)
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.rel_url)
        return error_response("UNKNOWN", "internal server error", status=500,
                              head=request.method == "HEAD")


async def _api_version(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(API_VERSION)
    response.headers["Server"] = SERVER  # aiohttp's default names its and Python's version


def create_app(settings: Settings, *, run_migrations: bool = True) -> web.Application:
    """The aiohttp application serving /v2 for `settings`."""
    connections = Connections(settings.http)
    app = web.Application(middlewares=[connections.middleware, _errors],
                          client_max_size=settings.limits.manifest_max_size)
    app[SETTINGS] = settings
    app[CONNECTIONS] = connections

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        registry = await open_registry(settings, run_migrations=run_migrations)
        app[REGISTRY] = registry
        tasks = [asyncio.create_task(_purge_loop(registry, settings)),
                 asyncio.create_task(_pulls_loop(registry, settings))]
        if settings.gc.enabled:
            tasks.append(asyncio.create_task(gc_loop(registry, settings)))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.blobstore.driver.close()
        await registry.store.close()

    app.cleanup_ctx.append(lifespan)
    app.on_response_prepare.append(_api_version)
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    app.router.add_route("*", "/admin/v1/{tail:.*}", dispatch)
    install_access(app, settings)
    return app


async def _pulls_loop(registry: Registry, settings: Settings) -> None:
    """Write the last-pull times this process gathered, in batches; once more at exit."""
    try:
        while True:
            await asyncio.sleep(settings.retention.pull_flush_interval.total_seconds())
            try:
                await registry.pulls.flush()
            except Exception:
                log.exception("recording pull times failed")
    finally:
        with contextlib.suppress(Exception):
            await registry.pulls.flush()


async def _purge_loop(registry: Registry, settings: Settings) -> None:
    """Expire idle upload sessions and their bytes, forever."""
    uploads = settings.storage.uploads
    while True:
        await asyncio.sleep(uploads.purge_interval.total_seconds())
        try:
            await registry.uploads.purge(uploads.expiry.total_seconds())
        except Exception:
            log.exception("upload purge failed")
