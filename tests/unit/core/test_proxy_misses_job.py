"""The server's purge of pull-through caches' expired "not found" answers, over real
stores in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.jobs import server_jobs


async def test_the_misses_job_drops_only_answers_that_ran_out(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "proxy": [{"prefix": "hub", "upstream": "http://127.0.0.1:9"}]})
    registry = await open_registry(settings)
    try:
        jobs = {job.name: job for job in server_jobs(registry, settings)}
        store = registry.cache.store
        now = time.time()
        await store.record_proxy_miss("hub/app", "old", now - 1)
        await store.record_proxy_miss("hub/app", "new", now + 60)
        result = await jobs["proxy.misses"].run()
        assert result is not None
        assert result.summary == '1 expired upstream "not found" answers dropped'
        assert await store.proxy_miss("hub/app", "old") is None
        assert await store.proxy_miss("hub/app", "new") == now + 60

        no_proxy = settings.model_copy(update={"proxy": []})
        assert "proxy.misses" not in {job.name for job in server_jobs(registry, no_proxy)}
    finally:
        await close_registry(registry)
