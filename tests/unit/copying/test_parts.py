"""The copy's pure parts: references, auth-file lookup, challenges, platform narrowing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from dockyard.copying.ends import Fetched
from dockyard.copying.platforms import Platform, narrow
from dockyard.copying.refs import BadReference, LayoutRef, RegistryRef, parse
from dockyard.remote.auth import Challenge
from dockyard.remote.credentials import Credentials, auth_files, lookup

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "expected"), [
    ("docker://127.0.0.1:5000/a/b:v1", RegistryRef("127.0.0.1:5000", "a/b", "v1")),
    ("127.0.0.1:5000/a/b", RegistryRef("127.0.0.1:5000", "a/b")),
    (f"registry.example/a@{DIGEST}", RegistryRef("registry.example", "a", None, DIGEST)),
    ("localhost/a:1", RegistryRef("localhost", "a", "1")),
    ("busybox:1.36", RegistryRef("docker.io", "library/busybox", "1.36")),
    ("grafana/grafana", RegistryRef("docker.io", "grafana/grafana")),
    ("oci:/tmp/lay:v1", LayoutRef("/tmp/lay", "v1")),
    ("oci:./lay", LayoutRef("./lay")),
    (f"oci:/tmp/lay@{DIGEST}", LayoutRef("/tmp/lay", None, DIGEST)),
])
def test_references(text: str, expected: object) -> None:
    assert parse(text) == expected


def test_bad_reference_says_why() -> None:
    with pytest.raises(BadReference, match="invalid repository name"):
        parse("docker://host.example/UPPER:v1")


@pytest.mark.parametrize("text", ["reg.example:notaport/x", "127.0.0.1:99999/x",
                                  "127.0.0.1:0/x", "[zz]:9/x", "bad_host.example/x",
                                  "-lead.example/x"])
def test_a_registry_host_that_is_no_host_is_a_bad_reference(text: str) -> None:
    # it reached the HTTP client, whose ValueError came out as a traceback
    with pytest.raises(BadReference, match="invalid registry host"):
        parse(text)


def test_ipv6_hosts_in_brackets_are_hosts() -> None:
    assert parse("[::1]:5000/a/b:v1") == RegistryRef("[::1]:5000", "a/b", "v1")


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_auth_files_order_and_lookup(tmp_path: Path) -> None:
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "a.json"), "XDG_RUNTIME_DIR": str(tmp_path),
           "HOME": str(tmp_path / "home")}
    assert auth_files(env) == [tmp_path / "a.json", tmp_path / "containers" / "auth.json",
                               tmp_path / "home" / ".config" / "containers" / "auth.json",
                               tmp_path / "home" / ".docker" / "config.json"]
    # as under cron or a systemd unit: podman login's file is /run/containers/$UID's
    bare = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "conf")}
    assert auth_files(bare, uid=1234) == [Path("/run/containers/1234/auth.json"),
                                          tmp_path / "conf" / "containers" / "auth.json",
                                          tmp_path / "home" / ".docker" / "config.json"]
    (tmp_path / "a.json").write_text(json.dumps({"auths": {
        "https://reg.example/v1/": _auth("u", "p:with:colons"),
        "reg.example/team": _auth("team", "t"),
        "https://index.docker.io/v1/": _auth("hub", "h"),
    }}))
    files = [tmp_path / "missing.json", tmp_path / "a.json"]
    assert lookup("reg.example", "other/app", files) == Credentials("u", "p:with:colons")
    assert lookup("reg.example", "team/app", files) == Credentials("team", "t")
    assert lookup("docker.io", "library/busybox", files) == Credentials("hub", "h")
    assert lookup("elsewhere.example", "app", files) is None
    assert "p:with" not in repr(Credentials("u", "p:with:colons"))


def test_bearer_challenge() -> None:
    c = Challenge.parse('Bearer realm="https://auth.example/token",service="reg",'
                        'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg",
                        "scope": "repository:a/b:pull,push"}


def test_narrow_keeps_children_bytes_and_makes_a_new_index() -> None:
    children = [{"mediaType": "m", "digest": f"sha256:{c * 64}", "size": 1,
                 "platform": {"os": "linux", "architecture": arch, **extra}}
                for c, arch, extra in (("1", "amd64", {}), ("2", "arm64", {"variant": "v8"}),
                                       ("3", "arm", {"variant": "v7"}))]
    data = json.dumps({"schemaVersion": 2, "manifests": children}).encode()
    index = Fetched(data, "application/vnd.oci.image.index.v1+json", "sha256:x")
    kept = narrow(index, (Platform.parse("linux/arm64"), Platform.parse("linux/arm/v7")))
    assert kept is not None
    assert json.loads(kept.data)["manifests"] == children[1:]
    assert kept.digest != index.digest
    assert narrow(index, (Platform.parse("linux/arm/v6"),)) is None
    assert narrow(index, (Platform.parse("linux/amd64"), Platform.parse("linux/arm64"),
                          Platform.parse("linux/arm"))) is index


@pytest.mark.parametrize(("asked", "listed", "kept"), [
    ("linux/arm64/v8", {"architecture": "arm64"}, True),  # no variant: arm64 is v8
    ("linux/arm64/v8", {"architecture": "arm64", "variant": "v8"}, True),
    ("linux/arm64/v9", {"architecture": "arm64"}, False),
    ("linux/arm/v7", {"architecture": "arm"}, True),  # no variant: arm is v7
    ("linux/arm/v6", {"architecture": "arm"}, False),
    ("linux/arm/v6", {"architecture": "arm", "variant": "v6"}, True),
    ("linux/amd64/v2", {"architecture": "amd64"}, False),
])
def test_a_variant_matches_the_one_an_index_leaves_unsaid(asked: str, listed: dict[str, str],
                                                          kept: bool) -> None:
    """`--platform linux/arm64/v8` found no `linux/arm64` child (docker, containerd and
    containers/image take arm64 without a variant for v8)."""
    assert Platform.parse(asked).matches({"os": "linux", **listed}) is kept
