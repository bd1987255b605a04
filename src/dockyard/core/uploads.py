"""Blob upload sessions: start, append (chunked, resumable), finish with verification.

The session's offset lives in the metadata store, so any process can continue it. The
process that receives a chunk keeps the running hash in memory; a process that meets a
session it did not hash rehashes the stored bytes once (after a crash, or when a client's
connections land on another worker).

A request writes a session's bytes only while it holds the session: a hold is the
session row's `holder` and `held_until`, taken by the write that also reads the row,
renewed while a long body streams, and released by the write that records the new
offset (or removes the session). A hold whose process died expires after `HOLD_TTL`, or
at once when that process ran on this machine. The storage driver needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from dockyard.core.leases import LeaseLost, Leases, holder_gone, process_holder, renewing
from dockyard.core.lifecycle import GC_LEASE
from dockyard.core.notify import BLOB_TYPE, Notifier
from dockyard.metadata.records import Claim, UploadRecord
from dockyard.metadata.store import MetadataStore, SessionLimit
from dockyard.oci.digest import Digest, new_hasher
from dockyard.oci.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    StorageFull,
    TooManyRequests,
)
from dockyard.settle import to_the_end
from dockyard.storage.blobstore import BlobStore, RunningHash
from dockyard.storage.guard import UploadsRefused

if TYPE_CHECKING:
    from dockyard.core.proxy import ProxyRoutes

log = logging.getLogger(__name__)
#: links a push tries when the collector takes its blob between the claim and the link
_RELINKS = 3
T = TypeVar("T")

DEFAULT_ALGORITHM = "sha256"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Where a PATCH says its bytes go: `start` from Content-Range, `length` announced."""

    start: int | None = None
    end: int | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class SessionCaps:
    """Caps on open upload sessions (0: none) and the Retry-After sent past them."""

    total: int = 0
    per_owner: int = 0
    retry_after: int = 60


NO_CAPS = SessionCaps()


BUSY_WAIT = 2.0
"""Seconds a request waits for a session another request is writing (then 416)."""

SMALL_PUT = 64 * 1024
"""A PUT body up to this size (with its Content-Length) is read and verified before the
session is held, so the write taking the hold also claims the blob (`finish`)."""

HOLD_TTL = 30.0
"""Seconds a request's hold on a session lasts unless renewed (every third of it while
the body streams): how long a session stays blocked after its writer died on another
host."""

#: a claim waiting on a deletion of its digest asks whether a collector still runs
#: every this many tries (of 50 ms)
ABANDONED_CHECK = 20


@dataclass(slots=True)
class _Local:
    lock: asyncio.Lock
    state: RunningHash | None = None
    used: float = field(default_factory=time.monotonic)
    #: requests of this process holding or waiting for `lock`
    waiting: int = 0


@dataclass(slots=True)
class _Hold:
    """One request's hold on a session: its holder id, and whether a write of this
    request released it already (recording the offset, removing the session)."""

    session_id: str
    holder: str
    released: bool = False
    #: the claim of the blob this request publishes (`_claim`), or of a verified
    #: one-request PUT's blob by the write that took the hold
    claim: Claim | None = None


