"""A collection stopped midway (the server stopping, ^C, SIGTERM, its lease lost) leaves
no upload waiting on its tombstones and no bytes that nothing would find (real stores in
tmp_path)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.gc import collector as collector_module
from dockyard.gc.collector import Collector
from dockyard.metadata.store import TOMBSTONE_TIMEOUT
from dockyard.oci.digest import Digest


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    yield registry
    await close_registry(registry)


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _data(i: int) -> tuple[bytes, Digest]:
    data = f"garbage {i} ".encode() * 40
    return data, Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


async def _push(registry: Registry, i: int) -> Digest:
    data, digest = _data(i)
    await registry.uploads.upload("repo", None, digest, _body(data), Chunk(length=len(data)))
    return digest


async def _garbage(registry: Registry, count: int) -> list[Digest]:
    digests = [await _push(registry, i) for i in range(count)]
    for digest in digests:
        await registry.blobs.delete("repo", digest)  # nothing links it any more
    await asyncio.sleep(0.01)
    return digests


async def _stored(registry: Registry, digest: Digest) -> bool:
    return await registry._blobstore.size(digest) is not None


def _slow_deletions(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Make each deletion of blobs' bytes take 1 s before it deletes them; the event is
    set when the first one begins."""
    deleting = asyncio.Event()
    real = registry.blobs.delete_bytes

    async def slow(batch: list[Digest]) -> dict[Digest, Exception]:
        deleting.set()
        await asyncio.sleep(1.0)
        return dict(await real(batch))

    monkeypatch.setattr(registry.blobs, "delete_bytes", slow)
    return deleting


async def test_a_batch_stopped_before_its_bytes_went_lets_uploads_through_at_once(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tombstoned blobs waiting in a batch when the collection stops: their tombstones
    held an upload of those digests for `TOMBSTONE_TIMEOUT` (300 s) as a dead
    collector's; they are aged instead, and the next collection deletes the bytes."""
    digests = await _garbage(registry, 3)
    collector = Collector(registry, grace=0)
    begin = collector.lifecycle.begin_blob_deletion
    third = asyncio.Event()

    async def held_at_the_third(digest: str, cutoff: float) -> int | None:
        if digest == str(max(digests, key=str)):  # the last in digest order
            third.set()
            await asyncio.Event().wait()  # stopped here
        return await begin(digest, cutoff)

    monkeypatch.setattr(collector.lifecycle, "begin_blob_deletion", held_at_the_third)
    running = asyncio.ensure_future(collector.run())
    await asyncio.wait_for(third.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    batched = sorted(str(d) for d in digests)[:2]  # rows gone, bytes not asked to go
    assert sorted(await registry.lifecycle.stale_tombstones(
        time.time() - TOMBSTONE_TIMEOUT)) == batched
    for digest in batched:
        assert await _stored(registry, Digest.parse(digest))
    # an upload of one of them claims it at once, as after a refused deletion
    again = Digest.parse(batched[0])
    index = next(i for i in range(3) if str(_data(i)[1]) == batched[0])
    await asyncio.wait_for(_push(registry, index), 5)

    report = await Collector(registry, grace=3600).run()  # takes the other one over
    assert report.failed == 0, report.errors
    assert await _stored(registry, again)  # pushed again: kept
    assert not await _stored(registry, Digest.parse(batched[1]))
    assert await registry.lifecycle.stale_tombstones(float("inf")) == []


async def test_a_collection_stopped_while_bytes_go_lets_the_deletion_end_first(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while a batch's bytes are being deleted, the collection lets that deletion
    end before it touches the tombstones, then ages them: ending them at once left the
    bytes of a cancelled deletion with neither row nor tombstone (nothing would ever
    delete them), and a deletion still going on could remove bytes an upload published
    meanwhile."""
    monkeypatch.setattr(collector_module, "BATCH", 2)
    digests = await _garbage(registry, 2)
    deleting = _slow_deletions(registry, monkeypatch)
    running = asyncio.ensure_future(Collector(registry, grace=0).run())
    await asyncio.wait_for(deleting.wait(), 10)
    started = time.monotonic()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert time.monotonic() - started >= 0.9  # it let the deletion end
    for digest in digests:
        assert not await _stored(registry, digest)
    # aged: an upload of either goes through at once; the next collection ends them
    assert sorted(await registry.lifecycle.stale_tombstones(
        time.time() - TOMBSTONE_TIMEOUT)) == sorted(str(d) for d in digests)
    monkeypatch.undo()  # deletions at full speed again (and BATCH back)
    report = await Collector(registry, grace=0).run()
    assert report.failed == 0, report.errors
    assert await registry.lifecycle.stale_tombstones(float("inf")) == []


async def test_fsck_stopped_while_a_corrupt_blobs_bytes_go_ends_its_mark_after(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fsck --repair` marks a damaged blob corrupt under a tombstone and deletes its
    bytes; stopped meanwhile, it ended the mark (letting a push of the good bytes
    through) while the deletion could still run on and remove them."""
    from dockyard.gc.fsck import Fsck

    digest = await _push(registry, 7)  # linked: a live blob whose bytes get damaged
    path = registry._blobstore.local_path(digest)
    assert path is not None
    path.write_bytes(b"damaged")
    deleting = _slow_deletions(registry, monkeypatch)
    running = asyncio.ensure_future(Fsck(registry, grace=0, verify=True, repair=True).run())
    await asyncio.wait_for(deleting.wait(), 10)
    running.cancel()
    while not running.done():  # the mark stays while the deletion runs
        assert str(digest) in await registry.integrity.tombstones()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not await _stored(registry, digest)
    assert str(digest) not in await registry.integrity.tombstones()
