"""skopeo (containers/image) against the registry: copy, inspect, tags, sync, delete, mount."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.clients import ClientError, Skopeo
from tests.support.images import (
    Layout,
    multiplatform_layout,
    random_layout,
    read_dir_layout,
    read_layout,
    sha256,
)
from tests.support.servers import Server


def docker_ref(registry: Server, repo: str, tag_or_digest: str) -> str:
    sep = "@" if tag_or_digest.startswith("sha256:") else ":"
    return f"docker://{registry.host}/{repo}{sep}{tag_or_digest}"


def assert_same_blobs(original: Layout, copied: Layout) -> None:
    """Every manifest, config and layer the original reaches is in the copy, byte for byte."""
    assert copied.digest == original.digest
    for digest in original.all_digests():
        data = copied.blob(digest)
        assert sha256(data) == digest, f"{digest} in the copy has other bytes"
        assert data == original.blob(digest)


@pytest.fixture(params=["busybox", "oci", "docker"])
def image(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    """A single-platform image: real busybox (umoci), random OCI, random Docker schema 2."""
    if request.param == "busybox":
        layout: Layout = request.getfixturevalue("busybox")
        return layout
    return random_layout(tmp_path / "src", "v1", docker=request.param == "docker")


def test_copy_in_inspect_and_copy_out(
    skopeo: Skopeo, registry: Server, repo: str, image: Layout, tmp_path: Path
) -> None:
    dest = docker_ref(registry, repo, "v1")
    skopeo.copy(image.ref, dest, "--preserve-digests")

    raw = skopeo.inspect_raw(dest)
    assert sha256(raw) == image.digest
    assert raw == image.manifest_bytes()

    info = skopeo.inspect(dest)
    assert info["Digest"] == image.digest
    assert info["Layers"] == image.layer_digests()
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"

    config = skopeo.inspect_config(dest)
    assert sha256(config) == image.config_digest()

    # by digest too
    assert skopeo.inspect_raw(docker_ref(registry, repo, image.digest)) == raw

    assert skopeo.list_tags(f"docker://{registry.host}/{repo}") == ["v1"]

    # and back out, byte for byte
    if image.transport == "oci":
        out = tmp_path / "out-oci"
        skopeo.copy(dest, f"oci:{out}:copied", "--preserve-digests")
        assert_same_blobs(image, read_layout(out, "copied"))
    out_dir = tmp_path / "out-dir"
    skopeo.copy(dest, f"dir:{out_dir}", "--preserve-digests")
    assert_same_blobs(image, read_dir_layout(out_dir))


def test_list_tags_after_several_pushes(
    skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    first = random_layout(tmp_path / "a", "one", layer_sizes=(4096,))
    second = random_layout(tmp_path / "a", "two", layer_sizes=(4096, 2048))
    tags = {"1.0": first, "1.0.1": first, "latest": second, "stable_2": second}
    for tag, layout in tags.items():
        skopeo.copy(layout.ref, docker_ref(registry, repo, tag), "--preserve-digests")

    assert sorted(skopeo.list_tags(f"docker://{registry.host}/{repo}")) == sorted(tags)
    for tag, layout in tags.items():
        assert sha256(skopeo.inspect_raw(docker_ref(registry, repo, tag))) == layout.digest

    # retagging moves the tag
    skopeo.copy(first.ref, docker_ref(registry, repo, "latest"), "--preserve-digests")
    assert sha256(skopeo.inspect_raw(docker_ref(registry, repo, "latest"))) == first.digest


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_multiplatform_copy_all(
    skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path, docker: bool
) -> None:
    index = multiplatform_layout(tmp_path / "src", "multi", docker=docker)
    dest = docker_ref(registry, repo, "multi")
    skopeo.copy(index.ref, dest, "--all", "--preserve-digests")

    raw = skopeo.inspect_raw(dest)
    assert raw == index.manifest_bytes()
    for child in index.children():
        child_raw = skopeo.inspect_raw(docker_ref(registry, repo, child["digest"]))
        assert sha256(child_raw) == child["digest"]

    # whole index back out, every blob identical
    out = tmp_path / "out-all"
    skopeo.copy(dest, f"dir:{out}", "--all", "--preserve-digests")
    assert_same_blobs(index, read_dir_layout(out))

    # without --all skopeo picks this machine's platform (linux/amd64) from the index
    amd64 = next(c for c in index.children() if c["platform"]["architecture"] == "amd64")
    out_one = tmp_path / "out-one"
    skopeo.copy(dest, f"dir:{out_one}", "--preserve-digests")
    one = read_dir_layout(out_one)
    assert one.digest == amd64["digest"]
    for digest in index.layer_digests(amd64["digest"]):
        assert one.blob(digest) == index.blob(digest)

    # the platform override chooses the arm64 image
    arm64 = next(c for c in index.children() if c["platform"]["architecture"] == "arm64")
    info = json.loads(skopeo.run("--override-arch", "arm64", "--override-variant", "v8",
                                 "inspect", "--tls-verify=false", dest).stdout)
    assert info["Digest"] == index.digest
    assert info["Architecture"] == "arm64"
    assert info["Layers"] == index.layer_digests(arm64["digest"])


def test_sync_several_repos_and_tags(
    skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    src_a, src_b = f"{repo}/src-a", f"{repo}/src-b"
    pushed: dict[tuple[str, str], str] = {}
    for name in (src_a, src_b):
        for tag in ("t1", "t2", "t3"):
            layout = random_layout(tmp_path / "layouts" / name.replace("/", "_"), tag,
                                   layer_sizes=(8192, 1024))
            skopeo.copy(layout.ref, docker_ref(registry, name, tag), "--preserve-digests")
            pushed[(name, tag)] = layout.digest

    # registry -> registry, every tag of one repository
    skopeo.sync("--src", "docker", "--dest", "docker", f"{registry.host}/{src_a}",
                f"{registry.host}/{repo}/mirror")
    mirrored = f"{repo}/mirror/src-a"
    assert sorted(skopeo.list_tags(f"docker://{registry.host}/{mirrored}")) == ["t1", "t2", "t3"]
    for tag in ("t1", "t2", "t3"):
        raw = skopeo.inspect_raw(docker_ref(registry, mirrored, tag))
        assert sha256(raw) == pushed[(src_a, tag)]

    # a YAML list of repositories and tags, registry -> local directories
    spec = tmp_path / "sync.yml"
    spec.write_text(
        f"{registry.host}:\n"
        "  tls-verify: false\n"
        "  images:\n"
        f"    {src_a}: []\n"
        f"    {src_b}: [t2, t3]\n"
    )
    out = tmp_path / "synced"
    skopeo.sync("--src", "yaml", "--dest", "dir", "--scoped", str(spec), str(out))
    seen = {}
    for manifest in out.rglob("manifest.json"):
        rel = manifest.parent.relative_to(out / registry.host).as_posix()
        name, _, tag = rel.rpartition(":")
        seen[(name, tag)] = sha256(manifest.read_bytes())
    expected = {k: v for k, v in pushed.items() if k[0] == src_a or k[1] in ("t2", "t3")}
    assert seen == expected


def test_delete(skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path) -> None:
    doomed = random_layout(tmp_path / "src", "doomed", layer_sizes=(4096,))
    kept = random_layout(tmp_path / "src", "kept", layer_sizes=(4096,))
    skopeo.copy(doomed.ref, docker_ref(registry, repo, "doomed"), "--preserve-digests")
    skopeo.copy(kept.ref, docker_ref(registry, repo, "kept"), "--preserve-digests")
    assert sorted(skopeo.list_tags(f"docker://{registry.host}/{repo}")) == ["doomed", "kept"]

    # skopeo resolves the tag and deletes the manifest by digest
    skopeo.delete(docker_ref(registry, repo, "doomed"))

    for ref in (docker_ref(registry, repo, "doomed"), docker_ref(registry, repo, doomed.digest)):
        with pytest.raises(ClientError) as err:
            skopeo.inspect_raw(ref)
        assert "manifest unknown" in err.value.stderr.lower()
    assert skopeo.list_tags(f"docker://{registry.host}/{repo}") == ["kept"]
    assert sha256(skopeo.inspect_raw(docker_ref(registry, repo, "kept"))) == kept.digest

    # deleting again fails: nothing to delete
    with pytest.raises(ClientError):
        skopeo.delete(docker_ref(registry, repo, doomed.digest))

    # and the image can be pushed again afterwards
    skopeo.copy(doomed.ref, docker_ref(registry, repo, "doomed"), "--preserve-digests")
    assert sha256(skopeo.inspect_raw(docker_ref(registry, repo, "doomed"))) == doomed.digest


def test_copy_between_repos_uses_cross_repo_mount(
    skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    image = random_layout(tmp_path / "src", "v1", layer_sizes=(200_000, 50_000, 3000))
    first, second = f"{repo}/first", f"{repo}/second"
    push = skopeo.copy(image.ref, docker_ref(registry, first, "v1"), "--preserve-digests")
    assert "mount OK" not in push.stderr  # nothing to mount from yet: real uploads

    # The same skopeo sandbox remembers where the layers live, so it asks the registry to
    # mount them (POST ?mount=&from=) instead of uploading. skopeo only remembers a layer
    # whose upload stream it saw end before its PUT returned, which a busy machine
    # occasionally defeats for one layer (seen with Distribution too), so this checks
    # that skopeo tried mounts and that the registry accepted every one it tried.
    copy = skopeo.copy(docker_ref(registry, first, "v1"), docker_ref(registry, second, "v1"),
                       "--preserve-digests")
    tried = set(re.findall(r"Trying to mount \S*mount=sha256%3A([0-9a-f]{64})", copy.stderr))
    assert tried, "skopeo tried no cross-repository mount:\n" + copy.stderr[-3000:]
    assert tried <= {d.split(":", 1)[1] for d in image.layer_digests()}
    assert copy.stderr.count("... mount OK") == len(tried), (
        "the registry did not accept every cross-repository mount (POST ?mount=&from=):\n"
        + "\n".join(line for line in copy.stderr.splitlines() if "mount" in line)
    )

    assert sha256(skopeo.inspect_raw(docker_ref(registry, second, "v1"))) == image.digest
    out = tmp_path / "out"
    skopeo.copy(docker_ref(registry, second, "v1"), f"oci:{out}:v1", "--preserve-digests")
    assert_same_blobs(image, read_layout(out, "v1"))
    # the source is untouched
    assert sha256(skopeo.inspect_raw(docker_ref(registry, first, "v1"))) == image.digest


def test_large_layers_roundtrip(
    skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    """Layers of several MiB of incompressible bytes go up and come back identical."""
    image = random_layout(tmp_path / "src", "big",
                          layer_sizes=(24 * 1024 * 1024, 6 * 1024 * 1024, 1))
    skopeo.copy(image.ref, docker_ref(registry, repo, "big"), "--preserve-digests")
    out = tmp_path / "out"
    skopeo.copy(docker_ref(registry, repo, "big"), f"oci:{out}:big", "--preserve-digests")
    assert_same_blobs(image, read_layout(out, "big"))
