"""The layer listing of the UI's layer page: formats, entry kinds and its bounds."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator

import pytest

from dockyard.core import layers
from dockyard.core.layers import list_layer


def archive(mode: str, names: list[str], size: int = 100) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = os.urandom(size)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Chunks:
    """An async iterator over bytes in small pieces that records being closed."""

    def __init__(self, data: bytes, piece: int = 1000) -> None:
        self.pieces = [data[i:i + piece] for i in range(0, len(data), piece)]
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.pieces:
            raise StopAsyncIteration
        return self.pieces.pop(0)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("mode", "name"), [("w:gz", "tar+gzip"), ("w", "tar"),
                                            ("w:bz2", "tar+bzip2"), ("w:xz", "tar+xz")])
async def test_every_tarfile_compression_is_listed(mode: str, name: str) -> None:
    chunks = Chunks(archive(mode, ["etc/", "etc/hosts", "./usr/bin/x"]))
    got = await list_layer(chunks)
    assert (got.format, got.error, got.stopped) == (name, "", "")
    assert [(e.path, e.kind, e.size) for e in got.entries] == [
        ("etc", "dir", 0), ("etc/hosts", "file", 100), ("usr/bin/x", "file", 100)]
    assert got.files_bytes == 200
    assert chunks.closed


async def test_whiteouts_name_what_they_hide() -> None:
    got = await list_layer(Chunks(archive("w:gz", ["a/.wh.gone", "b/c/.wh..wh..opq",
                                                   ".wh.top"])))
    assert [(e.kind, e.target) for e in got.entries] == [
        ("whiteout", "a/gone"), ("whiteout", "b/c/*"), ("whiteout", "top")]


async def test_a_listing_stops_at_the_entry_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "MAX_ENTRIES", 3)
    chunks = Chunks(archive("w:gz", [f"f{i}" for i in range(10)]))
    got = await list_layer(chunks)
    assert [e.path for e in got.entries] == ["f0", "f1", "f2"]
    assert got.stopped == "at 3 entries"
    assert chunks.closed  # the store's stream is let go


async def test_a_listing_stops_at_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "MAX_BYTES", 50_000)
    data = archive("w", [f"f{i}" for i in range(40)], size=10_000)  # ~400 KB
    got = await list_layer(Chunks(data, piece=10_000))
    assert 0 < len(got.entries) < 40
    assert got.stopped.startswith("after reading")


async def test_zstd_and_other_bytes_are_reported_not_raised() -> None:
    zstd = await list_layer(Chunks(b"\x28\xb5\x2f\xfd" + os.urandom(100)))
    assert (zstd.format, zstd.entries) == ("tar+zstd", [])
    assert "zstd" in zstd.error
    other = await list_layer(Chunks(b'{"spdxVersion": "SPDX-2.3"}' * 40))
    assert other.entries == []
    assert other.error.startswith("not a tar archive")


async def test_a_cancelled_listing_ends_its_thread_before_closing_the_stream() -> None:
    import asyncio

    class Slow(Chunks):
        async def __anext__(self) -> bytes:
            await asyncio.sleep(0.01)
            return await super().__anext__()

    chunks = Slow(archive("w", [f"f{i}" for i in range(200)], size=2000), piece=512)
    task = asyncio.ensure_future(list_layer(chunks))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chunks.closed
    assert chunks.pieces  # it stopped early, not at the end


async def test_a_store_failing_midway_is_named_as_such() -> None:
    class Failing(Chunks):
        async def __anext__(self) -> bytes:
            if len(self.pieces) < 25:  # about halfway
                raise OSError("the object store answered 503")
            return await super().__anext__()

    chunks = Failing(archive("w", [f"f{i}" for i in range(20)], size=2000), piece=1000)
    got = await list_layer(chunks)
    assert got.error == "its stored bytes could not be read (the object store answered 503)"
    assert 0 < len(got.entries) < 20  # what was read before stays listed
    assert chunks.closed


@pytest.mark.parametrize(("error", "said"), [
    (FileNotFoundError(2, "No such file or directory", "/srv/blobs/ab/abcd/data"),
     "they are missing from storage; `dockyard fsck` marks such blobs"),
    (PermissionError(13, "Permission denied", "/srv/blobs/ab/abcd/data"),
     "Permission denied")])
async def test_a_store_failing_at_once_is_named_without_its_path(
        error: OSError, said: str) -> None:
    """The first read failing (the blob's file removed under the storage tree) is the
    page's "could not be read", as a later one is, where it escaped as a 500; an OS
    error is said by its reason, never with the path it names."""
    class Gone(Chunks):
        async def __anext__(self) -> bytes:
            raise error

    chunks = Gone(archive("w", ["f"], size=10), piece=1000)
    got = await list_layer(chunks)
    assert got.error == f"its stored bytes could not be read ({said})"
    assert got.entries == []
    assert chunks.closed
