"""`dockyard import` of a tree Debian's `docker-registry` (CNCF Distribution 2.8) wrote.

skopeo pushes images, a second tag, a multi-arch index and a Docker-format image into a
real Distribution, deletes one image, re-points a tag (leaving an untagged manifest),
and `docker-registry garbage-collect` runs on the tree. Then Dockyard imports it (in
place, by hard links, and interrupted by SIGKILL then run again) and skopeo pulls every
reference from Dockyard: the manifests' sha256 are those Distribution served from the
same tree, and whole images come back out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.importer import MANIFESTS_KEPT
from tests.e2e.test_lifecycle import dockyard
from tests.support.clients import Skopeo
from tests.support.images import multiplatform_layout, random_layout
from tests.support.servers import DOCKER_REGISTRY, Server, start_distribution, start_dockyard

V2 = Path("docker/registry/v2")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Source:
    """A Distribution tree and what Distribution served from it after its collection."""

    root: Path
    refs: dict[str, str]  # "repo:tag" or "repo@digest" -> sha256 of `inspect --raw`
    tags: dict[str, list[str]]
    deleted_layers: list[str]
    workdir: Path


def _skopeo(tmp: Path, server: Server) -> Skopeo:
    return Skopeo(tmp / f"skopeo-{server.port}", insecure_hosts=[server.host])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("import")
    root = tmp / "distribution"
    server = start_distribution(root)
    try:
        skopeo = _skopeo(tmp, server)

        def push(src: str, ref: str, *extra: str) -> None:
            skopeo.copy(src, f"docker://{server.host}/{ref}", "--preserve-digests", *extra)

        app1 = random_layout(tmp / "app1", "v1")
        app2 = random_layout(tmp / "app2", "v2")
        push(app1.ref, "team/app:v1")
        push(app2.ref, "team/app:v2")
        push(app2.ref, "team/app:latest")
        push(app2.ref, "mirror/app:v2")  # shared layers, another repository
        multi = multiplatform_layout(tmp / "multi", "1.0")
        push(multi.ref, "multi:1.0", "--all")
        docker = random_layout(tmp / "docker", "1.0", docker=True)
        push(docker.ref, "docker/img:1.0")
        old = random_layout(tmp / "old", "tmp")
        push(old.ref, "team/app:moving")  # then moved: `old` stays, untagged
        push(app1.ref, "team/app:moving")
        gone = random_layout(tmp / "gone", "x")
        push(gone.ref, "team/gone:x")
        skopeo.delete(f"docker://{server.host}/team/gone@{gone.digest}")
    finally:
        server.stop()
    cfg = server.extra["config"]
    subprocess.run([DOCKER_REGISTRY, "garbage-collect", str(cfg)], check=True,
                   capture_output=True, timeout=120)
    server = start_distribution(root)
    refs: dict[str, str] = {}
    tags: dict[str, list[str]] = {}
    try:
        skopeo = _skopeo(tmp, server)
        for repo in ("team/app", "mirror/app", "multi", "docker/img"):
            tags[repo] = sorted(skopeo.list_tags(f"docker://{server.host}/{repo}"))
            for tag in tags[repo]:
                refs[f"{repo}:{tag}"] = sha256(skopeo.inspect_raw(
                    f"docker://{server.host}/{repo}:{tag}"))
        refs[f"team/app@{old.digest}"] = sha256(skopeo.inspect_raw(
            f"docker://{server.host}/team/app@{old.digest}"))
        for child in multi.children():
            refs[f"multi@{child['digest']}"] = sha256(skopeo.inspect_raw(
                f"docker://{server.host}/multi@{child['digest']}"))
    finally:
        server.stop()
    assert tags["team/app"] == ["latest", "moving", "v1", "v2"]
    return Source(root, refs, tags, gone.layer_digests(), tmp)


def import_(data: Path, root: Path, *args: str) -> dict[str, Any]:
    proc = dockyard("import", "--data", str(data), "--distribution", str(root), "--json",
                    *args, timeout=300)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def kinds(report: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for i in report["inconsistencies"]:
        out.setdefault(i["kind"], set()).add(i["subject"])
    return out


def assert_same_as_distribution(source: Source, data: Path, tmp: Path) -> None:
    server = start_dockyard(data, workers=1)
    try:
        skopeo = _skopeo(tmp, server)
        for repo, tags in source.tags.items():
            assert sorted(skopeo.list_tags(f"docker://{server.host}/{repo}")) == tags
        for ref, digest in source.refs.items():
            assert sha256(skopeo.inspect_raw(f"docker://{server.host}/{ref}")) == digest, ref
        # whole images, blobs included (skopeo checks every digest it pulls)
        skopeo.copy(f"docker://{server.host}/multi:1.0", f"dir:{tmp / 'out-multi'}",
                    "--all", "--preserve-digests")
        skopeo.copy(f"docker://{server.host}/docker/img:1.0", f"dir:{tmp / 'out-docker'}",
                    "--preserve-digests")
        skopeo.copy(f"docker://{server.host}/mirror/app:v2", f"dir:{tmp / 'out-app'}",
                    "--preserve-digests")
    finally:
        server.stop()


def test_import_in_place(source: Source, tmp_path: Path) -> None:
    """The data directory is the tree's docker/registry/v2: not a byte moves."""
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(source.root), str(tree)], check=True)
    data = tree / V2
    report = import_(data, tree)
    assert report["repositories"] == 4
    assert report["tags"] == sum(len(t) for t in source.tags.values())
    assert report["linked"] == report["copied"] == 0
    assert report["present"] == report["blobs"] > 0
    assert report["untagged"] == 1  # the manifest `moving` pointed at first
    assert report["handed_to_collector"] > 0  # the manifests' own data, and leftovers
    found = kinds(report)
    # the collection deleted the data of the deleted image, not its layer links
    assert set(source.deleted_layers) <= found["layer_without_data"]
    assert_same_as_distribution(source, data, tmp_path)
    # and the imported store is consistent
    proc = dockyard("fsck", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stdout


def test_import_by_hard_links_interrupted_and_resumed(source: Source, tmp_path: Path) -> None:
    """Elsewhere on the same filesystem: hard links; killed mid-way, run again."""
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(source.root), str(tree)], check=True)
    repos = tree / V2 / "repositories"
    for i in range(200):  # more repositories, as Distribution writes them (links only)
        shutil.copytree(repos / "team" / "app", repos / "more" / f"app{i}", symlinks=True)
    total_tags = sum(len(t) for t in source.tags.values()) + 200 * len(source.tags["team/app"])
    data = tmp_path / "dockyard"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard", "import", "--data", str(data), "--distribution",
         str(tree)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("repositories "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(data / "metadata.db")
    first = db.execute("SELECT count(*) FROM tags").fetchone()[0]
    db.close()
    assert 0 < first < total_tags

    report = import_(data, tree)
    assert report["tags"] == total_tags
    db = sqlite3.connect(data / "metadata.db")
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("repositories", "tags", "manifests", "blobs", "repository_blobs")}
    db.close()
    assert counts["tags"] == total_tags
    again = import_(data, tree)  # a third run changes nothing
    assert again["present"] == again["blobs"]
    assert again["linked"] == 0
    db = sqlite3.connect(data / "metadata.db")
    assert counts == {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts}
    db.close()
    # hard links: the same inodes as the tree's, for every blob adopted
    adopted = list((data / "blobs").rglob("data"))
    assert adopted
    for mine in adopted:
        theirs = tree / V2 / mine.relative_to(data)
        assert mine.stat().st_ino == theirs.stat().st_ino
    assert_same_as_distribution(source, data, tmp_path)


