"""The catalog use case over a real SQLite store: filtered, paged exactly, read in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.core.repositories import RepositoryService
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.metadata.engine import open_engines
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.store import MetadataStore
from dockyard.storage.blobstore import BlobStore

DIGEST = "sha256:" + "ab" * 32
NAMES = ["aaa/x", "team/a", *[f"team/secret-{i:02}" for i in range(25)], "team/z", "zzz/y"]


@pytest.fixture
async def service(sqlite_url: str, tmp_path: Path) -> AsyncIterator[RepositoryService]:
    store = MetadataStore(open_engines(sqlite_url))
    for name in NAMES:
        await store.link_blob(name, DIGEST, 1)
    yield RepositoryService(store, BlobStore(FilesystemDriver(tmp_path / "blobs")),
                            LifecycleStore(store), delete_enabled=True)
    await store.close()


def _team(name: str) -> bool:
    return name.startswith("team/") and not name.startswith("team/secret-")


async def test_filtered_pages_are_exact_across_batches(service: RepositoryService) -> None:
    reads: list[tuple[int | None, str | None]] = []
    catalog = service.store.catalog

    async def counted(n: int | None, last: str | None) -> list[str]:
        reads.append((n, last))
        return await catalog(n, last)

    service.store.catalog = counted  # type: ignore[method-assign]
    assert await service.catalog(None, None, _team, batch=4) == ["team/a", "team/z"]
    assert await service.catalog(2, None, _team, batch=4) == ["team/a", "team/z"]
    reads.clear()
    # 25 hidden names between the two visible ones: read 4 at a time, stop at the 1st
    assert await service.catalog(1, "team/a", _team, batch=4) == ["team/z"]
    assert reads[0] == (4, "team/a")
    assert len(reads) == 7  # 25 hidden names, then team/z: not one batch more
    assert await service.catalog(5, "team/z", _team, batch=4) == []
    # no filter: one query of `limit` names
    reads.clear()
    assert await service.catalog(3, None) == NAMES[:3]
    assert reads == [(3, None)]
