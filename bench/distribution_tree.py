"""Write a CNCF Distribution 2.8 storage tree directly as files, in exactly its shape.

What `docker-registry` writes for a push of a Docker schema 2 image by tag, per
repository: `_layers/sha256/<hex>/link` for the config and every layer,
`_manifests/revisions/sha256/<hex>/link` for the manifest, and for the tag
`_manifests/tags/<tag>/current/link` and `_manifests/tags/<tag>/index/sha256/<hex>/link`;
every link file holds the digest (`sha256:<hex>`, no newline). The bytes are at
`blobs/sha256/<xx>/<hex>/data`. Used by scenario 10 (`dockyard import` and `fsck` of a
large registry) without pushing tens of thousands of tags through a server.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class TreeShape:
    repositories: int
    tags_per_repository: int


class TreeWriter:
    """Writes blobs and links under `<root>/docker/registry/v2`."""

    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"
        self.blobs = 0
        self.links = 0

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def blob(self, data: bytes) -> str:
        hex_ = hashlib.sha256(data).hexdigest()
        path = self.v2 / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
        if not path.exists():
            self._write(path, data)
            self.blobs += 1
        return f"sha256:{hex_}"

    def link(self, repo: str, rel: str, digest: str) -> None:
        self._write(self.v2 / "repositories" / repo / rel, digest.encode())
        self.links += 1

    def image(self, repo: str, tag: str, layers: list[bytes], label: str) -> str:
        """Push-equivalent of one image by tag; the manifest's digest."""
        layer_descs = []
        for layer in layers:
            digest = self.blob(layer)
            self.link(repo, f"_layers/sha256/{digest[7:]}/link", digest)
            layer_descs.append({"mediaType": DOCKER_LAYER, "size": len(layer),
                                "digest": digest})
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Labels": {"bench": label}},
                             "rootfs": {"type": "layers",
                                        "diff_ids": [d["digest"] for d in layer_descs]}},
                            separators=(",", ":")).encode()
        config_digest = self.blob(config)
        self.link(repo, f"_layers/sha256/{config_digest[7:]}/link", config_digest)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                               "config": {"mediaType": DOCKER_CONFIG, "size": len(config),
                                          "digest": config_digest},
                               "layers": layer_descs}, indent=3).encode()
        digest = self.blob(manifest)
        self.link(repo, f"_manifests/revisions/sha256/{digest[7:]}/link", digest)
        self.link(repo, f"_manifests/tags/{tag}/current/link", digest)
        self.link(repo, f"_manifests/tags/{tag}/index/sha256/{digest[7:]}/link", digest)
        return digest


def write_tree(root: Path, shape: TreeShape) -> TreeWriter:
    """`shape.repositories` repositories of `shape.tags_per_repository` images each: a
    base layer shared by all, a layer per repository, a config per image."""
    writer = TreeWriter(root)
    base = os.urandom(4096)
    salt = os.urandom(8).hex()
    for r in range(shape.repositories):
        repo = f"bench/team{r % 50:02d}/app{r:05d}"
        own = f"{salt} layer of {repo}".encode() * 64
        for t in range(shape.tags_per_repository):
            writer.image(repo, f"v{t}", [base, own], f"{salt}-{r}-{t}")
    return writer
