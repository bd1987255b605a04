"""UploadService over real stores: chunked, resumable, multi-process uploads with verification."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.uploads import Chunk, SessionCaps, UploadService
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    TooManyRequests,
)
from dockyard.storage import layout
from dockyard.storage.blobstore import BlobStore
from dockyard.storage.buffers import BufferPool

REPO = "library/test"

Factory = Callable[[], Awaitable[UploadService]]


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def split(data: bytes, size: int) -> Iterable[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.fixture
async def make_service(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Factory]:
    """Build UploadServices over the same files, each with its own stores (one per process)."""
    url = sqlite_url
    first = open_engines(url)
    await migrate(first)
    stores: list[MetadataStore] = []

    async def build() -> UploadService:
        store = MetadataStore(first if not stores else open_engines(url))
        stores.append(store)
        blobs = BlobStore(FilesystemDriver(tmp_path / "data"), buffer_size=256)
        return UploadService(store, blobs)

    yield build
    for store in stores:
        await store.close()


@pytest.fixture
async def service(make_service: Factory) -> UploadService:
    return await make_service()


async def read_blob(service: UploadService, digest: Digest) -> bytes:
    return b"".join([c async for c in service.blobs.read(digest)])


async def assert_published(service: UploadService, digest: Digest, data: bytes) -> None:
    assert await read_blob(service, digest) == data
    record = await service.store.blob_in_repository(REPO, str(digest))
    assert record is not None
    assert record.size == len(data)


async def assert_no_blob(service: UploadService, digest: Digest) -> None:
    assert await service.blobs.size(digest) is None
    assert await service.store.blob(str(digest)) is None
    assert await service.store.blob_in_repository(REPO, str(digest)) is None


# --- sessions ----------------------------------------------------------------

async def test_start(service: UploadService) -> None:
    record = await service.start(REPO)
    assert record.repository == REPO
    assert record.offset == 0
    assert str(uuid.UUID(record.id)) == record.id
    assert await service.blobs.upload_size(record.id) == 0
    assert await service.get(REPO, record.id) == await service.store.upload(record.id)


async def test_session_caps(service: UploadService) -> None:
    service.caps = SessionCaps(total=3, per_owner=2, retry_after=7)
    first = await service.start(REPO, "user:a")
    await service.start(REPO, "user:a")
    with pytest.raises(TooManyRequests) as info:
        await service.start(REPO, "user:a")
    assert (info.value.code, info.value.retry_after) == ("TOOMANYREQUESTS", 7)
    assert "you have 2 upload sessions open" in info.value.message
    await service.start(REPO, "user:b")
    with pytest.raises(TooManyRequests, match="the registry has 3"):
        await service.start(REPO, "user:c")
    await service.cancel(REPO, first.id)  # a cancelled session frees its slot
    await service.start(REPO, "user:c")
    data = b"payload"
    with pytest.raises(TooManyRequests):
        await service.start(REPO, "user:c")
    done = next(iter(await service.store.upload_ids()))
    await service.finish(REPO, done, Digest.of(data), body(data), Chunk(length=len(data)))
    await service.start(REPO, "user:c")  # so does a finished one


async def test_get_unknown_sessions(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(BlobUploadUnknown):
        await service.get("other/repo", record.id)  # another repository's session
    with pytest.raises(BlobUploadUnknown):
        await service.get(REPO, str(uuid.uuid4()))
    for bad in ["not-a-uuid", record.id.upper(), "../../etc", ""]:
        with pytest.raises(BlobUploadUnknown):
            await service.get(REPO, bad)


async def test_append_to_another_repositorys_session(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(BlobUploadUnknown):
        await service.append("other/repo", record.id, body(b"x"), Chunk())


async def test_requests_for_unknown_sessions_keep_nothing_in_memory(
        service: UploadService) -> None:
    # each unknown id left an entry in the process's session table for a day (until
    # the idle sweep): memory grew with requests
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"abc"), Chunk())
    for _ in range(200):
        with pytest.raises(BlobUploadUnknown):
            await service.append(REPO, str(uuid.uuid4()), body(b"x"), Chunk())
        with pytest.raises(BlobUploadUnknown):
            await service.cancel(REPO, str(uuid.uuid4()))
    with pytest.raises(BlobUploadUnknown):  # a real session asked for elsewhere
        await service.append("other/repo", record.id, body(b"x"), Chunk())
    assert set(service._local) <= {record.id}
    await service.append(REPO, record.id, body(b"def"), Chunk())
    assert (await service.get(REPO, record.id)).offset == 6


# --- chunked uploads ---------------------------------------------------------

async def test_chunked_upload_with_content_ranges(service: UploadService) -> None:
    data = os.urandom(3000)
    record = await service.start(REPO)
    offset = 0
    for piece in split(data, 700):
        record = await service.append(
            REPO, record.id, body(*split(piece, 100)),
            Chunk(start=offset, end=offset + len(piece) - 1, length=len(piece)),
        )
        offset += len(piece)
        assert record.offset == offset
        assert (await service.get(REPO, record.id)).offset == offset
    digest = Digest.of(data)
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == len(data)
    await assert_published(service, digest, data)
    assert await service.store.upload(record.id) is None
    assert await service.blobs.upload_size(record.id) is None


async def test_chunks_without_ranges(service: UploadService) -> None:
    record = await service.start(REPO)
    for piece in (b"abc", b"", b"defgh"):
        record = await service.append(REPO, record.id, body(piece), Chunk())
    assert record.offset == 8
    digest = Digest.of(b"abcdefgh")
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == 8
    await assert_published(service, digest, b"abcdefgh")


async def test_finish_with_last_chunk(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"first "), Chunk(start=0, length=6))
    digest = Digest.of(b"first last")
    size = await service.finish(REPO, record.id, digest, body(b"last"), Chunk(start=6, length=4))
    assert size == 10
    await assert_published(service, digest, b"first last")


async def test_monolithic_finish(service: UploadService) -> None:
    data = os.urandom(1000)
    record = await service.start(REPO)
    digest = Digest.of(data)
    assert await service.finish(REPO, record.id, digest, body(*split(data, 333)),
                                Chunk(length=1000)) == 1000
    await assert_published(service, digest, data)


async def test_empty_blob(service: UploadService) -> None:
    record = await service.start(REPO)
    digest = Digest.of(b"")
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == 0
    await assert_published(service, digest, b"")


async def test_session_gone_after_finish(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.finish(REPO, record.id, Digest.of(b""), None, Chunk())
    with pytest.raises(BlobUploadUnknown):
        await service.append(REPO, record.id, body(b"more"), Chunk())
    with pytest.raises(BlobUploadUnknown):
        await service.finish(REPO, record.id, Digest.of(b""), None, Chunk())


# --- ranges and sizes --------------------------------------------------------

@pytest.mark.parametrize("start", [0, 3, 5, 100])
async def test_out_of_order_start_raises_range_invalid(service: UploadService, start: int
                                                       ) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"1234"), Chunk(start=0, end=3))
    with pytest.raises(RangeInvalid) as info:
        await service.append(REPO, record.id, body(b"zz"), Chunk(start=start, length=2))
    assert info.value.offset == 4
    assert info.value.code == "RANGE_INVALID"
    assert (await service.get(REPO, record.id)).offset == 4
    # the session is intact: the right chunk still lands
    await service.append(REPO, record.id, body(b"56"), Chunk(start=4, end=5))
    digest = Digest.of(b"123456")
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == 6
    await assert_published(service, digest, b"123456")


async def test_range_end_before_start(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(RangeInvalid) as info:
        await service.append(REPO, record.id, body(b"x"), Chunk(start=0, end=-5))
    assert info.value.offset == 0


async def test_range_and_length_disagree(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(RangeInvalid):
        await service.append(REPO, record.id, body(b"abcd"), Chunk(start=0, end=3, length=5))
    assert (await service.get(REPO, record.id)).offset == 0


async def test_short_body_raises_size_invalid_and_keeps_offset(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"good"), Chunk())
    with pytest.raises(SizeInvalid):
        await service.append(REPO, record.id, body(b"short"), Chunk(start=4, length=50))
    assert (await service.get(REPO, record.id)).offset == 4
    # the stray bytes are discarded and the hash is rebuilt
    await service.append(REPO, record.id, body(b"!"), Chunk(start=4, length=1))
    digest = Digest.of(b"good!")
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == 5
    await assert_published(service, digest, b"good!")


async def test_long_body_raises_size_invalid_and_keeps_offset(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(SizeInvalid):
        await service.append(REPO, record.id, body(b"x" * 300, b"y" * 300), Chunk(length=400))
    assert (await service.get(REPO, record.id)).offset == 0
    digest = Digest.of(b"ok")
    assert await service.finish(REPO, record.id, digest, body(b"ok"), Chunk(length=2)) == 2
    await assert_published(service, digest, b"ok")


async def test_client_disconnect_mid_chunk(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"kept"), Chunk())

    async def broken() -> AsyncIterator[bytes]:
        yield b"lost" * 200
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await service.append(REPO, record.id, broken(), Chunk())
    assert (await service.get(REPO, record.id)).offset == 4
    digest = Digest.of(b"kept+more")
    assert await service.finish(REPO, record.id, digest, body(b"+more"), Chunk(start=4)) == 9
    await assert_published(service, digest, b"kept+more")


async def test_a_cut_chunk_then_a_put_without_body_publishes_the_recorded_bytes(
        service: UploadService) -> None:
    # the bytes past the recorded offset (never counted, never hashed) went into the
    # blob with the others: its file longer than its size, its hash not its digest
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"kept"), Chunk())
    with pytest.raises(SizeInvalid):
        await service.append(REPO, record.id, body(b"stray" * 100), Chunk(start=4, length=999))
    digest = Digest.of(b"kept")
    assert await service.finish(REPO, record.id, digest, None, Chunk()) == 4
    await assert_published(service, digest, b"kept")
    assert await service.blobs.driver.stat(layout.blob_key(digest)) == 4


async def test_the_empty_blob_by_a_put_without_body(service: UploadService) -> None:
    record = await service.start(REPO)
    digest = Digest.of(b"")
    assert await service.finish(REPO, record.id, digest, None, Chunk(length=0)) == 0
    await assert_published(service, digest, b"")


# --- verification ------------------------------------------------------------

async def test_wrong_digest_leaves_no_blob(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"actual bytes"), Chunk())
    claimed = Digest.of(b"other bytes")
    with pytest.raises(DigestInvalid) as info:
        await service.finish(REPO, record.id, claimed, None, Chunk())
    assert info.value.code == "DIGEST_INVALID"
    await assert_no_blob(service, claimed)
    await assert_no_blob(service, Digest.of(b"actual bytes"))
    assert [k async for k in service.blobs.driver.list(layout.BLOBS)] == []


async def test_wrong_digest_with_last_chunk_leaves_no_blob(service: UploadService) -> None:
    record = await service.start(REPO)
    claimed = Digest.of(b"expected")
    with pytest.raises(DigestInvalid):
        await service.finish(REPO, record.id, claimed, body(b"received"), Chunk())
    await assert_no_blob(service, claimed)


async def test_wrong_sha512_digest(service: UploadService) -> None:
    record = await service.start(REPO)
    claimed = Digest.of(b"expected", "sha512")
    with pytest.raises(DigestInvalid):
        await service.finish(REPO, record.id, claimed, body(b"received"), Chunk())
    await assert_no_blob(service, claimed)


async def test_sha512_finish(service: UploadService) -> None:
    data = os.urandom(2000)
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(*split(data[:1500], 500)), Chunk(start=0))
    digest = Digest.of(data, "sha512")
    assert digest.hex == hashlib.sha512(data).hexdigest()
    size = await service.finish(REPO, record.id, digest, body(data[1500:]), Chunk(start=1500))
    assert size == 2000
    await assert_published(service, digest, data)
    assert service.blobs.driver.local_path(layout.blob_key(digest)) is not None
    assert await service.blobs.size(Digest.of(data)) is None  # not under sha256


# --- another process continues the session -----------------------------------

async def test_second_worker_continues_session(make_service: Factory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = await make_service(), await make_service()
    assert a.store is not b.store
    rehashed: list[tuple[str, int, int]] = []  # (worker, hashed from, up to)
    for svc, label in ((a, "a"), (b, "b")):
        original = svc.blobs.rehash

        async def spy(session_id: str, offset: int, algorithm: str, state=None, *,
                      _orig=original, _label=label):  # type: ignore[no-untyped-def]
            rehashed.append((_label, state.offset if state is not None else 0, offset))
            return await _orig(session_id, offset, algorithm, state)

        monkeypatch.setattr(svc.blobs, "rehash", spy)

    data = os.urandom(4000)
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(*split(data[:1000], 300)), Chunk(start=0))
    await a.append(REPO, record.id, body(data[1000:1500]), Chunk(start=1000))
    # worker b has never seen the session: it rehashes the 1500 stored bytes, once
    record = await b.append(REPO, record.id, body(data[1500:2500]), Chunk(start=1500))
    assert record.offset == 2500
    await b.append(REPO, record.id, body(data[2500:3000]), Chunk(start=2500))
    # back on worker a, whose hash state is now stale
    await a.append(REPO, record.id, body(data[3000:3500]), Chunk(start=3000))
    digest = Digest.of(data)
    assert await b.finish(REPO, record.id, digest, body(data[3500:]), Chunk(start=3500)) == 4000
    await assert_published(a, digest, data)
    # a worker reads back only the bytes another worker appended since it last hashed
    assert [r for r in rehashed if r[2] > 0] == [("b", 0, 1500), ("a", 1500, 3000),
                                                  ("b", 3000, 3500)]


async def test_second_worker_finishes_with_wrong_digest(make_service: Factory) -> None:
    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"payload"), Chunk())
    wrong = Digest.of(b"payloaD")
    with pytest.raises(DigestInvalid):
        await b.finish(REPO, record.id, wrong, None, Chunk())
    await assert_no_blob(b, wrong)
    # a failed verification ends the session with its bytes (as Distribution does)
    right = Digest.of(b"payload")
    with pytest.raises(BlobUploadUnknown):
        await b.finish(REPO, record.id, right, None, Chunk())
    await assert_no_blob(a, right)
    assert await a.blobs.upload_size(record.id) is None


async def test_second_worker_sha512(make_service: Factory) -> None:
    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"x" * 700), Chunk())
    digest = Digest.of(b"x" * 700, "sha512")
    assert await b.finish(REPO, record.id, digest, None, Chunk()) == 700
    await assert_published(b, digest, b"x" * 700)


async def test_stale_worker_cannot_move_offset_back(make_service: Factory) -> None:
    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"aaaa"), Chunk())
    await b.append(REPO, record.id, body(b"bbbb"), Chunk())
    # a client retrying an old chunk on worker a is refused with the real offset
    with pytest.raises(RangeInvalid) as info:
        await a.append(REPO, record.id, body(b"cccc"), Chunk(start=4))
    assert info.value.offset == 8


async def test_bytes_gone_behind_the_session(make_service: Factory) -> None:
    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"abc"), Chunk())
    await a.blobs.delete_upload(record.id)
    with pytest.raises(BlobUploadUnknown):
        await b.append(REPO, record.id, body(b"def"), Chunk())


def collect_before_the_link(service: UploadService, *, bytes_too: bool) -> list[str]:
    """Make the collector take the blob between a push's claim and its link, as a grace
    shorter than that time lets it: the first link of each digest runs the collector's
    deletion first (the row, and the bytes when `bytes_too`: the deletion came after the
    publish; else before it). Returns the digests it took."""
    life, taken = LifecycleStore(service.store), []
    link = service.store.link_blob

    async def racing(name: str, digest: str, size: int, **kwargs: Any) -> bool:
        if digest not in taken:
            taken.append(digest)
            assert await life.begin_blob_deletion(digest, time.time() + 10) == size
            if bytes_too:
                assert not await service.blobs.delete_blobs([Digest.parse(digest)])
            await life.end_blob_deletion(digest)
        return await link(name, digest, size, **kwargs)

    service.store.link_blob = racing  # type: ignore[method-assign]
    return taken


async def push(service: UploadService, session: str, data: bytes, chunked: bool) -> None:
    """Push `data` into `session`: one PUT (the small path), or a PATCH then the PUT."""
    start = 500 if chunked else 0
    if chunked:
        await service.append(REPO, session, body(data[:start]), Chunk(start=0, length=start))
    await service.finish(REPO, session, Digest.of(data), body(data[start:]),
                         Chunk(start=start, length=len(data) - start))


@pytest.mark.parametrize("chunked", [False, True])
async def test_bytes_published_after_the_collector_took_the_claim_are_linked(
        service: UploadService, chunked: bool) -> None:
    """The collector removed the claimed row and the old bytes before this push
    published its own: the push claims again and links what it published."""
    data = os.urandom(1000)
    taken = collect_before_the_link(service, bytes_too=False)
    record = await service.start(REPO)
    await push(service, record.id, data, chunked)
    assert taken == [str(Digest.of(data))]
    await assert_published(service, Digest.of(data), data)
    with pytest.raises(BlobUploadUnknown):
        await service.get(REPO, record.id)


@pytest.mark.parametrize("chunked", [False, True])
async def test_bytes_the_collector_removed_after_the_publish_end_the_upload(
        service: UploadService, chunked: bool) -> None:
    """The collector took the bytes this push had published: the push fails with
    BLOB_UPLOAD_UNKNOWN saying why (it raised the database's foreign key violation, a
    500), and leaves no session, no link and no bytes behind."""
    data = os.urandom(1000)
    digest = Digest.of(data)
    collect_before_the_link(service, bytes_too=True)
    record = await service.start(REPO)
    with pytest.raises(BlobUploadUnknown, match=r"garbage-collected .* push it again"):
        await push(service, record.id, data, chunked)
    with pytest.raises(BlobUploadUnknown):
        await service.get(REPO, record.id)
    assert await service.store.blob_in_repository(REPO, str(digest)) is None
    assert await service.blobs.size(digest) is None
    assert [s async for s in service.blobs.upload_sessions()] == []


async def test_concurrent_appends_on_two_workers_never_publish_corrupt_blob(
    make_service: Factory,
) -> None:
    a, b = await make_service(), await make_service()
    a.blobs.buffers = b.blobs.buffers = BufferPool(4)
    record = await a.start(REPO)
    first_written, b_done = asyncio.Event(), asyncio.Event()

    async def slow_a() -> AsyncIterator[bytes]:
        yield b"AAAA"
        first_written.set()
        await b_done.wait()
        yield b"AAAA"

    task = asyncio.create_task(a.append(REPO, record.id, slow_a(), Chunk()))
    await first_written.wait()
    for _ in range(500):  # until a's first buffer reaches the file
        if await a.blobs.upload_size(record.id) == 4:
            break
        await asyncio.sleep(0.01)
    # the session is being written by a: b must be refused rather than interleave
    with contextlib.suppress(RangeInvalid):
        await b.append(REPO, record.id, body(b"BBBBBBBB"), Chunk())
    b_done.set()
    with contextlib.suppress(RangeInvalid):
        await task
    claimed = Digest.of(b"BBBBBBBB")
    try:
        await b.finish(REPO, record.id, claimed, None, Chunk())
    except DigestInvalid:
        await assert_no_blob(b, claimed)
        return
    assert Digest.of(await read_blob(b, claimed)) == claimed


# --- cancel and purge --------------------------------------------------------

async def test_cancel(service: UploadService) -> None:
    record = await service.start(REPO)
    await service.append(REPO, record.id, body(b"abc"), Chunk())
    await service.cancel(REPO, record.id)
    assert await service.store.upload(record.id) is None
    assert await service.blobs.upload_size(record.id) is None
    with pytest.raises(BlobUploadUnknown):
        await service.get(REPO, record.id)
    with pytest.raises(BlobUploadUnknown):
        await service.cancel(REPO, record.id)


async def test_cancel_from_another_repository_refused(service: UploadService) -> None:
    record = await service.start(REPO)
    with pytest.raises(BlobUploadUnknown):
        await service.cancel("other/repo", record.id)
    assert await service.store.upload(record.id) is not None


async def test_purge_removes_only_idle_sessions(service: UploadService) -> None:
    old = await service.start(REPO)
    await service.append(REPO, old.id, body(b"old"), Chunk())
    await asyncio.sleep(0.2)
    fresh = await service.start(REPO)
    assert await service.purge(max_idle=0.1) == 1
    assert await service.store.upload(old.id) is None
    assert await service.blobs.upload_size(old.id) is None
    assert await service.store.upload(fresh.id) is not None
    assert await service.blobs.upload_size(fresh.id) == 0
    assert await service.purge(max_idle=3600) == 0


async def test_purge_sweeps_upload_bytes_without_a_session(service: UploadService,
                                                           tmp_path: Path) -> None:
    """Bytes with no session row go on the second sweep, in this layout and the one
    earlier builds used (uploads/<id>/data); a live session's bytes stay."""
    live = await service.start(REPO)
    uploads = tmp_path / "data" / "uploads"
    flat, nested = str(uuid.uuid4()), str(uuid.uuid4())
    (uploads / flat).write_bytes(b"left by a crash")
    (uploads / nested).mkdir()
    (uploads / nested / "data").write_bytes(b"left by an older build")
    assert await service.purge(max_idle=3600) == 0  # first sight: may be a session starting
    assert (uploads / flat).exists()
    assert (uploads / nested).exists()
    assert await service.purge(max_idle=3600) == 2
    assert sorted(p.name for p in uploads.iterdir()) == [live.id]


