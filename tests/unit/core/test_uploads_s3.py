"""The upload purge on a real S3 server (SeaweedFS): what no session knows goes.

A node killed mid-publish leaves a multipart upload at the blob's key; a crash between
a session's row and its bytes (or a row deleted under it) leaves part objects and a
tail. The purge removes both. Metadata is SQLite in tmp_path; one S3 server for the
module, each test under its own `rootdirectory`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

import dockyard.core.uploads as uploads_module
from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.jobs import server_jobs
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUploadUnknown, DigestInvalid
from dockyard.storage import layout
from tests.support.s3 import PART, S3Server, running_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, s3: S3Server) -> Settings:
    s3_keys = {f"storage.s3.{k}": v for k, v in s3.storage_section()["s3"].items()}
    return load_settings(env={}, overrides={
        "storage.driver": "s3", **s3_keys,
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[Registry]:
    registry = await open_registry(settings)
    yield registry
    await close_registry(registry)


def _client(s3: S3Server) -> Any:
    """A plain botocore client on the server, as another tool (or a dead node) uses it."""
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=s3.info["endpoint"], region_name=s3.info["region"],
        aws_access_key_id=s3.info["accesskey"], aws_secret_access_key=s3.info["secretkey"],
        config=Config(s3={"addressing_style": "path"}))


def _uploads(client: Any, bucket: str, prefix: str) -> list[str]:
    page = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in page.get("Uploads", []))


def _objects(client: Any, bucket: str, prefix: str) -> list[str]:
    page = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in page.get("Contents", []))


def _recording_calls(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The S3 operations the registry's driver calls from now on, in order."""
    driver = registry._blobstore.driver
    calls: list[str] = []
    real = driver._call  # type: ignore[attr-defined]

    async def recording(operation: str, **params: object) -> object:
        calls.append(operation)
        return await real(operation, **params)

    monkeypatch.setattr(driver, "_call", recording)
    return calls


async def _push_whole(registry: Registry, monkeypatch: pytest.MonkeyPatch, name: str,
                      digest: Digest, body: AsyncIterator[bytes], size: int) -> list[str]:
    """POST, then the whole blob in one PUT, as a monolithic push: the S3 calls the PUT
    made (its size checked)."""
    session = await registry.uploads.start(name)
    calls = _recording_calls(registry, monkeypatch)
    assert await registry.uploads.finish(name, session.id, digest, body,
                                         Chunk(length=size)) == size
    monkeypatch.undo()
    return calls


def _dead_publish(client: Any, bucket: str, key: str) -> None:
    """What a node killed mid-publish leaves: a multipart upload with a part copied."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1,
                       Body=os.urandom(PART))


async def test_the_purge_aborts_multipart_uploads_no_session_knows(
    registry: Registry, settings: Settings, s3: S3Server
) -> None:
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    old = f"{root}/blobs/sha256/aa/{'a' * 64}/data"
    fresh = f"{root}/blobs/sha256/bb/{'b' * 64}/data"
    await asyncio.to_thread(_dead_publish, client, bucket, old)
    # the store dates uploads to the second (down): `old` is older than the expiry by
    # at least 1.5 s, `fresh` younger by at least 3 s less what the steps up to the
    # purge take (a 0.5 s margin was not enough on a busy machine)
    await asyncio.sleep(5.5)
    await asyncio.to_thread(_dead_publish, client, bucket, fresh)
    assert _uploads(client, bucket, root + "/") == [old, fresh]

    assert await registry.uploads.purge(3600, publish_expiry=4.0) == 0

    assert _uploads(client, bucket, root + "/") == [fresh]  # a publish maybe still going
    assert _objects(client, bucket, root + "/") == []  # nothing was ever visible
    await registry.uploads.purge(3600)  # without an age: publishes are left alone
    assert _uploads(client, bucket, root + "/") == [fresh]


async def test_the_purge_job_uses_publish_expiry(
    registry: Registry, settings: Settings, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduled uploads purge aborts publishes older than
    `storage.uploads.publish_expiry` (a day by default), younger ones stay."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    key = f"{root}/blobs/sha256/cc/{'c' * 64}/data"
    await asyncio.to_thread(_dead_publish, client, bucket, key)
    job = next(j for j in server_jobs(registry, settings) if j.name == "uploads.purge")
    await job.run()
    assert _uploads(client, bucket, root + "/") == [key]  # minutes old, not a day
    day = settings.storage.uploads.publish_expiry.total_seconds()
    assert day == 24 * 3600
    later = SimpleNamespace(time=lambda: time.time() + day + 60, monotonic=time.monotonic)
    monkeypatch.setattr(uploads_module, "time", later)  # the purge's clock, a day on
    await job.run()
    assert _uploads(client, bucket, root + "/") == []


async def test_session_bytes_without_a_row_are_swept(
    registry: Registry, settings: Settings, s3: S3Server
) -> None:
    """Part objects and the tail of a session whose row is gone: the orphan sweep
    (second sighting) removes them all, and leaves live sessions alone."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(2 * PART + 100)

    orphan = await registry.uploads.start("repo")
    await registry.uploads.append("repo", orphan.id, body(), Chunk())
    live = await registry.uploads.start("repo")
    await registry.uploads.append("repo", live.id, body(), Chunk())
    prefix = f"{root}/uploads/{orphan.id}"
    assert _objects(client, bucket, prefix) == [
        prefix, f"{prefix}.parts/00001", f"{prefix}.parts/00002"]
    assert await registry._store.delete_upload(orphan.id)  # as a crash leaves it

    assert await registry.uploads.purge(3600) == 0  # first sighting: maybe just born
    assert await registry.uploads.purge(3600) == 1
    assert _objects(client, bucket, prefix) == []
    live_prefix = f"{root}/uploads/{live.id}"
    assert len(_objects(client, bucket, live_prefix)) == 3
    assert await registry.uploads.get("repo", live.id)


