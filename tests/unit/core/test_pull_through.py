"""Pull-through blob fetches between two registries ("processes") sharing real stores.

Each `Registry` has its own metadata engines and lease holder over one SQLite file and
one data directory, as two workers do; the upstream is a fake that counts fetches and
holds the bytes back until told. The e2e proof is tests/e2e/test_pull_through.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from dockyard.config.proxy import ProxyRule
from dockyard.core.blobs import LocalFile, Stream
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.gc.collector import Collector
from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.leases import LeaseStore
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import ManifestBlobUnknown, UpstreamUnavailable
from dockyard.storage.blobstore import BlobStore
from tests.support.postgres import postgres_unavailable, running_postgres

DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = Digest.parse("sha256:" + hashlib.sha256(DATA).hexdigest())
RULE = ProxyRule(prefix="hub", upstream="https://up.example")


class FakeUpstream:
    """Serves `body` as blob DIGEST once `gate` is set; counts the fetches."""

    url = "https://up.example"

    def __init__(self, body: bytes = DATA) -> None:
        self.body = body
        self.gate = asyncio.Event()
        self.fetches = 0

    async def manifest_digest(self, name: str, tag: str) -> str | None:
        return None

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        return None

    async def blob_size(self, name: str, digest: str) -> int | None:
        return len(DATA) if digest == str(DIGEST) else None

    @asynccontextmanager
    async def blob(self, name: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        self.fetches += 1

        async def chunks() -> AsyncIterator[bytes]:
            yield self.body[:1000]
            await self.gate.wait()
            for i in range(1000, len(self.body), 65536):
                yield self.body[i:i + 65536]

        yield chunks()

    async def close(self) -> None:
        pass


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


async def open_registry(sqlite_url: str, data: Path, upstream: FakeUpstream,
                        rule: ProxyRule = RULE, follow_lag: float = 60.0) -> Registry:
    engines = open_engines(sqlite_url)
    registry = Registry.build(MetadataStore(engines), BlobStore(FilesystemDriver(data)),
                              LeaseStore(engines), delete_enabled=True,
                              manifest_max_size=1 << 20, proxies=[(rule, upstream)],
                              follow_lag=follow_lag)
    registry.cache.fetch_lease_ttl = 0.6
    return registry


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if (why := postgres_unavailable()) is not None:
        pytest.skip(why)
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def two(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path,
              upstream: FakeUpstream) -> AsyncIterator[tuple[Registry, Registry]]:
    """Two registries on one database (SQLite, or a fresh PostgreSQL database)."""
    url = sqlite_url
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        name = f"pt_{uuid.uuid4().hex[:12]}"
        parsed = make_url(server)
        conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(
            hide_password=False))
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        url = parsed.set(database=name).render_as_string(hide_password=False)
        engines = open_engines(url)
        await migrate(engines)
        await engines.dispose()
    a = await open_registry(url, tmp_path / "data", upstream)
    b = await open_registry(url, tmp_path / "data", upstream)
    yield a, b
    await a.close()
    await b.close()


async def read(body: Stream) -> bytes:
    return b"".join([chunk async for chunk in body.chunks])


async def test_two_processes_fetch_a_blob_once_the_first_streams_it(
        two: tuple[Registry, Registry], upstream: FakeUpstream) -> None:
    a, b = two
    info_a = await a.blobs.stat("hub/x", DIGEST)
    assert info_a.remote
    first = await a.blobs.open(info_a, 0, len(DATA))
    assert isinstance(first, Stream)  # the bytes as they arrive
    info_b = await b.blobs.stat("hub/x", DIGEST)
    waiting = asyncio.create_task(b.blobs.open(info_b, 0, len(DATA)))
    await asyncio.sleep(1.0)  # more than the lease's ttl: the fetch renews it
    assert not waiting.done()
    upstream.gate.set()
    assert await read(first) == DATA
    second = await waiting
    assert isinstance(second, LocalFile)
    assert second.path.read_bytes() == DATA
    assert upstream.fetches == 1
    # stored and linked: served locally from now on, in the other repository once
    # upstream confirms it has it there
    assert not (await a.blobs.stat("hub/x", DIGEST)).remote
    assert not (await b.blobs.stat("hub/y", DIGEST)).remote
    assert upstream.fetches == 1


async def test_a_fetcher_that_died_is_replaced(
        two: tuple[Registry, Registry], upstream: FakeUpstream) -> None:
    _a, b = two
    leases = b.cache.leases
    assert await leases.acquire(f"proxy-blob:{DIGEST}", "elsewhere:1:dead:", 0.5)
    upstream.gate.set()
    info = await b.blobs.stat("hub/x", DIGEST)
    body = await b.blobs.open(info, 0, len(DATA))  # waits for the lease to run out
    assert isinstance(body, Stream)
    assert await read(body) == DATA
    assert upstream.fetches == 1


async def test_a_wait_for_a_fetch_in_this_process_ends_at_fetch_wait(
        sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    rule = ProxyRule(prefix="hub", upstream="https://up.example",
                     fetch_wait=timedelta(seconds=0.5))
    registry = await open_registry(sqlite_url, tmp_path / "data", upstream, rule)
    try:
        info = await registry.blobs.stat("hub/x", DIGEST)
        first = await registry.blobs.open(info, 0, len(DATA))  # upstream holds back
        assert isinstance(first, Stream)
        with pytest.raises(UpstreamUnavailable, match="still being fetched"):
            await asyncio.wait_for(registry.blobs.open(info, 0, len(DATA)), 5)
        upstream.gate.set()
        assert await read(first) == DATA
    finally:
        await registry.close()


async def test_a_first_puller_that_takes_nothing_is_cut_off_and_the_fetch_goes_on(
        sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    registry = await open_registry(sqlite_url, tmp_path / "data", upstream,
                                   follow_lag=0.3)
    try:
        info = await registry.blobs.stat("hub/x", DIGEST)
        first = await registry.blobs.open(info, 0, len(DATA))
        assert isinstance(first, Stream)
        upstream.gate.set()  # 16 chunks come; the first pull's queue holds 8
        second = await asyncio.wait_for(registry.blobs.open(info, 0, len(DATA)), 5)
        assert isinstance(second, LocalFile)
        assert second.path.read_bytes() == DATA
        with pytest.raises(UpstreamUnavailable, match="took no byte"):
            await read(first)  # what it had queued, then the cut: never a clean end
        assert upstream.fetches == 1
    finally:
        await registry.close()


async def _drain(chunks: AsyncIterator[bytes], into: bytearray) -> None:
    async for chunk in chunks:
        into += chunk


async def test_bytes_that_do_not_match_the_digest_are_not_kept(
        sqlite_url: str, tmp_path: Path) -> None:
    bad = FakeUpstream(body=DATA[:-1] + b"x")
    bad.gate.set()
    registry = await open_registry(sqlite_url, tmp_path / "data", bad)
    try:
        info = await registry.blobs.stat("hub/x", DIGEST)
        body = await registry.blobs.open(info, 0, len(DATA))
        assert isinstance(body, Stream)
        got = bytearray()
        # the upstream's fault: 503, not a 400 as if the puller's GET were wrong
        with pytest.raises(UpstreamUnavailable, match=r"sent blob .* wrong: content digest"):
            await _drain(body.chunks, got)
        assert len(got) < len(DATA)  # the last piece held back: never the whole body
        assert (await registry.blobs.stat("hub/x", DIGEST)).remote  # nothing stored
        assert not list((tmp_path / "data").glob("blobs/**/data"))
    finally:
        await registry.close()


async def test_a_push_still_needs_its_references_a_cache_does_not(
        two: tuple[Registry, Registry]) -> None:
    a, _ = two
    manifest = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
                b'"digest":"' + str(DIGEST).encode() + b'","size":1},"layers":[]}')
    with pytest.raises(ManifestBlobUnknown):
        await a.manifests.put("local/x", "v1", manifest,
                              "application/vnd.oci.image.manifest.v1+json")
    cached = FakeUpstream()
    cached.manifest = _serving(manifest)  # type: ignore[method-assign]
    a.cache.routes.rules[0] = (RULE, cached)
    pulled = await a.manifests.pull("hub/x", "v1")
    assert pulled.record.payload == manifest
    assert not pulled.stale


def _serving(body: bytes):  # type: ignore[no-untyped-def]
    async def manifest(name: str, reference: str) -> tuple[bytes, str] | None:
        return body, "application/vnd.oci.image.manifest.v1+json"
    return manifest


MANIFEST = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
            b'"digest":"' + str(DIGEST).encode() + b'","size":1},"layers":[]}')


class DownUpstream(FakeUpstream):
    """Serves MANIFEST once, then cannot be reached; counts the re-checks."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        return MANIFEST, "application/vnd.oci.image.manifest.v1+json"

    async def manifest_digest(self, name: str, tag: str) -> str | None:
        self.checks += 1
        raise UpstreamUnavailable("upstream is down")


