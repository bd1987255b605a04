"""`storage.filesystem.direct_writes`: uploads written with O_DIRECT come back byte for byte.

Direct writes only take page-aligned stretches at page-aligned offsets; these pushes hit
every mix of aligned and unaligned starts, lengths and tails, on two workers, and a real
client (skopeo) copies an image in and out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.clients import Skopeo
from tests.support.images import random_layout, read_dir_layout, sha256
from tests.support.oci_api import digest_of
from tests.support.servers import Server, start_dockyard

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_dockyard(tmp_path_factory.mktemp("direct") / "data", workers=2,
                            env={"DOCKYARD_STORAGE_FILESYSTEM_DIRECT_WRITES": "true"})
    try:
        yield server
    finally:
        server.stop()


def _absolute(server: Server, location: str) -> str:
    return location if location.startswith("http") else server.url + location


def _pull(client: httpx.Client, server: Server, repo: str, digest: str) -> bytes:
    resp = client.get(f"{server.url}/v2/{repo}/blobs/{digest}")
    assert resp.status_code == 200
    return resp.content


@pytest.mark.parametrize("size", [4096, 3 * MiB, 3 * MiB + 123, 100])
def test_monolithic_push(direct: Server, size: int) -> None:
    data = os.urandom(size)
    digest = digest_of(data)
    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{direct.url}/v2/direct/mono/blobs/uploads/",
                           params={"digest": digest}, content=data)
        assert resp.status_code == 201, resp.text
        assert _pull(client, direct, "direct/mono", digest) == data


@pytest.mark.parametrize("chunks", [
    [MiB, MiB, 123],                 # aligned chunks, unaligned tail
    [1000, MiB, 2 * MiB + 5],        # unaligned from the first chunk on
    [4096, 1, 4095, MiB],            # back on a page boundary after an unaligned stretch
])
def test_chunked_push(direct: Server, chunks: list[int]) -> None:
    data = os.urandom(sum(chunks))
    digest = digest_of(data)
    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{direct.url}/v2/direct/chunked/blobs/uploads/")
        assert resp.status_code == 202
        location, offset = _absolute(direct, resp.headers["Location"]), 0
        for length in chunks:
            resp = client.patch(location, content=data[offset:offset + length], headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + length - 1}",
            })
            assert resp.status_code == 202, resp.text
            offset += length
            assert resp.headers["Range"] == f"0-{offset - 1}"
            location = _absolute(direct, resp.headers["Location"])
        resp = client.put(location, params={"digest": digest})
        assert resp.status_code == 201, resp.text
        assert _pull(client, direct, "direct/chunked", digest) == data


def test_skopeo_round_trip(direct: Server, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (make test installs it)")
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[direct.host])
    image = random_layout(tmp_path / "src", "v1", layer_sizes=(5 * MiB + 17, 4096, 300))
    dest = f"docker://{direct.host}/direct/skopeo:v1"
    skopeo.copy(image.ref, dest, "--preserve-digests")
    out = tmp_path / "out"
    skopeo.copy(dest, f"dir:{out}", "--preserve-digests")
    copied = read_dir_layout(out)
    assert copied.digest == image.digest
    for digest in image.all_digests():
        assert sha256(copied.blob(digest)) == digest
