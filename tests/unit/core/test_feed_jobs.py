"""The server's jobs for the feed and the replica, over real stores in tmp_path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.jobs import server_jobs
from dockyard.oci.errors import ReadOnlyReplica


async def test_the_prune_job_keeps_feed_keep_and_the_replica_job_is_configured(
        tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"), "feed.keep": "1ms"})
    registry = await open_registry(settings)
    try:
        jobs = {job.name: job for job in server_jobs(registry, settings)}
        assert "replica" not in jobs
        await registry.replica.check_writable()  # no replica: writable
        # an event to prune: a blob unlinked (recorded by the store's write)
        store = registry.replica.store
        await store.link_blob("r", "sha256:" + "a" * 64, 1)
        assert await store.unlink_blob("r", "sha256:" + "a" * 64)
        _, floor, head = await store.events_after(0, 0)
        assert head >= 1
        assert floor == 0
        await asyncio.sleep(0.05)  # the event is older than feed.keep
        await jobs["feed.prune"].run()
        _, floor, _ = await store.events_after(head, 0)
        assert floor == head  # keep 1ms: everything before then is gone

        replica = settings.model_copy(update={"replica": settings.replica.model_copy(
            update={"primary": "http://127.0.0.1:9"})})
        assert "replica" in {job.name for job in server_jobs(registry, replica)}
        assert await registry.replica.follow("http://127.0.0.1:9")
        with pytest.raises(ReadOnlyReplica, match=r"read-only replica of http://127\.0\.0\.1:9"):
            await registry.replica.check_writable()
        assert await registry.replica.promote() == "http://127.0.0.1:9"
        await registry.replica.check_writable()
        assert await registry.replica.promote() is None  # once
        assert not await registry.replica.follow("http://127.0.0.1:9")  # promoted stays
    finally:
        await close_registry(registry)