class UploadService:
    """Upload sessions over the metadata store and the blob store."""

    def __init__(self, store: MetadataStore, blobs: BlobStore,
                 caps: SessionCaps = NO_CAPS, routes: ProxyRoutes | None = None,
                 notifier: Notifier | None = None, leases: Leases | None = None) -> None:
        self.store = store
        #: who collects (`GC_LEASE`): a claim waiting on a deletion asks if one does
        self.leases = leases
        self.routes = routes
        self.notifier = notifier
        self.blobs = blobs
        self.caps = caps
        self._local: dict[str, _Local] = {}
        self._orphans: set[str] = set()  # upload dirs without a row at the last sweep
        self._sweeping = asyncio.Lock()
        #: seconds a hold lasts without renewal
        self.hold_ttl = HOLD_TTL
        self._process = ("", 0)  # (process_holder(), pid), made again after a fork
        self._requests = itertools.count()

    def _holder(self, session_id: str) -> _Hold:
        """A new hold id: this process's holder name and a request number, so two
        requests of one process never hold a session together."""
        process, pid = self._process
        if pid != os.getpid():
            process, pid = self._process = process_holder(), os.getpid()
        return _Hold(session_id, f"{process}:{next(self._requests)}")

    async def start(self, name: str, owner: str | None = None) -> UploadRecord:
        """Open a session for `owner` (who counts against the per-owner cap)."""
        if self.routes is not None:
            self.routes.refuse_writes(name)
        return await self._open(name, owner, None)

    async def upload(self, name: str, owner: str | None, digest: Digest,
                     body: AsyncIterable[bytes], chunk: Chunk, *, discard: bool = False
                     ) -> int:
        """A whole blob in one request (POST ?digest=): `start` and `finish` in one,
        the session born held, so it costs no write more than the session itself.
        `discard`: a failure removes the session at once (a copy or a replica, which
        will never resume it, so it does not count against the caps until it expires)."""
        if self.routes is not None:
            self.routes.refuse_writes(name)
        return await self._whole(name, owner, digest, body, chunk, self.caps,
                                 discard=discard)

    async def store_fetched(self, name: str, digest: Digest, body: AsyncIterable[bytes],
                            size: int) -> int:
        """Store a blob a pull-through cache fetched for `name` (verified, published,
        linked), as a whole upload outside the caps on sessions (it is nobody's push)."""
        return await self._whole(name, None, digest, body, Chunk(length=size), NO_CAPS,
                                 discard=True)

    async def _whole(self, name: str, owner: str | None, digest: Digest,
                     body: AsyncIterable[bytes], chunk: Chunk, caps: SessionCaps, *,
                     discard: bool = False) -> int:
        """One upload from first byte to published blob; with `discard`, a failure
        removes the session at once (nobody will resume it)."""
        session_id = str(uuid.uuid4())
        hold = self._holder(session_id)
        try:
            # within the try: a copy cancelled while its session opens (a sibling blob
            # failed) leaves no session behind either
            record = await self._open(name, owner, hold, caps)
            async with self._keeping(hold):
                return await self._finish(name, record, _Local(asyncio.Lock()), hold,
                                          digest, body, chunk)
        except BaseException:
            if discard:
                self._local.pop(session_id, None)
                with contextlib.suppress(Exception):
                    await to_the_end(self._drop(session_id))
            raise

    async def _drop(self, session_id: str) -> None:
        if await self.store.delete_upload(session_id):
            await self.blobs.discard_upload(session_id)

    async def _open(self, name: str, owner: str | None, hold: _Hold | None,
                    caps: SessionCaps | None = None) -> UploadRecord:
        await self.blobs.ensure_space()  # refuse before a row or a file exists
        session_id = hold.session_id if hold is not None else str(uuid.uuid4())
        caps = self.caps if caps is None else caps
        try:
            record = await self.store.create_upload(
                session_id, name, owner, max_total=caps.total, max_per_owner=caps.per_owner,
                holder=hold.holder if hold is not None else None, ttl=self.hold_ttl)
        except SessionLimit as exc:
            whose = "you have" if exc.which == "owner" else "the registry has"
            raise TooManyRequests(
                f"{whose} {exc.limit} upload sessions open: finish or cancel some, or wait "
                "for idle ones to expire", retry_after=caps.retry_after) from None
        try:
            await self.blobs.create_upload(session_id)
        except StorageFull:
            await self._end_full(session_id)
            raise
        if self.blobs.stores_empty_sessions and await self.store.upload(session_id) is None:
            # the repository was deleted meanwhile (with its sessions): leave no file. A
            # store that keeps nothing for a new session has nothing to leave; the
            # client's next request finds the session gone.
            await self.blobs.delete_upload(session_id)
            raise BlobUploadUnknown("the repository was deleted while the upload started")
        return record

    async def get(self, name: str, session_id: str) -> UploadRecord:
        """The session, as a status request sees it: unknown, too, once its bytes are
        gone (a process killed between a blob's publish and its link leaves the row:
        its offset was reported, and the resumed PATCH or PUT then failed)."""
        record = await self.store.upload(session_id) if _valid_id(session_id) else None
        if record is None or record.repository != name:
            raise BlobUploadUnknown(f"upload {session_id[:80]!r} is unknown or expired")
        if await self.bytes_lost(record.id, record.offset):
            raise BlobUploadUnknown(f"upload {session_id[:80]!r}: its bytes are gone; "
                                    "start the upload again")
        return record

    @contextlib.asynccontextmanager
    async def _hold(self, name: str, session_id: str, claim: tuple[str, int] | None = None,
                    ) -> AsyncIterator[tuple[UploadRecord, _Local, _Hold]]:
        """Hold the session exclusively (this process, then every process) and read it.

        The record is read by the write that takes the hold, so the offset cannot move
        underneath us. A request that finds another request holding the session waits
        up to `BUSY_WAIT` (a request its client just dropped is still letting go), then
        gets 416 with the current offset: one of this process as one of another (it
        waited for as long as the writer lived, which a client sending a byte now and
        then keeps alive for good).
        """
        if not _valid_id(session_id):
            raise BlobUploadUnknown(f"upload {session_id[:80]!r} is unknown or expired")
        local = self._local.setdefault(session_id, _Local(asyncio.Lock()))
        local.waiting += 1
        unknown = False
        try:
            # one wait in all, for this process's lock and then the session's hold
            deadline = asyncio.get_running_loop().time() + BUSY_WAIT
            try:  # this process's requests queue here, without a write
                async with asyncio.timeout_at(deadline):
                    await local.lock.acquire()
            except TimeoutError:
                record = await self.store.upload(session_id)
                if record is None or record.repository != name:
                    unknown = True
                    raise BlobUploadUnknown("upload is unknown or expired") from None
                raise RangeInvalid("another request is writing to this upload",
                                   offset=record.offset) from None
            try:
                hold = self._holder(session_id)
                try:
                    record = await self._take(name, hold, claim, deadline)
                except BlobUploadUnknown:
                    unknown = True
                    raise
                async with self._keeping(hold):
                    yield record, local, hold
            finally:
                local.lock.release()
        finally:
            local.waiting -= 1
            # an id no session has (or another repository's) leaves nothing behind here:
            # such entries lived until the idle sweep, a day later
            if (unknown and local.waiting == 0 and local.state is None
                    and self._local.get(session_id) is local):
                del self._local[session_id]

    async def _take(self, name: str, hold: _Hold, claim: tuple[str, int] | None,
                    deadline: float) -> UploadRecord:
        """Take the hold of `hold.session_id` in repository `name` and read the session,
        trying until `deadline` (loop time) while another request holds it; with `claim`
        (a verified digest and size), claim that blob in the same write when the session
        is empty (`hold.claim`)."""
        loop = asyncio.get_running_loop()
        gone: str | None = None
        pause = 0.01
        while True:
            if claim is None:
                record = await self.store.hold_upload(hold.session_id, name, hold.holder,
                                                      self.hold_ttl, gone=gone)
            else:
                record, hold.claim = await self.store.hold_upload_claiming(
                    hold.session_id, name, hold.holder, self.hold_ttl, *claim, gone=gone)
            if record is not None:
                return record
            found = await self.store.upload_holder(hold.session_id)
            if found is None or found[0].repository != name:
                raise BlobUploadUnknown("upload is unknown or expired")
            current, other = found
            if loop.time() >= deadline:
                raise RangeInvalid("another request is writing to this upload",
                                   offset=current.offset)
            if other is not None and holder_gone(other):
                gone = other  # its process died on this machine: take its hold now
            elif other is not None:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)

    @contextlib.asynccontextmanager
    async def _keeping(self, hold: _Hold) -> AsyncIterator[None]:
        """Run the body under `hold`: renewed while it lasts, released after it unless
        a write of the body released it. Losing it (taken over after it expired) aborts
        the body with 416 and records nothing."""

        async def renew() -> bool:
            if hold.released:
                return True
            kept = await self.store.renew_upload(hold.session_id, hold.holder, self.hold_ttl)
            return kept or hold.released  # released while the renewal ran

        try:
            async with renewing(renew, f"hold on upload {hold.session_id}", self.hold_ttl):
                yield
        except LeaseLost:
            hold.released = True  # not ours any more
            self._local.pop(hold.session_id, None)
            record = await self.store.upload(hold.session_id)
            if record is None:
                raise BlobUploadUnknown("upload is unknown or expired") from None
            raise RangeInvalid("another request took this upload over",
                               offset=record.offset) from None
        except FileNotFoundError:  # the session's bytes went while we wrote
            raise BlobUploadUnknown("upload is unknown or expired") from None
        finally:
            if not hold.released:
                try:
                    await to_the_end(self.store.release_upload(hold.session_id,
                                                               hold.holder))
                except Exception as exc:  # it expires by itself
                    log.warning("could not release upload %s (%s); it is free in %.0f s",
                                hold.session_id, exc, self.hold_ttl)

    async def _releasing(self, hold: _Hold, write: Awaitable[T]) -> T:
        """Run a write that releases `hold` as it succeeds (it records the offset, or
        removes the session), so the renewal does not take its end for a loss."""
        hold.released = True
        try:
            return await write
        except BaseException:
            hold.released = False
            raise

    async def append(
        self, name: str, session_id: str, body: AsyncIterable[bytes], chunk: Chunk
    ) -> UploadRecord:
        """Append one PATCH body; return the session with its new offset."""
        async with self._hold(name, session_id) as (record, local, hold):
            return await self._append(record, local, hold, body, chunk)

    async def _append(
        self, record: UploadRecord, local: _Local, hold: _Hold, body: AsyncIterable[bytes],
        chunk: Chunk, *, record_offset: bool = True,
    ) -> UploadRecord:
        """Write `body` at the session's offset; with `record_offset`, save the new offset
        (which releases the hold).

        The last chunk of a PUT does not record it: the same transaction that publishes
        the blob removes the session.
        """
        offset = record.offset
        limit = _limit(chunk, offset)
        state = await self._state(record, local, DEFAULT_ALGORITHM)
        try:
            written = await self.blobs.append(record.id, state, body, limit=limit)
        except OverflowError:
            raise SizeInvalid("the body is longer than Content-Length/Content-Range") from None
        except UploadsRefused:
            raise  # refused before a byte was written: the bytes received so far stay
        except StorageFull:
            await self._end_full(record.id)
            raise
        finally:
            if state.offset < 0:
                local.state = None
        if limit is not None and written != limit:
            local.state = None
            raise SizeInvalid(f"received {written} bytes, {limit} were announced")
        if record_offset and not await self._releasing(hold, self.store.advance_upload(
            record.id, offset, offset + written, holder=hold.holder
        )):
            local.state = None
            raise RangeInvalid("another request wrote to this upload", offset=offset)
        local.used = time.monotonic()
        return UploadRecord(record.id, record.repository, offset + written, record.started_at,
                            time.time())

    async def _state(self, record: UploadRecord, local: _Local, algorithm: str) -> RunningHash:
        state = local.state
        if state is None or state.offset != record.offset or state.hasher.name != algorithm:
            # catch up from where this process left off when it can, else from zero
            resume = state if state is not None and state.hasher.name == algorithm else None
            try:
                state = await self.blobs.rehash(record.id, record.offset, algorithm, resume)
            except FileNotFoundError:
                raise BlobUploadUnknown("the upload's bytes are gone") from None
            local.state = state
        return state

    async def finish(
        self, name: str, session_id: str, digest: Digest, body: AsyncIterable[bytes] | None,
        chunk: Chunk,
    ) -> int:
        """Append a last chunk if any, verify `digest`, publish the blob; return its size.

        A small whole blob in one PUT (most configs and many layers) is read first, and
        when it hashes to `digest` the write taking the hold claims the blob as well:
        one metadata write fewer on the commonest push of all.
        """
        claim: tuple[str, int] | None = None
        small: bytes | None = None
        if body is not None and chunk.length is not None and _small_whole(chunk):
            data = await _read_at_most(body, chunk.length)
            body = _replay(data)
            if len(data) == chunk.length:
                hasher = new_hasher(digest.algorithm)
                hasher.update(data)
                if hasher.hexdigest() == digest.hex:
                    claim, small = (str(digest), len(data)), data
        async with self._hold(name, session_id, claim) as (record, local, hold):
            if small is not None and hold.claim is not None and record.offset == 0:
                return await self._finish_small(name, record, hold, digest, small)
            return await self._finish(name, record, local, hold, digest, body, chunk)

    async def _finish_small(self, name: str, record: UploadRecord, hold: _Hold,
                            digest: Digest, data: bytes) -> int:
        """Publish a whole verified blob from memory in one driver write (S3: one
        PutObject rather than a session write, a copy and a delete)."""
        try:
            await self._unmarking(hold, digest)
            await self.blobs.publish_small(record.id, digest, data)
        except StorageFull:
            await self._end_full(record.id)
            raise
        await self._link(name, record, hold, digest, len(data))
        await self._pushed(name, digest, len(data))
        return len(data)

    async def _finish(
        self, name: str, record: UploadRecord, local: _Local, hold: _Hold, digest: Digest,
        body: AsyncIterable[bytes] | None, chunk: Chunk,
    ) -> int:
        if record.offset == 0:  # one request brings it all (or nothing: the empty blob)
            return await self._finish_whole(name, record, hold, digest,
                                            body if body is not None else _replay(b""), chunk)
        if body is not None:
            record = await self._append(record, local, hold, body, chunk, record_offset=False)
        state = await self._state(record, local, digest.algorithm)
        await self._verified(record, hold, digest, state.hasher.hexdigest())
        await self._claim(hold, digest, record.offset)
        try:
            await self.blobs.publish(record.id, digest, record.offset)
        except StorageFull:
            await self._end_full(record.id)
            raise
        return await self._published(name, record, hold, digest, record.offset)

    async def _finish_whole(self, name: str, record: UploadRecord, hold: _Hold,
                            digest: Digest, body: AsyncIterable[bytes], chunk: Chunk) -> int:
        """A whole blob in the last request (monolithic PUT, POST ?digest=, a cache
        fill): written where it ends up (`BlobStore.stage`; on S3 the blob's own
        multipart upload, so its bytes are stored once and never copied), published
        only once verified and claimed. A failure leaves the session at offset 0."""
        limit = _limit(chunk, 0)
        staged = await self.blobs.stage(record.id, digest)
        try:
            hasher = new_hasher(digest.algorithm)
            try:
                size = await self.blobs.fill(staged, hasher, body, limit=limit)
            except OverflowError:
                raise SizeInvalid("the body is longer than Content-Length/Content-Range"
                                  ) from None
            if limit is not None and size != limit:
                raise SizeInvalid(f"received {size} bytes, {limit} were announced")
            await self._verified(record, hold, digest, hasher.hexdigest())
            await self._claim(hold, digest, size)
            await self.blobs.commit(staged)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await to_the_end(staged.cancel())
            if isinstance(exc, StorageFull):
                await self._end_full(record.id)
            raise
        return await self._published(name, record, hold, digest, size)

    async def _verified(self, record: UploadRecord, hold: _Hold, digest: Digest,
                        actual: str) -> None:
        """Raise DigestInvalid, ending the session, unless the bytes hash to `digest`."""
        if actual == digest.hex:
            return
        # the session cannot become anything else now: end it, as Distribution does
        await self._end(record, hold)
        raise DigestInvalid(f"content digest is {digest.algorithm}:{actual}, not {digest}",
                            {"digest": str(digest)})

    async def _end(self, record: UploadRecord, hold: _Hold) -> None:
        """End a held session that cannot finish: its row (releasing the hold), then
        its bytes."""
        await self._releasing(hold, self.store.delete_upload(record.id))
        await self.blobs.delete_upload(record.id)
        self._local.pop(record.id, None)

    async def _claim(self, hold: _Hold, digest: Digest, size: int) -> None:
        """Claim the blob before its bytes are published: the collector leaves a
        just-claimed blob alone, and a claim waits while the collector is deleting
        this digest's bytes. The claim leaves a corrupt mark: `_published` clears it."""
        abandoned: float | None = None
        for tries in itertools.count(1):
            hold.claim = await self.store.claim_blob(str(digest), size, abandoned=abandoned)
            if hold.claim is not None:
                break
            if tries % ABANDONED_CHECK == 0:
                abandoned = await self._abandoned_deletion(str(digest))
            await asyncio.sleep(0.05)
        await self._unmarking(hold, digest)

    async def _abandoned_deletion(self, digest: str) -> float | None:
        """When the collector's deletion of `digest` that a claim waits for began, if no
        collector runs any more (nobody holds its lease, or its holder is a dead process
        of this machine): a collector killed mid-deletion held every push of the digest
        for `TOMBSTONE_TIMEOUT`. None: wait on."""
        if self.leases is None:
            return None
        holder = await self.leases.holder_of(GC_LEASE)
        if holder is not None and not holder_gone(holder[0]):
            return None
        return await self.store.collector_deletion(digest)

    async def _unmarking(self, hold: _Hold, digest: Digest) -> None:
        """Before the publish of a blob whose claim found it marked corrupt: remove what
        is stored under its digest, the damaged bytes fsck could not remove (a publish
        keeps bytes already there, taken for the same ones), so the verified bytes
        replace them. A failure fails the push, and the blob stays marked.

        Only the push that takes the repair (`take_mark`) removes anything: a second
        push of the blob at once would otherwise remove the first one's bytes after its
        publish. The others publish as usual (their bytes, or the repairer's, stay) and
        leave the mark to the repairer's link; a repairer that fails leaves it for the
        next push."""
        if hold.claim is None or hold.claim.mark is None:
            return
        hold.claim = await self.store.take_mark(str(digest), hold.claim.mark)
        if hold.claim is None:
            hold.claim = Claim(None)  # claimed still; the mark is another push's to clear
            return
        failed = await self.blobs.delete_blobs([digest])
        if failed:
            raise next(iter(failed.values()))

    async def _published(self, name: str, record: UploadRecord, hold: _Hold, digest: Digest,
                         size: int) -> int:
        """Link the published blob into `name`, ending the session, and clear the
        corrupt mark its claim found (the verified bytes replaced the stored ones);
        its size (the blob's row is there: `_claim` made it before the publish)."""
        await self._link(name, record, hold, digest, size)
        await self._pushed(name, digest, size)
        return size

    async def _link(self, name: str, record: UploadRecord, hold: _Hold, digest: Digest,
                    size: int) -> None:
        """Link the claimed and published blob into `name`, ending the session.

        A collector may take the blob between the claim and the link when `gc.grace`
        is shorter than that time (0, or seconds against a large S3 completion). Then
        the blob is claimed again, which waits out the deletion: the bytes this push
        published after the collector removed the old ones are still there and are
        linked; bytes the collector removed end the session, and the client is told
        to push the blob again (BLOB_UPLOAD_UNKNOWN: clients start a new upload)."""
        for _ in range(_RELINKS):
            linked = await self._releasing(hold, self.store.link_blob(
                name, str(digest), size, upload=record.id, claim=hold.claim))
            if linked:
                self._local.pop(record.id, None)
                return
            hold.released = False  # nothing was written: the session is still held
            log.warning("blob %s was collected between its claim and its link: gc.grace "
                        "is shorter than this push took to publish it", digest)
            hold.claim = None
            await self._claim(hold, digest, size)  # waits while the bytes are deleted
            if await self.blobs.size(digest) != size:
                break
        await self._end(record, hold)
        raise BlobUploadUnknown(
            f"blob {digest} was garbage-collected while this upload completed (the "
            "registry's gc.grace is shorter than the upload took): push it again")

    async def _pushed(self, name: str, digest: Digest, size: int) -> None:
        if self.notifier is not None:
            await self.notifier.emit("push", name, digest=str(digest), media_type=BLOB_TYPE,
                                     size=size, kind="blobs")

    async def _end_full(self, session_id: str) -> None:
        """End a session the disk had no room for: its bytes first (that frees the
        space), then its row (left to the purge if even that cannot be written)."""
        self._local.pop(session_id, None)
        await self.blobs.discard_upload(session_id)
        with contextlib.suppress(StorageFull):
            await self.store.delete_upload(session_id)

    async def cancel(self, name: str, session_id: str) -> None:
        async with self._hold(name, session_id) as (_, _, hold):
            if not await self._releasing(hold, self.store.delete_upload(session_id)):
                raise BlobUploadUnknown("upload is unknown or expired")
            await self.blobs.delete_upload(session_id)
        self._local.pop(session_id, None)

    async def _sweep_orphans(self) -> int:
        """Delete upload bytes that have had no session row for two sweeps in a row.

        They are left by a crash between writing the row and the bytes. The bytes are
        listed before the rows are read: a session's row is written before its bytes, so
        a live session's row is always seen. Sweeps of one process run one at a time
        (the collector and the purge job both sweep): two interleaved sweeps could
        otherwise take each other's first sighting for a second one.
        """
        async with self._sweeping:
            on_disk = {s async for s in self.blobs.upload_sessions()}
            known = await self.store.upload_ids()
            orphans = {s for s in on_disk - known if _valid_id(s)}
            doomed = orphans & self._orphans
            self._orphans = orphans - doomed
            for session_id in doomed:
                await self.blobs.delete_upload(session_id)
            return len(doomed)

    async def orphans(self) -> list[str]:
        """Sessions with bytes stored and no row, at one look (for fsck): bytes listed
        before rows, as in `_sweep_orphans`, so a live session is never among them."""
        on_disk = {s async for s in self.blobs.upload_sessions()}
        return sorted(on_disk - await self.store.upload_ids())

    async def stored_sessions(self) -> set[str]:
        """Sessions that have bytes stored."""
        return {s async for s in self.blobs.upload_sessions()}

    async def session_size(self, session_id: str) -> int | None:
        """Bytes stored for the session (None: no bytes at all)."""
        return await self.blobs.upload_size(session_id)

    async def bytes_lost(self, session_id: str, offset: int) -> bool:
        """Whether a session at `offset` lost its bytes: none are stored, though it
        recorded some or the store keeps even an empty session's (S3 does not)."""
        if not offset and not self.blobs.stores_empty_sessions:
            return False
        return await self.blobs.upload_size(session_id) is None

    async def delete_bytes(self, session_id: str) -> None:
        """Remove the stored bytes of a session no row owns any more."""
        await self.blobs.delete_upload(session_id)

    async def purge(self, max_idle: float, *, publish_expiry: float | None = None) -> int:
        """Remove sessions idle for longer than `max_idle` seconds, with their bytes, and
        upload bytes no session row knows (`_sweep_orphans`); the number removed.

        With `publish_expiry`, also abort the driver's unfinished publishes older than
        that (a node died while it published: on S3 a multipart upload no session
        knows, which would be kept and billed forever). It must be longer than any
        publish can take, or a slow one would be cut (and fail, to be tried again).
        """
        idle_since = time.time() - max_idle
        removed = 0
        for session_id in await self.store.stale_uploads(idle_since):
            # a session a request holds (a long body streaming in) is not idle: the
            # store keeps it, and no request can take it once its row is gone
            if await self.store.delete_stale_upload(session_id, idle_since):
                await self.blobs.delete_upload(session_id)
                removed += 1
        removed += await self._sweep_orphans()
        if removed:
            log.info("purged %d idle upload sessions", removed)
        if publish_expiry is not None:
            aborted = await self.blobs.abort_stale_publishes(time.time() - publish_expiry)
            if aborted:
                log.info("aborted %d unfinished publishes older than %.0f s", aborted,
                         publish_expiry)
        return removed

    def forget_idle(self, max_idle: float) -> int:
        """Drop this process's hash state of sessions it has not served for `max_idle`
        seconds (abandoned by their clients); each process calls it for itself."""
        cutoff = time.monotonic() - max_idle
        idle = [session_id for session_id, local in self._local.items()
                if not local.lock.locked() and local.used < cutoff]
        for session_id in idle:
            del self._local[session_id]
        return len(idle)


