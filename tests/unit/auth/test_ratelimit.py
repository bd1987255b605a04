from __future__ import annotations

import pytest

from dockyard.auth import ratelimit
from dockyard.auth.ratelimit import FailureLimiter, limit_key
from dockyard.metadata.engine import open_engines
from dockyard.metadata.logins import LoginFailureStore
from dockyard.metadata.store import MetadataStore


async def test_limits_per_key_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    limiter = FailureLimiter(3, 60)
    for _ in range(3):
        assert await limiter.retry_after("addr:a", "user:x") == 0
        await limiter.failed("addr:a", "user:x")
    assert await limiter.retry_after("addr:a") == 60
    assert await limiter.retry_after("addr:b", "user:x") == 60
    assert await limiter.retry_after("addr:b", "user:y") == 0
    now[0] += 59.5
    assert await limiter.retry_after("addr:a") == 1
    now[0] += 1
    assert await limiter.retry_after("addr:a", "user:x") == 0


async def test_limiters_sharing_the_metadata_store_share_one_budget(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two limiters over two connections to one database (two workers) count together."""
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    stores = [MetadataStore(open_engines(sqlite_url)) for _ in range(2)]
    try:
        workers = [FailureLimiter(4, 60, LoginFailureStore(s)) for s in stores]
        for i in range(4):
            assert await workers[i % 2].retry_after("addr:a", "user:x") == 0
            await workers[i % 2].failed("addr:a", "user:x")
            now[0] += 1
        for worker in workers:
            assert await worker.retry_after("addr:a") == 56  # the first failed at 1000
            assert await worker.retry_after("addr:b", "user:x") == 56
            assert await worker.retry_after("addr:b", "user:y") == 0
        now[0] += 56
        assert await workers[0].retry_after("addr:a") == 0
        # old failures are dropped with the next one recorded
        await workers[1].failed("addr:c")
        assert len(await LoginFailureStore(stores[0]).failures_since(
            ["addr:a", "user:x", "addr:c"], 0)) == 9
        now[0] += 61
        await workers[1].failed("addr:c")
        assert await LoginFailureStore(stores[0]).failures_since(
            ["addr:a", "user:x", "addr:c"], 0) == [("addr:c", now[0])]
    finally:
        for s in stores:
            await s.close()


def test_long_keys_are_digested() -> None:
    assert limit_key("user", "alice") == "user:alice"
    long = limit_key("user", "x" * 10_000)
    assert len(long) <= 200
    assert long != limit_key("user", "x" * 9_999)
