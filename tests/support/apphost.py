"""An aiohttp application served on 127.0.0.1 from a thread with its own event loop,
for the test servers written here (a notification receiver, a hostile registry): a real
socket the code under test connects to, while the test itself stays synchronous."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class AppHost:
    """Serves one application at a time on `port`; `start` again after `stop` listens
    on the same port anew."""

    def __init__(self, port: int, what: str) -> None:
        self.port = port
        self.what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self, app: web.Application, timeout: float = 30.0) -> None:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def main() -> None:
            loop.run_until_complete(serve())
            loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert ready.wait(timeout), f"the {self.what} did not start"

    def stop(self, timeout: float = 30.0) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        self._loop = self._thread = self._runner = None