async def test_a_small_whole_blob_is_one_put_and_leaves_no_session_bytes(
    registry: Registry, settings: Settings, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config-sized blob in one PUT: written to its key in one PutObject (no session
    write, no server-side copy), readable, and the session's bytes are gone."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    data = os.urandom(4096)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())

    async def body() -> AsyncIterator[bytes]:
        yield data

    calls = await _push_whole(registry, monkeypatch, "small", digest, body(), len(data))
    assert calls.count("put_object") == 1
    assert not {"copy_object", "upload_part_copy", "get_object", "head_object"} & set(calls)
    assert _objects(client, bucket, f"{root}/uploads/") == []
    info = await registry.blobs.stat("small", digest)
    stored = b"".join([c async for c in registry._blobstore.read(digest)])
    assert (info.size, stored) == (len(data), data)


def test_publish_expiry_shorter_than_an_hour_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"storage\.uploads\.publish_expiry"):
        load_settings(None, env={"DOCKYARD_STORAGE_UPLOADS_PUBLISH_EXPIRY": "10m"})
    assert load_settings(None, env={"DOCKYARD_STORAGE_UPLOADS_PUBLISH_EXPIRY": "2h"}
                         ).storage.uploads.publish_expiry.total_seconds() == 7200


async def test_a_small_blob_push_is_one_s3_call_from_post_to_put(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST stores nothing (a session is stored from its first write) and the PUT of a
    whole small blob is one PutObject: the push of a small image's two blobs costs two
    calls, not the twelve it took when every session had an object from its start."""
    data = os.urandom(1000)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    async def body() -> AsyncIterator[bytes]:
        yield data

    calls = _recording_calls(registry, monkeypatch)
    session = await registry.uploads.start("calls")
    assert calls == []
    assert await registry.uploads.finish("calls", session.id, digest, body(),
                                         Chunk(length=len(data))) == len(data)
    assert calls == ["put_object"]


async def test_session_bytes_left_behind_by_a_small_put_are_swept(
    registry: Registry, settings: Settings, s3: S3Server
) -> None:
    """An empty PATCH stores an empty tail; the small PUT after it leaves that tail to
    the sweep, which removes it once no row owns it."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    data = os.urandom(1000)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())

    async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    session = await registry.uploads.start("left")
    await registry.uploads.append("left", session.id, chunks(), Chunk(length=0))
    prefix = f"{root}/uploads/{session.id}"
    assert _objects(client, bucket, prefix) == [prefix]
    await registry.uploads.finish("left", session.id, digest, chunks(data),
                                  Chunk(length=len(data)))
    assert _objects(client, bucket, prefix) == [prefix]
    assert await registry.uploads.purge(3600) == 0  # first sighting
    assert await registry.uploads.purge(3600) == 1
    assert _objects(client, bucket, prefix) == []


async def test_part_objects_whose_tail_is_gone_are_swept(
    registry: Registry, settings: Settings, s3: S3Server
) -> None:
    """A crash can leave a session's part objects without the tail that counts them,
    and its row gone: the sweep still finds and removes them."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(2 * PART + 100)

    session = await registry.uploads.start("tailless")
    await registry.uploads.append("tailless", session.id, body(), Chunk())
    prefix = f"{root}/uploads/{session.id}"
    client.delete_object(Bucket=bucket, Key=prefix)
    assert await registry._store.delete_upload(session.id)
    assert _objects(client, bucket, prefix) == [f"{prefix}.parts/00001",
                                                f"{prefix}.parts/00002"]
    assert await registry.uploads.purge(3600) == 0
    assert await registry.uploads.purge(3600) == 1
    assert _objects(client, bucket, prefix) == []


async def test_a_large_monolithic_push_is_stored_once_where_the_blob_ends_up(
    registry: Registry, settings: Settings, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole blob in one PUT, larger than a part: its parts go into the blob's own
    multipart upload as they arrive (no session object, no server-side copy); a wrong
    digest publishes nothing and leaves no multipart upload."""
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    data = os.urandom(2 * PART + 4321)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 300_000):
            yield data[start:start + 300_000]

    wrong = await registry.uploads.start("big")
    bad = Digest.parse("sha256:" + "0" * 64)
    with pytest.raises(DigestInvalid):
        await registry.uploads.finish("big", wrong.id, bad, body(), Chunk(length=len(data)))
    assert _uploads(client, bucket, f"{root}/") == []
    assert _objects(client, bucket, f"{root}/") == []
    with pytest.raises(BlobUploadUnknown):  # the session ended, as Distribution does
        await registry.uploads.get("big", wrong.id)

    calls = await _push_whole(registry, monkeypatch, "big", digest, body(), len(data))
    assert calls.count("upload_part") == 3
    assert not {"copy_object", "upload_part_copy", "get_object"} & set(calls)
    assert _objects(client, bucket, f"{root}/") == [f"{root}/{layout.blob_key(digest)}"]
    assert _uploads(client, bucket, f"{root}/") == []
    stored = b"".join([c async for c in registry._blobstore.read(digest)])
    assert stored == data
    assert (await registry.blobs.stat("big", digest)).size == len(data)


