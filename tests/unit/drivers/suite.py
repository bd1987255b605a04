"""The shared driver test suite: every contract written in `dockyard.drivers.base`.

A driver's test module subclasses `DriverSuite` and provides a `driver` fixture (an empty
store, closed afterwards) and a `refuse_delete` fixture (a callable that makes the
backend refuse to delete one key, as a store refusing one key of a batch would); pytest
then runs every test here against it::

    class TestS3Driver(DriverSuite):
        @pytest.fixture
        async def driver(self, bucket) -> AsyncIterator[Driver]:
            ...
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from dockyard.drivers.base import Driver, DriverError, Staged, Writer


async def read_all(driver: Driver, key: str, offset: int = 0, length: int | None = None
                   ) -> bytes:
    return b"".join([chunk async for chunk in driver.read(key, offset, length)])


async def put(driver: Driver, key: str, data: bytes) -> None:
    writer = await driver.writer(key)
    await writer.write(data)
    await writer.close()


async def publish(driver: Driver, key: str, data: bytes) -> None:
    """Store `data` as a published object at `key`: written elsewhere, then moved."""
    await put(driver, "uploads/publishing", data)
    await driver.move("uploads/publishing", key)


async def keys(driver: Driver, prefix: str) -> list[str]:
    return sorted([k async for k in driver.list(prefix)])


class DriverSuite:
    """Contract tests; subclasses supply the `driver` fixture."""

    # --- stat ----------------------------------------------------------------

    async def test_stat_missing_is_none(self, driver: Driver) -> None:
        assert await driver.stat("nothing/here") is None

    async def test_stat_gives_size(self, driver: Driver) -> None:
        await put(driver, "a/b/c", b"12345")
        assert await driver.stat("a/b/c") == 5

    async def test_stat_empty_object(self, driver: Driver) -> None:
        await put(driver, "empty", b"")
        assert await driver.stat("empty") == 0

    async def test_stat_of_a_prefix_is_none(self, driver: Driver) -> None:
        await put(driver, "dir/sub/data", b"xyz")
        assert await driver.stat("dir/sub") is None
        assert await driver.stat("dir") is None

    async def test_stat_below_an_object_is_none(self, driver: Driver) -> None:
        await put(driver, "obj", b"xyz")
        assert await driver.stat("obj/child") is None

    # --- read ----------------------------------------------------------------

    async def test_read_whole(self, driver: Driver) -> None:
        await put(driver, "k", b"hello world")
        assert await read_all(driver, "k") == b"hello world"

    @pytest.mark.parametrize(
        ("offset", "length", "expected"),
        [
            (0, None, b"0123456789"),
            (3, None, b"3456789"),
            (0, 4, b"0123"),
            (2, 5, b"23456"),
            (9, None, b"9"),
            (9, 1, b"9"),
            (10, None, b""),
            (5, 0, b""),
            (7, 100, b"789"),  # a length past the end stops at the end
            (50, None, b""),
        ],
    )
    async def test_read_offset_and_length(
        self, driver: Driver, offset: int, length: int | None, expected: bytes
    ) -> None:
        await put(driver, "digits", b"0123456789")
        assert await read_all(driver, "digits", offset, length) == expected

    async def test_read_large_object_in_pieces(self, driver: Driver) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        await put(driver, "big", data)
        assert await read_all(driver, "big") == data
        start = 1024 * 1024 - 3
        assert await read_all(driver, "big", start, 1024 * 1024 + 10) == data[
            start:start + 1024 * 1024 + 10
        ]

    async def test_read_missing_raises_file_not_found(self, driver: Driver) -> None:
        with pytest.raises(FileNotFoundError):
            await read_all(driver, "missing/key")

    async def test_read_a_prefix_raises_file_not_found(self, driver: Driver) -> None:
        await put(driver, "p/q/data", b"x")
        with pytest.raises(FileNotFoundError):
            await read_all(driver, "p/q")

    # --- writer --------------------------------------------------------------

    async def test_writer_creates_and_appends(self, driver: Driver) -> None:
        writer = await driver.writer("up/1/data")
        assert isinstance(writer, Writer)
        assert writer.size == 0
        await writer.write(b"abc")
        assert writer.size == 3
        await writer.write(b"")
        await writer.write(b"defg")
        assert writer.size == 7
        await writer.close()
        assert await driver.stat("up/1/data") == 7
        assert await read_all(driver, "up/1/data") == b"abcdefg"

    async def test_writer_close_with_sync(self, driver: Driver) -> None:
        writer = await driver.writer("synced")
        await writer.write(b"durable")
        await writer.close(sync=True)
        assert await read_all(driver, "synced") == b"durable"

    async def test_writer_at_zero_creates_empty_key(self, driver: Driver) -> None:
        writer = await driver.writer("fresh")
        await writer.close()
        assert await driver.stat("fresh") == 0

    async def test_create_starts_an_empty_session(self, driver: Driver) -> None:
        await driver.create("uploads/new/data")
        if driver.stores_empty_sessions:
            assert await driver.stat("uploads/new/data") == 0
            assert await keys(driver, "uploads") == ["uploads/new/data"]
        else:  # stored from its first write
            assert await driver.stat("uploads/new/data") is None
            assert await keys(driver, "uploads") == []
        writer = await driver.writer("uploads/new/data", 0, resume=True)
        await writer.write(b"first chunk")
        await writer.close()
        assert await read_all(driver, "uploads/new/data") == b"first chunk"

    async def test_resume_of_a_missing_session_with_bytes_raises(self, driver: Driver) -> None:
        """A session deleted while a client wrote to it does not come back."""
        with pytest.raises(FileNotFoundError):
            await driver.writer("uploads/gone/data", 5, resume=True)
        if driver.stores_empty_sessions:
            with pytest.raises(FileNotFoundError):
                await driver.writer("uploads/gone/data", 0, resume=True)

    async def test_writer_resumes_at_end(self, driver: Driver) -> None:
        await put(driver, "r", b"first-")
        writer = await driver.writer("r", 6)
        assert writer.size == 6
        await writer.write(b"second")
        assert writer.size == 12
        await writer.close()
        assert await read_all(driver, "r") == b"first-second"

    async def test_writer_resume_discards_bytes_past_offset(self, driver: Driver) -> None:
        await put(driver, "r", b"0123456789")
        writer = await driver.writer("r", 4)
        assert writer.size == 4
        await writer.write(b"AB")
        await writer.close()
        assert await read_all(driver, "r") == b"0123AB"
        assert await driver.stat("r") == 6

    async def test_writer_resume_discards_even_without_writing(self, driver: Driver) -> None:
        await put(driver, "r", b"0123456789")
        writer = await driver.writer("r", 3)
        await writer.close()
        assert await read_all(driver, "r") == b"012"

    async def test_writer_at_zero_discards_everything(self, driver: Driver) -> None:
        await put(driver, "r", b"old contents")
        writer = await driver.writer("r", 0)
        await writer.write(b"new")
        await writer.close()
        assert await read_all(driver, "r") == b"new"

    async def test_several_resumes(self, driver: Driver) -> None:
        expected = b""
        for i in range(5):
            writer = await driver.writer("multi", len(expected))
            piece = bytes([65 + i]) * (i + 1)
            await writer.write(piece)
            await writer.close()
            expected += piece
        assert await read_all(driver, "multi") == expected

    # --- move ----------------------------------------------------------------

    async def test_move_publishes_and_removes_source(self, driver: Driver) -> None:
        await put(driver, "uploads/s/data", b"blob bytes")
        await driver.move("uploads/s/data", "blobs/sha256/ab/abcd/data")
        assert await driver.stat("uploads/s/data") is None
        assert await driver.stat("blobs/sha256/ab/abcd/data") == 10
        assert await read_all(driver, "blobs/sha256/ab/abcd/data") == b"blob bytes"

    async def test_move_keeps_existing_destination(self, driver: Driver) -> None:
        await put(driver, "dst", b"published")
        await put(driver, "src", b"same digest, other upload")
        await driver.move("src", "dst")
        assert await read_all(driver, "dst") == b"published"
        assert await driver.stat("src") is None

    async def test_move_is_idempotent(self, driver: Driver) -> None:
        for _ in range(3):
            await put(driver, "src", b"payload")
            await driver.move("src", "final/key")
        assert await read_all(driver, "final/key") == b"payload"
        assert await keys(driver, "final") == ["final/key"]
        assert await driver.stat("src") is None

    # --- put -----------------------------------------------------------------

    async def test_put_publishes_and_removes_the_scratch_key(self, driver: Driver) -> None:
        await driver.create("uploads/s/data")  # the session's bytes, as a POST makes
        await driver.put("blobs/sha256/ab/abcd/data", b"small blob", scratch="uploads/s/data")
        assert await read_all(driver, "blobs/sha256/ab/abcd/data") == b"small blob"
        assert await driver.stat("uploads/s/data") is None
        assert await keys(driver, "uploads") == []
        assert await keys(driver, "blobs") == ["blobs/sha256/ab/abcd/data"]

    async def test_put_without_a_scratch_object(self, driver: Driver) -> None:
        await driver.put("final/key", b"payload", scratch="uploads/never/data")
        assert await read_all(driver, "final/key") == b"payload"
        assert await driver.stat("uploads/never/data") is None

    async def test_put_over_an_existing_key_keeps_its_bytes(self, driver: Driver) -> None:
        await put(driver, "final/key", b"payload")
        await driver.put("final/key", b"payload", scratch="uploads/again/data")
        assert await read_all(driver, "final/key") == b"payload"
        assert await keys(driver, "final") == ["final/key"]

    # --- stage ---------------------------------------------------------------

    async def _staged(self, driver: Driver, key: str, data: bytes) -> Staged:
        """A stage of `data` at `key` (a session as a POST makes for scratch), written
        1 MiB at a time from one reused buffer, as the upload pipeline does."""
        await driver.create("uploads/s/data")
        staged = await driver.stage(key, scratch="uploads/s/data")
        buffer = bytearray(1 << 20)
        for start in range(0, len(data), len(buffer)):
            piece = data[start:start + len(buffer)]
            buffer[:len(piece)] = piece
            await staged.write(memoryview(buffer)[:len(piece)])
        buffer[:] = bytes(len(buffer))  # the writer kept no view of it
        await staged.close()
        assert staged.size == len(data)
        return staged

    @pytest.mark.parametrize("size", [0, 1000, 11 * 1024 * 1024 + 7])
    async def test_stage_publishes_on_commit_only(self, driver: Driver, size: int) -> None:
        data = os.urandom(size)
        staged = await self._staged(driver, "blobs/sha256/ab/abcd/data", data)
        assert await driver.stat("blobs/sha256/ab/abcd/data") is None
        assert await keys(driver, "blobs") == []
        await staged.commit()
        assert await driver.stat("blobs/sha256/ab/abcd/data") == size
        assert await read_all(driver, "blobs/sha256/ab/abcd/data") == data
        assert await keys(driver, "blobs") == ["blobs/sha256/ab/abcd/data"]
        assert await driver.abort_incomplete("blobs", time.time() + 60) == 0

    async def test_cancelled_stage_leaves_nothing_unfinished(self, driver: Driver) -> None:
        staged = await self._staged(driver, "blobs/sha256/ab/abcd/data",
                                    os.urandom(11 * 1024 * 1024))
        await staged.cancel()
        assert await driver.stat("blobs/sha256/ab/abcd/data") is None
        assert await keys(driver, "blobs") == []
        assert await driver.abort_incomplete("blobs", time.time() + 60) == 0

    async def test_stage_over_an_existing_key_keeps_its_bytes(self, driver: Driver) -> None:
        data = os.urandom(6 * 1024 * 1024)
        await publish(driver, "final/key", data)
        staged = await self._staged(driver, "final/key", data)
        await staged.commit()
        assert await read_all(driver, "final/key") == data
        assert await keys(driver, "final") == ["final/key"]

    # --- delete --------------------------------------------------------------

    async def test_delete_key(self, driver: Driver) -> None:
        await put(driver, "d/one", b"1")
        await put(driver, "d/two", b"2")
        await driver.delete("d/one")
        assert await driver.stat("d/one") is None
        assert await driver.stat("d/two") == 1

    async def test_delete_prefix(self, driver: Driver) -> None:
        await put(driver, "tree/a/data", b"1")
        await put(driver, "tree/a/deeper/more", b"2")
        await put(driver, "tree/b", b"3")
        await put(driver, "other", b"4")
        await driver.delete("tree/a")
        assert await keys(driver, "tree") == ["tree/b"]
        assert await driver.stat("tree/a/data") is None
        assert await driver.stat("other") == 1

    async def test_delete_prefix_is_by_component(self, driver: Driver) -> None:
        await put(driver, "x/ab/data", b"1")
        await put(driver, "x/abc/data", b"2")
        await driver.delete("x/ab")
        assert await keys(driver, "x") == ["x/abc/data"]

    async def test_delete_missing_is_not_an_error(self, driver: Driver) -> None:
        await driver.delete("never/was")
        await put(driver, "once", b"1")
        await driver.delete("once")
        await driver.delete("once")
        assert await driver.stat("once") is None

    async def test_delete_everything_leaves_nothing_listed(self, driver: Driver) -> None:
        await put(driver, "uploads/u1/data", b"1")
        await driver.delete("uploads/u1")
        assert await keys(driver, "uploads") == []

    # --- delete_many ---------------------------------------------------------

    async def test_delete_many_removes_published_objects(self, driver: Driver) -> None:
        names = [f"blobs/{i}/data" for i in range(7)]
        for name in [*names, "blobs/kept/data"]:
            await publish(driver, name, name.encode())
        assert await driver.delete_many(names) == {}
        assert await keys(driver, "blobs") == ["blobs/kept/data"]
        for name in names:
            assert await driver.stat(name) is None
        assert await read_all(driver, "blobs/kept/data") == b"blobs/kept/data"

    async def test_delete_many_of_missing_keys_is_not_an_error(self, driver: Driver) -> None:
        await publish(driver, "blobs/a/data", b"a")
        missing = ["never/was", "blobs/a/data/below", "blobs/b/data", "blobs/a/data"]
        assert await driver.delete_many(missing) == {}
        assert await driver.delete_many(missing) == {}  # again: all gone already
        assert await driver.delete_many([]) == {}
        assert await keys(driver, "blobs") == []

    async def test_delete_many_reports_the_keys_it_could_not_delete(
        self, driver: Driver, refuse_delete: Callable[[str], None]
    ) -> None:
        """One refused key does not stop the others, and is reported, not raised."""
        names = [f"blobs/{i}/data" for i in range(4)]
        for name in names:
            await publish(driver, name, b"x")
        refuse_delete("blobs/2/data")
        failed = await driver.delete_many([*names, "blobs/none/data"])
        assert list(failed) == ["blobs/2/data"]
        assert isinstance(failed["blobs/2/data"], DriverError)
        assert await keys(driver, "blobs") == ["blobs/2/data"]

    # --- abort_incomplete ----------------------------------------------------

    async def test_abort_incomplete_keeps_every_key(self, driver: Driver) -> None:
        """Only unfinished writes go: published objects and sessions are kept."""
        await publish(driver, "blobs/a/data", b"published")
        await put(driver, "uploads/s", b"a session")
        assert await driver.abort_incomplete("blobs", time.time() + 3600) == 0
        assert await driver.abort_incomplete("uploads", time.time() + 3600) == 0
        assert await read_all(driver, "blobs/a/data") == b"published"
        assert await read_all(driver, "uploads/s") == b"a session"

    # --- list ----------------------------------------------------------------

    async def test_list_recursive(self, driver: Driver) -> None:
        await put(driver, "l/a", b"1")
        await put(driver, "l/b/c", b"2")
        await put(driver, "l/b/d/e", b"3")
        await put(driver, "m/x", b"4")
        assert await keys(driver, "l") == ["l/a", "l/b/c", "l/b/d/e"]
        assert await keys(driver, "l/b") == ["l/b/c", "l/b/d/e"]
        assert await keys(driver, "m") == ["m/x"]

    async def test_list_missing_prefix_is_empty(self, driver: Driver) -> None:
        assert await keys(driver, "nothing") == []

    async def test_list_shows_moves(self, driver: Driver) -> None:
        await put(driver, "uploads/u/data", b"1")
        await driver.move("uploads/u/data", "blobs/x/data")
        assert await keys(driver, "uploads") == []
        assert await keys(driver, "blobs") == ["blobs/x/data"]
