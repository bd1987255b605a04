"""Keep this registry identical to a primary Dockyard by following its change feed.

The follower long-polls the primary's `GET /admin/v1/events` from its cursor (through a
`remote.RegistryClient`) and applies each event through `core`: a put fetches the
manifest (children and blobs first, blobs streamed into the blob store with their
digests verified by the upload path) and sets the tag at the event's time (the tag's
push time on the primary, which retention's `keep_last` orders by) with the event's
actor as its pusher (the web UI's "by"); deletions are
mirrored (`core.replica`). Every step is idempotent, so an event applied twice (after a
crash, before the cursor was saved) changes nothing. The cursor and the lag are saved in
the metadata store after each batch: a killed replica resumes where it stopped, on any
node. While it runs, the follower also records a heartbeat every `HEARTBEAT` seconds,
which the metrics and the alert on a replica that stopped following read.

Without a cursor (first start, a new primary) or when the primary no longer holds the
events after it (410), the follower compares in full: the primary's catalog, each
repository's tags with their manifest digests, push times and pushers
(`/admin/v1/tags/<name>`, one request a page; from an older primary the tags list and a
HEAD per tag, times and pushers unknown) against its own, setting tags oldest first at
their primary's times, fetching what differs and deleting what the primary no longer
has, then follows from the feed's head as read before the comparison (events in between
are applied again, harmlessly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp

from dockyard.config.settings import ReplicaSettings
from dockyard.core import feed as kinds
from dockyard.core.jobs import Job
from dockyard.core.registry import Registry
from dockyard.core.replica import PUSHER_MAX, TagRecord
from dockyard.core.uploads import Chunk
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, DigestInvalid, ManifestUnknown, RegistryError
from dockyard.oci.manifest import Manifest, parse_manifest
from dockyard.received import MANIFEST_LIMIT
from dockyard.remote.auth import AuthError
from dockyard.remote.client import FeedExpired, RegistryClient, RegistryClientError
from dockyard.remote.credentials import Credentials

log = logging.getLogger("dockyard.replica")

#: upload sessions the follower opens count against this owner's cap
OWNER = "replica"
#: longest pause between two attempts while the primary fails (seconds)
MAX_BACKOFF = 30.0
#: blobs of one manifest fetched from the primary at once
PARALLEL_BLOBS = 4
#: the cursor is saved at least every this many events within a batch
SAVE_EVERY = 50
#: steps in a row a primary may answer no event after the cursor while its head says
#: there are more (a moment between a commit and its listing), each after `IDLE_PAUSE`
#: seconds; past them the step fails (retried with backoff, or `--once` ends), where a
#: primary doing so for good had the follower ask again without pause
IDLE_STEPS = 10
IDLE_PAUSE = 0.5
#: seconds between two reports of a full comparison's progress (its status, with the
#: repositories compared so far)
REPORT_EVERY = 10.0
#: seconds between two heartbeats of a running follower (`ReplicaService.alive`): a
#: step may go long between two saves of its status (a big repository compared, an
#: event whose blobs are large), and an alert must tell that from a follower stopped
HEARTBEAT = 15.0
#: the follower's lease (`job:replica`) lasts this long unless renewed: how soon
#: another node follows after the one following died
LEASE_TTL = 15.0

#: what the primary (or its token service: `AuthError`, a refused password as a token
#: service down) may cause; the follower retries them with backoff
#: subjects whose referrers one tag's comparison looks for, at most (its manifest, an
#: index's children, referrers of referrers)
MAX_REFERRED = 10_000

FAILURES = (RegistryClientError, AuthError, RegistryError, aiohttp.ClientError,
            asyncio.TimeoutError, OSError, ValueError, KeyError)


_said_promoted = False


@dataclass
class _Fetched:
    """A manifest fetched from the primary, not yet stored: the children of it still to
    be had here first."""

    digest: str
    payload: bytes
    media_type: str | None
    manifest: Manifest
    children: Iterator[str]


class _Theirs(NamedTuple):
    """A tag of the primary: the manifest it names, and when and by whom it was pushed
    (a time of None: unknown, from a registry without `/admin/v1/tags`; a pusher of
    None: that, or an anonymous push, or a tag no push set)."""

    tag: str
    digest: str
    pushed_at: float | None
    pushed_by: str | None


class Promoted(Exception):
    """This registry was promoted while the follower worked: it writes nothing more."""


def _promoted_said() -> None:
    global _said_promoted
    _said_promoted = True


def _is_foreign(media_type: str) -> bool:
    return "foreign" in media_type or "nondistributable" in media_type


class Follower:
    """Follows one primary into `registry` (see the module docstring)."""

    def __init__(self, registry: Registry, client: RegistryClient, primary: str, *,
                 batch: int = 500, wait: float = 25.0) -> None:
        self.registry = registry
        self.replica = registry.replica
        self.client = client
        self.primary = primary
        self.batch = batch
        self.wait = wait
        self._idle = 0  # steps in a row that found no event before the head
        #: blobs fetched at once
        self._transfers = asyncio.Semaphore(PARALLEL_BLOBS)

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Follow until cancelled or promoted; with `until_caught_up`, return once the
        cursor reached the primary's head (and raise on the first failure)."""
        if not await self.replica.follow(self.primary):
            # the server's job asks again every interval: say it once per process
            (log.debug if _said_promoted else log.info)(
                "replica: this registry was promoted; not following %s", self.primary)
            _promoted_said()
            return
        log.info("replica: following %s", self.primary)
        beat = asyncio.ensure_future(self._beat())
        try:
            await self._follow(until_caught_up)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _beat(self) -> None:
        """Say every `HEARTBEAT` seconds that this follower runs."""
        while True:
            try:
                await self.replica.alive()
            except Exception as exc:  # the store is down: the step says so, not this
                log.debug("replica: heartbeat not recorded: %s", exc)
            await asyncio.sleep(HEARTBEAT)

    async def _follow(self, until_caught_up: bool) -> None:
        backoff = 1.0
        while True:
            if await self.replica.promoted():
                log.info("replica: promoted; stopped following %s", self.primary)
                return
            try:
                caught_up = await self.step(wait=0.0 if until_caught_up else self.wait)
            except Promoted:
                log.info("replica: promoted; stopped following %s", self.primary)
                return
            except FAILURES as exc:
                # a timeout's text is empty: the status and the log said nothing
                said = str(exc) or f"{type(exc).__name__}: no answer in time"
                if until_caught_up:
                    await self._said(said)
                    raise
                log.warning("replica: %s: %s; retrying in %.0f s", self.primary, said,
                            backoff)
                await self.replica.save_error(said)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception as exc:  # a fault of this registry (its store, a bug): the
                # run ends (the job starts another), and the status says it failed, not
                # the "following" of the last step that went through
                await self._said(f"{type(exc).__name__}: {exc}")
                raise
            backoff = 1.0
            if until_caught_up and caught_up:
                return

    async def _said(self, message: str) -> None:
        """Record the failure that ends this run, if the store takes it: the failure
        itself, not a second one from recording it, is what the caller raises."""
        try:
            await self.replica.save_error(message)
        except Exception as exc:
            log.debug("replica: the error state was not recorded: %s", exc)

    async def step(self, wait: float) -> bool:
        """One request to the feed and its events applied; whether caught up."""
        cursor = await self.replica.cursor()
        if cursor is None:
            head = await self._head()
            await self.compare(head)
            return False
        try:
            page = await self.client.events(cursor, self.batch, wait)
        except FeedExpired as exc:
            log.warning("replica: %s; comparing in full", exc)
            await self.compare(exc.head)
            return False
        head = int(page["head"])
        seconds = 0.0
        if page["events"] and cursor < head:
            # the new head and the lag at once, before the first event is applied: one
            # event's blobs may take long, and the status (the metrics, the alert, an
            # operator about to promote) said "0 behind" meanwhile
            first = page["events"][0]
            await self._status(cursor, head, max(0.0, time.time() - float(first["at"])),
                               "following")
        for n, event in enumerate(page["events"], 1):
            seconds = max(0.0, time.time() - float(event["at"]))
            await self.apply(event)
            cursor = int(event["id"])
            if n % SAVE_EVERY == 0:
                await self._status(cursor, head, seconds, "following")
        if cursor >= head:
            seconds = 0.0
        await self._status(cursor, head, seconds, "following")
        if page["events"] or cursor >= head:
            self._idle = 0
        else:
            self._idle += 1
            if self._idle >= IDLE_STEPS:
                self._idle = 0
                raise RegistryClientError(200, f"the primary's feed answered no event "
                                               f"after {cursor} {IDLE_STEPS} times in a "
                                               f"row, while its head is {head}")
            await asyncio.sleep(IDLE_PAUSE)
        if page["events"]:
            log.info("replica: applied %d events; cursor %d, %d events and %.1f s behind",
                     len(page["events"]), cursor, max(0, head - cursor), seconds)
        return cursor >= head

    async def _head(self) -> int:
        try:
            return int((await self.client.events(0, 0, 0))["head"])
        except FeedExpired as exc:
            return exc.head

    async def _status(self, cursor: int | None, head: int | None, seconds: float | None,
                      state: str, progress: tuple[int, int] | None = None) -> None:
        status: dict[str, Any] = {"state": state, "head": head,
                                  "events_behind": (None if head is None or cursor is None
                                                    else max(0, head - cursor)),
                                  "seconds_behind": (None if seconds is None
                                                     else round(seconds, 3))}
        if progress is not None:
            status["repositories_compared"], status["repositories"] = progress
        await self.replica.save(cursor, status)

    # --- applying one event ----------------------------------------------------

    async def _writable(self) -> None:
        """Raise `Promoted` once this registry is promoted. Asked before each write, so
        a step under way (a batch of events, a full comparison that may take hours)
        stops there: from the promotion on, clients write here and the primary's view
        must no longer undo what they push."""
        if await self.replica.promoted():
            raise Promoted

    async def apply(self, event: dict[str, Any]) -> None:
        await self._writable()
        kind, name = str(event["kind"]), str(event["repository"])
        tag, digest = str(event.get("tag") or ""), str(event.get("digest") or "")
        if kind in (kinds.MANIFEST_PUT, kinds.TAG_SET):
            if await self.ensure_manifest(name, digest):
                if tag:
                    # the event's time is the tag's push time on the primary, its actor
                    # the tag's pusher there
                    await self.set_tag(name, tag, digest, float(event["at"]),
                                       event.get("actor"))
            elif tag:
                # the tag moved to a manifest the primary deleted since: the manifest's
                # deletion took the tag along there (no event of its own), so it must
                # not stay here on the manifest it named before; a later move of the
                # tag comes as an event of its own
                await self.replica.delete_tag(name, tag)
        elif kind == kinds.TAG_DELETED:
            await self.replica.delete_tag(name, tag)
        elif kind == kinds.MANIFEST_DELETED:
            await self.replica.delete_manifest(name, digest)
        elif kind == kinds.BLOB_DELETED:
            await self.replica.unlink_blob(name, digest)
        elif kind == kinds.REPOSITORY_DELETED:
            await self.replica.delete_repository(name)
        else:
            log.warning("replica: skipped event %s of unknown kind %r", event.get("id"), kind)

    async def ensure_manifest(self, name: str, digest: str) -> bool:
        """Have manifest `digest` in `name`, fetching it (and what it references) from
        the primary; False when the primary no longer has it (a later event says so).

        Walked with a stack of the manifests fetched and not yet stored, children
        before their index, not by recursion: a pusher may nest indexes as deep as it
        likes (one by one, each child first), and a chain of 1,500 raised
        RecursionError out of the comparison, which then failed the same way for ever."""
        if await self._have_manifest(name, digest):
            return True
        top = await self._fetch_manifest(name, digest)
        if top is None:
            return False
        path = [top]
        while path:
            held = path[-1]
            child = next(held.children, None)
            if child is None:
                path.pop()
                if not await self._store_manifest(name, held):
                    return False
            elif not await self._have_manifest(name, child):
                fetched = await self._fetch_manifest(name, child)
                if fetched is None:
                    return False
                path.append(fetched)
        return True

    async def _referrers_below(self, name: str, digest: str) -> None:
        """Have the referrers of manifest `digest`, of the children of it (an index's
        platforms), and of those referrers (a signature of an SBOM), as the primary
        lists them: a full comparison fetched those of the tagged manifest only, and a
        new replica lacked the others for good. At most `MAX_REFERRED` subjects."""
        todo: list[str] = [digest]
        seen: set[str] = set()
        while todo and len(seen) < MAX_REFERRED:
            subject = todo.pop()
            if subject in seen:
                continue
            seen.add(subject)
            todo.extend(await self._children_here(name, subject))
            for ref in await self.client.referrers(name, subject) or []:
                found = str(ref["digest"])
                if await self.ensure_manifest(name, found):
                    todo.append(found)

    async def _children_here(self, name: str, digest: str) -> list[str]:
        """The children this registry's copy of manifest `digest` lists (none: not
        an index, or not here)."""
        try:
            record = await self.registry.manifests.get(name, digest, pull=False)
        except ManifestUnknown:
            return []
        assert record.payload is not None
        return [str(c.digest) for c in
                parse_manifest(record.payload, record.media_type).children]

    async def _have_manifest(self, name: str, digest: str) -> bool:
        try:
            await self.registry.manifests.get(name, digest, payload=False)
        except ManifestUnknown:
            return False
        return True

    async def _fetch_manifest(self, name: str, digest: str) -> _Fetched | None:
        """Manifest `digest` from the primary, verified and parsed; None on a 404."""
        try:
            payload, content_type = await self.client.get_manifest(name, digest)
        except RegistryClientError as exc:
            if exc.status == 404:
                return None
            raise
        wanted = Digest.parse(digest)
        if Digest.of(payload, wanted.algorithm) != wanted:
            raise DigestInvalid(f"the primary sent a manifest that is not {digest}")
        media_type = content_type.split(";")[0].strip() or None
        manifest = parse_manifest(payload, media_type)
        return _Fetched(digest, payload, media_type, manifest,
                        iter([str(c.digest) for c in manifest.children]))

    async def _store_manifest(self, name: str, held: _Fetched) -> bool:
        """Store a fetched manifest whose children are here: its blobs first; False when
        the primary no longer has one of them."""
        wanted_blobs = {str(b.digest): b.size for b in held.manifest.blobs
                        if not _is_foreign(b.media_type)}
        try:
            async with asyncio.TaskGroup() as group:  # a failure cancels the others
                fetched = [group.create_task(self._bounded(self.ensure_blob(name, d, n)))
                           for d, n in wanted_blobs.items()]
        except ExceptionGroup as failed:  # the first failure, as the caller expects
            raise failed.exceptions[0] from None
        if not all(task.result() for task in fetched):
            return False
        await self._writable()
        await self.registry.manifests.put(name, held.digest, held.payload, held.media_type)
        return True

    async def _bounded(self, work: Awaitable[bool]) -> bool:
        async with self._transfers:
            return await work

    async def ensure_blob(self, name: str, digest: str, size: int) -> bool:
        """Have blob `digest` in `name`: already there, linked from another repository
        of this registry, or streamed from the primary (verified, and no more read than
        the size the primary's HEAD says; a `size` in the manifest that differs is only
        logged); False on a 404."""
        wanted = Digest.parse(digest)
        try:
            await self.registry.blobs.stat(name, wanted)
            return True
        except BlobUnknown:
            pass
        await self._writable()
        if await self.replica.adopt_blob(name, digest):
            return True
        try:
            # at most the size the primary stores (a descriptor may say another: the
            # primary takes a manifest without checking its sizes)
            stored = await self.client.blob_size(name, digest)
            if stored is None:
                return False
            if stored != size:
                log.warning("replica: %s@%s is %d bytes at the primary, its manifest says "
                            "%d", name, digest, stored, size)
            await self._writable()
            async with self.client.open_blob(name, digest) as chunks:
                await self.registry.uploads.upload(name, OWNER, wanted, chunks,
                                                   Chunk(length=stored), discard=True)
        except RegistryClientError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def set_tag(self, name: str, tag: str, digest: str, pushed_at: float | None,
                      pushed_by: str | None, ours: TagRecord | None = None) -> None:
        """Point `tag` at manifest `digest` (present), pushed at `pushed_at` (the
        primary's time; None: unknown, now) by `pushed_by` (the primary's pusher),
        unless it does so already (`ours`: the tag here, when read already)."""
        if pushed_by is not None:  # as kept here (an older primary kept longer names)
            pushed_by = pushed_by[:PUSHER_MAX]
        if ours is None:
            ours = await self.replica.tag(name, tag)
        if ours is not None and ours.digest == digest and (
                pushed_at is None or (ours.pushed_at == pushed_at
                                      and ours.pushed_by == pushed_by)):
            return
        record = await self.registry.manifests.get(name, digest)
        assert record.payload is not None
        await self._writable()
        await self.registry.manifests.put(name, tag, record.payload, record.media_type,
                                          by=pushed_by, pushed_at=pushed_at)

    # --- the full comparison -----------------------------------------------------

    async def compare(self, head: int) -> None:
        """Make this registry's repositories, tags and manifests the primary's; then
        follow from `head` (read before the comparison began)."""
        log.info("replica: comparing with %s in full (feed head %d)", self.primary, head)
        await self._status(None, head, None, "comparing")
        theirs = [name async for name in self.client.repositories()]
        ours = await self.registry.repositories.catalog(None, None)
        for name in sorted(set(ours) - set(theirs)):
            await self._writable()
            await self.replica.delete_repository(name)
        reported = time.monotonic()
        for n, name in enumerate(theirs, 1):
            await self._writable()
            await self._compare_repository(name)
            if time.monotonic() - reported >= REPORT_EVERY:
                await self._status(None, head, None, "comparing", progress=(n, len(theirs)))
                reported = time.monotonic()
        await self._status(head, head, None, "following")
        log.info("replica: in step with %s up to event %d (%d repositories)", self.primary,
                 head, len(theirs))

    async def _theirs(self, name: str) -> tuple[list[_Theirs], set[str]]:
        """The primary's tags of `name` with their digests, push times and pushers,
        oldest first, and the tags it listed but could not say the manifest of."""
        timed = await self.client.tag_times(name)
        if timed is not None:
            return [_Theirs(t.tag, t.digest, t.pushed_at, t.pushed_by)
                    for t in sorted(timed, key=lambda t: (t.pushed_at, t.tag))], set()
        # a primary without that listing (or the repository deleted meanwhile): the
        # tags list and a HEAD each, times unknown
        try:
            listed = [t async for t in self.client.tags(name)]
        except RegistryClientError as exc:
            if exc.status != 404:
                raise
            listed = []  # the repository was deleted meanwhile: its events will say so
        found: list[_Theirs] = []
        # a tag listed, then not found (deleted since, or answered without a digest) is
        # left as it is here: the feed, read from before the listing, brings its change;
        # counting it as gone would not be wrong, but one failed look must never read as
        # "the repository has no tags" and delete all of them
        unknown: set[str] = set()
        for tag in listed:
            info = await self.client.head_manifest(name, tag)
            if info is None:
                unknown.add(tag)
            else:
                found.append(_Theirs(tag, info.digest, None, None))
        return found, unknown

    async def _compare_repository(self, name: str) -> None:
        theirs, unknown = await self._theirs(name)
        tags = {t.tag: t.digest for t in theirs}
        ours = await self.replica.timed_tags(name)
        # oldest first, each with the primary's push time: retention's `keep_last`
        # keeps the same tags here as there (set now, in the listing's order, the
        # lexically last tags read as the newest)
        for t in theirs:
            here = ours.get(t.tag)
            held = here is not None and here.digest == t.digest  # its time may differ
            if held or await self.ensure_manifest(name, t.digest):
                await self.set_tag(name, t.tag, t.digest, t.pushed_at, t.pushed_by, here)
                await self._referrers_below(name, t.digest)
        for tag in set(ours) - set(tags) - unknown:
            await self._writable()
            await self.replica.delete_tag(name, tag)
        for digest in await self.replica.manifest_digests(name):
            if await self.client.head_manifest(name, digest) is None:
                await self._writable()
                await self.replica.delete_manifest(name, digest)
        for digest in await self.replica.unreferenced_links(name):
            if not await self.client.has_blob(name, digest):
                await self._writable()
                await self.replica.unlink_blob(name, digest)


