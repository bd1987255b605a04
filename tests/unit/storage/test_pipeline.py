"""HashWritePipeline: ordered hashing in its own thread and ordered writes, bounded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest

from dockyard.drivers.base import Writer
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.storage.buffers import BufferPool
from dockyard.storage.pipeline import INLINE_HASH, HashWritePipeline

SIZE = 128 * 1024  # above INLINE_HASH: the threaded path


class SlowWriter(Writer):
    """Keeps what it is given; each write takes a while in a thread, like a disk."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.data = bytearray()
        self.active = 0
        self.most_active = 0
        self.writes = 0
        self.fail_at = fail_at
        self.closed = False

    @property
    def size(self) -> int:
        return len(self.data)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes == self.fail_at:
            raise OSError(28, "No space left on device")
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        copy = bytes(data)
        await asyncio.to_thread(threading.Event().wait, 0.002)
        self.data += copy
        self.active -= 1

    async def close(self, *, sync: bool = False) -> None:
        self.closed = True


def fill(pool: BufferPool, payload: bytes) -> memoryview:
    buf = pool.take()
    buf[:len(payload)] = payload
    return buf


async def test_hashes_and_writes_in_order_with_bounded_buffers() -> None:
    pool = BufferPool(SIZE)
    hasher, writer = hashlib.sha256(), SlowWriter()
    pipeline = HashWritePipeline(hasher, writer, pool, depth=3)
    parts = [os.urandom(SIZE) for _ in range(40)]
    taken = []
    for part in parts:
        buf = fill(pool, part)
        taken.append(buf)
        await pipeline.submit(buf, pooled=True)
        assert len(pipeline._inflight) <= 3
    await pipeline.drain()
    whole = b"".join(parts)
    assert bytes(writer.data) == whole
    assert hasher.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert writer.most_active == 1  # writes never overlap: the writer appends in order
    # every buffer came back: the pool reuses them instead of mapping new ones
    assert len(pool._free) == min(pool.keep, len({id(b.obj) for b in taken}))


async def test_a_small_last_piece_waits_for_the_buffers_before_it() -> None:
    pool = BufferPool(SIZE)
    hasher, writer = hashlib.sha256(), SlowWriter()
    pipeline = HashWritePipeline(hasher, writer, pool)
    big, small = os.urandom(SIZE), os.urandom(INLINE_HASH // 2)
    await pipeline.submit(fill(pool, big), pooled=True)
    await pipeline.submit(memoryview(small), pooled=False)  # in flight: must not jump ahead
    await pipeline.drain()
    assert bytes(writer.data) == big + small
    assert hasher.hexdigest() == hashlib.sha256(big + small).hexdigest()


async def test_a_failed_write_fails_the_rest_and_abort_waits() -> None:
    pool = BufferPool(SIZE)
    writer = SlowWriter(fail_at=3)
    pipeline = HashWritePipeline(hashlib.sha256(), writer, pool, depth=2)

    async def upload() -> None:
        for _ in range(10):
            await pipeline.submit(fill(pool, os.urandom(SIZE)), pooled=True)
        await pipeline.drain()

    with pytest.raises(OSError, match="No space"):
        await upload()
    await pipeline.abort()
    assert len(writer.data) == 2 * SIZE  # what came before the failure, nothing after
    assert writer.active == 0


async def test_close_waits_for_a_cancelled_write_still_queued_for_a_thread(
        tmp_path: Path) -> None:
    """A request cancelled while its write waits for a thread: `close` must wait for
    the write, or the write would land on a closed descriptor, or on whatever file
    reused its number."""
    driver = FilesystemDriver(tmp_path)
    writer = await driver.writer("uploads/u")
    loop = asyncio.get_running_loop()
    release = threading.Event()
    # occupy every thread of the default executor, so the write below stays queued
    blockers = [loop.run_in_executor(None, release.wait) for _ in range(64)]
    payload = os.urandom(1 << 20)
    task = asyncio.create_task(writer.write(memoryview(payload)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    threading.Timer(0.2, release.set).start()
    await writer.close()
    victim = tmp_path / "victim"
    fd = os.open(victim, os.O_CREAT | os.O_WRONLY)  # likely the number the writer had
    try:
        await asyncio.gather(*blockers)
        await asyncio.sleep(0.05)
    finally:
        os.close(fd)
    assert victim.stat().st_size == 0
    assert (tmp_path / "uploads" / "u").read_bytes() == payload


async def test_after_abort_nothing_more_reaches_the_writer() -> None:
    # abort used to return as soon as the queued hashing was cancelled, while the
    # chain of writes went on: writes landed after the caller closed the writer (on
    # S3, a part PUT after a resumed session had rewritten that part)
    pool = BufferPool(SIZE)
    hasher, writer = hashlib.sha256(), SlowWriter()
    pipeline = HashWritePipeline(hasher, writer, pool, depth=4)
    for n in range(4):
        await pipeline.submit(fill(pool, bytes([n]) * SIZE), pooled=True)
    await pipeline.abort()
    writer.closed = True
    at_abort = writer.writes
    assert writer.active == 0, "a write was still running when abort returned"
    await asyncio.sleep(0.1)
    assert writer.writes == at_abort, "writes went on after abort"
    assert len(writer.data) == SIZE * at_abort
