"""A TCP proxy on loopback that can hold a response after N bytes, for tests that need
"the upstream died mid-blob" at a known point, without relying on timing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.servers import free_port


class HoldingProxy:
    """Forwards 127.0.0.1:`port` to `target_port`. After `hold_after` bytes went from the
    upstream to a client, it stops forwarding (`held` is set) until `release()`, or
    `release(cut=True)`, which closes that connection instead of forwarding the rest."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.hold_after: int | None = None
        self.forwarded = 0
        self.held = threading.Event()
        self._release = threading.Event()
        self._cut = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> HoldingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def release(self, *, cut: bool = False) -> None:
        self._cut = cut
        self.hold_after = None
        self._release.set()

    def stop(self) -> None:
        self.release()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, count=False),
                             self._pipe(up_reader, writer, count=True),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    *, count: bool) -> None:
        try:
            while data := await reader.read(64 * 1024):
                if count and self.hold_after is not None and \
                        self.forwarded + len(data) > self.hold_after:
                    self.held.set()
                    await asyncio.to_thread(self._release.wait)
                    if self._cut:
                        return  # the finally closes the client's side
                writer.write(data)
                await writer.drain()
                if count:
                    self.forwarded += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


@contextlib.contextmanager
def holding_proxy(target_port: int) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
