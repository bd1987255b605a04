"""BlobStore: buffered appends with a running hash, rehash, publication, reads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from dockyard.drivers.base import Driver, Writer
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.oci.digest import Digest, new_hasher
from dockyard.storage import layout
from dockyard.storage.blobstore import BlobStore, RunningHash


async def body(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


async def read_blob(store: BlobStore, digest: Digest, offset: int = 0,
                    length: int | None = None) -> bytes:
    return b"".join([c async for c in store.read(digest, offset, length)])


@pytest.fixture
def driver(tmp_path: Path) -> FilesystemDriver:
    return FilesystemDriver(tmp_path / "blobs-root")


@pytest.fixture
def store(driver: FilesystemDriver) -> BlobStore:
    # a tiny buffer so every test crosses many buffer boundaries
    return BlobStore(driver, buffer_size=64)


async def new_session(store: BlobStore, session_id: str = "s1") -> RunningHash:
    await store.create_upload(session_id)
    return RunningHash(new_hasher("sha256"), 0)


async def test_create_upload_makes_empty_session(store: BlobStore) -> None:
    await store.create_upload("s1")
    assert await store.upload_size("s1") == 0
    assert [s async for s in store.upload_sessions()] == ["s1"]


async def test_upload_sessions_ignore_stray_files(store: BlobStore,
                                                  driver: FilesystemDriver) -> None:
    await store.create_upload("s2")
    await (await driver.writer(f"{layout.UPLOADS}/s3/stray")).close()
    assert [s async for s in store.upload_sessions()] == ["s2"]


async def test_upload_size_of_unknown_session(store: BlobStore) -> None:
    assert await store.upload_size("nope") is None


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [1], [63], [64], [65], [64, 64], [10] * 20, [1, 200, 3, 64, 0, 500], [1000]],
)
async def test_append_stores_bytes_and_hashes_them(store: BlobStore, sizes: list[int]) -> None:
    state = await new_session(store)
    chunks = [os.urandom(n) for n in sizes]
    data = b"".join(chunks)
    written = await store.append("s1", state, body(chunks))
    assert written == len(data)
    assert state.offset == len(data)
    assert state.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    assert await store.upload_size("s1") == len(data)


async def test_appends_accumulate(store: BlobStore, driver: Driver) -> None:
    state = await new_session(store)
    parts = [os.urandom(100), os.urandom(7), os.urandom(300)]
    for part in parts:
        await store.append("s1", state, body([part[:50], part[50:]]))
    data = b"".join(parts)
    assert state.offset == len(data)
    assert state.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    got = b"".join([c async for c in driver.read(layout.upload_key("s1"))])
    assert got == data


async def test_rehash_matches_running_hash(store: BlobStore) -> None:
    state = await new_session(store)
    data = os.urandom(1000)
    await store.append("s1", state, body([data[:333], data[333:]]))
    again = await store.rehash("s1", state.offset, "sha256")
    assert again.offset == 1000
    assert again.hasher.hexdigest() == state.hasher.hexdigest()
    prefix = await store.rehash("s1", 400, "sha256")
    assert prefix.hasher.hexdigest() == hashlib.sha256(data[:400]).hexdigest()
    other = await store.rehash("s1", 1000, "sha512")
    assert other.hasher.hexdigest() == hashlib.sha512(data).hexdigest()


async def test_rehash_then_continue(store: BlobStore) -> None:
    state = await new_session(store)
    await store.append("s1", state, body([b"a" * 100]))
    resumed = await store.rehash("s1", 100, "sha256")
    await store.append("s1", resumed, body([b"b" * 100]))
    assert resumed.hasher.hexdigest() == hashlib.sha256(b"a" * 100 + b"b" * 100).hexdigest()


async def test_rehash_of_missing_bytes(store: BlobStore) -> None:
    state = await new_session(store)
    await store.append("s1", state, body([b"abc"]))
    with pytest.raises(FileNotFoundError):
        await store.rehash("s1", 10, "sha256")
    with pytest.raises(FileNotFoundError):
        await store.rehash("unknown", 0, "sha256")


async def test_append_discards_bytes_past_state_offset(store: BlobStore, driver: Driver
                                                       ) -> None:
    state = await new_session(store)
    await store.append("s1", state, body([b"good"]))
    # a write cut short by a crash left bytes the metadata never counted
    stray = await driver.writer(layout.upload_key("s1"), 4)
    await stray.write(b"GARBAGE")
    await stray.close()
    await store.append("s1", state, body([b"more"]))
    got = b"".join([c async for c in driver.read(layout.upload_key("s1"))])
    assert got == b"goodmore"
    assert state.hasher.hexdigest() == hashlib.sha256(b"goodmore").hexdigest()


async def test_append_limit_exact_is_fine(store: BlobStore) -> None:
    state = await new_session(store)
    assert await store.append("s1", state, body([b"x" * 100, b"y" * 28]), limit=128) == 128


async def test_append_over_limit_raises_and_invalidates_state(store: BlobStore) -> None:
    state = await new_session(store)
    with pytest.raises(OverflowError):
        await store.append("s1", state, body([b"x" * 100, b"y" * 100]), limit=150)
    assert state.offset == -1


async def test_body_error_invalidates_state(store: BlobStore) -> None:
    state = await new_session(store)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 200
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.append("s1", state, broken())
    assert state.offset == -1


async def test_publish_and_read_back(store: BlobStore, driver: FilesystemDriver) -> None:
    state = await new_session(store)
    data = os.urandom(5000)
    await store.append("s1", state, body([data[i:i + 999] for i in range(0, 5000, 999)]))
    digest = Digest("sha256", state.hasher.hexdigest())
    assert digest == Digest.of(data)
    assert await store.size(digest) is None
    await store.publish("s1", digest, len(data))
    assert await store.size(digest) == 5000
    assert await read_blob(store, digest) == data
    assert await read_blob(store, digest, 100, 50) == data[100:150]
    assert await read_blob(store, digest, 4990) == data[4990:]
    assert await store.upload_size("s1") is None
    assert [s async for s in store.upload_sessions()] == []
    path = store.local_path(digest)
    assert path is not None
    assert path.read_bytes() == data
    assert path == driver.root / layout.blob_key(digest)


async def test_blob_layout_is_distributions() -> None:
    d = Digest.of(b"")
    assert layout.blob_key(d) == f"blobs/sha256/e3/{d.hex}/data"
    assert layout.blob_dir(d) == f"blobs/sha256/e3/{d.hex}"
    assert layout.upload_key("u") == "uploads/u"


def test_session_of_reads_both_upload_layouts() -> None:
    assert layout.session_of(layout.upload_key("abc")) == "abc"
    assert layout.session_of("uploads/abc/data") == "abc"  # written by earlier builds
    assert layout.session_of("uploads") is None
    assert layout.session_of("uploads/abc/other") is None
    assert layout.session_of("blobs/sha256/ab/abcd/data") is None


async def test_publish_sha512(store: BlobStore) -> None:
    await store.create_upload("s1")
    state = RunningHash(new_hasher("sha512"), 0)
    await store.append("s1", state, body([b"hello"]))
    digest = Digest("sha512", state.hasher.hexdigest())
    assert digest == Digest.of(b"hello", "sha512")
    await store.publish("s1", digest, 5)
    assert await read_blob(store, digest) == b"hello"


async def test_publish_twice_keeps_first_bytes(store: BlobStore) -> None:
    digest = Digest.of(b"same")
    for session in ("a", "b"):
        state = await new_session(store, session)
        await store.append(session, state, body([b"same"]))
        await store.publish(session, digest, 4)
    assert await read_blob(store, digest) == b"same"
    assert [s async for s in store.upload_sessions()] == []


async def test_empty_blob(store: BlobStore) -> None:
    state = await new_session(store)
    assert await store.append("s1", state, body([])) == 0
    digest = Digest.of(b"")
    assert state.hasher.hexdigest() == digest.hex
    await store.publish("s1", digest, 0)
    assert await store.size(digest) == 0
    assert await read_blob(store, digest) == b""


async def test_delete_upload_and_blob(store: BlobStore) -> None:
    state = await new_session(store)
    await store.append("s1", state, body([b"abc"]))
    await store.delete_upload("s1")
    assert await store.upload_size("s1") is None
    state = await new_session(store, "s2")
    await store.append("s2", state, body([b"abc"]))
    digest = Digest.of(b"abc")
    await store.publish("s2", digest, 3)
    await store.delete_blob(digest)
    assert await store.size(digest) is None
    with pytest.raises(FileNotFoundError):
        await read_blob(store, digest)


# --- cancellation must not leave a write running into a closed writer ----------


class _SlowWriter(Writer):
    """Each write takes a while in a worker thread, like a slow disk."""

    def __init__(self) -> None:
        self._size = 0
        self.in_flight = 0
        self.closed_during_write = False
        self._lock = threading.Lock()
        self.started = threading.Event()

    @property
    def size(self) -> int:
        return self._size

    def _slow(self, data: bytes) -> None:
        with self._lock:
            self.in_flight += 1
        self.started.set()
        time.sleep(0.2)
        with self._lock:
            self.in_flight -= 1

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._slow, data)
        self._size += len(data)

    async def close(self, *, sync: bool = False) -> None:
        with self._lock:
            if self.in_flight:
                self.closed_during_write = True


class _SlowDriver(FilesystemDriver):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writers: list[_SlowWriter] = []

    async def writer(self, key: str, offset: int = 0, *, resume: bool = False,
                     expect: int | None = None) -> Writer:
        w = _SlowWriter()
        self.writers.append(w)
        return w


async def test_error_waits_for_inflight_write_before_close(tmp_path: Path) -> None:
    driver = _SlowDriver(tmp_path / "root")
    store = BlobStore(driver, buffer_size=16)
    state = RunningHash(new_hasher("sha256"), 0)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 32  # fills a buffer: a flush starts in a thread
        # wait until the flush's thread is writing
        assert await asyncio.to_thread(driver.writers[0].started.wait, 5)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.append("s1", state, broken())
    assert not driver.writers[0].closed_during_write


async def test_large_body_through_the_threaded_pipeline(driver: FilesystemDriver) -> None:
    """Buffers above the inline size: hashing in its own thread, several in flight,
    chunks of odd sizes straddling buffers; then a second append resumes the hash."""
    store = BlobStore(driver, buffer_size=128 * 1024)
    state = await new_session(store)
    data = os.urandom(5 * 1024 * 1024 + 12345)
    sizes = [1, 70_000, 131_072, 300_001, 4096]
    pieces, at, i = [], 0, 0
    while at < len(data):
        pieces.append(data[at:at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    half = len(pieces) // 2
    assert await store.append("s1", state, body(pieces[:half])) == sum(map(len, pieces[:half]))
    assert await store.append("s1", state, body(pieces[half:]), limit=len(data) - state.offset
                              ) == sum(map(len, pieces[half:]))
    assert state.offset == len(data)
    assert state.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    await store.publish("s1", digest, len(data))
    assert await read_blob(store, digest) == data


class BreakingSource(FilesystemDriver):
    """A source tree whose reads fail after the first piece (a disk error, a tree
    unmounted under `dockyard import --copy`)."""

    async def read(self, key: str, offset: int = 0, length: int | None = None
                   ) -> AsyncIterator[bytes]:
        async for piece in super().read(key, offset, length):
            yield piece[:1000]
            raise OSError(5, "Input/output error")


async def test_a_copy_that_fails_midway_leaves_no_half_copy(
        store: BlobStore, driver: FilesystemDriver, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    digest = Digest.of(data)
    source = BreakingSource(tmp_path / "source")
    writer = await source.writer(layout.blob_key(digest), 0)
    await writer.write(data)
    await writer.close(sync=True)
    with pytest.raises(OSError, match="Input/output"):
        await store.adopt(source, digest, copy=True)
    assert await driver.stat(layout.import_key(digest)) is None
    assert await driver.stat(layout.blob_key(digest)) is None


async def test_a_publish_retried_after_it_moved_the_bytes_succeeds(store: BlobStore) -> None:
    # the move done, the metadata write failed: the client's retry publishes again a
    # session whose bytes are already the blob (the mover's "published before")
    state = await new_session(store, "s1")
    await store.append("s1", state, body([b"once"]))
    digest = Digest.of(b"once")
    await store.publish("s1", digest, 4)
    await store.publish("s1", digest, 4)
    assert await read_blob(store, digest) == b"once"
