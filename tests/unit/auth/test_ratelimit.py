from __future__ import annotations

import asyncio

import pytest

from dockyard.auth import ratelimit
from dockyard.auth.ratelimit import FailureLimiter, FailureLog, Throttled, limit_key
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


async def reserve_at_once(limiters: list[FailureLimiter], n: int, key: str = "addr:racer"
                          ) -> list[bool]:
    """`n` reservations of `key`'s budget at once, spread over `limiters`: which
    went ahead to a check (True) and which were refused (False)."""
    async def one(i: int) -> bool:
        try:
            await limiters[i % len(limiters)].reserve(key)
        except Throttled:
            return False
        return True

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_reservations_racing_in_one_process_take_the_budget_exactly() -> None:
    limiter = FailureLimiter(10, 60)
    assert sum(await reserve_at_once([limiter], 120)) == 10


async def test_reservations_racing_over_two_workers_take_the_budget_exactly(
        sqlite_url: str) -> None:
    """Two workers' limiters over one SQLite database, 120 guesses at once: exactly the
    budget is checked (a write-then-read reservation could let every racer withdraw and
    check none), and a right password then gives its reservation back."""
    stores = [MetadataStore(open_engines(sqlite_url)) for _ in range(2)]
    try:
        logs: list[FailureLog] = [LoginFailureStore(s) for s in stores]
        workers = [FailureLimiter(10, 60, log) for log in logs]
        assert sum(await reserve_at_once(workers, 120)) == 10
        assert await workers[0].retry_after("addr:racer") > 0
        other = [FailureLimiter(3, 60, log) for log in logs]
        attempt = await other[0].reserve("addr:right")
        await attempt.succeeded()
        assert sum(await reserve_at_once(other, 20, "addr:right")) == 3
    finally:
        for s in stores:
            await s.close()
