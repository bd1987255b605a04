"""A pull-through cache's "not found" answers over a real SQLite store: recorded,
renewed, read back, and purged once they run out.

The checks are plain functions of a store, so `tests/e2e/test_postgres.py` runs them on
PostgreSQL too (its upsert and its purge).
"""

from __future__ import annotations

from dockyard.metadata.store import MetadataStore

DIGEST = "sha256:" + "ab" * 32


async def check_misses_are_recorded_renewed_and_purged(store: MetadataStore) -> None:
    assert await store.proxy_miss("hub/t-app", "v1") is None
    await store.record_proxy_miss("hub/t-app", "v1", 1_000.0)
    await store.record_proxy_miss("hub/t-app", DIGEST, 3_000.0)
    await store.record_proxy_miss("hub/t-other", "v1", 1_500.0)
    assert await store.proxy_miss("hub/t-app", "v1") == 1_000.0
    assert await store.proxy_miss("hub/t-app", DIGEST) == 3_000.0
    assert await store.proxy_miss("hub/t-app", "v2") is None  # per reference...
    assert await store.proxy_miss("hub/t-other", "v1") == 1_500.0  # ...and per name

    await store.record_proxy_miss("hub/t-app", "v1", 2_000.0)  # asked again: renewed
    assert await store.proxy_miss("hub/t-app", "v1") == 2_000.0

    assert await store.forget_proxy_misses(1_500.0) == 0  # strictly before
    assert await store.forget_proxy_misses(2_500.0) == 2
    assert await store.proxy_miss("hub/t-app", "v1") is None
    assert await store.proxy_miss("hub/t-other", "v1") is None
    assert await store.proxy_miss("hub/t-app", DIGEST) == 3_000.0
    assert await store.forget_proxy_misses(3_000.5) == 1


async def test_misses_are_recorded_renewed_and_purged(store: MetadataStore) -> None:
    await check_misses_are_recorded_renewed_and_purged(store)
