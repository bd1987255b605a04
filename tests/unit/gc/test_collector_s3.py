"""The collector on a real S3 server (SeaweedFS): blobs' bytes go in batches.

Metadata is SQLite in tmp_path; the blob store is one S3 server for the module, each
test under its own `rootdirectory`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.drivers.s3 import S3Driver
from dockyard.gc import collector as collector_module
from dockyard.gc.collector import Collector
from dockyard.metadata.store import TOMBSTONE_TIMEOUT
from dockyard.oci.digest import Digest
from tests.support.s3 import S3Server, running_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture
async def registry(tmp_path: Path, s3: S3Server) -> AsyncIterator[Registry]:
    section = s3.storage_section()
    s3_keys = {f"storage.s3.{k}": v for k, v in section["s3"].items()}
    settings = load_settings(env={}, overrides={
        "storage.driver": "s3", **s3_keys,
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    yield registry
    await close_registry(registry)


def _driver(registry: Registry) -> S3Driver:
    driver = registry._blobstore.driver
    assert isinstance(driver, S3Driver)
    return driver


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _push_unlinked(registry: Registry, count: int) -> list[Digest]:
    """`count` blobs uploaded, then unlinked: garbage once their grace period is over."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> Digest:
        data = f"blob {i} ".encode() * 50
        digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
        async with gate:
            await registry.uploads.upload("repo", None, digest, _body(data),
                                          Chunk(length=len(data)))
            await registry.blobs.delete("repo", digest)
        return digest

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _objects(driver: S3Driver, prefix: str) -> list[str]:
    return [name async for name in driver._names(driver._key(prefix))]


def _count(client: Any, operation: str) -> list[str]:
    """One entry per `operation` request the client sends."""
    calls: list[str] = []

    def count(**_: Any) -> None:
        calls.append(operation)

    client.meta.events.register(f"before-parameter-build.s3.{operation}", count)
    return calls


async def test_a_collection_deletes_blobs_in_batches(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_module, "BATCH", 20)  # 45 blobs: 20 + 20 + 5
    driver = _driver(registry)
    digests = await _push_unlinked(registry, 45)
    await asyncio.sleep(2.0)
    kept = Digest.parse("sha256:" + hashlib.sha256(b"kept").hexdigest())
    await registry.uploads.upload("repo", None, kept, _body(b"kept"), Chunk(length=4))
    assert len(await _objects(driver, "blobs/")) == 46
    client = await driver._s3()
    deletes = _count(client, "DeleteObjects")
    single = _count(client, "DeleteObject")

    # the garbage is 2 s old, the blob just pushed is within its grace period
    report = await Collector(registry, grace=1.5).run()

    assert report.failed == 0, report.errors
    assert report.blobs_deleted == 45
    assert len(deletes) == 3  # one DeleteObjects call per batch, none per blob
    assert single == []
    remaining = await _objects(driver, "blobs/")
    assert remaining == [driver._key(f"blobs/sha256/{kept.hex[:2]}/{kept.hex}/data")]
    for digest in digests:
        assert await registry.blobs.blobs.size(digest) is None
    assert await registry.lifecycle.stale_tombstones(float("inf")) == []


async def test_a_blob_the_store_refuses_to_delete_is_reported(
    registry: Registry,
) -> None:
    """A key refused in a batch is a failed step; the others are freed."""
    driver = _driver(registry)
    digests = await _push_unlinked(registry, 5)
    refused = driver._key(f"blobs/sha256/{digests[2].hex[:2]}/{digests[2].hex}/data")
    client = await driver._s3()

    def strip(params: dict[str, Any], **_: Any) -> None:
        params["Delete"]["Objects"] = [o for o in params["Delete"]["Objects"]
                                       if o["Key"] != refused]

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("Errors", []).append(
            {"Key": refused, "Code": "AccessDenied", "Message": "Access Denied"})

    client.meta.events.register("before-parameter-build.s3.DeleteObjects", strip)
    client.meta.events.register("after-call.s3.DeleteObjects", answer)
    await asyncio.sleep(0.01)

    report = await Collector(registry, grace=0).run()

    assert report.blobs_deleted == 4
    assert report.failed == 1
    assert report.errors[0].startswith(f"deleting {digests[2]}: ")
    assert "AccessDenied" in report.errors[0]
    assert await _objects(driver, "blobs/") == [refused]
    # its row is gone: nothing but its tombstone, aged so that an upload of the digest
    # does not wait on it, leads the next collection to the bytes
    assert await registry.lifecycle.stale_tombstones(time.time() - TOMBSTONE_TIMEOUT) == [
        str(digests[2])]
    client.meta.events.unregister("before-parameter-build.s3.DeleteObjects", strip)
    client.meta.events.unregister("after-call.s3.DeleteObjects", answer)

    report = await Collector(registry, grace=0).run()

    assert report.failed == 0, report.errors
    assert await _objects(driver, "blobs/") == []
    assert await registry.lifecycle.stale_tombstones(float("inf")) == []


async def test_a_blob_whose_deletion_failed_can_be_pushed_again_at_once(
    registry: Registry,
) -> None:
    """An upload of a digest whose bytes the store refused to delete does not wait on
    its tombstone, and the next collection leaves the pushed blob alone."""
    driver = _driver(registry)
    digests = await _push_unlinked(registry, 1)
    client = await driver._s3()

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Deleted"] = []
        parsed["Errors"] = [{"Key": driver._key(
            f"blobs/sha256/{digests[0].hex[:2]}/{digests[0].hex}/data"),
            "Code": "InternalError", "Message": "try again"}]

    client.meta.events.register("after-call.s3.DeleteObjects", answer)
    await asyncio.sleep(0.01)
    report = await Collector(registry, grace=0).run()
    client.meta.events.unregister("after-call.s3.DeleteObjects", answer)
    assert report.failed == 1

    data = b"blob 0 " * 50
    await asyncio.wait_for(registry.uploads.upload(
        "again", None, digests[0], _body(data), Chunk(length=len(data))), 5)
    report = await Collector(registry, grace=60).run()
    assert report.failed == 0, report.errors
    assert (await registry.blobs.stat("again", digests[0])).size == len(data)
    assert await registry.blobs.blobs.size(digests[0]) == len(data)
