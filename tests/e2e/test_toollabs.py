"""The old platform's own scenario, from the lifecycle issue.

Five repositories are pushed, then thirty `toollabs-*` repositories that share base
layers with them (a few with skopeo, the rest over the API). One `dockyard rm --yes
'toollabs-*'` deletes the thirty and one `dockyard gc` collects: the catalog lists none
of them, the five still pull byte-identical, and `du -sb` of the data directory is back
to what it was before the thirty were pushed, within the size of the metadata database
(metadata.db, -wal, -shm; -writer.lock, the empty file its writers take turns with).
"""

from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

import httpx

from tests.e2e.test_gc_torture import write_layout
from tests.e2e.test_lifecycle import (
    MANUAL_GC,
    blob_files,
    catalog,
    db_bytes,
    dockyard,
    du_bytes,
    files_under,
    gc,
    image_blobs,
    pull_verified,
    start,
)
from tests.support.clients import Skopeo
from tests.support.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import (
    blob_bytes,
    canonical,
    descriptor,
    digest_of,
    push_blob,
    put_manifest,
)

KiB = 1024
BASE_REPOS = ["toolforge/python", "toolforge/php", "toolforge/node", "toolforge/jdk",
              "toolforge/ruby"]
TOOLLABS = [f"toollabs-{lang}-{i}" for i in range(6)
            for lang in ("python", "php", "node", "jdk", "ruby")]
SKOPEO_BASE = {"toolforge/python"}
SKOPEO_TOOLLABS = {"toollabs-python-0", "toollabs-php-3", "toollabs-node-5"}


def gz(size: int) -> bytes:
    return gzip.compress(blob_bytes(size), compresslevel=1, mtime=0)


def build(layers: list[bytes], label: str) -> tuple[bytes, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "label": label,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor(OCI_CONFIG, config),
           "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}
    return config, canonical(doc)


def push(client: httpx.Client, skopeo: Skopeo, host: str, work: Path, repo: str,
         layers: list[bytes], via_skopeo: bool) -> bytes:
    """Push `repo:latest` and return its manifest bytes."""
    config, manifest = build(layers, repo)
    if via_skopeo:
        layout = work / repo.replace("/", "_")
        write_layout(layout, "latest", layers, config, manifest)
        skopeo.copy(f"oci:{layout}:latest", f"docker://{host}/{repo}:latest",
                    "--preserve-digests")
        return manifest
    for blob in [*layers, config]:
        if client.head(f"/v2/{repo}/blobs/{digest_of(blob)}").status_code != 200:
            push_blob(client, repo, blob)
    resp = put_manifest(client, repo, "latest", manifest, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    return manifest


def test_toollabs_scenario(tmp_path: Path) -> None:
    server = start(tmp_path, MANUAL_GC)
    data = server.data
    rng = random.Random(4)
    bases = [gz(256 * KiB), gz(192 * KiB), gz(128 * KiB)]
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[server.host])
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            kept: dict[str, bytes] = {}
            for i, repo in enumerate(BASE_REPOS):
                layers = [bases[0], bases[1 + i % 2], gz(64 * KiB)]
                kept[repo] = push(c, skopeo, server.host, tmp_path, repo, layers,
                                  repo in SKOPEO_BASE)
            time.sleep(0.2)
            before = du_bytes(data)
            db_before = db_bytes(data)
            dirs_before = sorted(p for p in data.rglob("*") if p.is_dir())

            pushed: dict[str, bytes] = {}
            for repo in TOOLLABS:
                layers = [*rng.sample(bases, rng.randint(1, 3)), gz(160 * KiB)]
                pushed[repo] = push(c, skopeo, server.host, tmp_path, repo, layers,
                                    repo in SKOPEO_TOOLLABS)
            with_toollabs = du_bytes(data)
            assert with_toollabs - before > 30 * 160 * KiB
            assert set(catalog(c)) == set(BASE_REPOS) | set(TOOLLABS)

            rm = dockyard("rm", "--yes", "toollabs-*", "--registry", server.url)
            assert rm.returncode == 0, rm.stderr
            assert sum(line.startswith("deleted ") for line in rm.stdout.splitlines()) == 30
            assert sorted(catalog(c)) == sorted(BASE_REPOS)

            time.sleep(0.05)
            report = gc(data, "--grace", "0s")
            assert report["blobs_deleted"] == 60, report  # a config and a layer each
            assert sorted(catalog(c)) == sorted(BASE_REPOS)
            for repo in TOOLLABS:
                assert c.get(f"/v2/{repo}/tags/list").status_code == 404
            expected: set[str] = set()
            for repo, manifest in kept.items():
                expected |= pull_verified(c, repo, "latest", manifest)
                assert expected >= image_blobs(manifest)
            assert blob_files(data) == expected

        after = du_bytes(data)
        db_after = db_bytes(data)
        dirs_after = sorted(p for p in data.rglob("*") if p.is_dir())
        print(f"\nnon-db bytes before {before - db_before}, after {after - db_after}; "
              f"dirs {len(dirs_before)} -> {len(dirs_after)}: "
              f"{[str(p.relative_to(data)) for p in dirs_after if p not in dirs_before][:20]}")
        # `reserve` is the storage reserve (storage.guard), there since the server started
        leftovers = [p for p in files_under(data) if p.name not in
                     ("metadata.db", "metadata.db-wal", "metadata.db-shm",
                      "metadata.db-writer.lock", "gc", "reserve")
                     and "blobs" not in p.parts]
        slack = max(db_before, db_after)
        print(f"\ntoollabs: du before {before}, with toollabs {with_toollabs}, after {after}; "
              f"metadata db {db_before} -> {db_after}; other files {leftovers}")
        assert not leftovers
        assert abs(after - before) <= slack, (before, with_toollabs, after, db_before,
                                              db_after)
        # outside the database, only the collector's lock directory is new
        assert abs((after - db_after) - (before - db_before)) <= 2 * 4096
    finally:
        server.stop()
