"""BlobService downloads over real stores: what to send for a range, local or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.core.blobs import BlobService, LocalFile, Stream
from dockyard.core.uploads import Chunk, UploadService
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.metadata.engine import open_engines
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown
from dockyard.storage.blobstore import BlobStore

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
    body = service.open(info, 100, 50)
    assert isinstance(body, LocalFile)
    with body.path.open("rb") as f:
        f.seek(body.offset)
        assert f.read(body.length) == DATA[100:150]


async def test_stream_when_a_local_file_cannot_be_sent(service: BlobService) -> None:
    info = await service.stat("a/b", Digest.of(DATA))
    body = service.open(info, 1000, 3000, local=False)
    assert isinstance(body, Stream)
    got = b"".join([chunk async for chunk in body.chunks])
    assert got == DATA[1000:4000]


async def test_a_blob_of_another_repository_is_unknown(service: BlobService) -> None:
    with pytest.raises(BlobUnknown):
        await service.stat("other/repo", Digest.of(DATA))
