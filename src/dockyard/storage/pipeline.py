"""Hash and write an upload's buffers in order while the event loop fills the next ones.

Each upload that fills more than one buffer gets a hashing thread of its own: hashlib
releases the GIL, so the digest is computed back to back, buffer after buffer, without
a round trip through the event loop between two of them (that round trip, with one
buffer in flight, left the hash idle about a third of the time). Writes go through the
driver's `Writer` one after the other, in the same order. At most `depth` buffers are in
flight; a buffer returns to the pool once it is both hashed and written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dockyard.drivers.base import Writer
from dockyard.oci.digest import Hasher
from dockyard.storage.buffers import BufferPool

INLINE_HASH = 64 * 1024
"""Bodies up to this size are hashed on the event loop: faster than a thread hop."""


class HashWritePipeline:
    """Ordered hashing (a thread of its own) and writing (the driver) of one upload."""

    def __init__(self, hasher: Hasher, writer: Writer, pool: BufferPool, depth: int = 4
                 ) -> None:
        self._hasher = hasher
        self._writer = writer
        self._pool = pool
        self._depth = depth
        self._hashing: ThreadPoolExecutor | None = None
        self._last_write: asyncio.Future[None] | None = None
        self._inflight: deque[tuple[asyncio.Future[Any], memoryview | None]] = deque()
        self._aborted = False

    async def submit(self, data: memoryview, *, pooled: bool) -> None:
        """Hash and write `data` after everything submitted before it.

        Waits only while `depth` buffers are in flight. A `pooled` buffer goes back to
        the pool when done; `data` must not change until then.
        """
        if not self._inflight and data.nbytes <= INLINE_HASH:
            self._hasher.update(data)
            await self._writer.write(data)
            if pooled:
                self._pool.give(data)
            return
        while len(self._inflight) >= self._depth:
            await self._retire()
        if self._hashing is None:
            self._hashing = ThreadPoolExecutor(1, thread_name_prefix="dockyard-hash")
        hashed = asyncio.get_running_loop().run_in_executor(
            self._hashing, self._hasher.update, data)
        written = asyncio.ensure_future(self._write_after(self._last_write, data))
        self._last_write = written
        self._inflight.append((asyncio.gather(hashed, written), data if pooled else None))

    async def _write_after(self, previous: asyncio.Future[None] | None, data: memoryview
                           ) -> None:
        if previous is not None:
            await previous  # a failed or cancelled write fails every later one
        if self._aborted:  # the upload failed: no write after it (nor after `close`)
            return
        await self._writer.write(data)

    async def _retire(self) -> None:
        done, buffer = self._inflight.popleft()
        await done
        if buffer is not None:
            self._pool.give(buffer)

    async def drain(self) -> None:
        """Wait until everything submitted is hashed and written."""
        try:
            while self._inflight:
                await self._retire()
        finally:
            self._stop_hashing()

    async def abort(self) -> None:
        """Stop after a failure: drop queued hashing and writes, and wait for the write
        in progress, so that nothing reaches the writer once the caller closes it (a
        late S3 part PUT could land after a resumed session rewrote that part).

        The buffers still in flight are not returned to the pool: a hashing thread may
        still be reading one.
        """
        self._aborted = True
        pending = [done for done, _ in self._inflight]
        if self._last_write is not None:
            pending.append(self._last_write)  # each write waits for the one before
        self._inflight.clear()
        self._stop_hashing()
        if pending:
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))

    def _stop_hashing(self) -> None:
        if self._hashing is not None:
            self._hashing.shutdown(wait=False, cancel_futures=True)
            self._hashing = None
