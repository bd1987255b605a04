"""Build OCI image layouts for end-to-end tests, without network or a Docker engine.

Three kinds of layout:

- `busybox_layout`: a real, runnable image made by `umoci` over a root filesystem holding
  Debian's `busybox-static` (`/bin/busybox`, `/bin/sh`).
- `random_layout`: a small multi-layer image written directly in Python (gzipped tar layers
  of random bytes, an image config with correct diff_ids, a manifest, index.json), in OCI or
  Docker schema 2 media types.
- `multiplatform_layout`: an image index (OCI) or manifest list (Docker) over one random
  image per platform.

Every builder returns a `Layout`, which knows its tag, the digest the tag names and how to
read any blob, so tests can compare what a client copied against what was put in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"
COSIGN_SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
BUSYBOX = Path("/bin/busybox")

DEFAULT_PLATFORMS: tuple[tuple[str, str, str | None], ...] = (
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
    ("linux", "arm", "v7"),
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Layout:
    """An image on disk and the tag a test cares about.

    `transport` is "oci" (an OCI image layout; `tag` names a descriptor in index.json) or
    "dir" (skopeo's `dir:` format: manifest.json, `<hex>.manifest.json` per list instance,
    blobs by hex digest). skopeo's `oci:` transport only accepts OCI media types at the top,
    so Docker schema 2 images and manifest lists are written in the `dir:` format.
    """

    path: Path
    tag: str
    digest: str
    media_type: str
    transport: str = "oci"

    @property
    def ref(self) -> str:
        """The skopeo/podman reference: `oci:PATH:TAG` or `dir:PATH`."""
        if self.transport == "dir":
            return f"dir:{self.path}"
        return f"oci:{self.path}:{self.tag}"

    def blob_path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if self.transport == "dir":
            if digest == self.digest:
                return self.path / "manifest.json"
            instance = self.path / f"{hexpart}.manifest.json"
            return instance if instance.is_file() else self.path / hexpart
        return self.path / "blobs" / algo / hexpart

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def manifest_bytes(self, digest: str | None = None) -> bytes:
        return self.blob(digest or self.digest)

    def manifest(self, digest: str | None = None) -> dict[str, Any]:
        return json.loads(self.manifest_bytes(digest))  # type: ignore[no-any-return]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def children(self) -> list[dict[str, Any]]:
        """The descriptors of an index's manifests (empty for an image manifest)."""
        if not self.is_index:
            return []
        return list(self.manifest()["manifests"])

    def image_manifest_digests(self) -> list[str]:
        """Digests of the image manifests under the tag (itself, or an index's children)."""
        if self.is_index:
            return [d["digest"] for d in self.children()]
        return [self.digest]

    def layer_digests(self, manifest_digest: str | None = None) -> list[str]:
        return [d["digest"] for d in self.manifest(manifest_digest)["layers"]]

    def config_digest(self, manifest_digest: str | None = None) -> str:
        return str(self.manifest(manifest_digest)["config"]["digest"])

    def all_digests(self) -> list[str]:
        """Every blob the tag reaches: manifests, configs and layers, index first."""
        out = [self.digest] if self.is_index else []
        for m in self.image_manifest_digests():
            out.append(m)
            out.append(self.config_digest(m))
            out.extend(self.layer_digests(m))
        return out


def read_layout(path: Path, tag: str) -> Layout:
    """Open an existing layout (e.g. one skopeo wrote) at the descriptor tagged `tag`."""
    index = json.loads((path / "index.json").read_text())
    for desc in index.get("manifests", []):
        if (desc.get("annotations") or {}).get(REF_NAME) == tag:
            return Layout(path, tag, desc["digest"], desc["mediaType"])
    raise KeyError(f"tag {tag!r} not in {path}/index.json: {index}")


def read_dir_layout(path: Path, tag: str = "") -> Layout:
    """Open a skopeo `dir:` directory (e.g. one `skopeo copy ... dir:PATH` wrote)."""
    data = (path / "manifest.json").read_bytes()
    parsed = json.loads(data)
    media_type = parsed.get("mediaType") or (OCI_INDEX if "manifests" in parsed else OCI_MANIFEST)
    return Layout(path, tag, sha256(data), media_type, transport="dir")


