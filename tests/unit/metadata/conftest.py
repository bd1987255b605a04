"""A migrated SQLite metadata store in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.store import MetadataStore


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[MetadataStore]:
    engines = open_engines(sqlite_url)
    await migrate(engines)  # already at head: checks the revision only
    store = MetadataStore(engines)
    yield store
    await store.close()