async def test_forget_idle_drops_only_abandoned_hash_state(service: UploadService) -> None:
    """A session its client abandoned mid-way leaves no state in the process for good."""
    abandoned = await service.start(REPO)
    await service.append(REPO, abandoned.id, body(b"half"), Chunk())
    await asyncio.sleep(0.2)
    active = await service.start(REPO)
    await service.append(REPO, active.id, body(b"going on"), Chunk())
    assert service.forget_idle(0.1) == 1
    assert service.forget_idle(0.1) == 0
    # the abandoned session still resumes: its hash is rebuilt from the stored bytes
    await service.finish(REPO, abandoned.id, Digest.of(b"half, done"), body(b", done"),
                         Chunk())


async def test_a_request_waits_briefly_for_a_session_another_process_lets_go(
        make_service: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk retried right after its client dropped the first try still lands."""
    from dockyard.core import uploads as uploads_module

    a, b = await make_service(), await make_service()
    record = await a.start(REPO)

    async def stalled(seconds: float) -> AsyncIterator[bytes]:
        await asyncio.sleep(seconds)
        return
        yield b""

    async def hold_for(seconds: float) -> None:
        """A request of process a whose client sends nothing for `seconds`."""
        await a.append(REPO, record.id, stalled(seconds), Chunk())

    holder = asyncio.create_task(hold_for(0.3))
    await asyncio.sleep(0.05)
    assert (await b.append(REPO, record.id, body(b"abc"), Chunk(start=0))).offset == 3
    await holder
    monkeypatch.setattr(uploads_module, "BUSY_WAIT", 0.2)
    holder = asyncio.create_task(hold_for(1.0))
    await asyncio.sleep(0.05)
    with pytest.raises(RangeInvalid) as info:
        await b.append(REPO, record.id, body(b"def"), Chunk(start=3))
    assert info.value.offset == 3
    await holder


async def test_a_request_of_the_same_process_waits_briefly_too(
        make_service: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests on one worker: the second waits `BUSY_WAIT` for the session, then
    gets 416 with the offset, as from another process; it waited for as long as the
    first lived (a client sending a byte now and then held it for good)."""
    from dockyard.core import uploads as uploads_module

    monkeypatch.setattr(uploads_module, "BUSY_WAIT", 0.2)
    a = await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"abc"), Chunk())
    writing = asyncio.create_task(
        a.append(REPO, record.id, stalled_body(1.5, b"d", b"e"), Chunk(start=3)))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RangeInvalid) as info:
        await a.append(REPO, record.id, body(b"xyz"), Chunk(start=3))
    assert info.value.offset == 3
    with pytest.raises(RangeInvalid):  # nor does a cancel wait for it
        await a.cancel(REPO, record.id)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert not writing.done()
    assert (await writing).offset == 5  # the writer was not disturbed
    digest = Digest.of(b"abcde")
    assert await a.finish(REPO, record.id, digest, None, Chunk()) == 5
    await assert_published(a, digest, b"abcde")


