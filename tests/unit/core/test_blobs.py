"""BlobService downloads over real stores: what to send for a range, local or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dockyard.core.blobs import BlobService, LocalFile, Redirect, Stream
from dockyard.core.uploads import Chunk, UploadService
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.drivers.s3 import S3Driver
from dockyard.metadata.engine import open_engines
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown
from dockyard.storage import layout
from dockyard.storage.blobstore import BlobStore
from tests.support.s3 import running_s3

DATA = bytes(range(256)) * 40


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def service(tmp_path: Path, sqlite_url: str) -> AsyncIterator[BlobService]:
    store = MetadataStore(open_engines(sqlite_url))
    blobstore = BlobStore(FilesystemDriver(tmp_path / "data"))
    uploads = UploadService(store, blobstore)
    record = await uploads.start("a/b")
    await uploads.finish("a/b", record.id, Digest.of(DATA), once(DATA),
                         Chunk(length=len(DATA)))
    yield BlobService(store, blobstore, delete_enabled=True)
    await store.close()


async def test_local_file_for_the_range(service: BlobService) -> None:
    info = await service.stat("a/b", Digest.of(DATA))
    assert info.size == len(DATA)
    body = await service.open(info, 100, 50)
    assert isinstance(body, LocalFile)
    with body.path.open("rb") as f:
        f.seek(body.offset)
        assert f.read(body.length) == DATA[100:150]


async def test_stream_when_a_local_file_cannot_be_sent(service: BlobService) -> None:
    info = await service.stat("a/b", Digest.of(DATA))
    body = await service.open(info, 1000, 3000, local=False)
    assert isinstance(body, Stream)
    got = b"".join([chunk async for chunk in body.chunks])
    assert got == DATA[1000:4000]


async def test_a_blob_of_another_repository_is_unknown(service: BlobService) -> None:
    with pytest.raises(BlobUnknown):
        await service.stat("other/repo", Digest.of(DATA))


async def test_an_object_store_redirects_or_streams(sqlite_url: str) -> None:
    """On S3, `open` answers a presigned URL when redirects are on (the client fetches
    the bytes, Range included, from the store), else a stream of the range."""
    with running_s3() as server:
        store = MetadataStore(open_engines(sqlite_url))
        driver = S3Driver(server.settings())
        try:
            digest = Digest.of(DATA)
            writer = await driver.writer("staging", 0)
            await writer.write(DATA)
            await writer.close()
            await driver.move("staging", layout.blob_key(digest))
            await store.link_blob("a/b", str(digest), len(DATA))
            blobstore = BlobStore(driver)
            redirecting = BlobService(store, blobstore, delete_enabled=True,
                                      redirect_expiry=60)
            info = await redirecting.stat("a/b", digest)
            body = await redirecting.open(info, 0, len(DATA))
            assert isinstance(body, Redirect)
            async with httpx.AsyncClient() as client:
                assert (await client.get(body.url)).content == DATA
                part = await client.get(body.url, headers={"Range": "bytes=10-19"})
                assert part.status_code == 206
                assert part.content == DATA[10:20]
            streaming = BlobService(store, blobstore, delete_enabled=True)
            body = await streaming.open(info, 5, 100)
            assert isinstance(body, Stream)
            assert b"".join([chunk async for chunk in body.chunks]) == DATA[5:105]
        finally:
            await driver.close()
            await store.close()
