"""`dockyard build` end to end: a real catalogue, real buildah and podman, a real registry.

The catalogue (tests/e2e/builder_catalogue, copied into a git checkout) is shaped like the
platform's: Jinja2 templates importing macros, `COPY {{ image_path }}/...` and
`COPY shared/...`, a multi-stage image, a RUN step, 9 images over 4 levels on a busybox
base made without network. It is built and pushed once per module; the tests then change
it step by step (each leaves the registry up to date with what it changed). Engine calls
are counted by wrappers of buildah and podman put first on PATH.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.builder.engineconf import runroot_for
from tests.support.clients import Skopeo
from tests.support.images import Layout
from tests.support.servers import Server, free_port, start_dockyard

CATALOGUE = Path(__file__).parent / "builder_catalogue"
PREFIX = "toolforge"
IMAGES = ["bookworm", "bookworm-sssd", "jdk17", "jdk17/web", "node18", "php82", "php82/web",
          "python311-sssd/base", "python311-sssd/web"]
KEY = "org.dockyard.build.key"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("buildah", "podman", "umoci", "skopeo", "runc")),
    reason="buildah, podman, umoci, skopeo and runc are needed (make test installs them)")


@dataclass
class Builder:
    """`dockyard build` against one registry, with its catalogue, work dir and storage."""

    root: Path
    catalogue: Path
    registry: Server
    calls_file: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        """The `dockyard build` command line with ARGS."""
        return [sys.executable, "-m", "dockyard", "build", "--catalogue", str(self.catalogue),
                "--registry", self.registry.host, "--image-prefix", PREFIX,
                "--work-dir", str(self.root / "work"), "--storage", str(self.root / "storage"),
                *args]

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=600)
        if check is not None:
            assert proc.returncode == check, f"{proc.stdout}\n{proc.stderr}"
        return proc

    def build(self, *args: str, check: int = 0) -> dict[str, dict[str, Any]]:
        """Results by image path of `dockyard build --json ARGS`."""
        proc = self.run("--json", *args, check=check)
        return {i["image"]: i for i in json.loads(proc.stdout)["images"]}

    def calls(self) -> list[str]:
        """Engine commands run since the last call."""
        if not self.calls_file.exists():
            return []
        lines = self.calls_file.read_text().splitlines()
        self.calls_file.unlink()
        return lines

    def name(self, path: str) -> str:
        return f"{self.registry.host}/{PREFIX}-{path.replace('/', '-')}:latest"

    def manifest(self, path: str) -> tuple[str, dict[str, Any]]:
        repo = f"{PREFIX}-{path.replace('/', '-')}"
        r = httpx.get(f"{self.registry.url}/v2/{repo}/manifests/latest",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200, r.text
        return r.headers["Docker-Content-Digest"], r.json()

    def engine_env(self) -> dict[str, str]:
        """The environment that makes buildah and podman see the builder's own storage."""
        engine = self.root / "work" / "engine"
        return {**self.env, "CONTAINERS_CONF": str(engine / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(engine / "registries.conf"),
                "CONTAINERS_STORAGE_CONF": str(engine / "storage.conf")}

    def failing_run(self) -> tuple[dict[str, dict[str, Any]], float]:
        """`dockyard build --json` that exits 1: results by image path, and seconds."""
        started = time.monotonic()
        proc = self.run("--json", check=1)
        took = time.monotonic() - started
        return {i["image"]: i for i in json.loads(proc.stdout)["images"]}, took

    def assert_test_container_removed(self, command: str) -> None:
        """The one `podman run` of `command` since the last `calls()` was stopped: its
        container removed by name (`rm --force`) and gone from `podman ps --all`."""
        calls = self.calls()
        runs = [c for c in calls if c.startswith("podman run") and command in c]
        assert len(runs) == 1, calls
        name = runs[0].split("--name ", 1)[1].split()[0]
        assert f"podman rm --force --time 0 {name}" in calls
        listed = subprocess.run(["/usr/bin/podman", "ps", "--all", "--format",
                                 "{{.Names}}"], env=self.engine_env(),
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert name not in listed.stdout.split()

    def commit(self, message: str) -> None:
        subprocess.run([*GIT, "-C", str(self.catalogue), "commit", "-qam", message],
                       check=True)


def drop_run_root(storage: Path) -> None:
    """Remove the run root `dockyard build` gave `storage` where it is not inside it (a
    deep test folder's is in the runtime directory: podman's 50-character limit)."""
    runroot = runroot_for(storage)
    if not runroot.is_relative_to(storage.absolute()):
        shutil.rmtree(runroot, ignore_errors=True)


def _by_result(results: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path, r in results.items():
        out.setdefault(r["result"], set()).add(path)
    return out


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory, busybox: Layout) -> Iterator[Builder]:
    root = tmp_path_factory.mktemp("builder")
    server = start_dockyard(root / "data", workers=1)
    try:
        Skopeo(root / "skopeo", insecure_hosts=[server.host]).copy(
            busybox.ref, f"docker://{server.host}/upstream/busybox:latest")
        catalogue = root / "catalogue"
        shutil.copytree(CATALOGUE, catalogue)
        subprocess.run(["git", "init", "-q", str(catalogue)], check=True)
        subprocess.run(["git", "-C", str(catalogue), "remote", "add", "origin",
                        "https://git.example.invalid/catalogue.git"], check=True)
        subprocess.run([*GIT, "-C", str(catalogue), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(catalogue), "commit", "-qm", "catalogue"], check=True)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        calls = root / "engine-calls"
        for tool in ("buildah", "podman"):
            wrapper = bin_dir / tool
            wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n'
                               f'exec {shutil.which(tool)} "$@"\n')
            wrapper.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")}
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        env.pop("SOURCE_DATE_EPOCH", None)
        b = Builder(root, catalogue, server, calls, env)
        results = b.build("--push", "--jobs", "2")
        assert {p for p, r in results.items() if r["result"] == "pushed"} == set(IMAGES), \
            results
        b.first_calls = b.calls()  # type: ignore[attr-defined]
        yield b
    finally:
        server.stop()
        for storage in (root / "storage", root / "puller"):
            drop_run_root(storage)


def test_graph_and_names_come_from_the_from_lines(builder: Builder) -> None:
    tree = builder.run("--graph").stdout
    h = f"{builder.registry.host}/{PREFIX}"
    assert tree.splitlines() == [
        f"{builder.registry.host}/upstream/busybox:latest",
        f"└── {h}-bookworm:latest",
        f"    ├── {h}-bookworm-sssd:latest",
        f"    │   ├── {h}-node18:latest",
        f"    │   └── {h}-python311-sssd-base:latest",
        f"    │       └── {h}-python311-sssd-web:latest",
        f"    ├── {h}-jdk17:latest",
        f"    │   └── {h}-jdk17-web:latest",
        f"    ├── {h}-node18:latest",
        f"    └── {h}-php82:latest",
        f"        └── {h}-php82-web:latest",
    ]
    dot = builder.run("--graph", "--format", "dot").stdout
    assert f'"{h}-bookworm-sssd:latest" -> "{h}-node18:latest";' in dot
    assert f'"{h}-bookworm:latest" -> "{h}-node18:latest";' in dot
    assert "build" not in {line.split()[0] for line in dot.splitlines()[2:]}
    assert builder.calls() == []


def test_first_build_pushed_parents_first_with_annotations(builder: Builder) -> None:
    calls: list[str] = builder.first_calls  # type: ignore[attr-defined]
    pushed = [c.split()[-1].removeprefix("docker://") for c in calls
              if c.startswith("buildah push")]
    order = [p for p in IMAGES if builder.name(p) in pushed]
    assert len(order) == len(IMAGES)
    position = {p: pushed.index(builder.name(p)) for p in IMAGES}
    for child, parent in [("bookworm-sssd", "bookworm"), ("node18", "bookworm-sssd"),
                          ("python311-sssd/base", "bookworm-sssd"),
                          ("python311-sssd/web", "python311-sssd/base"),
                          ("jdk17/web", "jdk17"), ("php82/web", "php82")]:
        assert position[parent] < position[child]
    extra = httpx.get(f"{builder.registry.url}/v2/{PREFIX}-php82/manifests/extra",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert extra.headers["Docker-Content-Digest"] == builder.manifest("php82")[0]  # tags:
    builds = [c for c in calls if c.startswith("buildah bud")]
    assert len(builds) == len(IMAGES)
    assert all("--timestamp" in c and "--layers" in c for c in builds)
    # tests of catalogue.yaml ran in the built images
    assert any(c.startswith("podman run") and "grep -q sssd /etc/sssd.conf" in c
               for c in calls)

    revision = subprocess.run(["git", "-C", str(builder.catalogue), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    _, parent_manifest = builder.manifest("bookworm")
    for path in IMAGES:
        _, manifest = builder.manifest(path)
        notes = manifest["annotations"]
        assert notes[KEY].startswith("sha256:")
        assert notes["org.opencontainers.image.source"] == \
            "https://git.example.invalid/catalogue.git"
        assert notes["org.opencontainers.image.revision"] == revision
        assert notes["org.opencontainers.image.created"].endswith("Z")
        assert notes["org.opencontainers.image.base.name"]
        assert notes["org.opencontainers.image.base.digest"].startswith("sha256:")
    # a catalogue base is named with the digest the registry serves for it
    for child, parent in [("bookworm-sssd", "bookworm"), ("node18", "bookworm-sssd"),
                          ("python311-sssd/web", "python311-sssd/base")]:
        notes = builder.manifest(child)[1]["annotations"]
        assert notes["org.opencontainers.image.base.name"] == builder.name(parent)
        assert notes["org.opencontainers.image.base.digest"] == builder.manifest(parent)[0]
    assert parent_manifest["annotations"]["org.opencontainers.image.base.name"] == \
        f"{builder.registry.host}/upstream/busybox:latest"


def test_pushed_images_run_with_podman(builder: Builder) -> None:
    """A podman with empty storage pulls the pushed images from the registry and runs them."""
    puller = builder.root / "puller"
    runroot = runroot_for(puller)  # within podman's limit, or each run waits 20 s
    for d in (puller / "graphroot", runroot):
        d.mkdir(parents=True, exist_ok=True)
    (puller / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{puller / "graphroot"}"\n'
        f'runroot = "{runroot}"\n')
    engine_conf = builder.root / "work" / "engine"
    env = {**builder.env, "CONTAINERS_CONF": str(engine_conf / "containers.conf"),
           "CONTAINERS_REGISTRIES_CONF": str(engine_conf / "registries.conf"),
           "CONTAINERS_STORAGE_CONF": str(puller / "storage.conf")}

    def podman_run(image: str, *command: str) -> str:
        proc = subprocess.run(["/usr/bin/podman", "run", "--rm", "--network=none", image,
                               *command], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    podman_run(builder.name("python311-sssd/web"), "/bin/busybox", "true")
    out = podman_run(builder.name("node18"), "/bin/busybox", "cat", "/opt/node18/artifact",
                     "/etc/catalogue/greeting", "/etc/motd")
    assert out.splitlines() == ["built", "hello from bookworm", "Welcome to the test catalogue"]
    assert (puller / "graphroot" / "vfs-images").is_dir()  # pulled into its own storage


def test_images_with_a_dpkg_database_get_an_spdx_sbom_through_referrers(
        builder: Builder) -> None:
    expected = {("base-files", "12.4+deb12u5"), ("libc6", "2.36-9+deb12u4"),
                ("tzdata", "2024a-0+deb12u1")}  # not removed-tool: only config files left
    for path in ("bookworm", "python311-sssd/web"):
        digest, _ = builder.manifest(path)
        repo = f"{PREFIX}-{path.replace('/', '-')}"
        index = httpx.get(f"{builder.registry.url}/v2/{repo}/referrers/{digest}").json()
        sboms = [m for m in index["manifests"] if m["artifactType"] == "application/spdx+json"]
        assert len(sboms) == 1, index
        manifest = httpx.get(f"{builder.registry.url}/v2/{repo}/manifests/{sboms[0]['digest']}",
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
                             ).json()
        assert manifest["subject"]["digest"] == digest
        layer = manifest["layers"][0]
        assert layer["mediaType"] == "application/spdx+json"
        doc = httpx.get(f"{builder.registry.url}/v2/{repo}/blobs/{layer['digest']}").json()
        assert doc["spdxVersion"] == "SPDX-2.3"
        assert doc["name"] == builder.name(path)
        assert {(p["name"], p["versionInfo"]) for p in doc["packages"]} == expected
        purls = {r["referenceLocator"] for p in doc["packages"] for r in p["externalRefs"]}
        assert "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64" in purls


def test_second_build_skips_everything_without_engine_calls(builder: Builder) -> None:
    builder.calls()
    results = builder.build("--push")
    assert _by_result(results) == {"skipped": set(IMAGES)}
    assert builder.calls() == []
    for path, r in results.items():
        assert r["digest"] == builder.manifest(path)[0]


@contextmanager
def _edited(path: Path, text: str, *, append: bool = False) -> Iterator[None]:
    """`path` of the shared catalogue holding `text` (or its own text and then `text`)
    for the block, and its own text again however the block ends: the module's later
    tests build the catalogue as it was."""
    original = path.read_text()
    path.write_text(original + text if append else text)
    try:
        yield
    finally:
        path.write_text(original)


def test_dry_run_shows_what_a_change_rebuilds_and_builds_nothing(builder: Builder) -> None:
    with _edited(builder.catalogue / "jdk17" / "stamp", "jdk17 changed\n"):
        proc = builder.run("--dry-run", "--json")
        plan = {i["image"]: i["action"] for i in json.loads(proc.stdout)["images"]}
        assert {p for p, a in plan.items() if a == "build"} == {"jdk17", "jdk17/web"}
        text = builder.run("--dry-run").stdout
        assert f"build  {builder.name('jdk17')}" in text
        assert f"skip   {builder.name('bookworm')}" in text
        assert builder.calls() == []


def test_touching_one_file_rebuilds_that_image_and_its_descendants(builder: Builder) -> None:
    (builder.catalogue / "bookworm-sssd" / "sssd.conf").write_text("[sssd] services = pam\n")
    (builder.catalogue / "bookworm-sssd" / "notes.bak").write_text("ignored by .dockerignore\n")
    (builder.catalogue / "shared" / "ignored" / "file").write_text("ignored too\n")
    builder.commit("sssd: pam")
    before = {p: builder.manifest(p)[0] for p in IMAGES}
    results = builder.build("--push")
    changed = {"bookworm-sssd", "node18", "python311-sssd/base", "python311-sssd/web"}
    assert _by_result(results) == {"pushed": changed, "skipped": set(IMAGES) - changed}
    builds = [c for c in builder.calls() if c.startswith("buildah bud")]
    assert len(builds) == len(changed)
    after = {p: builder.manifest(p)[0] for p in IMAGES}
    assert {p for p in IMAGES if before[p] != after[p]} == changed


def test_a_failing_test_command_pushes_nothing(builder: Builder) -> None:
    with _edited(builder.catalogue / "catalogue.yaml",
                 "  jdk17/web:\n    tests: [\"test -f /no/such/file\"]\n", append=True), \
            _edited(builder.catalogue / "jdk17" / "stamp", "jdk17 v2\n"):
        before = {p: builder.manifest(p)[0] for p in IMAGES}
        proc = builder.run("--push", "--json", check=1)
        results = {i["image"]: i for i in json.loads(proc.stdout)["images"]}
        assert results["jdk17"]["result"] == "built"       # built and tested, not pushed
        assert results["jdk17/web"]["result"] == "failed"
        assert "test -f /no/such/file" in results["jdk17/web"]["error"]
        assert "nothing pushed" in proc.stderr
        assert not [c for c in builder.calls() if c.startswith("buildah push")]
        assert {p: builder.manifest(p)[0] for p in IMAGES} == before
        log = Path(results["jdk17/web"]["log"]).read_text()
        assert "test -f /no/such/file" in log
    assert _by_result(builder.build()) == {"skipped": set(IMAGES)}


def test_a_test_that_does_not_end_is_stopped_at_its_timeout(builder: Builder) -> None:
    """A test command that never ends held the build (and a scheduled rebuild's lease)
    for good; killing `podman run` would have left its container running under conmon.
    Stopped at `test_timeout`, the image fails and its container is removed."""
    import psutil

    with _edited(builder.catalogue / "catalogue.yaml",
                 "  jdk17/web:\n    tests: [\"sleep 731\"]\n    test_timeout: 3s\n",
                 append=True), \
            _edited(builder.catalogue / "jdk17" / "stamp", "jdk17 v3\n"):
        results, took = builder.failing_run()
        assert results["jdk17/web"]["result"] == "failed"
        assert "'sleep 731' did not end within 3 s" in results["jdk17/web"]["error"]
        assert took < 240, took
        builder.assert_test_container_removed("sleep 731")
        assert not [p.pid for p in psutil.process_iter(["cmdline"])  # nor its process
                    if " ".join(p.info["cmdline"] or ()).endswith("sleep 731")]
    assert _by_result(builder.build()) == {"skipped": set(IMAGES)}


def test_a_build_that_does_not_end_is_stopped_at_its_timeout(builder: Builder) -> None:
    """A `RUN` step that never ends held the build for good. Stopped at `build_timeout`
    (SIGTERM first: buildah ends its step's container and exits), the image fails and
    nothing of the build is left running or stored as a working container."""
    import psutil

    def working_containers() -> set[str]:
        listed = subprocess.run(["/usr/bin/buildah", "containers", "--all", "--json"],
                                env=builder.engine_env(), capture_output=True, text=True,
                                timeout=60)
        assert listed.returncode == 0, listed.stderr
        return {c["id"] for c in json.loads(listed.stdout or "[]") or []}

    before = working_containers()
    with _edited(builder.catalogue / "catalogue.yaml", "  jdk17/web:\n    build_timeout: 3s\n",
                 append=True), \
            _edited(builder.catalogue / "jdk17" / "web" / "Dockerfile.template",
                    "RUN sleep 732\n", append=True):
        results, took = builder.failing_run()
        assert results["jdk17/web"]["result"] == "failed"
        assert "build did not end within 3 s" in results["jdk17/web"]["error"]
        assert took < 240, took
        assert [c for c in builder.calls() if c.startswith("buildah bud")
                and builder.name("jdk17/web") in c]
        assert not [p.pid for p in psutil.process_iter(["cmdline"])
                    if " ".join(p.info["cmdline"] or ()).endswith("sleep 732")]
        assert working_containers() == before
    assert _by_result(builder.build()) == {"skipped": set(IMAGES)}
    builder.calls()


def test_sigterm_ends_the_test_container_and_the_password_file(builder: Builder) -> None:
    """A scheduled rebuild stopped (`builder.timeout`, the server stopping) gets SIGTERM
    for its whole process group. `dockyard build` died of it at once: a test container
    already running went on under conmon, and the engine's copy of the password stayed
    on disk. It now ends what it started, as on ^C, and exits 143 with one line."""
    import psutil

    def sleeping() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"])
                if " ".join(p.info["cmdline"] or ()).endswith("sleep 733")]

    password = builder.root / "work" / "engine" / "auth.json"
    with _edited(builder.catalogue / "catalogue.yaml", "  jdk17/web:\n    tests: [\"sleep 733\"]\n",
                 append=True), \
            _edited(builder.catalogue / "jdk17" / "stamp", "jdk17 v4\n"):
        # in a session of its own, as the server's job starts it, and signalled as the
        # job stops it: the whole group (podman run gets the SIGTERM too)
        proc = subprocess.Popen(builder.argv("--json", "--creds", "builder:s3cret"),
                                env=builder.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not sleeping():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the test never started"
                time.sleep(0.2)
            assert password.exists()
            stopped = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
            took = time.monotonic() - stopped
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert err.strip().splitlines()[-1] == (
            "dockyard build: stopped by SIGTERM; nothing more was built or pushed")
        # well inside jobs.REBUILD_GRACE, after which the job's SIGKILL comes: the removal
        # goes first (stopping `podman run` first waited out the engine's 10 s grace, as
        # `sleep` as PID 1 ignores SIGTERM; then the rm)
        assert took < 5, took
        builder.assert_test_container_removed("sleep 733")
        assert not sleeping()
        assert not password.exists()
    assert _by_result(builder.build()) == {"skipped": set(IMAGES)}


def test_single_builds_only_the_named_image(builder: Builder) -> None:
    (builder.catalogue / "php82" / "stamp").write_text("php82 v2\n")
    results = builder.build("php82", "--single", "--push")
    assert _by_result(results) == {"pushed": {"php82"}}
    # without --single the descendant comes along (its parent's key changed)
    results = builder.build("php82", "--push")
    assert _by_result(results) == {"skipped": {"bookworm", "php82"}, "pushed": {"php82/web"}}
    builds = [c for c in builder.calls() if c.startswith("buildah bud")]
    assert len(builds) == 2
    assert builder.name("php82/web") in builds[1]


def test_bad_input_is_one_line_with_status_2(builder: Builder, tmp_path: Path) -> None:
    proc = builder.run("no-such-image", "--dry-run", check=2)
    assert "no-such-image: no such image in the catalogue" in proc.stderr
    broken = tmp_path / "cat"
    shutil.copytree(CATALOGUE, broken)
    (broken / "bookworm" / "Dockerfile.template").write_text(
        "FROM {{ registry }}/{{ image_prefix }}-php82:{{ tag }}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "build", "--catalogue", str(broken), "--registry",
         builder.registry.host, "--image-prefix", PREFIX, "--graph"],
        capture_output=True, text=True, env=builder.env)
    assert proc.returncode == 2
    assert "FROM cycle: bookworm/Dockerfile.template -> php82/Dockerfile.template -> " \
        "bookworm/Dockerfile.template" in proc.stderr
    (broken / "bookworm" / "Dockerfile.template").write_text(
        "FROM {{ registry }}/{{ image_prefix }}-debian:{{ tag }}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "build", "--catalogue", str(broken), "--registry",
         builder.registry.host, "--image-prefix", PREFIX, "--graph"],
        capture_output=True, text=True, env=builder.env)
    assert proc.returncode == 2
    assert f"bookworm/Dockerfile.template: FROM {builder.registry.host}/{PREFIX}-debian:latest:" \
        " no such image in the catalogue" in proc.stderr


def test_changed_since_selects_images_whose_inputs_changed_in_git(builder: Builder) -> None:
    builder.commit("earlier changes")  # the working tree counts: start from a clean one
    (builder.catalogue / "jdk17" / "stamp").write_text("jdk17 v3\n")
    builder.commit("jdk17 v3")
    proc = builder.run("--dry-run", "--json", "--changed-since", "HEAD~1")
    plan = {i["image"]: i["action"] for i in json.loads(proc.stdout)["images"]}
    assert plan == {"jdk17": "build", "jdk17/web": "build"}
    proc = builder.run("--dry-run", "--json", "--changed-since", "HEAD")
    assert json.loads(proc.stdout)["images"] == []
    proc = builder.run("--dry-run", "--changed-since", "no-such-ref", check=2)
    assert "--changed-since no-such-ref:" in proc.stderr
    assert builder.calls() == []


def test_a_rebuild_with_the_same_layers_does_not_move_the_tag(builder: Builder) -> None:
    """What scheduled rebuilds run: --no-cache, and tags move only when layers changed."""
    before = builder.manifest("bookworm")[0]
    results = builder.build("bookworm", "--single", "--no-cache", "--push",
                            "--keep-same-layers")
    assert results["bookworm"]["result"] == "kept", results
    assert [c for c in builder.calls() if c.startswith("buildah bud")]  # it did rebuild
    assert builder.manifest("bookworm")[0] == before
    (builder.catalogue / "bookworm" / "stamp").write_text("bookworm v2\n")
    results = builder.build("bookworm", "--single", "--no-cache", "--push",
                            "--keep-same-layers")
    assert results["bookworm"]["result"] == "pushed"
    assert builder.manifest("bookworm")[0] != before


def _build_runs(server: Server) -> list[dict[str, Any]]:
    """The scheduled rebuild's recorded runs, newest first (`GET /admin/v1/jobs`)."""
    r = httpx.get(f"{server.url}/admin/v1/jobs", params={"job": "builder.rebuild", "n": "50"},
                  timeout=10)
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    return jobs[0]["runs"] if jobs else []


def _wait_for_run(server: Server, match: Callable[[dict[str, Any]], bool],
                  timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [run for run in _build_runs(server) if match(run)]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no such run in {_build_runs(server)}\n{server.log.read_text()}")


def test_scheduled_rebuilds_are_recorded_as_job_runs(tmp_path: Path, busybox: Layout) -> None:
    """A server with `builder.enabled` rebuilds a one-image catalogue every 2 s: a broken
    Dockerfile is recorded as a failed run with the build's error, the fixed one as an
    ok run with the counts of `dockyard build --json`."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    catalogue = tmp_path / "catalogue"
    (catalogue / "app").mkdir(parents=True)
    dockerfile = catalogue / "app" / "Dockerfile.template"
    dockerfile.write_text("FROM {{ registry }}/upstream/busybox:latest\nRUN exit 3\n")
    config = tmp_path / "config.yml"
    config.write_text(
        "log: {level: info}\n"
        f"builder:\n  enabled: true\n  catalogue: {catalogue}\n  registry: '{host}'\n"
        f"  image_prefix: sched\n  interval: 2s\n  jobs: 1\n"
        f"  storage: {tmp_path / 'storage'}\n  work_dir: {tmp_path / 'work'}\n")
    server = start_dockyard(tmp_path / "data", config=config, port=port)
    try:
        Skopeo(tmp_path / "skopeo", insecure_hosts=[host]).copy(
            busybox.ref, f"docker://{host}/upstream/busybox:latest")
        name = f"{host}/sched-app:latest"
        failed = _wait_for_run(server, lambda run: run["outcome"] == "failed"
                               and "1 images: failed 1" in run["summary"])
        assert failed["summary"].startswith(
            f"1 images: failed 1; exit status 1: failed: {name}: buildah bud exited with 3"
        ), failed
        assert failed["finished_at"] >= failed["started_at"] > 0
        dockerfile.write_text("FROM {{ registry }}/upstream/busybox:latest\n"
                              "RUN echo rebuilt > /etc/rebuilt\n")
        ok = _wait_for_run(server, lambda run: run["outcome"] == "ok")
        assert ok["summary"] in ("1 images: pushed 1, failed 0",
                                 "1 images: kept 1, failed 0"), ok
        assert ok["started_at"] > failed["finished_at"]
        assert httpx.get(f"{server.url}/v2/sched-app/manifests/latest", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
        # the operations page lists them under "Build runs"
        page = httpx.get(f"{server.url}/ui/operations", timeout=10)
        assert page.status_code == 200
        builds = html.unescape(page.text.split('id="builds"', 1)[1].split("</table>", 1)[0])
        outcomes = re.findall(r'<td class="outcome (?:ok|bad)">(\w+)</td>', builds)
        assert {"ok", "failed"} <= set(outcomes), builds
        assert ok["summary"] in builds
        assert f"failed: {name}: buildah bud exited with 3" in builds
        # and `dockyard status` shows the last run of each job
        done = subprocess.run(
            [sys.executable, "-m", "dockyard", "status", "--config", str(config), "--data",
             str(server.data), "--url", server.url, "--json"],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        last = {j["name"]: j for j in json.loads(done.stdout)["jobs"]}["builder.rebuild"]
        assert last["outcome"] == "ok"
        assert re.fullmatch(r"1 images: (pushed|kept) 1, failed 0", last["summary"]), last
    finally:
        server.stop()
        drop_run_root(tmp_path / "storage")