def layout_tags(path: Path) -> list[str]:
    index = json.loads((path / "index.json").read_text())
    return sorted(
        (d.get("annotations") or {}).get(REF_NAME, "") for d in index.get("manifests", [])
    )


def add_signature(layout: Layout, payload: bytes,
                  annotations: dict[str, str] | None = None) -> str:
    """Attach a cosign-like signature of `payload` (its manifest annotated with
    `annotations`) to the layout's image, listed in its index.json (where a layout's
    referrers are found); the signature's digest."""
    blobs = layout.path / "blobs" / "sha256"
    empty = b"{}"
    for data in (empty, payload):
        (blobs / sha256(data).split(":")[1]).write_bytes(data)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": COSIGN_SIGNATURE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256(empty), "size": len(empty)},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": sha256(payload), "size": len(payload)}],
        "subject": {"mediaType": layout.media_type, "digest": layout.digest,
                    "size": len(layout.manifest_bytes())},
        **({"annotations": annotations} if annotations else {}),
    })
    digest = sha256(manifest)
    (blobs / digest.split(":")[1]).write_bytes(manifest)
    index_file = layout.path / "index.json"
    index = json.loads(index_file.read_text())
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest,
                               "size": len(manifest), "artifactType": COSIGN_SIGNATURE})
    index_file.write_text(json.dumps(index))
    return digest


# ---------------------------------------------------------------- writing layouts in Python


class _LayoutWriter:
    """Writes blobs into `path/blobs/sha256/` and tags into `path/index.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout_file = path / "oci-layout"
        if not layout_file.exists():
            layout_file.write_text('{"imageLayoutVersion":"1.0.0"}')
        index_file = path / "index.json"
        if not index_file.exists():
            index_file.write_text(json.dumps({"schemaVersion": 2, "manifests": []}))

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        target = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not target.exists():
            target.write_bytes(data)
        return digest

    def put_manifest(self, data: bytes) -> str:
        return self.put(data)

    def tag(self, tag: str, digest: str, media_type: str, size: int) -> None:
        index_file = self.path / "index.json"
        index = json.loads(index_file.read_text())
        kept = [d for d in index["manifests"]
                if (d.get("annotations") or {}).get(REF_NAME) != tag]
        kept.append({"mediaType": media_type, "digest": digest, "size": size,
                     "annotations": {REF_NAME: tag}})
        index["manifests"] = kept
        index_file.write_text(json.dumps(index))


class _DirWriter:
    """Writes skopeo's `dir:` format: blobs by hex digest, manifests as `<hex>.manifest.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        (path / "version").write_text("Directory Transport Version: 1.1\n")

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    def put_manifest(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / f"{digest.split(':', 1)[1]}.manifest.json").write_bytes(data)
        return digest

    def tag(self, tag: str, digest: str, media_type: str, size: int) -> None:
        hexpart = digest.split(":", 1)[1]
        (self.path / "manifest.json").write_bytes(
            (self.path / f"{hexpart}.manifest.json").read_bytes())
        (self.path / f"{hexpart}.manifest.json").unlink()


def _writer(path: Path, docker: bool) -> _LayoutWriter | _DirWriter:
    return _DirWriter(path) if docker else _LayoutWriter(path)


