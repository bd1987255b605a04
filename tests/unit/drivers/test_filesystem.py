"""FilesystemDriver: the shared driver suite plus what only a local filesystem has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.drivers.base import Driver
from dockyard.drivers.filesystem import FilesystemDriver
from tests.unit.drivers.suite import DriverSuite, LockSuite, put, read_all


class TestFilesystemDriver(DriverSuite, LockSuite):
    @pytest.fixture
    async def driver(self, tmp_path: Path) -> AsyncIterator[Driver]:
        driver = FilesystemDriver(tmp_path / "root")
        yield driver
        await driver.close()


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