def client_for(settings: ReplicaSettings, primary: str, max_manifest: int = MANIFEST_LIMIT
               ) -> RegistryClient:
    """A client of `primary` with the configured credentials (read from their
    reference now; ValueError naming the key when that fails), reading manifests up to
    `max_manifest` bytes (the replica's own limit)."""
    password = settings.password()
    credentials = (Credentials(settings.username, password or "")
                   if settings.username is not None else None)
    return RegistryClient(primary, credentials=credentials, verify_tls=settings.tls_verify,
                          max_manifest=max_manifest)


async def follow(registry: Registry, settings: ReplicaSettings, primary: str, *,
                 until_caught_up: bool = False) -> None:
    """Run a `Follower` of `primary` with a client made from `settings`."""
    async with client_for(settings, primary, registry.manifests.max_size) as client:
        await Follower(registry, client, primary, batch=settings.batch,
                       wait=settings.wait.total_seconds()).run(until_caught_up=until_caught_up)


def replica_job(registry: Registry, settings: ReplicaSettings) -> Job:
    """The server's follower as a job: one process of one node follows at a time (its
    lease is renewed while it runs); if it stops (the node dies, or a failure escapes),
    another process takes over after `interval`. Not in the job history: a run lasts as
    long as its process (its state is `GET /admin/v1/replica`)."""
    primary = settings.primary
    assert primary is not None

    async def run() -> None:
        try:
            await follow(registry, settings, primary)
        except ValueError as exc:  # a credential reference that cannot be read
            log.error("replica: %s", exc)
            await registry.replica.save_error(str(exc))

    return Job("replica", settings.interval.total_seconds(), run, lease_ttl=LEASE_TTL,
               record=False)
