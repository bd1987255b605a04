"""Pull-through caches: repositories under a `proxy:` prefix are filled from an upstream.

A pull of a manifest or blob the cache lacks fetches it upstream, stores it and answers
it; afterwards it is served locally. Tags are re-checked with a HEAD by tag once their
`tag_ttl` has passed (HEADs do not count against Docker Hub's pull limits); when
upstream cannot answer, the cached manifest is served and marked stale. Digests are
never fetched again once stored. Writes into a cache are refused.

A blob is fetched once however many pull it at once: within a process, pullers wait for
the fetch task; across processes and hosts, the fetcher holds the lease
`proxy-blob:<digest>` in the metadata store and the others wait until the blob is
stored (or the lease frees: a fetcher that died is replaced). The first puller gets the
bytes as they arrive, while they are hashed and stored (`UploadService.store_fetched`);
one that takes no byte for `follow_lag` seconds (`http.body_timeout`) is cut off and the
fetch goes on at upstream's speed, so a stalled client holds up no one. Every wait for a
fetch ends at the rule's `fetch_wait`.

The upstream registries are reached through the `Upstream` Protocol (implemented over
`remote.RegistryClient` by `remote/upstream.py`, handed in by `backends.py`): `core`
speaks no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dockyard.config.proxy import ProxyRule
from dockyard.core.blobs import BlobInfo, Stream
from dockyard.core.leases import LeaseBackend, renewing
from dockyard.core.metrics import metrics
from dockyard.metadata.records import CachedTag, ManifestRecord
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    UpstreamUnavailable,
)
from dockyard.oci.reference import is_tag, is_valid_tag
from dockyard.settle import to_the_end
from dockyard.storage.blobstore import BlobStore

if TYPE_CHECKING:
    from dockyard.core.pulls import PullRecorder
    from dockyard.core.uploads import UploadService

log = logging.getLogger("dockyard.proxy")

FETCH_LEASE_TTL = 30.0
"""Seconds a blob fetch's lease lasts unless renewed: how long pullers elsewhere wait
for a fetcher that died before one of them takes over."""

STALE_RETRY = 10.0
"""Seconds after a failed re-check of a tag before a pull (of this process) tries
upstream again; meanwhile the tag is answered stale at once."""

STALE_KEPT = 10_000
"""Tags a worker remembers as failing their re-check (see `_mark_stale`)."""

FOLLOW_LAG = 60.0
"""Seconds the fetch waits for its first puller to take a chunk before going on without
it (the default of `http.body_timeout`)."""

BLOB_MISS = "blob:"
"""Before a digest in `proxy_misses`, a blob upstream lacks; without it, a manifest: a
registry may hold bytes under a digest as a blob and not as a manifest (a config)."""

#: how many chunks the first puller's stream may lag behind the fetch
_QUEUE = 8


class Upstream(Protocol):
    """One upstream registry, as a cache needs it. Methods raise `UpstreamUnavailable`
    when it cannot answer (unreachable, 5xx, 429, refused credentials)."""

    url: str

    async def manifest_digest(self, name: str, tag: str) -> str | None:
        """The digest `name:tag` names now (a HEAD), or None when upstream lacks it."""
        ...

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest's bytes and media type, or None when upstream lacks it."""
        ...

    async def blob_size(self, name: str, digest: str) -> int | None:
        """The blob's size (a HEAD), or None when upstream lacks it."""
        ...

    def blob(self, name: str, digest: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The blob's bytes as they arrive (`BlobUnknown` when upstream lacks it)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Route:
    """A proxied repository: its rule, its upstream and its name there."""

    rule: ProxyRule
    upstream: Upstream
    name: str

    @property
    def where(self) -> str:
        """Where its content comes from, for messages and provenance."""
        return f"{self.rule.upstream}/{self.name}"


class ProxyRoutes:
    """Which repositories are caches of which upstream (decided on the matched name)."""

    def __init__(self, rules: list[tuple[ProxyRule, Upstream]] | None = None) -> None:
        self.rules = list(rules or [])

    def route(self, name: str) -> Route | None:
        for rule, upstream in self.rules:
            if name.startswith(rule.prefix + "/"):
                return Route(rule, upstream, rule.upstream_prefix + name[len(rule.prefix) + 1:])
        return None

    def refuse_writes(self, name: str) -> None:
        """`Denied` when `name` is a cache: its content comes from upstream only."""
        if not self.rules:
            return
        route = self.route(name)
        if route is not None:
            raise Denied(f"{name} is a pull-through cache of {route.where}: pushes and "
                         "deletes are refused; push to the upstream instead",
                         {"name": name, "upstream": route.rule.upstream})

    async def close(self) -> None:
        for _rule, upstream in self.rules:
            await upstream.close()


@dataclass(frozen=True, slots=True)
class Pulled:
    """A manifest as a pull answers it; `stale` when a cache served it without being
    able to re-check it upstream."""

    record: ManifestRecord
    stale: bool = False


@dataclass
class _Tee:
    """The first puller's view of a fetch: the chunks as they are stored."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(_QUEUE))
    attached: bool = True
    done: asyncio.Future[None] | None = None
    error: BaseException | None = None
    #: seconds the fetch waits for room in `queue` before cutting the puller off
    lag: float = FOLLOW_LAG
    #: seconds the puller waits for the upstream's next bytes (the rule's `fetch_wait`)
    wait: float = FOLLOW_LAG

    async def tee(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self.attached:
                try:
                    self.queue.put_nowait(chunk)
                except asyncio.QueueFull:
                    try:
                        await asyncio.wait_for(self.queue.put(chunk), self.lag)
                    except TimeoutError:
                        self.cut(f"the first pull took no byte for {self.lag:g} s; the "
                                 "fetch goes on without it")
            yield chunk

    def cut(self, why: str) -> None:
        """Leave the puller behind: its stream ends with an error at its next read."""
        log.warning("%s", why)
        self.error = UpstreamUnavailable(why)
        self.detach()
        self.queue.put_nowait(None)

    def detach(self) -> None:
        self.attached = False
        while not self.queue.empty():  # unblock a fetch waiting for room
            self.queue.get_nowait()

    async def finish(self, error: BaseException | None) -> None:
        """The fetch ended; a failed one cuts the puller's stream short at once."""
        if not self.attached:  # gone, or cut off (its error stays what it was told)
            return
        self.error = error
        if error is not None:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
        else:
            try:
                await asyncio.wait_for(self.queue.put(None), self.lag)
            except TimeoutError:  # the blob is stored: only this pull is cut short
                self.cut(f"the first pull took no byte for {self.lag:g} s; the blob is "
                         "stored, pull it again")

    async def follow(self) -> AsyncIterator[bytes]:
        """The bytes as they arrive, all but the last piece: that one only once the
        blob is stored and verified, so a puller of bytes that do not match the digest
        never gets the whole body (it sees a cut transfer, not a 200 of wrong bytes).
        No byte from upstream for `wait` seconds ends it (`UpstreamUnavailable`); the
        fetch goes on for the next pull."""
        held: bytes | None = None
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), self.wait)
                except TimeoutError:
                    raise UpstreamUnavailable(
                        f"the upstream sent no byte of this blob for {self.wait:g} s; it "
                        "is still being fetched: try again later") from None
                if item is None:
                    break
                if held is not None:
                    yield held
                held = item
            if self.error is not None:
                raise self.error
            if self.done is not None:
                await asyncio.shield(self.done)  # stored and verified
            if held is not None:
                yield held
        finally:
            self.detach()


