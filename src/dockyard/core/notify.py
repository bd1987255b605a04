"""Notifications: Distribution's push, pull, mount and delete events, queued and delivered.

**Producing.** The core services call `Notifier.emit` once their change has committed
(`ManifestService`, `BlobService`, `UploadService`, `RepositoryService`); the event is
built here, in Distribution's JSON form, from what the service knows (repository,
digest, media type, size, tag) and from the request that caused it: the `api` layer
binds a `RequestInfo` factory to the request's context (`bind_request`), read only when
an event is made. The event is written to the outbox (`metadata/notifications.py`), one
row per endpoint that does not ignore it, in one transaction, before the request is
answered: a client that got its 201 has its event queued durably; a crash between the
change's commit and the outbox write loses the answer too, and the client's retry
makes the event again (at least once). Pulls are written the same way (one row per
manifest or blob GET, only while an endpoint wants pulls); a failed pull write is
logged, never a failed pull.

Why not the change feed (`metadata/events.py`): it has no pulls, no blob pushes or
mounts, no sizes and no request or actor, and it is pruned after `feed.keep`, so an
endpoint down longer than that would lose events.

**Delivering.** `Deliverer.run` (the `notifications` job: one process of the cluster
holds its lease and runs it until stopped) runs one loop per endpoint: read the
endpoint's oldest rows, POST them in one envelope through a `Sender`, delete them once
the endpoint accepted. A failure is retried at once until `threshold` failures in a
row, then every `backoff`; the rows stay, so order holds and a restart loses nothing
(rows sent but not yet deleted when the process dies are sent again: at least once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from dockyard.config.settings import EndpointSettings
from dockyard.core.metrics import metrics
from dockyard.metadata.notifications import NotificationStore

log = logging.getLogger("dockyard.notify")

ENVELOPE_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_TYPE = "application/octet-stream"
"""The media type of a blob's event target, as Distribution sends it."""

POLL = 0.5
"""Seconds between two looks at an endpoint's empty queue."""

MAX_QUEUED = 100_000
"""Events kept waiting per endpoint (`notifications.max_queued`)."""
FORGET_AFTER = 3600.0
"""Events queued this long ago (s) for an endpoint no node delivers to are dropped."""
FORGET_EVERY = 600.0
"""How often (s) the delivering node looks for them."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What an event says about the request that caused it (Distribution's `request`
    and `actor`), and the public base URL its `target.url` starts with."""

    id: str = ""
    addr: str = ""
    host: str = ""
    method: str = ""
    useragent: str = ""
    actor: str = ""
    base_url: str = ""


_REQUEST: ContextVar[Callable[[], RequestInfo] | None] = ContextVar(
    "dockyard_notify_request", default=None)


def bind_request(info: Callable[[], RequestInfo]) -> None:
    """Tie the current request to events made in this context (called per request by
    `api`; `info` runs only when an event is made)."""
    _REQUEST.set(info)


def _request() -> RequestInfo:
    factory = _REQUEST.get()
    return factory() if factory is not None else RequestInfo()


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")


class Notifier:
    """Makes events and queues them for the endpoints that want them."""

    def __init__(self, store: NotificationStore | None,
                 endpoints: Sequence[EndpointSettings], source_addr: str = "",
                 max_queued: int = MAX_QUEUED) -> None:
        self.store = store
        #: events kept waiting per endpoint (handed to the deliverer)
        self.max_queued = max_queued
        self.endpoints = [e for e in endpoints if not e.disabled] if store is not None else []
        self.source = {"addr": source_addr, "instanceID": str(uuid.uuid4())}
        #: actions some endpoint takes (a pull costs nothing when none does)
        self._actions = {a for a in ("push", "pull", "mount", "delete")
                         if any(a not in e.ignore.actions for e in self.endpoints)}

    def wants(self, action: str) -> bool:
        return action in self._actions

    async def emit(self, action: str, repository: str, *, digest: str | None = None,
                   media_type: str | None = None, size: int | None = None,
                   tag: str | None = None, kind: str = "manifests",
                   from_repository: str | None = None) -> None:
        """Queue one event for every endpoint that does not ignore it (see the module
        docstring); `kind` (`manifests` or `blobs`) makes its `target.url`."""
        if action not in self._actions:
            return
        for_endpoints = [e.name for e in self.endpoints if not e.ignores(action, media_type)]
        if not for_endpoints:
            return
        assert self.store is not None
        now = time.time()
        request = _request()
        target: dict[str, object] = {"mediaType": media_type, "size": size,
                                     "digest": digest, "length": size,
                                     "repository": repository, "tag": tag,
                                     "fromRepository": from_repository}
        if digest is not None and request.base_url:
            target["url"] = f"{request.base_url}/v2/{repository}/{kind}/{digest}"
        event = {
            "id": str(uuid.uuid4()),
            "timestamp": _timestamp(now),
            "action": action,
            "target": {k: v for k, v in target.items() if v is not None},
            "request": {"id": request.id, "addr": request.addr, "host": request.host,
                        "method": request.method, "useragent": request.useragent},
            "actor": {"name": request.actor} if request.actor else {},
            "source": self.source,
        }
        text = json.dumps(event, separators=(",", ":"))
        try:
            await self.store.enqueue([(name, text) for name in for_endpoints], now)
        except Exception:
            if action != "pull":
                raise
            log.exception("could not queue a pull event of %s", repository)