async def test_a_failed_recheck_is_not_retried_by_every_pull(
        sqlite_url: str, tmp_path: Path) -> None:
    down = DownUpstream()
    engines = open_engines(sqlite_url)
    rule = ProxyRule(prefix="hub", upstream="https://up.example", tag_ttl=timedelta(0))
    registry = Registry.build(MetadataStore(engines), BlobStore(FilesystemDriver(tmp_path)),
                              LeaseStore(engines), delete_enabled=True,
                              manifest_max_size=1 << 20, proxies=[(rule, down)])
    try:
        assert not (await registry.manifests.pull("hub/x", "v1")).stale  # fetched
        pulls = [await registry.manifests.pull("hub/x", "v1") for _ in range(5)]
        assert all(p.stale and p.record.payload == MANIFEST for p in pulls)
        assert down.checks == 1
    finally:
        await registry.close()


class SizedUpstream(FakeUpstream):
    """Serves its own `body` under that body's digest."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.digest = Digest.parse("sha256:" + hashlib.sha256(body).hexdigest())

    async def blob_size(self, name: str, digest: str) -> int | None:
        return len(self.body) if digest == str(self.digest) else None


async def test_a_first_puller_stalled_with_the_queue_exactly_full_does_not_pin_the_fetch(
        sqlite_url: str, tmp_path: Path) -> None:
    # 8 chunks: the queue takes them all, so the fetch never waited mid-way; its end
    # marker then waited for room without a bound, and the fetch stayed in flight
    upstream = SizedUpstream(bytes(1000 + 7 * 65536))
    registry = await open_registry(sqlite_url, tmp_path / "data", upstream, follow_lag=0.3)
    try:
        info = await registry.blobs.stat("hub/x", upstream.digest)
        first = await registry.blobs.open(info, 0, info.size)
        assert isinstance(first, Stream)
        upstream.gate.set()
        second = await asyncio.wait_for(registry.blobs.open(info, 0, info.size), 5)
        assert isinstance(second, LocalFile)
        assert second.path.read_bytes() == upstream.body
        with pytest.raises(UpstreamUnavailable, match="took no byte"):
            await read(first)
    finally:
        await registry.close()


class CollectingWhileLooking:
    """The blob store, but a collection runs right after the size of a blob is read:
    the window between a look at the bytes and what is done with the answer."""

    def __init__(self, registry: Registry, inner: BlobStore) -> None:
        self.registry, self.inner = registry, inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def size(self, digest: Digest) -> int | None:
        found = await self.inner.size(digest)
        await Collector(self.registry, grace=1.0).run()
        return found


async def test_bytes_a_collection_removes_while_the_cache_adopts_them_are_fetched_again(
        sqlite_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    # the cache looked at the stored bytes, then claimed them: a collection in between
    # deleted them, the claim made their row again and the cache linked a blob with no
    # bytes (served as missing for ever, never fetched again)
    upstream.gate.set()
    registry = await open_registry(sqlite_url, tmp_path / "data", upstream)
    try:
        await registry.uploads.upload("local/other", None, DIGEST, _once(DATA),
                                      Chunk(length=len(DATA)))
        await registry.blobs.delete("local/other", DIGEST)  # garbage once 1 s old
        await asyncio.sleep(1.2)
        registry.cache.blobs = CollectingWhileLooking(  # type: ignore[assignment]
            registry, registry.cache.blobs)
        info = await registry.blobs.stat("hub/x", DIGEST)
        if not info.remote:  # adopted: its bytes must be there
            assert list((tmp_path / "data").glob("blobs/**/data"))
        body = await registry.blobs.open(await registry.blobs.stat("hub/x", DIGEST), 0,
                                         len(DATA))
        got = await read(body) if isinstance(body, Stream) else Path(body.path).read_bytes()
        assert got == DATA
    finally:
        await registry.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
