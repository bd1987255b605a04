"""Blob bytes: streamed uploads with a running hash, verified publication, reads.

The store never buffers a whole blob: request bodies are copied into page-aligned
buffers of half a MiB (`storage.uploads.chunk_buffer`, reused from a pool), and full
buffers are hashed (in a thread of the upload's own) and written (through the driver)
in order while the next ones fill (`pipeline.py`), so hashing and disk writes overlap
with the network. Aligned buffers let the filesystem driver write them with O_DIRECT.
A small body (a config, a manifest-sized layer) is hashed inline: a thread hop costs
more.

With a `DiskGuard`, new sessions and bodies are refused while the disk is short of free
space; a write that runs out of space anyway (ENOSPC, quota) raises `StorageFull`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.drivers.base import Driver, DriverError, Staged, Writer
from dockyard.oci.digest import Digest, Hasher, new_hasher
from dockyard.oci.errors import StorageFull
from dockyard.settle import to_the_end
from dockyard.storage import layout
from dockyard.storage.buffers import BufferPool
from dockyard.storage.guard import DiskGuard, disk_full
from dockyard.storage.pipeline import HashWritePipeline


@dataclass
class RunningHash:
    """A session's hash state in this process, valid for the first `offset` bytes."""

    hasher: Hasher
    offset: int


class AdoptionRefused(ValueError):
    """A blob cannot be adopted without a copy, and copying was not allowed."""


class DigestMismatch(ValueError):
    """Bytes being adopted do not hash to their digest."""


