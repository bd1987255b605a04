"""Each finished collection is remembered (what it freed, what stays stored); a dry run
is not; rows older than 90 days are forgotten. Real stores in tmp_path."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.lifecycle import CollectionRecord
from dockyard.core.uploads import Chunk
from dockyard.gc.collector import Collector
from dockyard.oci.digest import Digest


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_collections_are_recorded(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        for i, repo in enumerate(("unlinked", "dangling")):
            data = f"blob {i}".encode() * 10
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            record = await registry.uploads.start(repo)
            await registry.uploads.finish(repo, record.id, digest, _body(data),
                                          Chunk(length=len(data)))
            if repo == "unlinked":
                await registry.blobs.delete(repo, digest)  # nothing links it any more
        # the other is linked but no manifest uses it: with no grace, both go
        await asyncio.sleep(0.01)
        collector = Collector(registry, grace=0)
        await collector.run(dry_run=True)
        assert await registry.browse.backend.collections(10) == []
        report = await collector.run()
        [done] = await registry.browse.backend.collections(10)
        assert (done.blobs_deleted, done.bytes_freed) == (2, 120)
        assert (done.stored_blobs, done.stored_bytes) == (0, 0)
        assert done.started_at == report.started_at
        await collector.run()
        latest, first = await registry.browse.backend.collections(10)
        assert latest.started_at > first.started_at
        assert latest.bytes_freed == 0
        # a record 91 days later forgets both
        later = CollectionRecord(first.started_at + 91 * 86400, 0.1, 0, 0, 0, 0, 0, 0)
        await registry.lifecycle.record_collection(later)
        assert await registry.browse.backend.collections(10) == [later]
    finally:
        await close_registry(registry)
