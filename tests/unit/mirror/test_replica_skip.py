"""A read-only replica syncs no mirror source: its tags, mirrored ones included, are its
primary's (the API's write gate does not stand between `core` and a sync)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from dockyard.backends import close_registry, open_registry
from dockyard.config.mirror import MirrorSource
from dockyard.config.settings import load_settings
from dockyard.mirror.sync import sync_source


async def test_a_replica_skips_its_mirror_sources(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        # an upstream nothing listens on: any attempt would fail, not be skipped
        source = MirrorSource(registry="127.0.0.1:9", repository="lib/app", tags=["*"],
                              retries=0, tls_verify=False)
        assert (await sync_source(registry, source)).status == "failed"
        assert await registry.replica.follow("https://primary.example")
        report = await sync_source(registry, source)
        assert report.status == "replica"
        assert report.error is not None
        assert "https://primary.example" in report.error
        runs = await registry.mirrors.runs(source.key, 10)
        assert [r.status for r in runs] == ["failed"]  # the skip is no run
        assert await registry.replica.promote() is not None
        assert (await sync_source(registry, source)).status == "failed"  # tried again
    finally:
        await close_registry(registry)


async def test_retries_double_their_wait_up_to_the_schedule(tmp_path: Path) -> None:
    """A failing source waits `retry_backoff`, twice that, and so on, but never longer
    than its schedule between two attempts (the next run would try by then; the source's
    lease is held while it waits)."""
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    try:
        source = MirrorSource(registry="127.0.0.1:9", repository="lib/app", tags=["*"],
                              retries=12, retry_backoff=timedelta(seconds=10),
                              schedule=timedelta(minutes=5), tls_verify=False)
        report = await sync_source(registry, source, sleep=sleep)
        assert (report.status, report.attempts) == ("failed", 13)
        assert waits == [10, 20, 40, 80, 160, *[300] * 7]
    finally:
        await close_registry(registry)
