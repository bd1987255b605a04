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
