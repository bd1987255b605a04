"""The application factory: builds backends by name from settings and wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from dockyard.api.context import REGISTRY, SETTINGS
from dockyard.api.errors import error_response
from dockyard.api.routes import dispatch
from dockyard.config.settings import Settings
from dockyard.core.registry import Registry
from dockyard.drivers.base import Driver
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.store import MetadataStore
from dockyard.storage.blobstore import BlobStore

log = logging.getLogger(__name__)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def build_driver(settings: Settings) -> Driver:
    """The storage driver named by `storage.driver`; unknown names stop the start."""
    if settings.storage.driver == "filesystem":
        return FilesystemDriver(settings.storage.filesystem.rootdirectory)
    raise ValueError(f"unknown storage driver {settings.storage.driver!r}")


async def open_registry(settings: Settings, *, run_migrations: bool = True) -> Registry:
    """Open the metadata store and blob store named by `settings`."""
    engines = open_engines(settings.database_url, pool_size=settings.database.pool_size)
    if run_migrations:
        await migrate(engines)
    blobstore = BlobStore(build_driver(settings),
                          buffer_size=settings.storage.uploads.chunk_buffer)
    return Registry.build(
        MetadataStore(engines), blobstore,
        delete_enabled=settings.storage.delete.enabled,
        manifest_max_size=settings.limits.manifest_max_size,
    )


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unexpected failures still answer in the OCI error format, and are logged."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.rel_url)
        return error_response("UNKNOWN", "internal server error", status=500,
                              head=request.method == "HEAD")


async def _api_version(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(API_VERSION)


def create_app(settings: Settings, *, run_migrations: bool = True) -> web.Application:
    """The aiohttp application serving /v2 for `settings`."""
    app = web.Application(middlewares=[_errors], client_max_size=settings.limits.manifest_max_size)
    app[SETTINGS] = settings

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        registry = await open_registry(settings, run_migrations=run_migrations)
        app[REGISTRY] = registry
        purger = asyncio.create_task(_purge_loop(registry, settings))
        yield
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
        await registry.blobstore.driver.close()
        await registry.store.close()

    app.cleanup_ctx.append(lifespan)
    app.on_response_prepare.append(_api_version)
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
    return app


async def _purge_loop(registry: Registry, settings: Settings) -> None:
    """Expire idle upload sessions and their bytes, forever."""
    uploads = settings.storage.uploads
    while True:
        await asyncio.sleep(uploads.purge_interval.total_seconds())
        try:
            await registry.uploads.purge(uploads.expiry.total_seconds())
        except Exception:
            log.exception("upload purge failed")