def _tar_layer(rng: random.Random, files: int, size: int, prefix: str) -> bytes:
    """An uncompressed tar with `files` regular files of random bytes totalling ~`size`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(prefix)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        d.mtime = 1_700_000_000
        tar.addfile(d)
        per_file = max(1, size // max(1, files))
        for i in range(files):
            data = rng.randbytes(per_file)
            info = tarfile.TarInfo(f"{prefix}/file-{i:03d}.bin")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_image(
    writer: _LayoutWriter | _DirWriter,
    rng: random.Random,
    *,
    layer_sizes: Sequence[int],
    os_name: str = "linux",
    arch: str = "amd64",
    variant: str | None = None,
    docker: bool = False,
    annotations: dict[str, str] | None = None,
) -> tuple[str, int, bytes]:
    """Write layers, config and manifest for one image; return (digest, size, manifest)."""
    layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    layers: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    token = rng.randbytes(6).hex()
    for n, size in enumerate(layer_sizes):
        raw = _tar_layer(rng, files=3, size=size, prefix=f"data/{token}/layer{n}")
        diff_ids.append(sha256(raw))
        gz = gzip.compress(raw, compresslevel=1, mtime=0)
        layers.append({"mediaType": layer_type, "digest": writer.put(gz), "size": len(gz)})
    config: dict[str, Any] = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": os_name,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"dockyard.e2e": token}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(layer_sizes))],
    }
    if variant:
        config["variant"] = variant
    config_bytes = canonical_json(config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "digest": writer.put(config_bytes), "size": len(config_bytes)},
        "layers": layers,
    }
    if annotations and not docker:
        manifest["annotations"] = annotations
    manifest_bytes = json.dumps(manifest, indent=3).encode()  # not canonical on purpose
    return writer.put_manifest(manifest_bytes), len(manifest_bytes), manifest_bytes


def random_layout(
    path: Path,
    tag: str = "latest",
    *,
    layer_sizes: Sequence[int] = (64 * 1024, 256 * 1024, 16 * 1024),
    docker: bool = False,
    seed: int | None = None,
    annotations: dict[str, str] | None = None,
) -> Layout:
    """Write (or add to) an OCI layout at `path` with one random multi-layer image at `tag`.

    Calling it again on the same path with another tag adds an unrelated image under that
    tag. `docker=True` writes a Docker schema 2 image in skopeo's `dir:` format instead (one
    image per directory; `tag` is only remembered).
    """
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
    writer = _writer(path, docker)
    digest, size, _ = _write_image(writer, rng, layer_sizes=layer_sizes, docker=docker,
                                   annotations=annotations)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    writer.tag(tag, digest, media_type, size)
    return Layout(path, tag, digest, media_type, "dir" if docker else "oci")


def multiplatform_layout(
    path: Path,
    tag: str = "latest",
    *,
    platforms: Iterable[tuple[str, str, str | None]] = DEFAULT_PLATFORMS,
    layer_sizes: Sequence[int] = (32 * 1024, 8 * 1024),
    docker: bool = False,
    seed: int | None = None,
) -> Layout:
    """Write an image index over one random image per platform.

    `docker=True` writes a Docker manifest list in skopeo's `dir:` format instead.
    """
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8)))
    writer = _writer(path, docker)
    children: list[dict[str, Any]] = []
    for os_name, arch, variant in platforms:
        digest, size, _ = _write_image(writer, rng, layer_sizes=layer_sizes, os_name=os_name,
                                       arch=arch, variant=variant, docker=docker)
        platform: dict[str, str] = {"architecture": arch, "os": os_name}
        if variant:
            platform["variant"] = variant
        children.append({"mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                         "digest": digest, "size": size, "platform": platform})
    media_type = DOCKER_LIST if docker else OCI_INDEX
    index = {"schemaVersion": 2, "mediaType": media_type, "manifests": children}
    index_bytes = json.dumps(index, indent=2).encode()
    digest = writer.put_manifest(index_bytes)
    writer.tag(tag, digest, media_type, len(index_bytes))
    return Layout(path, tag, digest, media_type, "dir" if docker else "oci")


# ---------------------------------------------------------------- a real image with umoci


def busybox_layout(path: Path, tag: str = "latest", *, workdir: Path | None = None) -> Layout:
    """Make a runnable busybox image with `umoci` from Debian's `busybox-static`.

    The root filesystem holds `/bin/busybox`, `/bin/sh` (a link to it), a minimal
    `/etc/passwd` and a file with a random token, so every call yields a distinct image.
    """
    umoci = shutil.which("umoci")
    if umoci is None:
        raise RuntimeError("umoci is not installed (apt-get install umoci)")
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    work = workdir or path.parent / f"{path.name}-rootfs"
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    sh = rootfs / "bin" / "sh"
    if not sh.is_symlink():
        sh.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "dockyard-e2e").write_text(os.urandom(16).hex() + "\n")

    def run(*args: str) -> None:
        proc = subprocess.run([umoci, *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"umoci {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")

    image = f"{path}:{tag}"
    if not (path / "index.json").exists():
        run("init", "--layout", str(path))
    run("new", "--image", image)
    run("insert", "--image", image, str(rootfs), "/")
    run("config", "--image", image, "--os", "linux", "--architecture", "amd64",
        "--config.cmd", "/bin/sh", "--config.env", "PATH=/bin")
    run("gc", "--layout", str(path))
    return read_layout(path, tag)
