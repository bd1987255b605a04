"""`dockyard build --push` to registries that require authentication, as `dockyard copy`.

Two real registries: Dockyard with its token service (a `private/` prefix: only
authenticated users pull, only admins push) reached with `--creds`, and CNCF Distribution
with Basic authentication everywhere (no referrers API) reached through `--authfile`.
One image of the test catalogue (`bookworm`: a test command, a dpkg database) is built
with buildah on the busybox base each registry holds, every build in one storage: what
they prove is the registries' authentication (look-ups, pushes, SBOMs), not a cold build,
so a build after the first reuses its layers (each still builds, tests and pushes).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_builder import CATALOGUE, GIT, KEY, drop_run_root
from tests.support.authenv import USERS, get_token, token_auth, write_config, write_htpasswd
from tests.support.clients import Skopeo
from tests.support.images import Layout
from tests.support.servers import Server, start_distribution, start_dockyard

ADMIN = f"admin:{USERS['admin'][0]}"
BUILDER = f"builder:{USERS['builder'][0]}"
SPDX = "application/spdx+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("buildah", "podman", "umoci", "skopeo", "runc")),
    reason="buildah, podman, umoci, skopeo and runc are needed (make test installs them)")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth-catalogue") / "catalogue"
    shutil.copytree(CATALOGUE, root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "catalogue"], check=True)
    return root


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The buildah storage the module's builds share."""
    path = tmp_path_factory.mktemp("auth-storage")
    yield path
    drop_run_root(path)


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """No auth file of the machine's (HOME, XDG_RUNTIME_DIR, REGISTRY_AUTH_FILE)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG"))}
    env.update({"HOME": str(home), "XDG_RUNTIME_DIR": str(home)})
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def build(catalogue: Path, registry: Server, prefix: str, work: Path, storage: Path,
          env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    """`dockyard build --json --single bookworm ARGS`: exit status, bookworm's result,
    stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "build", "--catalogue", str(catalogue),
         "--registry", registry.host, "--image-prefix", prefix, "--work-dir", str(work),
         "--storage", str(storage), "--json", "--single", *args, "bookworm"],
        env=env, capture_output=True, text=True, timeout=600)
    [result] = json.loads(proc.stdout)["images"]
    return proc.returncode, result, proc.stderr


@pytest.fixture(scope="module")
def dock(tmp_path_factory: pytest.TempPathFactory, busybox: Layout) -> Iterator[Server]:
    """Dockyard with token authentication and the platform's policy; busybox pushed."""
    tmp = tmp_path_factory.mktemp("dock")
    config = write_config(tmp / "config.yml", auth=token_auth(write_htpasswd(tmp / "htpasswd")))
    server = start_dockyard(tmp / "data", config=config)
    try:
        Skopeo(tmp / "skopeo", insecure_hosts=[server.host]).copy(
            busybox.ref, f"docker://{server.host}/upstream/busybox:latest",
            "--dest-creds", BUILDER)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, busybox: Layout) -> Iterator[Server]:
    """Distribution asking for Basic credentials on every request; busybox pushed."""
    tmp = tmp_path_factory.mktemp("dist")
    server = start_distribution(tmp / "data", htpasswd=write_htpasswd(
        tmp / "htpasswd", {"builder": USERS["builder"]}))
    try:
        Skopeo(tmp / "skopeo", insecure_hosts=[server.host]).copy(
            busybox.ref, f"docker://{server.host}/upstream/busybox:latest",
            "--dest-creds", BUILDER)
        yield server
    finally:
        server.stop()


