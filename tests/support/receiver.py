"""A notification endpoint for tests: a real aiohttp server on 127.0.0.1 in a thread,
recording every envelope it is sent (and answering with a status the test sets)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

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
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/events", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def main() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, runner = self._loop, self._runner
        assert runner is not None
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The events once at least `count` have arrived (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.events()) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.events())} of {count} events arrived: {self.events()}")
            time.sleep(0.1)
        return self.events()
