"""Shared keys: made once, then the same for every caller (and every store instance)."""

from __future__ import annotations

import asyncio

from dockyard.metadata.engine import open_engines
from dockyard.metadata.secrets import SecretStore
from dockyard.metadata.store import MetadataStore


async def test_a_key_is_made_once_and_shared(store: MetadataStore, sqlite_url: str) -> None:
    keys = SecretStore(store)
    first, racing = await asyncio.gather(keys.key("ui.session-key"), keys.key("ui.session-key"))
    assert len(first) == 32
    assert racing == first
    other = MetadataStore(open_engines(sqlite_url))  # another process's view
    try:
        assert await SecretStore(other).key("ui.session-key") == first
    finally:
        await other.close()
    assert await keys.key("another", 16) != first[:16]
