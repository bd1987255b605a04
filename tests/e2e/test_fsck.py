"""`dockyard fsck` beside a live server: it finds each kind of damage and repairs it.

The test damages a real data directory the way disks and crashes do (a blob file
deleted, a byte flipped, bytes no row records, a stray upload file, a session row whose
bytes are gone), runs the real `dockyard fsck` while `dockyard serve` runs, and checks
what a client sees afterwards: BLOB_UNKNOWN for the damaged blob, and a push of the same
bytes that works again and clears the mark.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_lifecycle import dockyard
from tests.support.images import multiplatform_layout, random_layout
from tests.support.oci_api import (
    assert_error,
    blob_bytes,
    push_blob,
    push_image,
    upload_location,
    with_digest,
)
from tests.support.servers import Server, start_dockyard


def blob_path(data: Path, digest: str) -> Path:
    hex_ = digest.split(":", 1)[1]
    return data / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def fsck(data: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = dockyard("fsck", "--data", str(data), "--json", *args)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, json.loads(proc.stdout)


def kinds(report: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in report["findings"]:
        out.setdefault(f["kind"], set()).add(f["subject"])
    return out


@pytest.fixture
def server(tmp_path: Path) -> Any:
    # no scheduled collection: its sweep of upload files (with the purge's) would
    # remove the test's stray upload file on its second sighting, before fsck sees it
    config = tmp_path / "dockyard.yml"
    config.write_text("gc: {enabled: false}\n")
    srv = start_dockyard(tmp_path / "data", workers=2, config=config)
    yield srv
    srv.stop()


def test_clean_store_exits_zero(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        push_image(client, "fsck/clean", "v1", layers=2)
    code, report = fsck(server.data, "--verify-digests")
    assert code == 0, report
    assert report["problems"] == 0
    assert report["blobs"] == 3
    assert report["bytes_verified"] == report["bytes"] > 0


def test_finds_every_kind_of_damage_and_repairs_it(server: Server) -> None:
    data = server.data
    repo = "fsck/damaged"
    with httpx.Client(base_url=server.url) as client:
        image = push_image(client, repo, "v1", layers=3)
        doc = json.loads(image.payload)
        gone, flipped, kept = (layer["digest"] for layer in doc["layers"])
        flipped_bytes = blob_path(data, flipped).read_bytes()
        # an open session whose file is lost, and a file no session owns
        dead_session = upload_location(client, repo).rstrip("/").rsplit("/", 1)[-1]
    blob_path(data, gone).unlink()
    raw = bytearray(flipped_bytes)
    raw[len(raw) // 2] ^= 0xFF
    blob_path(data, flipped).write_bytes(bytes(raw))
    orphan = blob_bytes(1000)
    orphan_digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    blob_path(data, orphan_digest).parent.mkdir(parents=True)
    blob_path(data, orphan_digest).write_bytes(orphan)
    stray = str(uuid.uuid4())
    (data / "uploads" / stray).write_bytes(b"half an upload")
    (data / "uploads" / dead_session).unlink()

    # without --verify-digests the flipped byte goes unseen (same size)
    code, report = fsck(data)
    assert code == 1
    found = kinds(report)
    assert found["missing"] == {gone}
    assert "corrupt" not in found
    assert found["orphan_blob"] == {orphan_digest}
    assert found["orphan_upload"] == {stray}
    assert found["dead_upload"] == {dead_session}
    assert found["broken_manifest"] == {f"{repo}@{image.digest}"}

    code, report = fsck(data, "--verify-digests")
    assert code == 1
    assert kinds(report)["corrupt"] == {flipped}
    assert all(f["repair"] is None for f in report["findings"])  # nothing changed
    assert blob_path(data, orphan_digest).exists()

    code, report = fsck(data, "--verify-digests", "--repair", "--grace", "0s")
    assert code == 1
    repairs = {f["subject"]: f["repair"] for f in report["findings"]}
    assert repairs[gone].startswith("marked corrupt")
    assert repairs[flipped].startswith("marked corrupt")
    assert repairs[orphan_digest] == "removed"
    assert repairs[stray] == "removed"
    assert repairs[dead_session].startswith("session removed")
    assert not blob_path(data, orphan_digest).exists()
    assert not (data / "uploads" / stray).exists()
    assert not blob_path(data, flipped).exists()  # damaged bytes are never served

    with httpx.Client(base_url=server.url) as client:
        for digest in (gone, flipped):
            assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
            assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert kept in client.get(f"/v2/{repo}/manifests/v1").text
        assert client.get(f"/v2/{repo}/blobs/{kept}").status_code == 200
        assert_error(client.get(f"/v2/{repo}/blobs/uploads/{dead_session}"), 404,
                     "BLOB_UPLOAD_UNKNOWN")
        # a mount from the repository does not hand the damaged blob on
        resp = client.post(f"/v2/fsck/other/blobs/uploads/?mount={flipped}&from={repo}")
        assert resp.status_code == 202
        # the remaining damage is the manifest whose blobs are marked: pushed again...
        code, report = fsck(data)
        assert code == 1
        assert set(kinds(report)) == {"broken_manifest"}
        assert report["marked"] == 2
        assert push_blob(client, repo, flipped_bytes) == flipped
        # ...the other layer's bytes are lost here: a client holding them pushes them
        assert client.head(f"/v2/{repo}/blobs/{flipped}").status_code == 200
        assert client.get(f"/v2/{repo}/blobs/{flipped}").content == flipped_bytes
    assert blob_path(data, flipped).read_bytes() == flipped_bytes
    code, report = fsck(data)
    assert report["marked"] == 1
    assert kinds(report) == {"broken_manifest": {f"{repo}@{image.digest}"}}
    missing = report["findings"][0]["detail"]
    assert gone in missing
    assert flipped not in missing


def test_dangling_link_rows_are_repaired(server: Server) -> None:
    """Links whose blob row is gone (a database restored from an older backup): with
    the bytes still there the row is restored; without them the links go."""
    data = server.data
    with httpx.Client(base_url=server.url) as client:
        image = push_image(client, "fsck/rows", "v1", layers=2)
    kept, lost = (layer["digest"] for layer in json.loads(image.payload)["layers"])
    db = sqlite3.connect(data / "metadata.db")
    with db:
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("DELETE FROM blobs WHERE digest IN (?, ?)", (kept, lost))
    db.close()
    blob_path(data, lost).unlink()
    code, report = fsck(data)
    assert code == 1
    assert kinds(report) == {"dangling_link": {kept, lost},
                             "broken_manifest": {f"fsck/rows@{image.digest}"}}
    code, report = fsck(data, "--repair", "--grace", "0s")
    repairs = {f["subject"]: f["repair"] for f in report["findings"]}
    assert repairs[kept] == "blob row restored from its bytes"
    assert repairs[lost].startswith("links removed")
    with httpx.Client(base_url=server.url) as client:
        assert client.get(f"/v2/fsck/rows/blobs/{kept}").status_code == 200
        assert_error(client.get(f"/v2/fsck/rows/blobs/{lost}"), 404, "BLOB_UNKNOWN")
    code, report = fsck(data)
    assert kinds(report) == {"broken_manifest": {f"fsck/rows@{image.digest}"}}
    assert report["findings"][0]["detail"] == f"missing: {lost}"
    assert blob_path(data, kept).exists()


def test_wrong_recorded_size_is_fixed_from_sound_bytes(server: Server) -> None:
    data = server.data
    payload = blob_bytes(3000)
    with httpx.Client(base_url=server.url) as client:
        digest = push_blob(client, "fsck/size", payload)
    db = sqlite3.connect(data / "metadata.db")
    with db:
        db.execute("UPDATE blobs SET size = 7 WHERE digest = ?", (digest,))
    db.close()
    code, report = fsck(data, "--repair")
    assert code == 1
    assert [(f["kind"], f["repair"]) for f in report["findings"]] == [
        ("size", "recorded size set to 3000 (bytes verified)")]
    code, report = fsck(data, "--verify-digests")
    assert code == 0, report
    with httpx.Client(base_url=server.url) as client:
        assert client.get(f"/v2/fsck/size/blobs/{digest}").content == payload


def test_repair_respects_the_grace(server: Server) -> None:
    """Orphan bytes are only given to the collector while younger than the grace."""
    data = server.data
    orphan = blob_bytes(500)
    digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    blob_path(data, digest).parent.mkdir(parents=True)
    blob_path(data, digest).write_bytes(orphan)
    code, report = fsck(data, "--repair", "--grace", "1h")
    assert code == 1
    assert report["findings"][0]["repair"].startswith("given to the collector")
    assert blob_path(data, digest).exists()
    # it now has a row, no link: the collector's business, not a problem any more
    code, report = fsck(data)
    assert code == 0, report
    assert os.path.exists(blob_path(data, digest))


def test_bad_grace_is_a_usage_error(tmp_path: Path) -> None:
    proc = dockyard("fsck", "--data", str(tmp_path), "--grace", "soon")
    assert proc.returncode == 2
    assert "--grace" in proc.stderr


def test_repush_clears_the_mark(server: Server) -> None:
    """A re-push by a real client flow (HEAD says unknown, so it uploads) clears it."""
    data = server.data
    payload = blob_bytes(4096)
    with httpx.Client(base_url=server.url) as client:
        digest = push_blob(client, "fsck/repush", payload)
    blob_path(data, digest).write_bytes(payload[:-1] + bytes([payload[-1] ^ 0xFF]))
    code, _ = fsck(data, "--verify-digests", "--repair")
    assert code == 1
    with httpx.Client(base_url=server.url) as client:
        assert client.head(f"/v2/fsck/repush/blobs/{digest}").status_code == 404
        assert_error(client.get(f"/v2/fsck/repush/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert push_blob(client, "fsck/repush", payload) == digest
        assert client.get(f"/v2/fsck/repush/blobs/{digest}").content == payload
    code, report = fsck(data, "--verify-digests")
    assert code == 0, report
    assert report["marked"] == 0


def test_fsck_on_s3(tmp_path: Path) -> None:
    """The same check through the S3 driver: an object deleted from the bucket is found
    and marked, and a push of the blob brings it back."""
    import asyncio

    import yaml

    from dockyard.drivers.s3 import S3Driver
    from tests.support.s3 import running_s3

    with running_s3() as s3:
        section = s3.storage_section()
        config = tmp_path / "dockyard.yml"
        config.write_text(yaml.safe_dump({"storage": section}))
        data = tmp_path / "data"
        server = start_dockyard(data, workers=1, config=config)
        try:
            with httpx.Client(base_url=server.url) as client:
                image = push_image(client, "fsck/s3", "v1", layers=2)
                lost = json.loads(image.payload)["layers"][0]["digest"]
                payload = client.get(f"/v2/fsck/s3/blobs/{lost}").content
            key = f"blobs/sha256/{lost[7:9]}/{lost[7:]}/data"

            async def drop() -> None:
                driver = S3Driver(s3.settings(rootdirectory=section["s3"]["rootdirectory"]))
                try:
                    await driver.delete(key)
                finally:
                    await driver.close()

            asyncio.run(drop())
            args = ("fsck", "--config", str(config), "--data", str(data), "--json")
            proc = dockyard(*args, "--verify-digests")
            assert proc.returncode == 1, proc.stderr
            assert kinds(json.loads(proc.stdout)) == {
                "missing": {lost}, "broken_manifest": {f"fsck/s3@{image.digest}"}}
            proc = dockyard(*args, "--repair", "--grace", "0s")
            assert proc.returncode == 1, proc.stderr
            with httpx.Client(base_url=server.url) as client:
                assert_error(client.get(f"/v2/fsck/s3/blobs/{lost}"), 404, "BLOB_UNKNOWN")
                assert push_blob(client, "fsck/s3", payload) == lost
            proc = dockyard(*args, "--verify-digests")
            assert proc.returncode == 0, proc.stdout
        finally:
            server.stop()


def test_a_blob_whose_bytes_were_removed_by_hand_is_404_not_500(server: Server) -> None:
    # the old setup's story: someone ran `rm -r` inside the storage tree. Before fsck
    # marks it, a GET of such a blob was a 500 with a traceback; now BLOB_UNKNOWN and
    # one log line that names the blob and says what to run
    data = os.urandom(70_000)
    with httpx.Client(base_url=server.url) as client:
        digest = push_blob(client, "fsck/gone", data)
        blob_path(server.data, digest).unlink()
        for extra in ({}, {"Range": "bytes=10-99"}):
            resp = client.get(f"/v2/fsck/gone/blobs/{digest}", headers=extra)
            assert_error(resp, 404, "BLOB_UNKNOWN")
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert f"blob {digest} of fsck/gone: its bytes are missing" in log


@pytest.fixture
def data_fs(tmp_path: Path) -> Any:
    """A filesystem of the test's own for the data directory (remounted read-only to
    make its writes fail); the metadata lives off it."""
    from tests.e2e.test_full_disk import mount_tmpfs

    yield from mount_tmpfs(tmp_path / "data", "64m")


@pytest.mark.parametrize("how", ["whole", "chunked"])
def test_a_repush_that_fails_leaves_the_mark(data_fs: Path, tmp_path: Path, how: str
                                             ) -> None:
    """The mark goes only once verified bytes replaced the stored ones: a push of the
    blob that fails after its claim (here the storage refuses the publish) leaves it
    marked, so the damaged bytes fsck could not remove are still never served.
    `whole`: the body in the last PUT (claimed by the write that takes the hold);
    `chunked`: a PATCH first, then a PUT without body (claimed before the publish)."""
    from tests.e2e.test_storage_faults import remount

    config = tmp_path / "dockyard.yml"
    config.write_text("gc: {enabled: false}\n"
                      f"database: {{url: 'sqlite:///{tmp_path / 'metadata.db'}'}}\n")
    server = start_dockyard(data_fs, workers=1, config=config)
    repo, payload = "fsck/refused", blob_bytes(4096)
    fsck_args = ("fsck", "--config", str(config), "--data", str(data_fs), "--json")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            digest = push_blob(client, repo, payload)
            location = upload_location(client, repo)  # opened while storage takes writes
            if how == "chunked":
                resp = client.patch(location, content=payload, headers={
                    "Content-Type": "application/octet-stream"})
                assert resp.status_code == 202, resp.text
                location = resp.headers["location"]
            damaged = payload[:-1] + bytes([payload[-1] ^ 0xFF])
            blob_path(data_fs, digest).write_bytes(damaged)
            remount(data_fs, "ro")
            try:
                # fsck marks the blob but cannot remove its bytes
                proc = dockyard(*fsck_args, "--verify-digests", "--repair")
                assert blob_path(data_fs, digest).read_bytes() == damaged, proc.stdout
                assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
                resp = client.put(with_digest(location, digest),
                                  content=payload if how == "whole" else b"",
                                  headers={"Content-Type": "application/octet-stream"})
                assert resp.status_code == 503, resp.text
                assert blob_path(data_fs, digest).read_bytes() == damaged
                # still marked: the damaged bytes are not served
                assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
                assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
            finally:
                remount(data_fs, "rw")
            assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
            assert push_blob(client, repo, payload) == digest  # this one clears it
            assert client.get(f"/v2/{repo}/blobs/{digest}").content == payload
        proc = dockyard(*fsck_args, "--verify-digests")
        assert proc.returncode == 0, proc.stdout
        assert json.loads(proc.stdout)["marked"] == 0
    finally:
        server.stop()


def _copy(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dockyard", "copy", "--src-tls-verify=false",
                           "--dest-tls-verify=false", *args], text=True, capture_output=True,
                          timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["image", "index"])
def test_a_copy_run_again_sends_a_blob_set_aside_again(server: Server, tmp_path: Path,
                                                       kind: str) -> None:
    """A layer fsck set aside (its bytes damaged): `dockyard copy` run again took the
    image for up to date and left it broken; it looks at the blobs and sends it."""
    source = (random_layout(tmp_path / "lay", "v1") if kind == "image"
              else multiplatform_layout(tmp_path / "lay", "v1"))
    target = f"{server.host}/heal/{kind}:v1"
    _copy(source.ref, target)
    layer = source.layer_digests(source.image_manifest_digests()[-1])[0]
    path = blob_path(server.data, layer)
    damaged = path.read_bytes()
    path.write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 0xFF]))
    code, _ = fsck(server.data, "--verify-digests", "--repair")
    assert code == 1
    assert httpx.head(f"{server.url}/v2/heal/{kind}/blobs/{layer}").status_code == 404

    again = _copy(source.ref, target)
    assert "(1 already up to date)" in again, again
    assert "blobs 1 copied, 0 mounted" in again, again
    pulled = httpx.get(f"{server.url}/v2/heal/{kind}/blobs/{layer}")
    assert pulled.status_code == 200
    assert "sha256:" + hashlib.sha256(pulled.content).hexdigest() == layer
    code, report = fsck(server.data, "--verify-digests")
    assert code == 0, report

    third = _copy(source.ref, target)
    assert "blobs 0 copied, 0 mounted" in third, third


def test_a_session_whose_bytes_are_gone_is_unknown_to_its_status_request(
        server: Server) -> None:
    """A process killed between a blob's publish and its link leaves the session's row
    without bytes: its status answered 204 with the offset, and the PATCH or PUT that
    resumed there failed; now the status says BLOB_UPLOAD_UNKNOWN, so the client starts
    the upload again."""
    with httpx.Client(base_url=server.url) as client:
        location = upload_location(client, "fsck/gone")
        resp = client.patch(location, content=b"x" * 1000,
                            headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 202, resp.text
        location = resp.headers["location"]
        assert client.get(location).status_code == 204
        session = location.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        (server.data / "uploads" / session).unlink()
        assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
