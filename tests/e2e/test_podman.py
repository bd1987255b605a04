"""podman against the registry: push (chunked PATCH uploads), pull back, compare.

podman stores layers uncompressed and recompresses them on push, so the pushed manifest
digest is podman's own (reported by `--digestfile`), not the source layout's; what must hold
is that the registry serves exactly what podman pushed and a second, empty podman pulls the
same image (manifest digest, image ID) with the same files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support.clients import Podman, Skopeo
from tests.support.images import BUSYBOX, Layout, multiplatform_layout, random_layout, sha256
from tests.support.servers import Server


@pytest.fixture
def puller(podman: Podman, tmp_path: Path, registry: Server) -> Podman:
    """A second podman with empty storage, to pull what the first one pushed."""
    return Podman(tmp_path / "podman-puller", insecure_hosts=[registry.host])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_push_busybox_and_pull_back(
    podman: Podman, puller: Podman, registry: Server, repo: str, busybox: Layout, fmt: str
) -> None:
    image_id = podman.pull(busybox.ref)
    assert image_id == busybox.config_digest().split(":", 1)[1]

    name = f"{registry.host}/{repo}:v1"
    podman.tag(image_id, name)
    digest = podman.push(name, f"docker://{name}", "--format", fmt)
    assert digest.startswith("sha256:")

    pulled_id = puller.pull(name)
    info = puller.image_inspect(name)
    assert info["Digest"] == digest
    assert f"{registry.host}/{repo}@{digest}" in info["RepoDigests"]
    if fmt == "oci":  # the config blob travels unchanged
        assert pulled_id == image_id
    assert info["Os"] == "linux"
    assert info["Architecture"] == "amd64"
    assert info["Config"]["Cmd"] == ["/bin/sh"]

    # the files arrived intact: busybox in the pulled root filesystem is Debian's binary
    root = Path(puller.run("image", "mount", name, debug=False).stdout.strip())
    try:
        assert file_sha256(root / "bin" / "busybox") == file_sha256(BUSYBOX)
        assert (root / "bin" / "sh").is_symlink()
        assert (root / "etc" / "passwd").read_text().startswith("root:")
    finally:
        puller.run("image", "unmount", name, debug=False)

    # and by digest
    by_digest = f"{registry.host}/{repo}@{digest}"
    puller.rmi(name)
    puller.pull(by_digest)
    assert puller.image_inspect(by_digest)["Digest"] == digest


def test_push_several_tags_and_list_them(
    podman: Podman, puller: Podman, registry: Server, repo: str, tmp_path: Path
) -> None:
    layout = random_layout(tmp_path / "src", "multi",
                           layer_sizes=(1_500_000, 300_000, 20_000, 1000))
    image_id = podman.pull(layout.ref)
    digests = {}
    for tag in ("a", "b", "c"):
        name = f"{registry.host}/{repo}:{tag}"
        podman.tag(image_id, name)
        digests[tag] = podman.push(name, f"docker://{name}")
    # same local image, same pushed manifest
    assert len(set(digests.values())) == 1

    listed = json.loads(podman.run("search", "--list-tags", "--format", "json",
                                   f"{registry.host}/{repo}", debug=False).stdout)
    assert sorted(listed[0]["Tags"]) == ["a", "b", "c"]

    pulled = puller.pull(f"{registry.host}/{repo}:b")
    assert pulled == image_id
    info = puller.image_inspect(f"{registry.host}/{repo}:b")
    assert info["Digest"] == digests["b"]
    assert len(info["RootFS"]["Layers"]) == 4
    # diff IDs are the uncompressed layers podman hashed itself on the way in
    src_config = json.loads(layout.blob(layout.config_digest()))
    assert info["RootFS"]["Layers"] == src_config["rootfs"]["diff_ids"]


def test_manifest_list_push_all_and_pull_by_platform(
    podman: Podman, puller: Podman, registry: Server, repo: str, busybox: Layout,
    tmp_path: Path,
) -> None:
    """`podman manifest push --all` of a list over an image podman pushed and a foreign one."""
    # an amd64 image pushed by podman, an arm64 image (Docker schema 2) already in the registry
    image_id = podman.pull(busybox.ref)
    amd64_name = f"{registry.host}/{repo}/amd64:v1"
    podman.tag(image_id, amd64_name)
    amd64_digest = podman.push(amd64_name, f"docker://{amd64_name}")
    arm = multiplatform_layout(tmp_path / "arm", "v1", platforms=[("linux", "arm64", "v8")],
                               docker=True)
    arm_digest = arm.children()[0]["digest"]
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[registry.host])
    skopeo.copy(arm.ref, f"docker://{registry.host}/{repo}/arm64:v1", "--all",
                "--preserve-digests")

    podman.run("manifest", "create", "e2e-list")
    podman.run("manifest", "add", "e2e-list", amd64_name)
    podman.run("manifest", "add", "e2e-list", f"docker://{registry.host}/{repo}/arm64@{arm_digest}")
    list_name = f"{registry.host}/{repo}/list:v1"
    digest_file = tmp_path / "list-digest"
    podman.run("manifest", "push", "--all", "--digestfile", str(digest_file), "e2e-list",
               f"docker://{list_name}")
    list_digest = digest_file.read_text().strip()

    raw = skopeo.inspect_raw(f"docker://{list_name}")
    assert sha256(raw) == list_digest
    children = {m["platform"]["architecture"]: m["digest"] for m in json.loads(raw)["manifests"]}
    assert children == {"amd64": amd64_digest, "arm64": arm_digest}

    # an empty podman pulls each platform out of the list
    puller.pull(list_name, "--arch", "arm64")
    info = puller.image_inspect(list_name)
    assert info["Architecture"] == "arm64"
    assert info["Digest"] == list_digest  # podman records the digest it pulled by
    assert f"{registry.host}/{repo}/list@{arm_digest}" in info["RepoDigests"]
    assert info["Id"] == arm.config_digest(arm_digest).split(":", 1)[1]
    puller.rmi(list_name)
    puller.pull(list_name, "--arch", "amd64")
    info = puller.image_inspect(list_name)
    assert info["Architecture"] == "amd64"
    assert f"{registry.host}/{repo}/list@{amd64_digest}" in info["RepoDigests"]
    assert info["Id"] == image_id
