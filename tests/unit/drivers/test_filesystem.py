"""FilesystemDriver: the shared driver suite plus what only a local filesystem has."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dockyard.drivers import filesystem
from dockyard.drivers.base import Driver, DriverError
from dockyard.drivers.directio import ALIGN
from dockyard.drivers.filesystem import FilesystemDriver, FilesystemWriter
from dockyard.storage.buffers import BufferPool
from tests.unit.drivers.suite import DriverSuite, put, read_all


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    async def driver(self, tmp_path: Path) -> AsyncIterator[Driver]:
        driver = FilesystemDriver(tmp_path / "root")
        yield driver
        await driver.close()

    @pytest.fixture
    def refuse_delete(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> Callable[[str], None]:
        """The filesystem refuses to unlink one file (EACCES: root ignores modes)."""
        refused: set[Path] = set()
        unlink = Path.unlink

        def refusing(path: Path, missing_ok: bool = False) -> None:
            if path in refused:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", refusing)
        return lambda key: refused.add(tmp_path / "root" / key)


@pytest.fixture
def fs(tmp_path: Path) -> FilesystemDriver:
    return FilesystemDriver(tmp_path / "root")


def test_root_is_created(tmp_path: Path) -> None:
    FilesystemDriver(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


async def test_keys_are_plain_files(fs: FilesystemDriver) -> None:
    await put(fs, "blobs/sha256/ab/abc/data", b"bytes")
    path = fs.root / "blobs" / "sha256" / "ab" / "abc" / "data"
    assert path.read_bytes() == b"bytes"
    assert fs.local_path("blobs/sha256/ab/abc/data") == path


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "../outside"])
async def test_keys_escaping_the_root_are_refused(fs: FilesystemDriver, key: str) -> None:
    with pytest.raises(ValueError):
        await fs.stat(key)
    with pytest.raises(ValueError):
        await fs.writer(key)
    with pytest.raises(ValueError):
        await fs.delete(key)


async def test_delete_prunes_empty_parents(fs: FilesystemDriver) -> None:
    await put(fs, "uploads/u1/data", b"1")
    await put(fs, "blobs/x/data", b"2")
    await fs.delete("uploads/u1")
    assert not (fs.root / "uploads").exists()
    assert (fs.root / "blobs" / "x" / "data").exists()
    assert fs.root.is_dir()


async def test_resume_beyond_stored_bytes_refused(fs: FilesystemDriver) -> None:
    await put(fs, "short", b"abc")
    with pytest.raises(ValueError):
        await fs.writer("short", 10)
    assert await read_all(fs, "short") == b"abc"


async def test_move_leaves_no_source_file(fs: FilesystemDriver) -> None:
    await put(fs, "uploads/u/data", b"x")
    await fs.move("uploads/u/data", "blobs/a/data")
    assert not (fs.root / "uploads" / "u" / "data").exists()


async def test_creation_survives_concurrent_pruning(tmp_path: Path) -> None:
    """Writers and deleters racing on sibling keys: no write fails for a pruned parent."""
    import asyncio

    fs = FilesystemDriver(tmp_path / "root")

    async def churn(i: int) -> None:
        for n in range(100):
            key = f"uploads/{i}-{n}/data"
            await (await fs.writer(key)).close()
            await fs.move(key, f"blobs/sha256/ab/{i}-{n}/data")
            await fs.delete(f"blobs/sha256/ab/{i}-{n}")
            await fs.delete(f"uploads/{i}-{n}")

    await asyncio.gather(*(churn(i) for i in range(12)))
    assert [k async for k in fs.list("blobs")] == []


# --- O_DIRECT writes (storage.filesystem.direct_writes) ---------------------------------


def _aligned(data: bytes) -> memoryview:
    """`data` in a page-aligned writable buffer, as BlobStore hands it over."""
    buf = BufferPool(len(data)).take()[: len(data)]
    buf[:] = data
    return buf


async def test_direct_writes_store_exact_bytes(tmp_path: Path) -> None:
    fs = FilesystemDriver(tmp_path / "root", direct_writes=True)
    first, second, third = os.urandom(3 * ALIGN + 100), os.urandom(5000), os.urandom(ALIGN)
    writer = await fs.writer("uploads/u/data")
    await writer.write(_aligned(first))      # 3 pages direct, 100 bytes buffered
    await writer.write(second)               # read-only bytes: buffered
    await writer.write(_aligned(third))      # offset no longer aligned: buffered
    await writer.close(sync=True)
    assert isinstance(writer, FilesystemWriter)
    assert writer.direct_bytes == 3 * ALIGN
    assert await read_all(fs, "uploads/u/data") == first + second + third


async def test_direct_writes_resume_at_an_aligned_offset(tmp_path: Path) -> None:
    fs = FilesystemDriver(tmp_path / "root", direct_writes=True)
    head, tail = os.urandom(2 * ALIGN + 7), os.urandom(4 * ALIGN)
    await put(fs, "uploads/u/data", head)
    # a crash left 7 bytes past the recorded offset: resuming there discards them
    writer = await fs.writer("uploads/u/data", 2 * ALIGN, resume=True)
    await writer.write(_aligned(tail))
    await writer.close()
    assert isinstance(writer, FilesystemWriter)
    assert writer.direct_bytes == len(tail)
    assert await read_all(fs, "uploads/u/data") == head[: 2 * ALIGN] + tail


async def test_direct_writes_off_by_default(tmp_path: Path) -> None:
    fs = FilesystemDriver(tmp_path / "root")
    writer = await fs.writer("k")
    await writer.write(_aligned(os.urandom(2 * ALIGN)))
    await writer.close()
    assert isinstance(writer, FilesystemWriter)
    assert writer.direct_bytes == 0


async def test_direct_writes_fall_back_where_the_filesystem_refuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tmpfs takes O_DIRECT since Linux 6.6, so no filesystem here refuses it: make open
    # fail the way FUSE and some network filesystems do
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    fs = FilesystemDriver(tmp_path / "root", direct_writes=True)
    data = os.urandom(2 * ALIGN)
    writer = await fs.writer("k")
    await writer.write(_aligned(data))
    await writer.close()
    assert isinstance(writer, FilesystemWriter)
    assert writer.direct_bytes == 0
    assert await read_all(fs, "k") == data


def test_in_dir_retries_when_another_writer_made_the_directory(tmp_path: Path) -> None:
    """The directory is missing when our create runs, and made by another writer before
    we look: the create is tried again, not reported as a missing file (it was a 500
    under concurrent pushes)."""
    directory = tmp_path / "uploads"
    calls: list[int] = []

    def create() -> str:
        calls.append(1)
        if len(calls) == 1:
            directory.mkdir()  # the other writer, between our open and our check
            raise FileNotFoundError(directory / "session")
        return "created"

    assert filesystem._in_dir(directory, create) == "created"
    assert len(calls) == 2


def test_in_dir_reports_a_missing_file_in_an_existing_directory(tmp_path: Path) -> None:
    def create() -> str:
        raise FileNotFoundError("the source of a move is gone")

    with pytest.raises(FileNotFoundError, match="source"):
        filesystem._in_dir(tmp_path, create)


# --- faults of the filesystem: DriverError (503), but a missing key or a full disk ----


async def test_a_path_the_filesystem_cannot_resolve_is_a_driver_error(
        fs: FilesystemDriver) -> None:
    """ELOOP (a symlink loop where a key's directory should be): stat, read and
    writes fail as a storage fault, not a bare OSError (a 500)."""
    fs.root.joinpath("blobs").mkdir()
    os.symlink("loop", fs.root / "blobs" / "loop")
    with pytest.raises(DriverError, match="Too many levels of symbolic links"):
        await fs.stat("blobs/loop/data")
    with pytest.raises(DriverError):
        await read_all(fs, "blobs/loop/data")
    with pytest.raises(DriverError):
        await fs.writer("blobs/loop/data", 0)
    with pytest.raises(DriverError):
        await fs.delete("blobs/loop/data")


async def test_io_errors_are_driver_errors_but_a_full_disk_is_not(
        fs: FilesystemDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO, EROFS, EACCES while writing or reading: a storage fault (`DriverError`,
    503); ENOSPC and EDQUOT stay OSErrors, which `BlobStore` answers 507."""
    await put(fs, "stored", b"bytes")
    code = errno.EIO

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(filesystem.directio, "pwrite_all", failing)
    monkeypatch.setattr(filesystem.os, "pread", failing)
    for code in (errno.EIO, errno.EROFS, errno.EACCES):
        writer = await fs.writer("uploads/x", 0)
        with pytest.raises(DriverError) as caught:
            await writer.write(b"data")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == code
        await writer.close()
        with pytest.raises(DriverError):
            await read_all(fs, "stored")
    for code in (errno.ENOSPC, errno.EDQUOT):
        writer = await fs.writer("uploads/x", 0)
        with pytest.raises(OSError) as full:
            await writer.write(b"data")
        assert not isinstance(full.value, DriverError)
        assert full.value.errno == code
        await writer.close()
