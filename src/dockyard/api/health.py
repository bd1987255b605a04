"""`GET /healthz`, `GET /readyz` and `GET /metrics`: what load balancers and Prometheus ask.

`/healthz` says the process serves (no store is touched); `/readyz` runs the readiness
checks of `core.health` (cached for a second or two) and answers 503 when one fails,
naming each check with its state and latency. Both are `Access.PUBLIC`. `/metrics` is
`Access.METRICS` (`api/access.py`): every worker's metrics summed, plus the registry's
state (counts, storage) read from the stores at most every `core.operations.STATE_TTL`,
and on a replica not promoted its follower's last report (lag, state, when).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dockyard import __version__
from dockyard.api.access import Access, requires
from dockyard.api.context import REGISTRY
from dockyard.core.health import Readiness
from dockyard.core.metrics import exposition
from dockyard.core.operations import State
from dockyard.core.registry import Registry

log = logging.getLogger(__name__)

#: the application whose registry a debug listener's handlers use
MAIN = web.AppKey("main_app", web.Application)

_NO_STORE = {"Cache-Control": "no-store"}


def _registry(request: web.Request) -> Registry:
    return request.app.get(MAIN, request.app)[REGISTRY]


async def healthz(request: web.Request) -> web.StreamResponse:
    """The process serves: a constant answer, no store touched."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json",
                        headers=_NO_STORE)


async def readyz(request: web.Request) -> web.StreamResponse:
    """Every readiness check, 200 when all pass, else 503."""
    result = await _registry(request).health.readiness()
    if not result.ok:
        log.debug("not ready: %s", [c.to_json() for c in result.checks if not c.ok])
    return web.Response(status=200 if result.ok else 503,
                        body=json.dumps(result.to_json()).encode(),
                        content_type="application/json", headers=_NO_STORE)


class _StateCollector(Collector):
    """The registry's state (one reading shared by the cluster) as gauges."""

    def __init__(self, state: State | None, readiness: Readiness,
                 replica: dict[str, Any] | None = None) -> None:
        self.state = state
        self.readiness = readiness
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("dockyard_build_info", "The running build",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("dockyard_ready", "1 when every readiness check passes "
                                "(as /readyz), seen by the worker scraped",
                                value=1 if self.readiness.ok else 0)
        checks = GaugeMetricFamily("dockyard_readiness_check",
                                   "1 when this readiness check passes", labels=["check"])
        latency = GaugeMetricFamily("dockyard_readiness_check_seconds",
                                    "How long this readiness check took", labels=["check"])
        for check in self.readiness.checks:
            checks.add_metric([check.name], 1 if check.ok else 0)
            latency.add_metric([check.name], check.seconds)
        yield checks
        yield latency
        yield from _replica_gauges(self.replica)
        s = self.state
        if s is None:
            return
        objects = GaugeMetricFamily("dockyard_objects", "Rows of the metadata store",
                                    labels=["kind"])
        for kind, n in (("repositories", s.repositories), ("tags", s.tags),
                        ("manifests", s.manifests), ("blobs", s.blobs),
                        ("upload_sessions", s.upload_sessions)):
            objects.add_metric([kind], n)
        yield objects
        yield GaugeMetricFamily("dockyard_blob_bytes", "Bytes of every stored blob",
                                value=s.blob_bytes)
        if s.total_bytes is not None:
            fs = GaugeMetricFamily("dockyard_storage_bytes",
                                   "The data filesystem: used, free (for uploads), total, "
                                   "and the guard's min_free", labels=["kind"])
            sizes: tuple[tuple[str, int | None], ...] = (
                ("used", s.used_bytes), ("free", s.free_bytes), ("total", s.total_bytes),
                ("min_free", s.min_free_bytes))
            for kind, size in sizes:
                if size is not None:
                    fs.add_metric([kind], size)
            yield fs
        last = s.last_collection
        if last is not None:
            yield GaugeMetricFamily("dockyard_gc_last_run_timestamp_seconds",
                                    "When the last recorded collection started",
                                    value=last.started_at)
            yield GaugeMetricFamily("dockyard_gc_last_run_failed_steps",
                                    "Failed steps of the last recorded collection",
                                    value=last.failed)


#: the states a replica's follower reports (`replica.follower`), each a series
REPLICA_STATES = ("following", "comparing", "error")


def _replica_gauges(status: dict[str, Any] | None) -> Iterator[Metric]:
    """A replica's lag as its follower last reported it (read from the metadata store,
    so every node of the replica says the same); nothing on a primary or once
    promoted. The time the follower was last seen running (its heartbeat; 0
    when never) lets an alert see a follower that stopped, whose last lag would
    otherwise read as current."""
    if status is None or status["promoted"]:
        return
    state = status.get("state")
    states = GaugeMetricFamily("dockyard_replica_state", "1 for the state the replica's "
                               "follower last reported", labels=["state"])
    for name in REPLICA_STATES:
        states.add_metric([name], 1 if state == name else 0)
    yield states
    yield GaugeMetricFamily("dockyard_replica_last_report_timestamp_seconds",
                            "When the replica's follower was last seen running (its "
                            "heartbeat; 0: never)",
                            value=float(status.get("alive_at") or 0.0))
    for key, name, text in (
            ("events_behind", "dockyard_replica_events_behind",
             "Events of the primary's feed not yet applied, at the last report"),
            ("seconds_behind", "dockyard_replica_seconds_behind",
             "Age of the last event applied, at the last report (0 when caught up)")):
        value = status.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield GaugeMetricFamily(name, text, value=float(value))


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    """The Prometheus text exposition of every worker, plus the registry's state."""
    registry = _registry(request)
    readiness = await registry.health.readiness()
    state: State | None = None
    replica: dict[str, Any] | None = None
    try:
        state = await registry.operations.state()
    except Exception as exc:  # the store is down: the process metrics still go out
        log.debug("metrics without the registry's state: %s", exc)
    try:
        replica = await registry.replica.standby()
    except Exception as exc:
        log.debug("metrics without the replica's status: %s", exc)
    body = exposition([_StateCollector(state, readiness, replica)])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            **_NO_STORE})


def add_routes(app: web.Application, *, health: bool, metrics_route: bool) -> None:
    """The operators' routes on `app` (the main app, or a debug listener's)."""
    public = requires(Access.PUBLIC)
    if health:
        app.router.add_get("/healthz", public(healthz), name="healthz")
        app.router.add_get("/readyz", public(readyz), name="readyz")
    if metrics_route:
        app.router.add_get("/metrics", requires(Access.METRICS)(metrics_handler),
                           name="metrics")
