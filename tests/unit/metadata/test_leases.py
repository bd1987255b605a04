"""LeaseStore on a real SQLite file: one holder at a time, expiry, renewal, release."""

from __future__ import annotations

import asyncio
import time

import pytest

from dockyard.metadata.engine import Engines, open_engines
from dockyard.metadata.leases import LeaseStore
from dockyard.metadata.store import MetadataStore


@pytest.fixture
def leases(store: MetadataStore) -> LeaseStore:
    return LeaseStore(store.engines)


async def test_one_holder_at_a_time(leases: LeaseStore) -> None:
    assert await leases.acquire("job:gc", "a", 30)
    assert not await leases.acquire("job:gc", "b", 30)
    assert not await leases.acquire("job:gc", "a", 30)  # not re-entrant
    held = await leases.holder("job:gc")
    assert held is not None
    assert held[0] == "a"
    assert held[1] > time.time() + 25
    assert await leases.acquire("other", "b", 30)  # names are independent


async def test_an_expired_lease_goes_to_the_next_holder(leases: LeaseStore) -> None:
    assert await leases.acquire("gc", "a", 0.2)
    await asyncio.sleep(0.3)
    assert await leases.holder("gc") is None
    assert await leases.acquire("gc", "b", 30)
    assert not await leases.renew("gc", "a", 30)  # a's lease is b's now
    assert await leases.renew("gc", "b", 30)


async def test_release_only_by_the_holder(leases: LeaseStore) -> None:
    assert await leases.acquire("gc", "a", 30)
    await leases.release("gc", "b")
    assert not await leases.acquire("gc", "b", 30)
    await leases.release("gc", "a")
    assert await leases.acquire("gc", "b", 30)


async def test_concurrent_acquires_from_separate_engines(sqlite_url: str,
                                                         store: MetadataStore) -> None:
    """Ten connections (as ten processes would have) race: exactly one wins."""
    engines: list[Engines] = [open_engines(sqlite_url) for _ in range(10)]
    try:
        won = await asyncio.gather(*(LeaseStore(e).acquire("race", f"h{i}", 30)
                                     for i, e in enumerate(engines)))
        assert sorted(won) == [False] * 9 + [True]
    finally:
        for e in engines:
            await e.dispose()