def _small_whole(chunk: Chunk) -> bool:
    """Whether a PUT body may be read before the hold (`finish`): up to `SMALL_PUT`
    bytes from the start, its Content-Range (if any) spanning its Content-Length. A
    mismatch goes the long way, where `_limit` refuses it with the session's offset."""
    if chunk.length is None or chunk.length > SMALL_PUT or chunk.start not in (None, 0):
        return False
    return chunk.end is None or chunk.end + 1 == chunk.length


def _limit(chunk: Chunk, offset: int) -> int | None:
    """The bytes a request body must hold (None: unknown, read to its end), from its
    Content-Length and Content-Range, checked against the session's `offset`."""
    if chunk.start is not None and chunk.start != offset:
        raise RangeInvalid(f"chunk starts at {chunk.start}, upload is at {offset}",
                           offset=offset)
    limit = chunk.length
    if chunk.start is not None and chunk.end is not None:
        if chunk.end < chunk.start - 1:
            raise RangeInvalid("Content-Range end precedes its start", offset=offset)
        span = chunk.end - chunk.start + 1
        if limit is not None and limit != span:
            raise RangeInvalid(
                f"Content-Range spans {span} bytes, Content-Length says {limit}",
                offset=offset,
            )
        limit = span
    return limit


async def _read_at_most(body: AsyncIterable[bytes], length: int) -> bytes:
    """The body, or its first bytes past `length` (the append then reports the excess)."""
    buf = bytearray()
    async for data in body:
        buf += data
        if len(buf) > length:
            break
    return bytes(buf)


async def _replay(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _valid_id(session_id: str) -> bool:
    try:
        return str(uuid.UUID(session_id)) == session_id
    except ValueError:
        return False
