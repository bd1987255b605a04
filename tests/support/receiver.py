"""A notification endpoint for tests: a real aiohttp server on 127.0.0.1 in a thread,
recording every envelope it is sent (and answering with a status the test sets)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.apphost import AppHost
from tests.support.servers import free_port


@dataclass
class Delivery:
    """One POST the receiver got: when, its headers, its envelope, what it answered
    (0 while it has not answered yet)."""

    at: float
    headers: dict[str, str]
    envelope: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """Start with `start()`, stop with `stop()` (the port stays the receiver's: `start`
    again listens on it anew); `status` is what each POST is answered with."""

    port: int = field(default_factory=free_port)
    status: int = 200
    #: seconds each POST is held before its answer (set to 0 to let held ones go)
    delay: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._host = AppHost(self.port, "receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted envelope, in arrival order."""
        return [e for d in self.deliveries if 0 < d.status < 300
                for e in d.envelope["events"]]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.status
        delivery = Delivery(time.monotonic(), dict(request.headers), json.loads(body), 0)
        self.deliveries.append(delivery)
        held = time.monotonic()
        while time.monotonic() - held < self.delay:  # noqa: ASYNC110 - set by the test
            await asyncio.sleep(0.05)
        delivery.status = status
        return web.Response(status=status)

    def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._host.start(app, timeout=10)

    def stop(self) -> None:
        self._host.stop(timeout=10)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The events once at least `count` have arrived (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.events()) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.events())} of {count} events arrived: {self.events()}")
            time.sleep(0.1)
        return self.events()
