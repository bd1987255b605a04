"""A full disk, recovered through Dockyard alone.

The server's data directory (blobs and `metadata.db`) is a 64 MiB tmpfs the test
mounts. Pushes fill it until the registry refuses them; then another writer takes the
last free byte, so the filesystem is truly full. While it is, pulls keep working and
pushes get a clean 507 with an OCI error body naming the storage; `dockyard rm` and
`dockyard gc` (the real commands) still work, and afterwards pushes succeed again —
without anything removed by hand. Needs root (mount); skipped where mount is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from dockyard.core.health import CACHE_SECONDS
from tests.e2e.test_lifecycle import (
    blob_files,
    dockyard,
    files_under,
    gc,
    image_blobs,
    pull_verified,
)
from tests.support.clients import Skopeo
from tests.support.images import random_layout
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import (
    canonical,
    descriptor,
    digest_of,
    error_codes,
    put_manifest,
    with_digest,
)
from tests.support.servers import start_dockyard

MiB = 1024 * 1024
LAYER = 4 * MiB
RESERVE = 16 * MiB  # storage.guard.reserve's default


def mount_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem of the test's own (the server's data directory)."""
    yield from mount_tmpfs(tmp_path / "data", "64m")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def push(client: httpx.Client, repo: str, layer: bytes) -> tuple[bytes | None, httpx.Response]:
    """Push an image of `layer` and a fresh config: (its manifest, the last answer);
    the manifest is None when a step was refused (the answer is the refusal)."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": uuid.uuid4().hex}).encode()
    for blob in (config, layer):
        resp = client.post(f"/v2/{repo}/blobs/uploads/")
        if resp.status_code != 202:
            return None, resp
        resp = client.put(with_digest(resp.headers["location"], digest_of(blob)), content=blob,
                          headers={"Content-Type": "application/octet-stream"})
        if resp.status_code != 201:
            return None, resp
    payload = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": descriptor(OCI_CONFIG, config),
                         "layers": [descriptor(OCI_LAYER, layer)]})
    resp = put_manifest(client, repo, "latest", payload, OCI_MANIFEST)
    return (payload if resp.status_code == 201 else None), resp


def assert_refused_for_space(resp: httpx.Response) -> None:
    """A clean refusal: 507 Insufficient Storage, an OCI error naming the storage."""
    assert resp.status_code == 507, (resp.status_code, resp.text[:500])
    assert error_codes(resp)
    message = resp.json()["errors"][0]["message"].lower()
    assert "insufficient storage" in message, message
    assert "internal server error" not in message


def test_full_disk_recovers_with_rm_and_gc(small_fs: Path, tmp_path: Path) -> None:
    data = small_fs
    server = start_dockyard(data, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            keep, kept = "full/keep", None
            pushed: list[str] = []
            refusal = None
            for i in range(40):  # 64 MiB hold at most 15 layers of 4 MiB
                repo = keep if i == 0 else f"full/b{i:02d}"
                manifest, resp = push(c, repo, os.urandom(LAYER))
                if manifest is None:
                    refusal = resp
                    break
                if i == 0:
                    kept = manifest
                else:
                    pushed.append(repo)
            assert refusal is not None, "the registry never refused a push"
            assert kept is not None
            assert len(pushed) >= 5, pushed
            assert_refused_for_space(refusal)
            # a refused upload leaves no bytes behind
            assert files_under(data / "uploads") == []

            # another writer takes every byte left: the filesystem is truly full
            fd = os.open(data / "other-writer.bin", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while True:
                    os.write(fd, b"\0" * 65536)
            except OSError:
                pass
            try:
                while True:
                    os.write(fd, b"\0")
            except OSError:
                pass
            os.close(fd)
            assert free_bytes(data) == 0
            # each worker reads the free space at least once a second (between two
            # readings an upload it accepts meets the full disk: a clean 507 as well)
            time.sleep(1.1)

            # reads keep working on the full disk
            kept_blobs = pull_verified(c, keep, "latest", kept)
            for repo in pushed[:3]:
                pull_verified(c, repo, "latest")
            # pushes are refused cleanly
            assert_refused_for_space(c.post(f"/v2/{keep}/blobs/uploads/"))
            _, resp = push(c, "full/more", os.urandom(1024))
            assert_refused_for_space(resp)
            if shutil.which("skopeo"):  # what a client prints: the 5xx status line
                skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[server.host])
                image = random_layout(tmp_path / "image", "v1")
                out = skopeo.copy(image.ref, f"docker://{server.host}/full/skopeo:v1",
                                  check=False)
                assert out.returncode != 0
                assert "507 Insufficient Storage" in out.stderr, out.stderr[-2000:]

            assert free_bytes(data) == 0
            assert (data / "reserve").exists()

            # recovery through Dockyard: delete what is not needed, collect it; the
            # deletes are the first writes on the full disk and get the reserve
            rm = dockyard("rm", "--yes", "--registry", server.url, "full/b*")
            assert rm.returncode == 0, (rm.stdout, rm.stderr)
            assert sum(line.startswith("deleted ") for line in rm.stdout.splitlines()) \
                >= len(pushed), rm.stdout
            assert not (data / "reserve").exists()
            for digest in kept_blobs:  # a HEAD (which notes the check) answers too
                assert c.head(f"/v2/{keep}/blobs/{digest}").status_code == 200
            report = gc(data, "--grace", "0s")
            assert report["failed"] == 0, report
            assert report["bytes_freed"] >= len(pushed) * LAYER, report
            assert blob_files(data) == image_blobs(kept)

            # pushes work again at once
            manifest, resp = push(c, "full/again", os.urandom(LAYER))
            assert manifest is not None, (resp.status_code, resp.text[:500])
            pull_verified(c, "full/again", "latest", manifest)
            pull_verified(c, keep, "latest", kept)
            # and the storage reserve is in place again for the next time
            assert (data / "reserve").stat().st_blocks * 512 >= RESERVE
    finally:
        server.stop()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "data", "32m")


def test_upload_that_runs_out_of_space_is_removed_at_once(tiny_fs: Path) -> None:
    """A body streamed without a length (as Docker sends layers) passes the free-space
    check and then meets a full disk: a clean 507, its bytes gone at once, nothing of
    it visible, and the disk takes the next push."""
    data = tiny_fs
    server = start_dockyard(data, workers=1)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            before = free_bytes(data)
            chunk = os.urandom(MiB)

            def body() -> Iterator[bytes]:  # no Content-Length: chunked encoding
                for _ in range(before // MiB + 2):
                    yield chunk

            location = c.post("/v2/full/big/blobs/uploads/").headers["location"]
            resp = c.patch(location, content=body(),
                           headers={"Content-Type": "application/octet-stream"})
            assert_refused_for_space(resp)
            assert files_under(data / "uploads") == []
            assert free_bytes(data) >= before - MiB
            assert c.get(location).status_code == 404  # the session ended with its bytes
            assert "full/big" not in c.get("/v2/_catalog").json()["repositories"]
            # and the disk takes the next push
            small = os.urandom(MiB)
            resp = c.post("/v2/full/big/blobs/uploads/")
            resp = c.put(with_digest(resp.headers["location"], digest_of(small)), content=small)
            assert resp.status_code == 201, resp.text
    finally:
        server.stop()


def test_refused_patch_keeps_the_bytes_already_received(tiny_fs: Path) -> None:
    """A PATCH whose announced length the free space cannot take is refused (507)
    before a byte of it is written: the session keeps its offset and bytes, and the
    client may resume once space is freed."""
    data = tiny_fs
    server = start_dockyard(data, workers=1)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            first = os.urandom(1024)
            location = c.post("/v2/full/keep/blobs/uploads/").headers["location"]
            resp = c.patch(location, content=first, headers={"Content-Range": "0-1023"})
            assert resp.status_code == 202, resp.text
            location = resp.headers["location"]
            # more than is free, less than the filesystem could hold empty
            announced = free_bytes(data) + MiB
            resp = c.patch(location, content=iter([b"abc"]),
                           headers={"Content-Range": f"1024-{1024 + announced - 1}"})
            assert_refused_for_space(resp)
            status = c.get(location)
            assert status.status_code == 204, status.text
            assert status.headers["range"] == "0-1023"
            rest = os.urandom(1024)
            resp = c.patch(location, content=rest, headers={"Content-Range": "1024-2047"})
            assert resp.status_code == 202, resp.text
            digest = digest_of(first + rest)
            resp = c.put(with_digest(resp.headers["location"], digest))
            assert resp.status_code == 201, resp.text
            assert c.get(f"/v2/full/keep/blobs/{digest}").content == first + rest
    finally:
        server.stop()


def _fill(f: BinaryIO) -> None:
    """Write to `f` until the disk holds not one more byte."""
    with contextlib.suppress(OSError):
        while True:
            f.write(os.urandom(MiB))
            f.flush()
    assert free_bytes(Path(f.name).parent) < MiB


def test_the_readiness_probe_leaves_no_file_on_a_full_disk(tiny_fs: Path) -> None:
    """The probe's write failing on a full disk left its file under `uploads/` (fsck
    then named it an orphan upload): /readyz says the storage refuses writes, and the
    file is gone."""
    data = tiny_fs
    server = start_dockyard(data, workers=1)
    try:
        filler = data / "filler"
        with filler.open("wb") as f:
            _fill(f)
        resp = httpx.get(server.url + "/readyz", timeout=30)
        assert resp.status_code == 503, resp.text
        assert files_under(data / "uploads") == []
        filler.unlink()
        time.sleep(CACHE_SECONDS + 0.2)  # a readiness result is kept that long
        again = httpx.get(server.url + "/readyz", timeout=30)
        assert again.status_code == 200, again.text
        assert files_under(data / "uploads") == []
    finally:
        server.stop()