# --- holds in the metadata store ---------------------------------------------

async def stalled_body(seconds: float, *chunks: bytes) -> AsyncIterator[bytes]:
    """A body whose client sends `chunks` spread over `seconds`."""
    pause = seconds / (len(chunks) + 1)
    for chunk in chunks:
        await asyncio.sleep(pause)
        yield chunk
    await asyncio.sleep(pause)


async def test_a_dead_holders_hold_expires_after_its_ttl(
        make_service: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose process died on another host blocks its session for the hold's
    time to live only; then a request elsewhere continues the session."""
    from dockyard.core import uploads as uploads_module

    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"kept"), Chunk())
    # the process writing the next chunk dies on another host: nobody releases its hold
    dead = "elsewhere:4242:0badc0de:otherplace:0"
    assert await a.store.hold_upload(record.id, REPO, dead, 0.5) is not None
    monkeypatch.setattr(uploads_module, "BUSY_WAIT", 0.1)
    with pytest.raises(RangeInvalid) as info:
        await b.append(REPO, record.id, body(b"-more"), Chunk(start=4))
    assert info.value.offset == 4
    await asyncio.sleep(0.5)
    assert (await b.append(REPO, record.id, body(b"-more"), Chunk(start=4))).offset == 9
    digest = Digest.of(b"kept-more")
    assert await b.finish(REPO, record.id, digest, None, Chunk()) == 9
    await assert_published(b, digest, b"kept-more")


async def test_a_hold_of_a_process_gone_on_this_machine_is_taken_at_once(
        make_service: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a file lock dies with its holder: a process of this machine that is gone (a
    killed worker, a restarted node) does not block its session for the ttl."""
    from dockyard.core import uploads as uploads_module
    from dockyard.core.leases import process_holder

    a, b = await make_service(), await make_service()
    record = await a.start(REPO)
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()
    host, _, rand, place = process_holder().split(":")
    assert await a.store.hold_upload(record.id, REPO, f"{host}:{child.pid}:{rand}:{place}:7",
                                     60) is not None
    monkeypatch.setattr(uploads_module, "BUSY_WAIT", 0.5)
    assert (await b.append(REPO, record.id, body(b"abc"), Chunk(start=0))).offset == 3
    # a live process of this machine keeps its hold
    assert await a.store.hold_upload(record.id, REPO, f"{host}:{os.getpid()}:{rand}:{place}:8",
                                     60) is not None
    with pytest.raises(RangeInvalid) as info:
        await b.append(REPO, record.id, body(b"def"), Chunk(start=3))
    assert info.value.offset == 3


async def test_a_long_body_keeps_its_hold_by_renewal(
        make_service: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.core import uploads as uploads_module

    a, b = await make_service(), await make_service()
    a.hold_ttl = b.hold_ttl = 0.3
    monkeypatch.setattr(uploads_module, "BUSY_WAIT", 0.05)
    record = await a.start(REPO)
    data = [bytes([65 + i]) * 100 for i in range(4)]
    writing = asyncio.create_task(a.append(REPO, record.id, stalled_body(1.0, *data), Chunk()))
    for _ in range(3):  # at 0.35, 0.7 and 1.05 s: past the first hold's expiry each time
        await asyncio.sleep(0.35)
        if writing.done():
            break
        with pytest.raises(RangeInvalid) as info:
            await b.append(REPO, record.id, body(b"intruder"), Chunk())
        assert info.value.offset == 0
    assert (await writing).offset == 400
    assert await b.finish(REPO, record.id, Digest.of(b"".join(data)), None, Chunk()) == 400
    await assert_published(b, Digest.of(b"".join(data)), b"".join(data))


async def test_a_write_that_loses_its_hold_records_nothing(make_service: Factory) -> None:
    """If the hold is taken over (it expired while its process stalled), the write is
    aborted with 416 and the offset it would have recorded is never written."""
    a = await make_service()
    a.hold_ttl = 0.3
    record = await a.start(REPO)
    await a.append(REPO, record.id, body(b"good"), Chunk())
    writing = asyncio.create_task(
        a.append(REPO, record.id, stalled_body(1.0, b"lost", b"lost"), Chunk()))
    await asyncio.sleep(0.05)
    found = await a.store.upload_holder(record.id)
    assert found is not None
    assert found[1] is not None
    # as if the hold expired and another host took the session
    await a.store.release_upload(record.id, found[1])
    assert await a.store.hold_upload(record.id, REPO, "elsewhere:1:x:y:0", 30) is not None
    with pytest.raises(RangeInvalid) as info:
        await writing
    assert info.value.offset == 4
    assert (await a.get(REPO, record.id)).offset == 4
    assert (await a.store.upload_holder(record.id)) == (await a.get(REPO, record.id),
                                                        "elsewhere:1:x:y:0")


async def test_purge_leaves_a_session_whose_body_is_streaming(service: UploadService) -> None:
    record = await service.start(REPO)
    await asyncio.sleep(0.2)  # idle for longer than max_idle below, then a slow PATCH
    writing = asyncio.create_task(
        service.append(REPO, record.id, stalled_body(0.6, b"slow"), Chunk()))
    await asyncio.sleep(0.3)
    assert await service.purge(max_idle=0.1) == 0
    assert (await writing).offset == 4
    await asyncio.sleep(0.2)
    assert await service.purge(max_idle=0.1) == 1  # idle again, and held by nobody


async def test_monolithic_upload_is_born_held(service: UploadService,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """POST ?digest= pays no write for a hold: nobody knows the session before it ends,
    yet the purge cannot take it while its body streams."""
    holds: list[str] = []
    original = service.store.hold_upload

    async def spy(session_id: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        holds.append(session_id)
        return await original(session_id, *args, **kwargs)

    monkeypatch.setattr(service.store, "hold_upload", spy)
    data = b"monolithic" * 10
    digest = Digest.of(data)
    task = asyncio.create_task(service.upload(REPO, "user:a", digest, stalled_body(0.6, data),
                                              Chunk(length=len(data))))
    await asyncio.sleep(0.3)
    [session_id] = await service.store.upload_ids()
    assert await service.purge(max_idle=0.0) == 0
    assert (await service.store.upload_holder(session_id) or (None, None))[1] is not None
    assert await task == len(data)
    await assert_published(service, digest, data)
    assert holds == []
    assert await service.store.upload_ids() == set()


async def test_a_discarded_upload_cancelled_while_its_session_opens_leaves_none(
        service: UploadService, monkeypatch: pytest.MonkeyPatch) -> None:
    # a copy or a replica cancels its other blobs when one fails; one caught between
    # its session's row and its first byte left the session open (counted against the
    # caps until it expired)
    opened = asyncio.Event()
    real = service.blobs.create_upload

    async def slow_create(session_id: str) -> None:
        await real(session_id)
        opened.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(service.blobs, "create_upload", slow_create)
    task = asyncio.create_task(service.upload(REPO, None, Digest.of(b"x"), body(b"x"),
                                              Chunk(length=1), discard=True))
    await asyncio.wait_for(opened.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await service.store.counts())["uploads"] == 0


async def test_a_discarded_upload_cancelled_while_it_removes_its_session_removes_it(
        service: UploadService, monkeypatch: pytest.MonkeyPatch) -> None:
    # a replica's two blobs both fail; the first failure cancels the second while that
    # one removes its own session: the removal ran on unawaited, and the replica's
    # caller found the session still counted
    dropping = asyncio.Event()
    real = service.store.delete_upload

    async def slow_delete(session_id: str) -> bool:
        dropping.set()
        await asyncio.sleep(0.3)
        return await real(session_id)

    monkeypatch.setattr(service.store, "delete_upload", slow_delete)
    task = asyncio.create_task(service.upload(REPO, None, Digest.of(b"x"), body(b"xy"),
                                              Chunk(length=1), discard=True))
    await asyncio.wait_for(dropping.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await service.store.counts())["uploads"] == 0