def test_import_by_copy(source: Source, tmp_path: Path) -> None:
    data = tmp_path / "copy"
    report = import_(data, source.root, "--copy")
    assert report["copied"] == report["blobs"] > 0
    some = next((data / "blobs").rglob("data"))
    assert some.stat().st_nlink == 1
    assert_same_as_distribution(source, data, tmp_path)


def test_import_reports_damage_of_the_source(source: Source, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(source.root), str(tree)], check=True)
    tag_link = tree / V2 / "repositories/team/app/_manifests/tags/v1/current/link"
    target = tag_link.read_text().strip()
    revision = tree / V2 / "repositories/team/app/_manifests/revisions/sha256" / \
        target.split(":")[1]
    shutil.rmtree(revision)
    report = import_(tmp_path / "data", tree)
    found = kinds(report)
    # `moving` was re-pointed at the same manifest as v1
    assert found["tag_without_revision"] == {"v1", "moving"}
    assert report["tags"] == sum(len(t) for t in source.tags.values()) - 2


def test_bad_source_is_a_usage_error(tmp_path: Path) -> None:
    proc = dockyard("import", "--data", str(tmp_path / "d"), "--distribution", str(tmp_path))
    assert proc.returncode == 2
    assert "docker/registry/v2" in proc.stderr