class PullThrough:
    """Manifest and blob pulls of proxied repositories."""

    def __init__(self, routes: ProxyRoutes, store: MetadataStore, blobs: BlobStore,
                 uploads: UploadService, leases: LeaseBackend, holder: str,
                 pulls: PullRecorder | None = None, follow_lag: float = FOLLOW_LAG) -> None:
        self.routes = routes
        self.store = store
        self.blobs = blobs
        self.uploads = uploads
        self.leases = leases
        self.holder = holder
        self.pulls = pulls
        #: seconds a fetch's lease lasts unless renewed
        self.fetch_lease_ttl = FETCH_LEASE_TTL
        #: seconds a fetch waits for its first puller to take a chunk
        self.follow_lag = follow_lag
        self._fetches: dict[str, asyncio.Future[None]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[object]] = {}
        #: (repository, tag) -> until when a failed re-check is not tried again
        self._stale: dict[tuple[str, str], float] = {}

    def route(self, name: str) -> Route | None:
        return self.routes.route(name)

    async def provenance(self, name: str, *, after: str | None = None,
                         limit: int | None = None) -> list[CachedTag]:
        """Where each cached tag of `name` came from and when, by tag: those after
        `after`, at most `limit` (`NameUnknown` when `name` is no pull-through cache)."""
        if self.route(name) is None:
            raise NameUnknown(f"{name} is not a pull-through cache", {"name": name})
        return await self.store.cached_tags(name, after=after, limit=limit)

    async def _once(self, key: tuple[str, str], make: Callable[[], Awaitable[object]]
                    ) -> object:
        """Run `make()` once for concurrent callers with the same key in this process."""
        running = self._inflight.get(key)
        if running is None:
            running = asyncio.ensure_future(make())
            self._inflight[key] = running
            running.add_done_callback(lambda _f: self._inflight.pop(key, None))
            running.add_done_callback(_retrieve)
        return await asyncio.shield(running)

    # ------------------------------------------------------------------ manifests

    async def manifest(self, route: Route, name: str, reference: str, *, payload: bool
                       ) -> Pulled:
        """The manifest `reference` of the cache `name`, from the cache or upstream;
        counted by how it was answered (`dockyard_proxy_manifest_pulls`)."""
        stats = metrics().requests_stats
        try:
            pulled, outcome = await self._manifest(route, name, reference, payload=payload)
        except _RecentMiss:
            stats.proxy_pull(route.rule.prefix, "not_found_cached")
            raise
        except ManifestUnknown:
            stats.proxy_pull(route.rule.prefix, "not_found")
            raise
        except UpstreamUnavailable:
            stats.proxy_pull(route.rule.prefix, "unavailable")
            raise
        stats.proxy_pull(route.rule.prefix, outcome)
        return pulled

    async def _manifest(self, route: Route, name: str, reference: str, *, payload: bool
                        ) -> tuple[Pulled, str]:
        """`manifest`'s answer and how it came: `hit` (the cache's, upstream not
        asked), `revalidated` (a tag past its TTL that upstream confirmed or moved),
        `stale` (upstream could not say) or `fetched` (not cached before)."""
        if not is_tag(reference):
            digest = str(Digest.parse(reference))
            record = await self.store.manifest(name, digest=digest, payload=payload)
            if record is not None:
                return Pulled(record), "hit"
            await self._not_found_lately(route, name, digest)
            await self._once((name, digest), lambda: self._fetch_digest(route, name, digest))
            record = await self.store.manifest(name, digest=digest, payload=payload)
            return Pulled(_found(record, name, reference)), "fetched"
        if not is_valid_tag(reference):
            raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {name}")
        tag = reference
        record = await self.store.manifest(name, tag=tag, payload=payload)
        stale = False
        if record is None:
            await self._not_found_lately(route, name, tag)
            await self._once((name, tag), lambda: self._fetch_tag(route, name, tag))
        else:
            cached = await self.store.cached_tag(name, tag)
            checked = cached.checked_at if cached is not None else 0.0
            if time.time() - checked < route.rule.tag_ttl.total_seconds():
                if self.pulls is not None:
                    self.pulls.record(name, tag)
                return Pulled(record), "hit"  # fresh: the common case, two indexed reads
            stale = self._still_stale(name, tag)
            if not stale:
                held = record.digest
                stale = bool(await self._once(
                    (name, tag), lambda: self._recheck(route, name, tag, held)))
                if stale:
                    self._mark_stale(name, tag)
        if self.pulls is not None:
            self.pulls.record(name, tag)
        if stale:
            return Pulled(_found(record, name, reference), stale), "stale"
        outcome = "fetched" if record is None else "revalidated"
        record = await self.store.manifest(name, tag=tag, payload=payload)
        return Pulled(_found(record, name, reference)), outcome

    def _mark_stale(self, name: str, tag: str) -> None:
        """Answer this tag stale without asking upstream for `STALE_RETRY` seconds. At
        most `STALE_KEPT` tags are remembered: the ones that ran out go first, and when
        all are fresh the tag is not remembered (its next pull asks upstream again), so
        a long outage over many tags does not grow the worker without bound.

        The dict is kept in expiry order (a tag marked again moves to its end; every
        entry lasts `STALE_RETRY`), so the ones that ran out are dropped from its front:
        a few steps per call, where a full map was rebuilt at every call."""
        now = time.monotonic()
        stale = self._stale
        stale.pop((name, tag), None)
        while stale:
            first = next(iter(stale))
            if stale[first] > now:
                break
            del stale[first]
        if len(stale) < STALE_KEPT:
            stale[name, tag] = now + STALE_RETRY

    def _still_stale(self, name: str, tag: str) -> bool:
        """Whether a re-check of this tag failed so recently that the cache does not ask
        upstream again yet (a blackholed upstream would hold every pull for its
        timeout)."""
        until = self._stale.get((name, tag))
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._stale[name, tag]
        return False

    async def _missing_lately(self, route: Route, name: str, key: str) -> bool:
        """Whether upstream said it has no `key` (a manifest's reference, or
        `BLOB_MISS` and a blob's digest) less than the rule's `not_found_ttl` ago
        (recorded for every node, in the metadata store): a pull of a name or tag that
        does not exist, retried by every node of a cluster that deploys it, asks
        upstream once per TTL, not once per pull."""
        if not route.rule.not_found_ttl:
            return False
        until = await self.store.proxy_miss(name, key)
        return until is not None and until > time.time()

    async def _not_found_lately(self, route: Route, name: str, reference: str) -> None:
        """`ManifestUnknown` when upstream lately said it has no manifest `reference`."""
        if await self._missing_lately(route, name, reference):
            raise _RecentMiss(f"manifest {_shown(reference)} is not in {route.where} "
                              "(as it answered lately)",
                              {"name": name, "reference": reference})

    async def _record_miss(self, route: Route, name: str, key: str) -> None:
        """Upstream has no `key` (as `_missing_lately` reads it): say so for the rule's
        `not_found_ttl`."""
        ttl = route.rule.not_found_ttl.total_seconds()
        if ttl:
            await self.store.record_proxy_miss(name, key, time.time() + ttl)

    async def _upstream_manifest(self, route: Route, name: str, reference: str
                                 ) -> tuple[bytes, str]:
        """The manifest upstream holds for `reference`; `ManifestUnknown` (recorded for
        the rule's `not_found_ttl`) when it has none."""
        fetched = await route.upstream.manifest(route.name, reference)
        if fetched is not None:
            return fetched
        await self._record_miss(route, name, reference)
        raise ManifestUnknown(f"manifest {_shown(reference)} is not in {route.where}",
                              {"name": name, "reference": reference})

    async def _fetch_digest(self, route: Route, name: str, digest: str) -> None:
        fetched = await self._upstream_manifest(route, name, digest)
        await self._store_manifest(route, name, None, fetched, Digest.parse(digest))

    async def _fetch_tag(self, route: Route, name: str, tag: str) -> None:
        fetched = await self._upstream_manifest(route, name, tag)
        await self._store_manifest(route, name, tag, fetched, None)

    async def forget_misses(self) -> int:
        """Drop the recorded "not found" answers that ran out; how many (a job)."""
        return await self.store.forget_proxy_misses(time.time())

    async def _recheck(self, route: Route, name: str, tag: str, cached: str) -> bool:
        """Re-check a cached tag upstream; True when it could not be (serve it stale)."""
        try:
            digest = await route.upstream.manifest_digest(route.name, tag)
        except UpstreamUnavailable as exc:
            log.warning("serving %s:%s from the cache, stale: %s", name, tag, exc.message)
            return True
        if digest is None:
            log.warning("%s:%s is gone from %s; serving the cached copy, stale", name, tag,
                        route.where)
            return True
        if digest == cached:
            await self.store.confirm_cached_tag(name, tag, digest)
            return False
        log.info("%s:%s moved upstream to %s", name, tag, digest)
        local = await self.store.manifest(name, digest=digest)
        if local is not None and local.payload is not None:
            fetched: tuple[bytes, str] | None = (local.payload, local.media_type)
        else:
            try:
                fetched = await route.upstream.manifest(route.name, digest)
            except UpstreamUnavailable as exc:
                log.warning("serving %s:%s from the cache, stale: %s", name, tag, exc.message)
                return True
        if fetched is None:
            return True
        await self._store_manifest(route, name, tag, fetched, Digest.parse(digest))
        return False

    async def _store_manifest(self, route: Route, name: str, tag: str | None,
                              fetched: tuple[bytes, str], wanted: Digest | None) -> None:
        from dockyard.core.manifests import new_manifest

        body, media_type = fetched
        try:
            new = new_manifest(body, media_type or None, wanted)
        except RegistryError as exc:  # upstream sent something we would not store
            raise UpstreamUnavailable(f"{route.where} sent a manifest we cannot use: "
                                      f"{exc.message}") from None
        await self.store.cache_manifest(name, new, tag, route.where + (f":{tag}" if tag else ""))

    # ------------------------------------------------------------------ blobs

    async def blob_info(self, route: Route, name: str, digest: Digest) -> BlobInfo:
        """A blob of a cache that `name` does not link yet: linked now when this
        registry holds its bytes already (upstream confirming `name` has it), else
        described from upstream (`remote`) for `open_blob` to fetch. Upstream's "not
        found" is remembered as a manifest's is (`not_found_ttl`): a client asking again
        and again for a blob upstream lacks spends no more of upstream's rate limit."""
        key = BLOB_MISS + str(digest)
        if await self._missing_lately(route, name, key):
            raise BlobUnknown(f"blob {digest} is not in {route.where} (as it answered "
                              "lately)", {"digest": str(digest)})
        size = await route.upstream.blob_size(route.name, str(digest))
        if size is None:
            await self._record_miss(route, name, key)
            raise BlobUnknown(f"blob {digest} is not in {route.where}", {"digest": str(digest)})
        if await self._adopt(name, digest, size):
            return BlobInfo(digest, size, repository=name)
        return BlobInfo(digest, size, remote=True, repository=name)

    async def _adopt(self, name: str, digest: Digest, size: int) -> bool:
        """Link bytes this registry holds already into `name` (the caller knows upstream
        has them there); False when they are not here (or not whole yet)."""
        row = await self.store.blob(str(digest))
        if row is None or row.size != size:
            return False
        # claimed before the bytes are looked at: a collection between the look and the
        # claim would delete them, and the claim then make a row for no bytes
        if not await self.store.claim_blob(str(digest), size):
            return False  # the collector is deleting these bytes
        if await self.blobs.size(digest) != size:
            return False
        await self.store.link_blob(name, str(digest), size)
        return True

    async def open_blob(self, route: Route, name: str, info: BlobInfo, *, whole: bool
                        ) -> Stream | None:
        """Fetch a `remote` blob into the cache. When this request starts the fetch and
        wants the `whole` blob, the bytes as they arrive; otherwise None once the blob
        is stored and linked (the caller then serves it as any local blob)."""
        key = str(info.digest)
        lease = f"proxy-blob:{key}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + route.rule.fetch_wait.total_seconds()
        pause = 0.02
        while True:
            running = self._fetches.get(key)
            if running is not None:  # this process fetches it: wait for that
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(running),
                                           max(0.0, deadline - loop.time()))
                if await self._adopt(name, info.digest, info.size):
                    return None
            elif await self.leases.acquire(lease, self.holder, self.fetch_lease_ttl):
                if await self._adopt(name, info.digest, info.size):  # finished meanwhile
                    await self.leases.release(lease, self.holder)
                    return None
                tee = _Tee(attached=whole, lag=self.follow_lag,
                           wait=route.rule.fetch_wait.total_seconds())
                task = asyncio.ensure_future(self._fetch(route, name, info, tee, lease))
                tee.done = task
                self._fetches[key] = task
                task.add_done_callback(lambda _t: self._fetches.pop(key, None))
                task.add_done_callback(_retrieve)
                if whole:
                    return Stream(tee.follow(), 0, info.size)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task),
                                           max(0.0, deadline - loop.time()))
                if task.done():
                    task.result()  # its failure, if it failed
                    return None
                raise UpstreamUnavailable(f"blob {key} is still being fetched from "
                                          f"{route.where}; try again later")
            elif await self._adopt(name, info.digest, info.size):
                return None  # another process stored it
            if loop.time() >= deadline:
                raise UpstreamUnavailable(f"blob {key} is still being fetched from "
                                          f"{route.where}; try again later")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _fetch(self, route: Route, name: str, info: BlobInfo, tee: _Tee, lease: str
                     ) -> None:
        """Stream the blob from upstream into the store (verified, then linked into
        `name`) under the fetch lease, feeding the first puller as it goes; counted
        in `dockyard_proxy_blob_fetches` and `dockyard_proxy_blob_fetched_bytes`."""
        m = metrics()
        try:
            ttl = self.fetch_lease_ttl
            async with renewing(lambda: self.leases.renew(lease, self.holder, ttl),
                                f"lease {lease}", ttl), \
                    route.upstream.blob(route.name, str(info.digest)) as chunks:
                await self.uploads.store_fetched(name, info.digest, tee.tee(chunks), info.size)
        except Exception as exc:
            error: RegistryError = exc if isinstance(exc, RegistryError) else \
                UpstreamUnavailable(f"fetching {info.digest} from {route.where} failed: {exc}")
            if not error.server_fault:  # refused as a client's bytes would be: here the
                # upstream sent them (wrong digest, size), not the puller (a 400 to a GET)
                error = UpstreamUnavailable(f"{route.where} sent blob {info.digest} "
                                            f"wrong: {error.message}")
            log.warning("fetching %s of %s from %s failed: %s", info.digest, name,
                        route.where, exc)
            m.proxy_fetches.labels(route.rule.prefix, "failed").inc()
            await tee.finish(error)
            if error is exc:
                raise
            raise error from exc
        except BaseException:
            await tee.finish(UpstreamUnavailable("the fetch was cancelled"))
            raise
        else:
            log.info("cached %s of %s from %s", info.digest, name, route.where)
            m.proxy_fetches.labels(route.rule.prefix, "stored").inc()
            m.proxy_fetched_bytes.labels(route.rule.prefix).inc(info.size)
            await tee.finish(None)
        finally:
            with contextlib.suppress(Exception):
                await to_the_end(self.leases.release(lease, self.holder))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a fetch's failure as seen (its waiters got it, if any)."""
    if not task.cancelled():
        task.exception()


class _RecentMiss(ManifestUnknown):
    """Upstream said it has no such manifest less than `not_found_ttl` ago."""


def _shown(reference: str) -> str:
    """A reference as an error message names it: a digest as it is, a tag quoted."""
    return reference if ":" in reference else repr(reference)


def _found(record: ManifestRecord | None, name: str, reference: str) -> ManifestRecord:
    if record is None:  # removed between our write and this read
        raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {name}",
                              {"name": name, "reference": reference[:200]})
    return record
