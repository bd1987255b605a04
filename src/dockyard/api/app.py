"""The application factory: opens the backends named by settings and wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from dockyard.api.access import ACCESS, SCRAPERS, install_access
from dockyard.api.bodies import BodyStalled
from dockyard.api.connections import SERVER, Connections
from dockyard.api.context import REGISTRY, SETTINGS
from dockyard.api.errors import error_response
from dockyard.api.health import MAIN, add_routes
from dockyard.api.proxy import PROXIES
from dockyard.api.routes import ADMIN_RESOURCE, authorization, dispatch
from dockyard.api.sendfile import ClientGone
from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import Settings
from dockyard.core.jobs import JobRunner
from dockyard.core.metrics import metrics
from dockyard.core.registry import Registry
from dockyard.jobs import server_jobs

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
#: this worker's connections (server.py serves them and drains them on SIGTERM)
CONNECTIONS = web.AppKey("connections", Connections)


def _errors(connections: Connections) -> Middleware:
    """Unexpected failures still answer in the OCI error format, and are logged; while
    the worker drains, each response closes its connection."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except BodyStalled as exc:
            return await _stalled(request, exc)
        except ConnectionResetError as exc:
            transport = request.transport
            if isinstance(exc, ClientGone) or transport is None or transport.is_closing():
                return _client_gone(request, exc)
            # the client is still there: a connection of the registry's own was reset
            return _failed(request)
        except Exception:
            return _failed(request)
        if connections.draining:
            response.force_close()
        return response

    return errors


def _failed(request: web.Request) -> web.StreamResponse:
    """A fault of the registry's own: logged, and answered 500 in the OCI format; when
    part of the answer is out already, the connection is cut instead (a second
    response would be read as the rest of the first body)."""
    log.exception("%s %s failed", request.method, request.rel_url)
    if request.writer.output_size > 0:
        if request.transport is not None:
            request.transport.abort()
        response = web.Response(status=500)  # recorded, never sent
        response.force_close()
        return response
    return error_response("UNKNOWN", "internal server error", status=500,
                          head=request.method == "HEAD")


#: the status recorded (metrics, access log) for a request whose client closed the
#: connection before its answer: nginx's "client closed request", never sent
CLIENT_GONE = 499


def _client_gone(request: web.Request, exc: ConnectionResetError) -> web.StreamResponse:
    """The client closed the connection mid-request (a push interrupted, a download
    stopped): one line at INFO, and a 499 in the metrics, where aiohttp logged a
    traceback and counted a 500, which the error-rate alert took for a fault."""
    log.info("%s %s: the client closed the connection (%s)", request.method,
             request.rel_url.path, exc)
    response = web.Response(status=CLIENT_GONE)
    response.force_close()
    return response


async def _stalled(request: web.Request, exc: BodyStalled) -> web.StreamResponse:
    """A request body stopped coming: answer 408, then close the connection at once
    (aiohttp would otherwise linger up to 10 s more for a body that is not coming)."""
    log.info("%s %s: %s; closing the connection", request.method, request.rel_url.path, exc)
    response = error_response("UNKNOWN", str(exc), status=408)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


async def _api_version(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.update(API_VERSION)
    headers["Server"] = SERVER  # aiohttp's default names its and Python's version
    rid = getattr(request.protocol, "request_id", "")  # set by `Connection`
    if rid:
        headers["X-Request-Id"] = rid


def create_app(settings: Settings, *, run_migrations: bool = True) -> web.Application:
    """The aiohttp application serving /v2 for `settings`."""
    connections = Connections(settings.http, log_context=settings.log.format == "json")
    app = web.Application(middlewares=[_errors(connections), authorization],
                          client_max_size=settings.limits.manifest_max_size)
    app[SETTINGS] = settings
    app[CONNECTIONS] = connections

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        registry = await open_registry(settings, run_migrations=run_migrations)
        app[REGISTRY] = registry
        access = app.get(ACCESS)
        if access is not None:
            # every worker counts failed logins in the one store they share
            access.limiter.share(registry.login_failures)
        if settings.replica.primary is not None:
            # read-only from the first request, before the follower first runs
            await registry.replica.follow(settings.replica.primary)
        jobs = JobRunner(registry.leases, server_jobs(registry, settings),
                         registry.job_runs)
        jobs.start()
        housekeeping = [asyncio.create_task(_process_loop(registry, settings)),
                        asyncio.create_task(_flush_metrics())]
        yield
        await jobs.stop()
        for task in housekeeping:
            task.cancel()
        for task in housekeeping:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_registry(registry)

    app.cleanup_ctx.append(lifespan)
    app.on_response_prepare.append(_api_version)
    app.router.add_route("*", "/v2", dispatch)
    # [\s\S]: a path with an encoded newline (%0A) is ours too, answered in OCI JSON
    app.router.add_route("*", r"/v2/{tail:[\s\S]*}", dispatch)
    app.router.add_route("*", r"/admin/v1/{tail:[\s\S]*}", dispatch, name=ADMIN_RESOURCE)
    debug = settings.http.debug.addr is not None
    add_routes(app, health=not debug, metrics_route=settings.metrics.enabled and not debug)
    install_access(app, settings)
    return app


def create_debug_app(main: web.Application) -> web.Application:
    """The `http.debug.addr` listener's application: `/metrics`, `/healthz` and
    `/readyz` over the main application's registry, under the same access rules."""
    settings = main[SETTINGS]
    debug = web.Application(middlewares=[authorization])
    debug[MAIN] = main
    debug[SETTINGS] = settings
    debug[PROXIES] = main[PROXIES]
    debug[SCRAPERS] = main[SCRAPERS]
    if ACCESS in main:
        debug[ACCESS] = main[ACCESS]
    add_routes(debug, health=True, metrics_route=settings.metrics.enabled)
    debug.on_response_prepare.append(_api_version)
    return debug


async def _flush_metrics() -> None:
    """Move the requests' figures into the shared metric files once a second."""
    stats = metrics().requests_stats
    while True:
        await asyncio.sleep(1.0)
        stats.flush()

async def _process_loop(registry: Registry, settings: Settings) -> None:
    """What each process keeps for itself, not a job for one process of the cluster:
    write the last-pull times it gathered (in batches; once more at exit) and forget
    the hash state of upload sessions its clients abandoned."""
    expiry = settings.storage.uploads.expiry.total_seconds()
    try:
        while True:
            await asyncio.sleep(settings.retention.pull_flush_interval.total_seconds())
            registry.uploads.forget_idle(expiry)
            try:
                await registry.pulls.flush()
            except Exception:
                log.exception("recording pull times failed")
    finally:
        with contextlib.suppress(Exception):
            await registry.pulls.flush()