def test_import_from_s3(tmp_path: Path) -> None:
    """Distribution on S3 (its s3-aws driver), read through Dockyard's S3 driver: in
    place when Dockyard's storage is the same bucket at Distribution's
    `<rootdirectory>/docker/registry/v2`, copied (and verified) onto a filesystem."""
    import yaml

    from tests.support.s3 import running_s3
    from tests.support.servers import free_port

    with running_s3() as s3:
        settings = s3.settings()
        port = free_port()
        dist_cfg = tmp_path / "distribution.yml"
        dist_cfg.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"s3": {
                "accesskey": settings.accesskey, "secretkey": settings.secretkey,
                "region": settings.region, "regionendpoint": settings.regionendpoint,
                "bucket": settings.bucket, "rootdirectory": f"/{settings.rootdirectory}",
                "secure": False, "v4auth": True},
                "delete": {"enabled": True}, "redirect": {"disable": True}},
            "http": {"addr": f"127.0.0.1:{port}"}}))
        log = tmp_path / "distribution.log"
        # aws-sdk-go refuses a custom CA bundle with the transport Distribution sets
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(dist_cfg)],
                                stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        server = Server("distribution", port, tmp_path, proc, log)
        refs: dict[str, str] = {}
        try:
            server.wait_ready()
            skopeo = _skopeo(tmp_path, server)
            app = random_layout(tmp_path / "app", "v1")
            multi = multiplatform_layout(tmp_path / "multi", "1.0")
            for src, ref, extra in ((app.ref, "s3/app:v1", ()),
                                    (multi.ref, "s3/multi:1.0", ("--all",))):
                skopeo.copy(src, f"docker://{server.host}/{ref}", "--preserve-digests",
                            *extra)
                refs[ref] = sha256(skopeo.inspect_raw(f"docker://{server.host}/{ref}"))
        finally:
            server.stop()

        section = s3.storage_section()
        section["s3"]["rootdirectory"] = f"{settings.rootdirectory}/docker/registry/v2"
        here = tmp_path / "in-place"
        here.mkdir()
        config = here / "dockyard.yml"
        config.write_text(yaml.safe_dump({"storage": section}))
        proc_in = dockyard("import", "--config", str(config), "--data", str(here),
                           "--distribution-config", str(dist_cfg), "--json", timeout=300)
        assert proc_in.returncode == 0, proc_in.stderr
        report = json.loads(proc_in.stdout)
        assert report["tags"] == 2
        assert report["present"] == report["blobs"] > 0
        assert report["copied"] == report["linked"] == 0

        copied = tmp_path / "copied"
        refused = dockyard("import", "--data", str(copied), "--distribution-config",
                           str(dist_cfg))
        assert refused.returncode == 1
        assert "use --copy" in refused.stderr
        report = import_config(copied, dist_cfg, "--copy")
        assert report["copied"] == report["blobs"] > 0

        for data, cfg in ((here, config), (copied, None)):
            dy = start_dockyard(data, workers=1, config=cfg)
            try:
                skopeo = _skopeo(tmp_path, dy)
                for ref, digest in refs.items():
                    raw = skopeo.inspect_raw(f"docker://{dy.host}/{ref}")
                    assert sha256(raw) == digest, (ref, data)
                skopeo.copy(f"docker://{dy.host}/s3/multi:1.0",
                            f"dir:{tmp_path / f'out-{data.name}'}", "--all",
                            "--preserve-digests")
            finally:
                dy.stop()


def import_config(data: Path, dist_cfg: Path, *args: str) -> dict[str, Any]:
    proc = dockyard("import", "--data", str(data), "--distribution-config", str(dist_cfg),
                    "--json", *args, timeout=300)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _nested_chain(root: Path, depth: int, *, config: bool = True) -> str:
    """A Distribution tree with one repository whose tag `top` names an index within an
    index, `depth` levels, over one image (its config blob left out unless `config`);
    the top's digest."""
    v2 = root / V2
    repo = v2 / "repositories/deep"

    def blob(data: bytes) -> str:
        digest = sha256(data)
        where = v2 / "blobs/sha256" / digest[7:9] / digest[7:]
        where.mkdir(parents=True, exist_ok=True)
        (where / "data").write_bytes(data)
        return digest

    def link(path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    config_digest = sha256(b"{}")
    if config:
        link(repo / "_layers/sha256" / blob(b"{}")[7:], config_digest)
    body = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": config_digest, "size": 2},
                       "layers": []}).encode()
    child_type = "application/vnd.oci.image.manifest.v1+json"
    for _ in range(depth + 1):
        digest = blob(body)
        link(repo / "_manifests/revisions/sha256" / digest[7:], digest)
        body = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": [{"mediaType": child_type, "digest": digest,
                                          "size": len(body)}]}).encode()
        child_type = "application/vnd.oci.image.index.v1+json"
    link(repo / "_manifests/tags/top/current", digest)
    return digest


def test_import_of_thousands_of_nested_indexes(tmp_path: Path) -> None:
    """A chain deeper than Python's recursion limit imports whole (it ended the import
    on a RecursionError, and every rerun the same way), and more manifests than the
    import keeps parsed (`MANIFESTS_KEPT`): none of them is taken for an unreferenced
    blob; a chain whose bottom image lacks a blob imports none of its levels, and says
    so for each."""
    depth = MANIFESTS_KEPT + 500
    top = _nested_chain(tmp_path / "tree", depth)
    report = import_(tmp_path / "data", tmp_path / "tree")
    assert report["manifests"] == depth + 1
    assert report["tags"] == 1
    assert report["inconsistencies"] == []
    server = start_dockyard(tmp_path / "data", workers=1)
    try:
        skopeo = _skopeo(tmp_path, server)
        raw = skopeo.inspect_raw(f"docker://{server.host}/deep:top")
        assert sha256(raw) == top
    finally:
        server.stop()

    _nested_chain(tmp_path / "broken", depth, config=False)
    report = import_(tmp_path / "data2", tmp_path / "broken")
    assert report["manifests"] == report["tags"] == 0
    found = kinds(report)
    assert len(found["manifest_missing_blobs"]) == 1
    assert len(found["manifest_missing_children"]) == depth
    assert found["tag_of_skipped_manifest"] == {"top"}