class Sender(Protocol):
    """Sends one envelope to an endpoint; raises on any failure (its message is
    logged). HTTP lives above `core` (`remote/webhook.py`)."""

    async def send(self, endpoint: EndpointSettings, body: bytes) -> None: ...
    async def close(self) -> None: ...


def envelope(events: Sequence[str]) -> bytes:
    """Distribution's envelope around events already in JSON."""
    return b'{"events":[' + b",".join(e.encode() for e in events) + b"]}"


class Deliverer:
    """Delivers every endpoint's queue, in order, until cancelled."""

    def __init__(self, store: NotificationStore, endpoints: Sequence[EndpointSettings],
                 sender: Callable[[], Sender], *, poll: float = POLL,
                 max_queued: int = MAX_QUEUED) -> None:
        self.store = store
        self.endpoints = [e for e in endpoints if not e.disabled]
        self.sender = sender
        self.poll = poll
        self.max_queued = max_queued

    async def run(self) -> None:
        """Deliver until cancelled; the first loop that fails (the metadata store gone)
        ends all of them, so the job's next run starts one set, not one more."""
        sender = self.sender()
        loops = [asyncio.ensure_future(self._deliver(e, sender)) for e in self.endpoints]
        loops.append(asyncio.ensure_future(self._forget_others()))
        try:
            await asyncio.gather(*loops)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await sender.close()

    async def _forget_others(self) -> None:
        """Every `FORGET_EVERY`, drop events queued over `FORGET_AFTER` ago for endpoints
        this node does not deliver to (removed or disabled). Not younger ones: during a
        rolling configuration change, another node may have the endpoint already."""
        names = [e.name for e in self.endpoints]
        while True:
            try:
                gone = await self.store.forget_others(names, time.time() - FORGET_AFTER)
            except Exception as exc:  # a clean-up: the deliveries go on, it tries later
                log.warning("notifications: dropping old events of unknown endpoints "
                            "failed: %s", exc)
                gone = 0
            if gone:
                metrics().notify_dropped.labels("(not configured)").inc(gone)
                log.warning("notifications: dropped %d events queued over %.0f s ago for "
                            "endpoints not configured here (or disabled)", gone,
                            FORGET_AFTER)
            await asyncio.sleep(FORGET_EVERY)

    async def _deliver(self, endpoint: EndpointSettings, sender: Sender) -> None:
        m = metrics()
        name = endpoint.name
        failures = 0
        while True:
            rows = await self.store.pending(name, endpoint.maxevents)
            waiting = (len(rows) if len(rows) < endpoint.maxevents
                       else await self.store.count(name))
            if waiting > self.max_queued:
                dropped = await self.store.trim(name, self.max_queued)
                waiting -= dropped
                m.notify_dropped.labels(name).inc(dropped)
                log.warning("notifications to %s: dropped the %d oldest events unsent "
                            "(more than notifications.max_queued %d waiting)", name,
                            dropped, self.max_queued)
                rows = await self.store.pending(name, endpoint.maxevents)
            m.notify_pending.labels(name).set(waiting)
            if not rows:
                await asyncio.sleep(self.poll)
                continue
            started = time.monotonic()
            try:
                await sender.send(endpoint, envelope([r[2] for r in rows]))
            except Exception as exc:
                failures += 1
                m.notify_failed.labels(name).inc()
                backoff = failures >= endpoint.threshold
                log.warning("notifications to %s failed (%d in a row): %s; %s", name,
                            failures, exc or type(exc).__name__,
                            f"retrying in {endpoint.backoff.total_seconds():g}s"
                            if backoff else "retrying")
                await asyncio.sleep(endpoint.backoff.total_seconds() if backoff else 0)
                continue
            failures = 0
            m.notify_latency.labels(name).observe(time.monotonic() - started)
            m.notify_delivered.labels(name).inc(len(rows))
            m.notify_age.labels(name).observe(max(0.0, time.time() - rows[0][1]))
            await self.store.delivered(name, rows[-1][0])