def test_token_registry_with_creds_gets_the_image_its_annotations_and_sbom(
        dock: Server, catalogue: Path, storage: Path, bare_env: dict[str, str],
        tmp_path: Path) -> None:
    prefix, repo = "private/tf", "private/tf-bookworm"
    token = get_token(dock.url, [f"repository:{repo}:pull"], "admin")
    headers = {"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST}

    # without credentials: the push is refused, nothing lands
    code, result, stderr = build(catalogue, dock, prefix, tmp_path / "anon", storage, bare_env,
                                 "--push")
    assert code == 1, stderr
    assert result["result"] == "failed", result
    assert result["pushed"] == []
    assert httpx.get(f"{dock.url}/v2/{repo}/manifests/latest",
                     headers=headers).status_code == 404

    work = tmp_path / "work"
    code, result, stderr = build(catalogue, dock, prefix, work, storage, bare_env, "--push",
                                 "--creds", ADMIN)
    assert code == 0, stderr
    assert result["result"] == "pushed", result
    manifest = httpx.get(f"{dock.url}/v2/{repo}/manifests/latest", headers=headers)
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == result["digest"]
    notes = manifest.json()["annotations"]
    assert notes[KEY] == result["key"]
    assert notes["org.opencontainers.image.base.name"] == \
        f"{dock.host}/upstream/busybox:latest"
    referrers = httpx.get(f"{dock.url}/v2/{repo}/referrers/{result['digest']}",
                          headers=headers).json()["manifests"]
    assert [(m["digest"], m["artifactType"]) for m in referrers] == [(result["sbom"], SPDX)]
    assert not (work / "engine" / "auth.json").exists()  # the engine's copy is removed

    # the look-ups authenticate too: with credentials the unchanged image is skipped ...
    code, again, stderr = build(catalogue, dock, prefix, work, storage, bare_env, "--push",
                                "--creds", ADMIN)
    assert code == 0, stderr
    assert (again["result"], again["reason"], again["digest"]) == \
        ("skipped", "unchanged", result["digest"])
    # ... while an anonymous look-up of the private repository is refused
    code, anon, stderr = build(catalogue, dock, prefix, work, storage, bare_env, "--dry-run")
    assert code == 0, stderr
    assert (anon["action"], anon["reason"]) == ("build", "not in the registry")
    assert f"{dock.host}/{repo}:latest: registry look-up failed: 401" in stderr, stderr


def test_basic_registry_through_an_auth_file_with_the_referrers_tag_fallback(
        dist: Server, catalogue: Path, storage: Path, bare_env: dict[str, str],
        tmp_path: Path) -> None:
    repo = "tf-bookworm"
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {dist.host: {
        "auth": base64.b64encode(BUILDER.encode()).decode()}}}))
    basic = ("builder", USERS["builder"][0])

    code, result, stderr = build(catalogue, dist, "tf", tmp_path / "work", storage, bare_env,
                                 "--push", "--authfile", str(auth_file))
    assert code == 0, stderr
    assert result["result"] == "pushed", result
    manifest = httpx.get(f"{dist.url}/v2/{repo}/manifests/latest", auth=basic,
                         headers={"Accept": OCI_MANIFEST})
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == result["digest"]
    assert manifest.json()["annotations"][KEY] == result["key"]
    # Distribution 2.8 has no referrers API: the SBOM is listed under the fallback tag
    fallback = httpx.get(f"{dist.url}/v2/{repo}/manifests/{result['digest'].replace(':', '-')}",
                         auth=basic,
                         headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    assert fallback.status_code == 200, fallback.text
    assert [(m["digest"], m["artifactType"]) for m in fallback.json()["manifests"]] == \
        [(result["sbom"], SPDX)]

    code, again, stderr = build(catalogue, dist, "tf", tmp_path / "work", storage, bare_env,
                                "--push", "--authfile", str(auth_file))
    assert code == 0, stderr
    assert (again["result"], again["reason"]) == ("skipped", "unchanged"), again


def test_a_named_auth_file_that_cannot_be_used_stops_the_build(
        dist: Server, catalogue: Path, bare_env: dict[str, str], tmp_path: Path) -> None:
    """`--authfile` or `$REGISTRY_AUTH_FILE` naming a file that is missing or no auth file
    stops `dockyard build` before anything runs (exit 2, the file and why), rather than
    looking up and pushing anonymously."""
    (tmp_path / "broken.json").write_text("not json\n")
    missing = tmp_path / "nowhere.json"
    for extra, env, error in [
        (["--authfile", str(missing)], bare_env,
         f"Error: Invalid value for --authfile: {missing}: cannot read it: "
         "No such file or directory"),
        (["--authfile", str(tmp_path / "broken.json")], bare_env,
         f"Error: Invalid value for --authfile: {tmp_path / 'broken.json'}: not valid JSON: "
         "Expecting value (line 1 column 1)"),
        ([], {**bare_env, "REGISTRY_AUTH_FILE": str(missing)},
         f"Error: Invalid value for $REGISTRY_AUTH_FILE: {missing}: cannot read it: "
         "No such file or directory"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "dockyard", "build", "--catalogue", str(catalogue),
             "--registry", dist.host, "--image-prefix", "tf", "--work-dir",
             str(tmp_path / "work"), "--single", "--dry-run", *extra, "bookworm"],
            env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")] == [error]
        assert proc.stdout == ""  # no plan: nothing was looked up
