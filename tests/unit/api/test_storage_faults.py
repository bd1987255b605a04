"""A storage backend that fails answers 503 UNAVAILABLE with Retry-After, not a 500.

The app runs in-process on a real socket (aiohttp's TestServer) over real stores; the
filesystem driver is made to fail as an unreachable object store would.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from dockyard.api.app import create_app
from dockyard.config.settings import load_settings
from dockyard.drivers.base import DriverError
from dockyard.drivers.filesystem import FilesystemDriver


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "storage.guard.min_free": 0})
    srv = TestServer(create_app(settings), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def test_a_failing_backend_gives_503_with_retry_after(
        server: TestServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    async def unreachable(*_: Any, **__: Any) -> Any:
        raise DriverError("S3 registry: Could not connect to http://10.9.8.7:9000/")

    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = str(server.make_url(""))
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v2/faults/x/blobs/uploads/")
        assert r.status_code == 202
        monkeypatch.setattr(FilesystemDriver, "writer", unreachable)
        r = await c.patch(r.headers["Location"], content=data)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        assert [e["code"] for e in r.json()["errors"]] == ["UNAVAILABLE"]
        assert "10.9.8.7" not in r.text  # what the backend said stays in the log
        assert "Could not connect" in caplog.text
        monkeypatch.undo()
        r = await c.post("/v2/faults/x/blobs/uploads/", params={"digest": digest},
                         content=data)
        assert r.status_code == 201  # back without a restart


@pytest.mark.parametrize(("size", "cut_at"), [(100_000, 0), (100_000, 60_000),
                                              (1_000_000, 700_000)])
async def test_a_store_failing_during_a_streamed_get(
        server: TestServer, monkeypatch: pytest.MonkeyPatch, size: int, cut_at: int
) -> None:
    """A store (no local file: streamed, as S3) failing while a blob is read: a small
    blob gets a clean 503; a big one, failing past what is read before the status, a
    body cut short and the connection closed, never other bytes in its place."""
    data = hashlib.sha512(b"seed").digest() * (size // 64)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    real_read = FilesystemDriver.read

    async def failing(self: FilesystemDriver, key: str, offset: int = 0,
                      length: int | None = None) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in real_read(self, key, offset, length):
            for start in range(0, len(chunk), 32_768):
                if sent >= cut_at:
                    raise DriverError("S3 registry: connection reset by the store")
                piece = chunk[start:start + 32_768]
                sent += len(piece)
                yield piece

    base = str(server.make_url(""))
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v2/faults/s/blobs/uploads/", params={"digest": digest},
                         content=data)
        assert r.status_code == 201
        monkeypatch.setattr(FilesystemDriver, "local_path", lambda self, key: None)
        monkeypatch.setattr(FilesystemDriver, "read", failing)
        if size <= 256 * 1024:
            r = await c.get(f"/v2/faults/s/blobs/{digest}")
            assert r.status_code == 503, r.text
            assert [e["code"] for e in r.json()["errors"]] == ["UNAVAILABLE"]
        else:
            async with c.stream("GET", f"/v2/faults/s/blobs/{digest}") as r:
                assert r.status_code == 200
                assert r.headers["Content-Length"] == str(len(data))
                got = bytearray()

                async def read_all() -> None:
                    async for chunk in r.aiter_raw():
                        got.extend(chunk)

                with pytest.raises(httpx.RemoteProtocolError):
                    await read_all()
                assert bytes(got) == data[:len(got)]  # only the blob's own bytes
                assert len(got) < len(data)
        monkeypatch.undo()
        monkeypatch.setattr(FilesystemDriver, "local_path", lambda self, key: None)
        r = await c.get(f"/v2/faults/s/blobs/{digest}")  # a new connection: all works
        assert r.status_code == 200
        assert r.content == data
