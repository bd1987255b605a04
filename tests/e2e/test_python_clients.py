"""Python registry clients against the registry: python-dxf and oras-py.

python-dxf uploads with a monolithic PUT (`POST` then `PUT ?digest=` with the whole body, or a
chunked-encoded body when given an iterator); oras-py uploads with POST + PUT, or with several
PATCHes carrying `Content-Range: start-end` (no `bytes=`) when `do_chunked=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import oras.client
import oras.decorator
import oras.defaults
import pytest
import requests
from dxf import DXF, DXFBase

from tests.support.clients import Skopeo
from tests.support.images import OCI_MANIFEST, multiplatform_layout, sha256
from tests.support.servers import Server

# ---------------------------------------------------------------- python-dxf


@pytest.fixture
def dxf(registry: Server, repo: str) -> DXF:
    return DXF(registry.host, repo, insecure=True)


def pull_bytes(client: DXF, digest: str) -> bytes:
    return b"".join(cast("Iterable[bytes]", client.pull_blob(digest)))


def test_dxf_blobs_push_pull(dxf: DXF, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"hello dockyard\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))

    for path in (small, big):
        digest = dxf.push_blob(str(path))
        assert digest == sha256(path.read_bytes())
        assert dxf.blob_size(digest) == path.stat().st_size
        assert pull_bytes(dxf, digest) == path.read_bytes()
        # pushing again is a no-op that still answers with the digest (HEAD finds it)
        assert dxf.push_blob(str(path)) == digest

    # streamed from an iterator: the PUT body goes out with Transfer-Encoding: chunked
    chunks = [os.urandom(100_000) for _ in range(5)]
    data = b"".join(chunks)
    digest = dxf.push_blob(data=iter(chunks), digest=sha256(data))
    assert pull_bytes(dxf, digest) == data

    # size from the GET's Content-Length
    it, size = cast("tuple[Iterable[bytes], int]",
                    dxf.pull_blob(sha256(big.read_bytes()), size=True))
    assert size == big.stat().st_size
    assert b"".join(it) == big.read_bytes()

    # an unknown blob is a 404
    with pytest.raises(requests.HTTPError) as err:
        dxf.blob_size(sha256(b"never pushed"))
    assert err.value.response is not None
    assert err.value.response.status_code == 404


def test_dxf_aliases(dxf: DXF, registry: Server, repo: str) -> None:
    blobs = [os.urandom(n) for n in (1000, 20_000, 5)]
    digests = [dxf.push_blob(data=iter([b]), digest=sha256(b)) for b in blobs]

    manifest = dxf.set_alias("first", *digests)
    dxf.set_alias("second", digests[1])
    dxf.set_alias("third", *digests[::-1])

    assert dxf.get_alias("first") == digests
    assert dxf.get_alias("second") == [digests[1]]
    assert dxf.get_alias("third", sizes=True) == [(d, len(b)) for d, b in
                                                  zip(digests[::-1], blobs[::-1], strict=True)]
    # the manifest comes back byte for byte, under the digest of its bytes
    assert dxf.get_manifest("first") == manifest
    dcd, _ = dxf.head_manifest_and_response("first")
    assert dcd == sha256(manifest.encode())
    assert dxf.get_digest("first") == digests[0]  # dxf uses the first blob as the config

    assert sorted(dxf.list_aliases()) == ["first", "second", "third"]
    assert sorted(dxf.list_aliases(batch_size=1)) == ["first", "second", "third"]  # paginated

    assert dxf.del_alias("second") == [digests[1]]
    assert sorted(dxf.list_aliases()) == ["first", "third"]
    with pytest.raises(requests.HTTPError) as err:
        dxf.get_alias("second")
    assert err.value.response is not None
    assert err.value.response.status_code == 404
    # the blobs stay: deleting a manifest does not delete what it references
    assert pull_bytes(dxf, digests[1]) == blobs[1]

    with DXFBase(registry.host, insecure=True) as base:
        assert repo in base.list_repos()
        assert repo in list(base.list_repos(batch_size=2, iterate=True))  # paginated catalog


def test_dxf_reads_multiplatform_tag(
    dxf: DXF, skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    """dxf asks for lists and images in one Accept header and walks the index itself."""
    index = multiplatform_layout(tmp_path / "src", "multi")
    skopeo.copy(index.ref, f"docker://{registry.host}/{repo}:multi", "--all",
                "--preserve-digests")
    expected = {}
    for child in index.children():
        p = child["platform"]
        name = "/".join(filter(None, (p["os"], p["architecture"], p.get("variant"))))
        expected[name] = index.layer_digests(child["digest"])
    assert dxf.get_alias("multi") == expected
    assert dxf.get_alias("multi", platform="linux/arm64/v8") == expected["linux/arm64/v8"]
    assert dxf.get_digest("multi", platform="linux/amd64") == \
        index.config_digest(index.children()[0]["digest"])
    for digests in expected.values():
        for digest in digests:
            assert pull_bytes(dxf, digest) == index.blob(digest)


def test_dxf_mount_and_delete_blob(registry: Server, repo: str) -> None:
    source = DXF(registry.host, f"{repo}/source", insecure=True)
    target = DXF(registry.host, f"{repo}/target", insecure=True)
    data = os.urandom(50_000)
    digest = source.push_blob(data=iter([data]), digest=sha256(data))

    with pytest.raises(requests.HTTPError):
        target.blob_size(digest)  # not linked into the target repository yet
    assert target.mount_blob(f"{repo}/source", digest) == digest
    assert pull_bytes(target, digest) == data

    target.del_blob(digest)
    with pytest.raises(requests.HTTPError) as err:
        target.blob_size(digest)
    assert err.value.response is not None
    assert err.value.response.status_code == 404
    assert pull_bytes(source, digest) == data  # still there in the source repository


# ---------------------------------------------------------------- oras-py


@pytest.fixture
def oras_client(registry: Server, monkeypatch: pytest.MonkeyPatch) -> oras.client.OrasClient:
    # oras retries failed requests with sleeps of 3 s to 83 s; a failing server must fail fast
    monkeypatch.setattr(oras.decorator, "time", types.SimpleNamespace(sleep=lambda _s: None))
    return oras.client.OrasClient(hostname=registry.host, insecure=True)


def _files(tmp_path: Path) -> dict[str, bytes]:
    src = tmp_path / "src"
    src.mkdir()
    contents = {
        "readme.txt": b"an artifact pushed by oras-py\n",
        "model.bin": os.urandom(1_000_000 + 7),
        "empty.dat": b"",
    }
    for name, data in contents.items():
        (src / name).write_bytes(data)
    return contents


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_push_pull_files(
    oras_client: oras.client.OrasClient, registry: Server, repo: str, tmp_path: Path,
    chunked: bool,
) -> None:
    contents = _files(tmp_path)
    target = f"{registry.host}/{repo}:v1"
    paths = [str(tmp_path / "src" / name) for name in contents]
    response = oras_client.push(files=paths, target=target, disable_path_validation=True,
                                do_chunked=chunked, chunk_size=300_000, quiet=True)
    assert response.status_code == 201
    pushed_digest = response.headers["Docker-Content-Digest"]
    assert pushed_digest == sha256(response.request.body)

    manifest = oras_client.get_manifest(target)
    titles = [layer["annotations"][oras.defaults.annotation_title] for layer in manifest["layers"]]
    assert titles == list(contents)
    assert manifest["config"]["mediaType"] == oras.defaults.unknown_config_media_type

    out = tmp_path / "out"
    pulled = oras_client.pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == sorted(contents)
    for name, data in contents.items():
        assert (out / name).read_bytes() == data

    assert oras_client.get_tags(target) == ["v1"]


def test_oras_annotations_config_type_and_directory(
    oras_client: oras.client.OrasClient, registry: Server, repo: str, tmp_path: Path
) -> None:
    contents = _files(tmp_path)
    readme = tmp_path / "src" / "readme.txt"
    annotation_file = tmp_path / "annotations.json"
    annotation_file.write_text(json.dumps({
        "$manifest": {"org.opencontainers.image.source": "https://example.invalid/dockyard"},
        str(readme): {"com.example.kind": "docs"},
    }))
    config = tmp_path / "config.json"
    config.write_bytes(b'{"dockyard": "e2e", "n": 1}')
    config_type = "application/vnd.dockyard.e2e.config.v1+json"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(70_000))

    target = f"{registry.host}/{repo}:annotated"
    oras_client.push(
        files=[str(readme), str(tree)], target=target, disable_path_validation=True,
        annotation_file=str(annotation_file),
        manifest_annotations={"org.opencontainers.image.description": "e2e ✓ ünïcode"},
        manifest_config=f"{config}:{config_type}", do_chunked=True, chunk_size=50_000,
        quiet=True,
    )

    manifest = oras_client.get_manifest(target)
    assert manifest["annotations"] == {
        "org.opencontainers.image.source": "https://example.invalid/dockyard",
        "org.opencontainers.image.description": "e2e ✓ ünïcode",
    }
    assert manifest["config"] == {"mediaType": config_type, "size": config.stat().st_size,
                                  "digest": sha256(config.read_bytes())}
    readme_layer = manifest["layers"][0]
    assert readme_layer["annotations"]["com.example.kind"] == "docs"

    out = tmp_path / "out"
    oras_client.pull(target=target, outdir=str(out))
    assert (out / "readme.txt").read_bytes() == contents["readme.txt"]
    assert (out / "tree" / "a.txt").read_bytes() == b"a\n"
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()

    container = oras_client.get_container(target)
    config_path = tmp_path / "config-out.json"
    oras_client.download_blob(container, sha256(config.read_bytes()), str(config_path))
    assert config_path.read_bytes() == config.read_bytes()


def test_oras_artifact_type_manifest(
    oras_client: oras.client.OrasClient, registry: Server, repo: str, tmp_path: Path
) -> None:
    """An OCI 1.1 artifact: `artifactType` set, the empty config descriptor, a delete."""
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(b'{"spdxVersion": "SPDX-2.3", "packages": []}')
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"{}")
    container = oras_client.get_container(f"{registry.host}/{repo}:sbom")

    layer = {"mediaType": "application/spdx+json", "size": sbom.stat().st_size,
             "digest": sha256(sbom.read_bytes()),
             "annotations": {oras.defaults.annotation_title: "sbom.json"}}
    config = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
              "digest": sha256(b"{}")}
    for path, desc in ((sbom, layer), (empty, config)):
        r = oras_client.upload_blob(str(path), container, desc)
        assert r.status_code in (200, 201), r.text
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dockyard.e2e.sbom", "config": config,
        "layers": [layer], "annotations": {"org.opencontainers.image.created":
                                           "2024-01-01T00:00:00Z"},
    }
    r = oras_client.upload_manifest(manifest, container)
    assert r.status_code == 201, r.text
    digest = r.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(r.request.body).hexdigest()

    assert oras_client.get_manifest(container) == manifest
    out = tmp_path / "out"
    assert [Path(p).name for p in oras_client.pull(target=str(container), outdir=str(out))] == \
        ["sbom.json"]
    assert (out / "sbom.json").read_bytes() == sbom.read_bytes()

    assert oras_client.delete_tag(container, "sbom") is True
    assert oras_client.get_tags(container) == []
