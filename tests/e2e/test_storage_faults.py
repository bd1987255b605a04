"""The data filesystem fails under a running registry: remounted read-only (as the
kernel does after an I/O error on ext4 with `errors=remount-ro`).

Writes get 503 UNAVAILABLE with Retry-After (a storage fault: try again later), never
a 500; reads of what is stored go on; once the filesystem takes writes again, so does
the registry, without a restart. Needs root (mount); skipped where mount is refused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.test_full_disk import mount_tmpfs
from tests.support.servers import start_dockyard


@pytest.fixture
def data_fs(tmp_path: Path) -> Iterator[Path]:
    """A filesystem of the test's own (the server's data directory)."""
    yield from mount_tmpfs(tmp_path / "data", "64m")


def remount(path: Path, mode: str) -> None:
    proc = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text[:500])
    assert resp.headers.get("Retry-After", "").isdigit()
    assert resp.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_a_read_only_data_filesystem_is_503_then_recovers(data_fs: Path, tmp_path: Path
                                                          ) -> None:
    config = tmp_path / "config.yml"  # the metadata off the data filesystem
    config.write_text(yaml.safe_dump(
        {"database": {"url": f"sqlite:///{tmp_path / 'metadata.db'}"}}))
    server = start_dockyard(data_fs, config=config)
    repo = f"faults/ro-{uuid.uuid4().hex[:8]}"
    stored = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(stored).hexdigest()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                       content=stored)
            assert r.status_code == 201, r.text
            remount(data_fs, "ro")
            try:
                assert_unavailable(c.post(f"/v2/{repo}/blobs/uploads/"))
                other = os.urandom(1000)
                assert_unavailable(c.post(
                    f"/v2/{repo}/blobs/uploads/", content=other,
                    params={"digest": "sha256:" + hashlib.sha256(other).hexdigest()}))
                r = c.get(f"/v2/{repo}/blobs/{digest}")
                assert r.status_code == 200
                assert r.content == stored
            finally:
                remount(data_fs, "rw")
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Read-only file system" in log
    assert "Traceback" not in log, log[-4000:]
