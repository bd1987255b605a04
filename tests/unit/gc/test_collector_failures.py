"""A collection goes on past a step that fails, and reports it (real stores in tmp_path)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.uploads import Chunk
from dockyard.gc.collector import Collector
from dockyard.oci.digest import Digest
from dockyard.oci.errors import StorageFull
from dockyard.storage import layout


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_collection_goes_on_past_a_failed_step(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        digests = []
        for i in range(3):
            data = f"blob {i}".encode()
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            record = await registry.uploads.start("repo")
            await registry.uploads.finish("repo", record.id, digest, _body(data),
                                          Chunk(length=len(data)))
            await registry.blobs.delete("repo", digest)  # nothing links it any more
            digests.append(digest)
        await asyncio.sleep(0.01)
        collector = Collector(registry, grace=0)
        begin = collector.lifecycle.begin_blob_deletion

        async def first_fails(digest: str, cutoff: float) -> int | None:
            if digest == str(digests[0]):
                raise StorageFull("insufficient storage: the disk is full")
            return await begin(digest, cutoff)

        monkeypatch.setattr(collector.lifecycle, "begin_blob_deletion", first_fails)
        report = await collector.run()
        assert report.failed == 1
        assert report.errors == [f"deleting the row of {digests[0]}: "
                                 "insufficient storage: the disk is full"]
        assert report.blobs_deleted == 2
        on_disk = [(tmp_path / "data" / layout.blob_key(d)).exists() for d in digests]
        assert on_disk == [True, False, False]
        assert report.to_json()["failed"] == 1
    finally:
        await close_registry(registry)
