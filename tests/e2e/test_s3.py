"""Dockyard on an object store: blobs in S3 (SeaweedFS), metadata in PostgreSQL.

Two nodes with the same config and nothing on their own disks: the conformance port,
chunks of one upload on both nodes, skopeo round trips (streamed, and with
`storage.redirect` answering 307 to presigned URLs), and the object store stopped for
a while: clients get 503 UNAVAILABLE with Retry-After, never a hang or a half-visible
blob, and everything works again without a restart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e import test_conformance as conformance
from tests.support.clients import Skopeo
from tests.support.images import random_layout, read_layout, sha256
from tests.support.s3 import S3Server, running_s3
from tests.support.servers import Server, start_dockyard


@dataclass
class Nodes:
    s3: S3Server
    nodes: list[Server]
    dirs: list[Path]
    config: Path

    @property
    def url(self) -> str:
        return self.nodes[0].url


def node_config(s3: S3Server, database_url: str, *, redirect: bool) -> dict[str, object]:
    return {"storage": s3.storage_section(redirect=redirect),
            "database": {"url": database_url}, "log": {"level": "info"}}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3(own=True) as server:
        yield server


def _start(tmp: Path, s3: S3Server, database_url: str, *, redirect: bool) -> Nodes:
    config = tmp / "node.yml"
    config.write_text(yaml.safe_dump(node_config(s3, database_url, redirect=redirect)))
    dirs = [tmp / f"node{i}" / "data" for i in range(2)]
    nodes = [start_dockyard(d, workers=1, config=config) for d in dirs]
    return Nodes(s3, nodes, dirs, config)


def _stop(nodes: Nodes) -> None:
    for node in nodes.nodes:
        node.stop()
    for node in nodes.nodes:
        assert "Traceback" not in node.log.read_text(), node.log.read_text()[-4000:]
    for d in nodes.dirs:  # nothing on the nodes' own disks
        assert not [p for p in d.rglob("*") if p.is_file()], list(d.rglob("*"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, database_url: str
            ) -> Iterator[Nodes]:
    nodes = _start(tmp_path_factory.mktemp("s3-nodes"), s3, database_url, redirect=False)
    yield nodes
    _stop(nodes)


@pytest.fixture(scope="class")
def client(request: pytest.FixtureRequest, cluster: Nodes) -> Iterator[conformance.Reggie]:
    c = conformance.Reggie(cluster.url, f"s3-{conformance.RUN_ID}/{request.cls.WORKFLOW}")
    yield c
    c.close()


class TestPullOnS3(conformance.TestPull):
    """01_pull_test.go with blobs in S3 and metadata in PostgreSQL."""


class TestPushOnS3(conformance.TestPush):
    """02_push_test.go with blobs in S3 and metadata in PostgreSQL."""


class TestContentDiscoveryOnS3(conformance.TestContentDiscovery):
    """03_discovery_test.go with blobs in S3 and metadata in PostgreSQL."""


class TestContentManagementOnS3(conformance.TestContentManagement):
    """04_management_test.go with blobs in S3 and metadata in PostgreSQL."""


def test_chunks_of_one_upload_on_both_nodes(cluster: Nodes) -> None:
    """Parts of 5 MiB and more plus tails, each chunk on the other node."""
    data = os.urandom(13 * 1024 * 1024 + 12345)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo = f"s3/chunks-{uuid.uuid4().hex[:8]}"
    size = 3 * 1024 * 1024 + 7
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{cluster.url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202
        path = r.headers["Location"].split("://", 1)[-1].split("/", 1)[-1]
        path = "/" + path if not path.startswith("/") else path
        for i, start in enumerate(range(0, len(data), size)):
            node = cluster.nodes[i % 2]
            part = data[start:start + size]
            r = c.patch(node.url + path, content=part,
                        headers={"Content-Range": f"{start}-{start + len(part) - 1}"})
            assert r.status_code == 202, r.text
        r = c.put(cluster.nodes[1].url + path, params={"digest": digest})
        assert r.status_code == 201, r.text
        for node in cluster.nodes:
            got = c.get(f"{node.url}/v2/{repo}/blobs/{digest}")
            assert got.status_code == 200
            assert got.content == data


def test_skopeo_round_trip(cluster: Nodes, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    host = cluster.nodes[0].host
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[n.host for n in cluster.nodes])
    layout = random_layout(tmp_path / "oci", "v1", layer_sizes=(6_000_000, 300_000, 4_000))
    dest = f"docker://{host}/s3/skopeo:v1"
    skopeo.copy(layout.ref, dest)
    back_ref = f"docker://{cluster.nodes[1].host}/s3/skopeo:v1"
    assert sha256(skopeo.inspect_raw(back_ref)) == layout.digest
    skopeo.copy(back_ref, f"oci:{tmp_path / 'back'}:v1")
    back = read_layout(tmp_path / "back", "v1")
    for digest in layout.all_digests():
        assert back.blob(digest) == layout.blob(digest), digest


def test_redirected_pulls(tmp_path: Path, s3: S3Server, database_url: str) -> None:
    """With `storage.redirect`, blob GETs answer 307 to the store and clients follow."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    nodes = _start(tmp_path, s3, database_url, redirect=True)
    try:
        host = nodes.nodes[0].host
        skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[host])
        layout = random_layout(tmp_path / "oci", "v1", layer_sizes=(1_000_000, 2_000))
        dest = f"docker://{host}/s3/redirect:v1"
        skopeo.copy(layout.ref, dest)
        layer = layout.layer_digests()[0]
        r = httpx.get(f"{nodes.url}/v2/s3/redirect/blobs/{layer}")
        assert r.status_code == 307
        assert r.headers["Location"].startswith(s3.info["endpoint"])
        skopeo.copy(dest, f"oci:{tmp_path / 'back'}:v1")
        back = read_layout(tmp_path / "back", "v1")
        assert back.blob(layer) == layout.blob(layer)
    finally:
        _stop(nodes)


def test_object_store_down_then_back(cluster: Nodes) -> None:
    """Stopped store: 503 UNAVAILABLE with Retry-After, quickly; back: all works."""
    data = os.urandom(200_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo = f"s3/outage-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=cluster.url, timeout=120) as c:
        before = os.urandom(1000)
        d0 = "sha256:" + hashlib.sha256(before).hexdigest()
        assert c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d0},
                      content=before).status_code == 201
        cluster.s3.stop()
        try:
            began = time.monotonic()
            r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                       content=data)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"].isdigit()
            assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert time.monotonic() - began < 60
            assert c.head(f"/v2/{repo}/blobs/{digest}").status_code == 404  # not half there
            assert c.head(f"/v2/{repo}/blobs/{d0}").status_code == 200  # metadata only
        finally:
            cluster.s3.start()
        r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{digest}").content == data
        assert c.get(f"/v2/{repo}/blobs/{d0}").content == before