class BlobStore:
    """Content-addressed blobs and upload-session bytes over one driver."""

    def __init__(self, driver: Driver, *, buffer_size: int = 512 * 1024,
                 guard: DiskGuard | None = None) -> None:
        self.driver = driver
        self.buffers = BufferPool(buffer_size)
        self.guard = guard

    @property
    def stores_empty_sessions(self) -> bool:
        """Whether a session is stored from its start (not only once written to)."""
        return self.driver.stores_empty_sessions

    async def ensure_space(self, incoming: int = 0) -> None:
        """`StorageFull` when the disk is too full for `incoming` more upload bytes
        (`DiskGuard`)."""
        if self.guard is not None:
            await self.guard.check(incoming)

    # --- reads -------------------------------------------------------------------

    async def size(self, digest: Digest) -> int | None:
        return await self.driver.stat(layout.blob_key(digest))

    def local_path(self, digest: Digest) -> Path | None:
        return self.driver.local_path(layout.blob_key(digest))

    async def url_for(self, digest: Digest, expires: int) -> str | None:
        """A URL serving the blob for `expires` seconds, where the driver signs one."""
        return await self.driver.url_for(layout.blob_key(digest), expires)

    def read(self, digest: Digest, offset: int = 0, length: int | None = None
             ) -> AsyncIterator[bytes]:
        return self.driver.read(layout.blob_key(digest), offset, length)

    # --- uploads -----------------------------------------------------------------

    async def create_upload(self, session_id: str) -> None:
        try:
            await self.driver.create(layout.upload_key(session_id))
        except OSError as exc:
            if disk_full(exc):
                raise _full(exc) from exc
            raise

    async def upload_size(self, session_id: str) -> int | None:
        return await self.driver.stat(layout.upload_key(session_id))

    async def rehash(self, session_id: str, offset: int, algorithm: str,
                     state: RunningHash | None = None) -> RunningHash:
        """Bring a hash state up to `offset` from the stored bytes.

        From scratch, or — when this process hashed the session up to `state.offset`
        before another process appended to it — from there: bytes below a session's
        recorded offset never change, so a worker that alternates with another one
        hashes each byte once, not the whole upload again at every chunk.
        """
        if state is None or state.offset < 0 or state.offset > offset:
            state = RunningHash(new_hasher(algorithm), 0)
        start = done = state.offset
        key = layout.upload_key(session_id)
        if start == offset:  # nothing to catch up on (a new session): no read
            if ((offset or self.driver.stores_empty_sessions)
                    and await self.driver.stat(key) is None):
                raise FileNotFoundError(f"upload {session_id} has no bytes stored")
            return state
        async for data in self.driver.read(key, start, offset - start):
            await asyncio.to_thread(state.hasher.update, data)
            done += len(data)
        if done != offset:
            raise FileNotFoundError(f"upload {session_id} holds {done} of {offset} bytes")
        state.offset = offset
        return state

    async def append(
        self,
        session_id: str,
        state: RunningHash,
        chunks: AsyncIterable[bytes],
        *,
        limit: int | None = None,
    ) -> int:
        """Append `chunks` at `state.offset`, updating `state`; return bytes appended.

        Anything stored past `state.offset` (a write cut short by a crash) is discarded
        first. With `limit`, more bytes than that raise `OverflowError`; a disk too full
        to take them, `StorageFull` (`UploadsRefused` before any byte when the guard
        refuses; `BeyondCapacity` when no disk space ever could take them).
        """
        await self.ensure_space(limit or 0)
        writer = await self.driver.writer(layout.upload_key(session_id), state.offset,
                                          resume=True, expect=limit)
        try:
            written = await self._pour(writer, state.hasher, chunks, limit)
        except BaseException:
            # the hash state no longer matches the recorded offset: forget it
            state.offset = -1
            raise
        state.offset += written
        return written

    async def stage(self, session_id: str, digest: Digest) -> Staged:
        """Start writing the blob `digest` whole (its digest known before its first
        byte), for `fill` and then `commit`: where the driver can, the bytes go straight
        where the blob ends up. The session `session_id`, with nothing recorded in it,
        is the scratch space of a driver that stages through a session."""
        return await self.driver.stage(layout.blob_key(digest),
                                       scratch=layout.upload_key(session_id))

    async def fill(self, staged: Staged, hasher: Hasher, chunks: AsyncIterable[bytes], *,
                   limit: int | None = None) -> int:
        """Write `chunks` to `staged`, hashing them into `hasher`; the bytes written.
        `limit`, `OverflowError` and `StorageFull` as for `append`."""
        await self.ensure_space(limit or 0)
        return await self._pour(staged, hasher, chunks, limit)

    async def commit(self, staged: Staged) -> None:
        """Publish a staged blob, verified by the caller."""
        try:
            await staged.commit()
        except OSError as exc:
            if disk_full(exc):
                raise _full(exc) from exc
            raise

    async def _pour(self, writer: Writer, hasher: Hasher, chunks: AsyncIterable[bytes],
                    limit: int | None) -> int:
        """Copy `chunks` into `writer` through pooled buffers, hashing each buffer in a
        thread while the previous one is written; closes `writer` either way."""
        pipeline = HashWritePipeline(hasher, writer, self.buffers)
        size = self.buffers.size
        written = fill = 0
        current = self.buffers.take()
        try:
            async for chunk in chunks:
                written += len(chunk)
                if limit is not None and written > limit:
                    raise OverflowError("more bytes than announced")
                src = memoryview(chunk)
                while src:
                    take = min(len(src), size - fill)
                    current[fill:fill + take] = src[:take]
                    fill += take
                    src = src[take:]
                    if fill == size:  # full: hash and write it while the next one fills
                        await pipeline.submit(current, pooled=True)
                        current, fill = self.buffers.take(), 0
            if fill:
                await pipeline.submit(current[:fill], pooled=False)
            await pipeline.drain()
        except BaseException as exc:
            await pipeline.abort()
            await writer.close()
            if disk_full(exc):
                raise _full(exc) from exc
            raise
        self.buffers.give(current)
        await writer.close()
        if self.guard is not None:
            self.guard.wrote(written)
        return written

    async def publish(self, session_id: str, digest: Digest, size: int) -> None:
        """Make a verified upload's first `size` bytes (its recorded offset) the blob
        `digest` (fsync, then atomic move). Bytes stored past them (a chunk cut short,
        never recorded) are cut off first: the hash covered only the first `size`."""
        key = layout.upload_key(session_id)
        try:
            stored = await self.driver.stat(key)
            if stored is not None and stored > size:
                writer = await self.driver.writer(key, size, resume=True)
                await writer.close()
            await self.driver.move(key, layout.blob_key(digest))
        except OSError as exc:
            if disk_full(exc):
                raise _full(exc) from exc
            raise

    async def publish_small(self, session_id: str, digest: Digest, data: bytes) -> None:
        """Make `data`, verified to hash to `digest` and held in memory, the blob
        `digest`, and end the session's bytes: one object write where the driver
        has it, instead of appending to the session and moving it."""
        await self.ensure_space(len(data))
        try:
            await self.driver.put(layout.blob_key(digest), data,
                                  scratch=layout.upload_key(session_id))
        except OSError as exc:
            if disk_full(exc):
                raise _full(exc) from exc
            raise
        if self.guard is not None:
            self.guard.wrote(len(data))

    async def delete_upload(self, session_id: str) -> None:
        await self.driver.delete(layout.upload_key(session_id))

    async def discard_upload(self, session_id: str) -> None:
        """Delete a session's bytes, freeing their space now: truncated first, as a
        writer may still have the file open (an unlinked open file keeps its blocks)."""
        key = layout.upload_key(session_id)
        if self.driver.local_path(key) is not None:  # a file: an open one keeps blocks
            with contextlib.suppress(FileNotFoundError):
                await (await self.driver.writer(key, 0, resume=True)).close()
        await self.driver.delete(key)

    async def delete_blob(self, digest: Digest) -> None:
        await self.driver.delete(layout.blob_dir(digest))

    async def delete_blobs(self, digests: Sequence[Digest]) -> dict[Digest, DriverError]:
        """Delete the bytes of many blobs in as few driver calls as it allows; the ones
        that may still be stored, each with why (the others are gone)."""
        keys = {layout.blob_key(d): d for d in digests}
        failed = await self.driver.delete_many(list(keys))
        return {keys[key]: exc for key, exc in failed.items()}

    async def abort_stale_publishes(self, older_than: float) -> int:
        """Abort what publishes begun before `older_than` left unfinished in the
        driver (their process died); how many."""
        return await self.driver.abort_incomplete(layout.BLOBS, older_than)

    async def adopt(self, source: Driver, digest: Digest, *, copy: bool) -> str:
        """Make `source`'s blob `digest` (at the same key: Distribution's layout) one
        of this store's: "present" when it is already here (the same tree, or a run
        before), "linked" (hard link, no byte copied), or with `copy` always "copied" (read,
        hashed, written, verified, published by a move). `AdoptionRefused` when it can
        be neither linked nor copied; `DigestMismatch` when the copy does not hash to
        `digest`."""
        key = layout.blob_key(digest)
        if await self.driver.stat(key) is not None:
            return "present"
        if not copy:
            if await self.driver.link_from(source, key, key):
                return "linked"
            raise AdoptionRefused("the blobs are not on the data directory's filesystem: "
                                  "use --copy")
        temp = layout.import_key(digest)
        writer = await self.driver.writer(temp, 0)
        hasher = digest.hasher()
        try:
            try:
                async for chunk in source.read(key):
                    await asyncio.to_thread(hasher.update, chunk)
                    await writer.write(chunk)
            finally:
                await writer.close(sync=True)
        except BaseException:  # a half copy goes (nothing else sweeps `imports/`)
            with contextlib.suppress(Exception):
                await to_the_end(self.driver.delete(temp))
            raise
        if hasher.hexdigest() != digest.hex:
            await self.driver.delete(temp)
            raise DigestMismatch(f"its bytes hash to {digest.algorithm}:{hasher.hexdigest()}")
        await self.driver.move(temp, key)
        return "copied"

    async def stored_blobs(self) -> AsyncIterator[Digest]:
        """Digests with bytes stored (keys that are no blob's are skipped)."""
        async for key in self.driver.list(layout.BLOBS):
            digest = layout.blob_of(key)
            if digest is not None:
                yield digest

    async def probe(self, name: str) -> None:
        """Write a few bytes under `layout.probe_key(name)` and delete them (readiness:
        the storage takes writes)."""
        key = layout.probe_key(name)
        writer = await self.driver.writer(key)
        try:
            try:
                await writer.write(b"dockyard readiness probe\n")
            finally:
                await writer.close()
        finally:  # on a full disk too: the probe's file was left as an orphan upload
            with contextlib.suppress(FileNotFoundError):  # swept as an orphan meanwhile
                await self.driver.delete(key)

    async def upload_sessions(self) -> AsyncIterator[str]:
        """Ids of the upload sessions that have bytes stored."""
        async for key in self.driver.list(layout.UPLOADS):
            session_id = layout.session_of(key)
            if session_id is not None:
                yield session_id


def _full(exc: BaseException) -> StorageFull:
    reason = exc.strerror if isinstance(exc, OSError) else str(exc)
    return StorageFull(f"insufficient storage: the registry's data filesystem is full "
                       f"({reason})")
