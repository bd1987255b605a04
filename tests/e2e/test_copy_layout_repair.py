"""`dockyard copy` into an OCI image layout, run again after the layout lost blobs.

A tag index.json records at the right digest was taken for up to date without a look at
the blobs it needs, so a layout with a layer deleted or cut short stayed broken after the
rerun. Now the rerun checks each blob the tag needs (a regular file of its descriptor's
size) and fetches what is missing. The source is a real `dockyard serve`; the layout is
read back by skopeo (Debian's), which verifies every blob's digest as it copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clients import Skopeo
from tests.support.images import Layout, multiplatform_layout, random_layout, sha256
from tests.support.servers import Server


def dockyard_copy(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "copy", "--src-tls-verify=false",
         "--dest-tls-verify=false", *args], text=True, capture_output=True, timeout=300,
        stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture
def skopeo(tmp_path: Path, dockyard: Server) -> Skopeo:
    return Skopeo(tmp_path / "skopeo", insecure_hosts=[dockyard.host])


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def damage(out: Path, deleted: str, truncated: str) -> None:
    blob_file(out, deleted).unlink()
    cut = blob_file(out, truncated)
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])


def assert_whole(out: Path, source: Layout) -> None:
    """Every blob the source's tag reaches is in `out` with the bytes of its digest."""
    for digest in source.all_digests():
        assert sha256(blob_file(out, digest).read_bytes()) == digest, digest
    assert not list((out / "blobs" / "sha256").glob(".tmp-*"))


def test_a_rerun_restores_layers_deleted_or_cut_short(
        dockyard: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    source = random_layout(tmp_path / "lay", "v1", layer_sizes=(64 << 10, 32 << 10, 8 << 10))
    dockyard_copy(source.ref, f"{dockyard.host}/repair/app:v1")
    out = tmp_path / "out"
    first = dockyard_copy(f"{dockyard.host}/repair/app:v1", f"oci:{out}:v1")
    assert "blobs 4 copied" in first, first
    layers = source.layer_digests()
    damage(out, deleted=layers[0], truncated=layers[1])

    again = dockyard_copy(f"{dockyard.host}/repair/app:v1", f"oci:{out}:v1")
    assert "(0 already up to date)" in again, again
    assert "blobs 2 copied, 0 mounted, 2 skipped" in again, again  # config, last layer
    assert_whole(out, source)
    [entry] = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["digest"] == source.digest
    assert skopeo.inspect(f"oci:{out}:v1")["Digest"] == source.digest
    skopeo.run("copy", f"oci:{out}:v1", f"dir:{tmp_path / 'check'}")
    for digest in layers:
        assert sha256((tmp_path / "check" / digest.split(":")[1]).read_bytes()) == digest

    third = dockyard_copy(f"{dockyard.host}/repair/app:v1", f"oci:{out}:v1")
    assert "(1 already up to date)" in third, third
    assert "blobs 0 copied, 0 mounted, 0 skipped" in third, third


def test_a_rerun_restores_the_blobs_of_an_index_child(
        dockyard: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    source = multiplatform_layout(tmp_path / "lay", "multi")
    dockyard_copy(source.ref, f"{dockyard.host}/repair/multi:v1")
    out = tmp_path / "out"
    dockyard_copy(f"{dockyard.host}/repair/multi:v1", f"oci:{out}:v1")
    second, third = source.image_manifest_digests()[1:]
    damage(out, deleted=source.config_digest(second),
           truncated=source.layer_digests(third)[0])

    again = dockyard_copy(f"{dockyard.host}/repair/multi:v1", f"oci:{out}:v1")
    assert "(0 already up to date)" in again, again
    assert "blobs 2 copied" in again, again
    assert_whole(out, source)
    skopeo.run("copy", "--all", f"oci:{out}:v1", f"dir:{tmp_path / 'check'}")
    assert sha256((tmp_path / "check" / "manifest.json").read_bytes()) == source.digest