async def test_a_monolithic_push_cut_midway_leaves_nothing_and_can_be_sent_again(
    registry: Registry, settings: Settings, s3: S3Server
) -> None:
    client = _client(s3)
    bucket, root = s3.info["bucket"], settings.storage.s3.rootdirectory
    data = os.urandom(2 * PART + 99)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())

    async def cut() -> AsyncIterator[bytes]:
        yield data[:PART + 10]
        raise ConnectionResetError("client went away")

    async def whole() -> AsyncIterator[bytes]:
        yield data

    session = await registry.uploads.start("cut")
    with pytest.raises(ConnectionResetError):
        await registry.uploads.finish("cut", session.id, digest, cut(), Chunk(length=len(data)))
    assert _uploads(client, bucket, f"{root}/") == []  # its multipart upload aborted
    assert await registry.blobs.stored_size(digest) is None  # nothing published
    assert (await registry.uploads.get("cut", session.id)).offset == 0
    assert await registry.uploads.finish("cut", session.id, digest, whole(),
                                         Chunk(length=len(data))) == len(data)
    assert b"".join([c async for c in registry._blobstore.read(digest)]) == data


async def test_a_session_finished_without_a_body_publishes_only_its_recorded_bytes(
        registry: Registry) -> None:
    # a chunk cut short leaves bytes past the recorded offset; a PUT without a body
    # then published them with the blob (the hash covered only the recorded ones), so
    # every pull of that digest would have failed its check
    data = os.urandom(PART + 1000)
    digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())

    async def one(piece: bytes) -> AsyncIterator[bytes]:
        yield piece

    async def cut() -> AsyncIterator[bytes]:
        yield b"x" * (PART + 500)
        raise ConnectionResetError("client went away")

    session = await registry.uploads.start("extra")
    await registry.uploads.append("extra", session.id, one(data), Chunk(length=len(data)))
    with pytest.raises(ConnectionResetError):
        await registry.uploads.append("extra", session.id, cut(),
                                      Chunk(start=len(data), length=PART + 1000))
    assert await registry.uploads.finish("extra", session.id, digest, None, Chunk()) \
        == len(data)
    assert await registry.blobs.stored_size(digest) == len(data)
    assert b"".join([c async for c in registry._blobstore.read(digest)]) == data


async def test_the_empty_blob_pushed_by_post_then_a_put_without_body(
        registry: Registry) -> None:
    # POST, then PUT ?digest=<empty> with Content-Length 0: on S3 the session has no
    # object yet, and the publish answered BLOB_UPLOAD_UNKNOWN
    empty = Digest.parse("sha256:" + hashlib.sha256(b"").hexdigest())
    session = await registry.uploads.start("empty")
    assert await registry.uploads.finish("empty", session.id, empty, None,
                                         Chunk(length=0)) == 0
    assert await registry.blobs.stored_size(empty) == 0
    assert (await registry.blobs.stat("empty", empty)).size == 0
