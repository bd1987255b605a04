"""`dockyard copy` between real registries on loopback and OCI layouts.

Sources and destinations: CNCF Distribution 2.8 with htpasswd (Basic) authentication,
Dockyard with token authentication, OCI image layouts written by the tests (random
images, a 3-platform index, a real busybox made by umoci). Digests are checked with
`skopeo inspect --raw` on both sides; what moved is read from the command's summary and
from Distribution's access log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.copying.connect import Access, open_end
from dockyard.copying.ends import MountHints
from dockyard.copying.engine import Copier, Summary
from dockyard.copying.layout_end import ImageLayout
from dockyard.copying.refs import parse
from dockyard.remote.credentials import Credentials
from tests.support.authenv import USERS, get_token, token_auth, write_config, write_htpasswd
from tests.support.clients import Skopeo
from tests.support.images import (
    Layout,
    add_signature,
    canonical_json,
    multiplatform_layout,
    random_layout,
    sha256,
)
from tests.support.servers import Server, start_distribution, start_dockyard
from tests.support.tcpproxy import holding_proxy

USER = "builder"
CREDS = f"{USER}:{USERS[USER][0]}"
INSECURE = ("--src-tls-verify=false", "--dest-tls-verify=false")


def dockyard_copy(*args: str, env: dict[str, str] | None = None, creds: bool = True,
                  timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `dockyard copy` (plain HTTP both ends; builder's credentials unless told)."""
    extra = ["--src-creds", CREDS, "--dest-creds", CREDS] if creds else []
    return subprocess.run(
        [sys.executable, "-m", "dockyard", "copy", *INSECURE, *extra, *args], text=True,
        capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})})


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Distribution with Basic authentication (builder only) and its access log on."""
    tmp = tmp_path_factory.mktemp("dist")
    htpasswd = write_htpasswd(tmp / "htpasswd", {USER: USERS[USER]})
    server = start_distribution(tmp / "data", access_log=True, htpasswd=htpasswd)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Dockyard with token authentication (anonymous pull, builder pushes)."""
    tmp = tmp_path_factory.mktemp("dock")
    config = write_config(tmp / "config.yml", auth=token_auth(write_htpasswd(tmp / "htpasswd")))
    server = start_dockyard(tmp / "data", config=config)
    yield server
    server.stop()


@pytest.fixture
def skopeo(tmp_path: Path, dist: Server, dock: Server) -> Skopeo:
    return Skopeo(tmp_path / "skopeo", insecure_hosts=[dist.host, dock.host])


def raw(skopeo: Skopeo, ref: str) -> bytes:
    return skopeo.run("inspect", "--tls-verify=false", "--raw", "--creds", CREDS, ref
                      ).stdout_bytes


def uploads_in_log(server: Server) -> int:
    """Upload requests Distribution logged (POST/PATCH/PUT on blobs/uploads)."""
    return sum(1 for line in server.log.read_text(errors="replace").splitlines()
               if "/blobs/uploads/" in line and any(
                   f'"{m} ' in line for m in ("POST", "PATCH", "PUT")))


def referrers(server: Server, repo: str, digest: str) -> list[str]:
    token = get_token(server.url, [f"repository:{repo}:pull"], USER)
    resp = httpx.get(f"{server.url}/v2/{repo}/referrers/{digest}",
                     headers={"Authorization": f"Bearer {token}"})
    resp.raise_for_status()
    return [m["digest"] for m in resp.json()["manifests"]]


# ---------------------------------------------------------------- registry to registry


def test_distribution_to_dockyard_keeps_digests_and_a_rerun_moves_nothing(
        dist: Server, dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/up/app:v1", "--dest-creds", CREDS)

    out = ok(dockyard_copy(f"docker://{dist.host}/up/app:v1", f"docker://{dock.host}/in/app:v1"))
    assert "blobs 4 copied" in out, out
    src, dst = raw(skopeo, f"docker://{dist.host}/up/app:v1"), \
        raw(skopeo, f"docker://{dock.host}/in/app:v1")
    assert sha256(src) == sha256(dst) == layout.digest

    again = ok(dockyard_copy(f"{dist.host}/up/app:v1", f"{dock.host}/in/app:v1"))
    assert "blobs 0 copied, 0 mounted" in again, again
    assert "; 0 B" in again, again
    assert "(1 already up to date)" in again, again


def test_dockyard_to_distribution_real_image_then_no_upload_on_rerun(
        dist: Server, dock: Server, skopeo: Skopeo, busybox: Layout) -> None:
    ok(dockyard_copy(busybox.ref, f"{dock.host}/bb/busybox:latest"))
    before = uploads_in_log(dist)
    out = ok(dockyard_copy(f"{dock.host}/bb/busybox:latest", f"{dist.host}/bb/busybox:1"))
    assert "blobs 2 copied" in out, out
    assert uploads_in_log(dist) > before  # the log does show uploads
    assert sha256(raw(skopeo, f"docker://{dock.host}/bb/busybox:latest")) == busybox.digest
    assert sha256(raw(skopeo, f"docker://{dist.host}/bb/busybox:1")) == busybox.digest

    before = uploads_in_log(dist)
    again = ok(dockyard_copy(f"{dock.host}/bb/busybox:latest", f"{dist.host}/bb/busybox:1"))
    assert "; 0 B" in again, again
    assert uploads_in_log(dist) == before
    # a new tag on the same content: a manifest PUT, still no blob upload
    retag = ok(dockyard_copy(f"{dock.host}/bb/busybox:latest", f"{dist.host}/bb/busybox:2"))
    assert f"2: {busybox.digest} (content already there)" in retag, retag
    assert uploads_in_log(dist) == before
    assert sha256(raw(skopeo, f"docker://{dist.host}/bb/busybox:2")) == busybox.digest


def test_cross_repository_copy_in_one_registry_mounts(dock: Server, skopeo: Skopeo,
                                                      tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1")
    ok(dockyard_copy(layout.ref, f"{dock.host}/mount/a:v1"))
    out = ok(dockyard_copy(f"{dock.host}/mount/a:v1", f"{dock.host}/mount/b:v1"))
    assert "blobs 0 copied, 4 mounted, 0 skipped" in out, out
    assert "; 0 B" in out, out
    assert sha256(raw(skopeo, f"docker://{dock.host}/mount/b:v1")) == layout.digest


# ---------------------------------------------------------------- indexes and platforms


def test_index_copied_whole_then_narrowed_to_a_new_index(dock: Server, skopeo: Skopeo,
                                                         tmp_path: Path) -> None:
    layout = multiplatform_layout(tmp_path / "lay", "v1")
    out = ok(dockyard_copy(layout.ref, f"{dock.host}/multi/app:v1"))
    assert "narrowed" not in out
    assert raw(skopeo, f"docker://{dock.host}/multi/app:v1") == layout.manifest_bytes()
    for child in layout.children():
        data = raw(skopeo, f"docker://{dock.host}/multi/app@{child['digest']}")
        assert sha256(data) == child["digest"]

    out = ok(dockyard_copy("--platform", "linux/amd64", "--platform", "linux/arm64/v8",
                           f"{dock.host}/multi/app:v1", f"{dock.host}/multi/two:v1"))
    narrowed = raw(skopeo, f"docker://{dock.host}/multi/two:v1")
    assert sha256(narrowed) != layout.digest
    assert f"narrowed index {layout.digest}" in out, out
    assert f"new index {sha256(narrowed)}" in out, out
    kept = json.loads(narrowed)["manifests"]
    assert [c["digest"] for c in kept] == [c["digest"] for c in layout.children()[:2]]
    assert [c["platform"]["architecture"] for c in kept] == ["amd64", "arm64"]
    for child in kept:
        data = raw(skopeo, f"docker://{dock.host}/multi/two@{child['digest']}")
        assert sha256(data) == child["digest"]


def test_index_to_a_layout_and_back(dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = multiplatform_layout(tmp_path / "lay", "v1")
    ok(dockyard_copy(layout.ref, f"{dock.host}/roundtrip/app:v1"))
    ok(dockyard_copy(f"{dock.host}/roundtrip/app:v1", f"oci:{tmp_path / 'out'}:copied"))
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    [desc] = index["manifests"]
    assert desc["digest"] == layout.digest
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "copied"
    for digest in layout.all_digests():
        blob = tmp_path / "out" / "blobs" / "sha256" / digest.split(":")[1]
        assert sha256(blob.read_bytes()) == digest
    assert not list((tmp_path / "out" / "blobs" / "sha256").glob(".tmp-*"))


# ---------------------------------------------------------------- an interrupted copy


def test_source_killed_mid_blob_fails_clearly_and_a_rerun_completes(
        dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    big = random_layout(tmp_path / "lay", "v1", layer_sizes=(64 << 20,))
    layer = big.layer_digests()[0]
    source = start_distribution(tmp_path / "src")
    try:
        skopeo.copy(big.ref, f"docker://{source.host}/big/app:v1")
        with holding_proxy(source.port) as proxy:
            proxy.hold_after = 8 << 20
            proc = subprocess.Popen(
                [sys.executable, "-m", "dockyard", "copy", *INSECURE, "--jobs", "1",
                 "--dest-creds", CREDS, f"127.0.0.1:{proxy.port}/big/app:v1",
                 f"{dock.host}/big/app:v1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                stdin=subprocess.DEVNULL)
            try:
                assert proxy.held.wait(120), "no blob bytes flowed through the proxy"
                source.proc.send_signal(signal.SIGKILL)
                source.proc.wait(30)
                proxy.release()
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == 1, err
            [line] = [ln for ln in err.splitlines() if ln.startswith("Error:")]
            assert f"127.0.0.1:{proxy.port}/big/app:v1" in line, line
            assert f"source: blob {layer}: connection lost after" in line, line
            assert "Traceback" not in err
            # the destination's upload session was ended, not left open until it expires
            status = subprocess.run(
                [sys.executable, "-m", "dockyard", "status", "--data", str(dock.data),
                 "--json"], capture_output=True, text=True, timeout=60,
                stdin=subprocess.DEVNULL)
            assert json.loads(status.stdout)["state"]["upload_sessions"] == 0, status.stdout

            source = start_distribution(tmp_path / "src", port=source.port)
            out = ok(dockyard_copy(f"127.0.0.1:{proxy.port}/big/app:v1",
                                   f"{dock.host}/big/app:v1", creds=False,
                                   env={"REGISTRY_AUTH_FILE": str(
                                       _auth_file(tmp_path, dock))}))
        assert "blobs 1 copied, 0 mounted, 1 skipped" in out, out
        assert sha256(raw(skopeo, f"docker://{dock.host}/big/app:v1")) == big.digest
        skopeo.run("copy", "--src-tls-verify=false", f"docker://{dock.host}/big/app:v1",
                   f"dir:{tmp_path / 'check'}")
        assert sha256((tmp_path / "check" / layer.split(":")[1]).read_bytes()) == layer
    finally:
        source.stop()


def test_blobs_failing_together_make_one_error_line(tmp_path: Path) -> None:
    """Every blob upload refused at once (the pusher's upload sessions are all taken):
    one `Error:` line; the blobs still moving were left running after the failure and
    their errors printed as "Task exception was never retrieved" tracebacks."""
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(64 * 1024,) * 6)
    config = write_config(tmp_path / "config.yml",
                          auth=token_auth(write_htpasswd(tmp_path / "htpasswd")),
                          storage={"uploads": {"max_sessions_per_user": 2}})
    capped = start_dockyard(tmp_path / "data", config=config)
    try:
        token = get_token(capped.url, ["repository:held/x:pull,push"], USER)
        for _ in range(2):  # the builder's sessions, all of them
            resp = httpx.post(f"{capped.url}/v2/held/x/blobs/uploads/",
                              headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 202, resp.text
        proc = dockyard_copy("--jobs", "6", layout.ref, f"{capped.host}/held/app:v1")
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "never retrieved" not in proc.stderr, proc.stderr
        [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert line.startswith(f"Error: {layout.ref} -> {capped.host}/held/app: "
                               "destination: blob sha256:"), line
    finally:
        capped.stop()


# ---------------------------------------------------------------- referrers


def _add_signature(layout: Layout) -> str:
    """Attach a signature-like artifact to the layout's image (listed in index.json)."""
    return add_signature(layout, b'{"critical":{"image":{"docker-manifest-digest":"'
                         + layout.digest.encode() + b'"}}}')


def test_referrers_travel_through_the_api_and_the_tag_fallback(
        dist: Server, dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1")
    signature = _add_signature(layout)

    without = ok(dockyard_copy(layout.ref, f"{dock.host}/sig/plain:v1"))
    assert "referrer" not in without
    assert referrers(dock, "sig/plain", layout.digest) == []

    out = ok(dockyard_copy("--referrers", layout.ref, f"{dock.host}/sig/a:v1"))
    assert "1 referrer(s)" in out, out
    assert referrers(dock, "sig/a", layout.digest) == [signature]

    # Dockyard (referrers API) -> Distribution 2.8 (no API: the sha256-<hex> tag)
    ok(dockyard_copy("--referrers", f"{dock.host}/sig/a:v1", f"{dist.host}/sig/b:v1"))
    fallback = json.loads(raw(skopeo, f"docker://{dist.host}/sig/b:"
                                      f"{layout.digest.replace(':', '-')}"))
    assert [m["digest"] for m in fallback["manifests"]] == [signature]
    assert sha256(raw(skopeo, f"docker://{dist.host}/sig/b@{signature}")) == signature

    # Distribution (tag fallback) -> Dockyard (referrers API)
    ok(dockyard_copy("--referrers", f"{dist.host}/sig/b:v1", f"{dock.host}/sig/c:v1"))
    assert referrers(dock, "sig/c", layout.digest) == [signature]


def test_a_rerun_lists_a_referrer_a_stopped_copy_left_unlisted(
        dist: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """Into a registry without the referrers API (Distribution 2.8): a copy that stopped
    between the signature's PUT and its `sha256-<hex>` entry left it where no client
    finds it, and every rerun took it for done. The entry is the descriptor the API
    would give, with the signature's annotations (the source's listing has none)."""
    layout = random_layout(tmp_path / "lay", "v1")
    annotations = {"org.opencontainers.image.created": "2026-12-05T00:00:00Z",
                   "com.example.kind": "signature"}
    signature = add_signature(layout, b'{"critical":{}}', annotations)
    # what the stopped copy left: the signature stored, no fallback entry
    ok(dockyard_copy(f"oci:{layout.path}@{signature}", f"{dist.host}/resume/app"))
    fallback = f"docker://{dist.host}/resume/app:{layout.digest.replace(':', '-')}"
    assert skopeo.run("inspect", "--tls-verify=false", "--raw", fallback,
                      check=False).returncode != 0

    ok(dockyard_copy("--referrers", layout.ref, f"{dist.host}/resume/app:v1"))
    [entry] = json.loads(raw(skopeo, fallback))["manifests"]
    assert entry["digest"] == signature
    assert entry["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert entry["annotations"] == annotations
    again = ok(dockyard_copy("--referrers", layout.ref, f"{dist.host}/resume/app:v1"))
    assert len(json.loads(raw(skopeo, fallback))["manifests"]) == 1, again


# ---------------------------------------------------------------- credentials


def _auth_file(tmp_path: Path, *servers: Server) -> Path:
    auth = base64.b64encode(CREDS.encode()).decode()
    doc: dict[str, Any] = {"auths": {s.host: {"auth": auth} for s in servers}}
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(doc))
    return path


def test_credentials_from_an_auth_file(dist: Server, dock: Server, skopeo: Skopeo,
                                       tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/authfile/app:v1", "--dest-creds", CREDS)
    home = tmp_path / "home"
    home.mkdir()
    bare = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "REGISTRY_AUTH_FILE": ""}

    refused = dockyard_copy(f"{dist.host}/authfile/app:v1", f"{dock.host}/authfile/app:v1",
                            creds=False, env=bare)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"Error: {dist.host}/authfile/app:v1 -> {dock.host}/authfile/app: "
                           "source: manifest v1: 401: UNAUTHORIZED"), line

    out = ok(dockyard_copy(f"{dist.host}/authfile/app:v1", f"{dock.host}/authfile/app:v1",
                           creds=False, env={**bare, "REGISTRY_AUTH_FILE": str(
                               _auth_file(tmp_path, dist, dock))}))
    assert "blobs 4 copied" in out, out
    assert sha256(raw(skopeo, f"docker://{dock.host}/authfile/app:v1")) == layout.digest

    # the file containers-auth.json(5) reads after podman login's: it was not read
    config_home = tmp_path / "config"
    (config_home / "containers").mkdir(parents=True)
    _auth_file(tmp_path, dist, dock).rename(config_home / "containers" / "auth.json")
    out = ok(dockyard_copy(f"{dist.host}/authfile/app:v1", f"{dock.host}/authfile/xdg:v1",
                           creds=False, env={**bare, "XDG_CONFIG_HOME": str(config_home)}))
    assert sha256(raw(skopeo, f"docker://{dock.host}/authfile/xdg:v1")) == layout.digest


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one `Error:` line of a refused command (after click's usage banner)."""
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    return line


def test_a_named_auth_file_that_cannot_be_used_stops_the_copy(
        dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """`--authfile` (or `$REGISTRY_AUTH_FILE`) naming a missing, unreadable or invalid
    file is a usage error (exit 2) naming the file and why, before anything moves: not
    a copy that goes on anonymously. The default files stay optional."""
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(1024,))
    home = tmp_path / "home"
    home.mkdir()
    bare = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "REGISTRY_AUTH_FILE": ""}
    dst = f"{dock.host}/authfile/named:v1"
    (tmp_path / "broken.json").write_text('{"auths": {')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "auths.json").write_text(json.dumps({"auths": [dock.host]}))
    (tmp_path / "entry.json").write_text(json.dumps({"auths": {dock.host: {"auth": "!!"}}}))
    (tmp_path / "latin1.json").write_bytes(b'{"auths": {"caf\xe9": {}}}')
    missing = tmp_path / "nowhere" / "auth.json"
    cases = [
        (missing, "cannot read it: No such file or directory"),
        (tmp_path / "broken.json", "not valid JSON: Expecting property name enclosed in "
                                   "double quotes (line 1 column 12)"),
        (tmp_path / "list.json", "not an auth file: not a JSON object"),
        (tmp_path / "auths.json", 'not an auth file: "auths" is not a JSON object'),
        (tmp_path / "entry.json",
         f'"auths" entry \'{dock.host}\': "auth" is not the base64 of USER:PASSWORD'),
        (tmp_path / "latin1.json", "not UTF-8 text (byte 15)"),
    ]
    for path, reason in cases:
        proc = dockyard_copy("--authfile", str(path), f"oci:{layout.path}:v1", dst,
                             creds=False, env=bare)
        assert proc.returncode == 2, proc.stderr
        assert _error_line(proc) == \
            f"Error: Invalid value for --authfile: {path}: {reason}", proc.stderr
    # the variable is named by the user too; a directory cannot be read as a file
    for path, reason in ((missing, "No such file or directory"), (home, "Is a directory")):
        proc = dockyard_copy(f"oci:{layout.path}:v1", dst, creds=False,
                             env={**bare, "REGISTRY_AUTH_FILE": str(path)})
        assert proc.returncode == 2, proc.stderr
        assert _error_line(proc) == \
            f"Error: Invalid value for $REGISTRY_AUTH_FILE: {path}: cannot read it: {reason}"
    # nothing was pushed by any of them
    check = skopeo.run("inspect", "--raw", "--tls-verify=false", "--creds", CREDS,
                       f"docker://{dst}", check=False)
    assert check.returncode != 0, check.stdout
    # the default files (none here) are optional; a good named file is used
    ok(dockyard_copy(f"oci:{layout.path}:v1", dst, creds=False,
                     env={**bare, "REGISTRY_AUTH_FILE": str(_auth_file(tmp_path, dock))}))
    assert sha256(raw(skopeo, f"docker://{dst}")) == layout.digest


def list_tags(skopeo: Skopeo, ref: str) -> list[str]:
    out = skopeo.run("list-tags", "--tls-verify=false", "--creds", CREDS, ref).stdout
    return sorted(json.loads(out)["Tags"])


def test_all_tags_and_a_tag_glob(dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    for tag in ("1.0", "1.1", "2.0"):
        random_layout(tmp_path / "lay", tag, layer_sizes=(1024,))
    ok(dockyard_copy("--all-tags", f"oci:{tmp_path / 'lay'}", f"{dock.host}/tags/all"))
    assert list_tags(skopeo, f"docker://{dock.host}/tags/all") == ["1.0", "1.1", "2.0"]
    ok(dockyard_copy("--tags", "1.*", f"{dock.host}/tags/all", f"{dock.host}/tags/one"))
    assert list_tags(skopeo, f"docker://{dock.host}/tags/one") == ["1.0", "1.1"]
    ok(dockyard_copy("--tags-regex", r"[12]\.0", f"{dock.host}/tags/all",
                     f"{dock.host}/tags/two"))
    assert list_tags(skopeo, f"docker://{dock.host}/tags/two") == ["1.0", "2.0"]


def test_dry_run_says_what_and_writes_nothing(dock: Server, skopeo: Skopeo,
                                              tmp_path: Path) -> None:
    layout = multiplatform_layout(tmp_path / "lay", "v1")
    out = ok(dockyard_copy("--dry-run", layout.ref, f"{dock.host}/dry/app:v1"))
    assert "would copy 1 image(s)" in out, out
    assert "blobs 9 copied" in out, out
    missing = skopeo.run("inspect", "--tls-verify=false", "--raw", "--creds", CREDS,
                         f"docker://{dock.host}/dry/app:v1", check=False)
    assert missing.returncode != 0
    assert "manifest unknown" in missing.stderr.lower(), missing.stderr[-500:]


def test_copiers_sharing_mount_hints_mount_what_another_one_sent(
        dock: Server, tmp_path: Path) -> None:
    """The engine as a job uses it: one `MountHints` per destination registry, shared by
    the copiers of several repositories; a layout source cannot be mounted from."""
    layout = random_layout(tmp_path / "lay", "v1")

    async def copy_into(repos: list[str], hints: MountHints | None) -> list[Summary]:
        summaries = []
        access = Access(Credentials(USER, USERS[USER][0]), verify_tls=False)
        for repo in repos:
            async with open_end(parse(layout.ref), Access()) as src, \
                    open_end(parse(f"{dock.host}/{repo}"), access) as dst:
                copier = Copier(src, dst, hints=hints)
                await copier.copy("v1", "v1")
                summaries.append(copier.summary)
        return summaries

    first, second = asyncio.run(copy_into(["hints/a", "hints/b"], MountHints()))
    assert (first.blobs_copied, first.blobs_mounted) == (4, 0)
    assert (second.blobs_copied, second.blobs_mounted, second.bytes_copied) == (0, 4, 0)
    [alone] = asyncio.run(copy_into(["hints/c"], None))
    assert (alone.blobs_copied, alone.blobs_mounted) == (4, 0)


def test_rm_shares_the_client_and_gets_tokens_with_credentials(
        dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """`dockyard rm` runs on the same client: catalog and delete through the token flow."""
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(1024,))
    ok(dockyard_copy(layout.ref, f"{dock.host}/rmtoken/app:v1"))
    ok(dockyard_copy(layout.ref, f"{dock.host}/rmtoken/app:v2"))
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "rm", "--registry", dock.url, "--username", "admin",
         "--password", USERS["admin"][0], "--yes", "rmtoken/app:v1"],
        text=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "deleted rmtoken/app:v1"
    assert list_tags(skopeo, f"docker://{dock.host}/rmtoken/app") == ["v2"]


def test_referrers_copied_into_a_layout_are_listed_and_travel_on(
        dock: Server, tmp_path: Path) -> None:
    # a referrer written into a layout was a blob nothing listed: the layout's
    # referrers() found none and a second hop lost it; a rerun did not repair it
    layout = random_layout(tmp_path / "lay", "v1")
    signature = _add_signature(layout)
    ok(dockyard_copy("--referrers", layout.ref, f"{dock.host}/sig/hop1:v1"))
    out = tmp_path / "out"
    copied = ok(dockyard_copy("--referrers", f"{dock.host}/sig/hop1:v1", f"oci:{out}:v1"))
    assert "1 referrer(s)" in copied, copied

    def listed() -> list[str]:
        return [m["digest"] for m in json.loads((out / "index.json").read_text())["manifests"]]

    assert listed() == [layout.digest, signature]
    found = asyncio.run(ImageLayout(out).referrers(layout.digest))
    assert [m["digest"] for m in found] == [signature]
    assert found[0]["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"

    ok(dockyard_copy("--referrers", f"oci:{out}:v1", f"{dock.host}/sig/hop2:v1"))
    assert referrers(dock, "sig/hop2", layout.digest) == [signature]

    # a layout an earlier version left without the entry: a rerun lists it
    index = json.loads((out / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["digest"] != signature]
    (out / "index.json").write_text(json.dumps(index))
    ok(dockyard_copy("--referrers", f"{dock.host}/sig/hop1:v1", f"oci:{out}:v1"))
    assert listed() == [layout.digest, signature]


def test_a_layout_without_a_tag_on_either_side_is_pushed_under_its_ref_name(
        dock: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    # pushed untagged, the image was reported copied and later freed by the collector
    layout = random_layout(tmp_path / "lay", "v7")
    ok(dockyard_copy(f"oci:{layout.path}", f"{dock.host}/untagged/app"))
    assert sha256(raw(skopeo, f"docker://{dock.host}/untagged/app:v7")) == layout.digest
    # and into another layout: refused, "DST oci:PATH needs a tag when SRC is named by
    # digest", which SRC was not
    ok(dockyard_copy(f"oci:{layout.path}", f"oci:{tmp_path / 'out'}"))
    assert sha256(raw(skopeo, f"oci:{tmp_path / 'out'}:v7")) == layout.digest


def test_index_children_without_a_media_type_take_their_descriptors(
        dist: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    # image-spec 1.0-era layouts: a child manifest that declares no mediaType was pushed
    # with an empty Content-Type, which Distribution refuses (400 MANIFEST_INVALID)
    layout = random_layout(tmp_path / "lay", "v1")
    blobs = layout.path / "blobs" / "sha256"
    doc = json.loads(layout.manifest_bytes())
    del doc["mediaType"]
    child = canonical_json(doc)
    (blobs / sha256(child).split(":")[1]).write_bytes(child)
    index = canonical_json({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(child),
        "size": len(child), "platform": {"os": "linux", "architecture": "amd64"}}]})
    (blobs / sha256(index).split(":")[1]).write_bytes(index)
    (layout.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(index),
        "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": "old"}}]}))

    ok(dockyard_copy(f"oci:{layout.path}:old", f"{dist.host}/old/app:v1"))
    assert sha256(raw(skopeo, f"docker://{dist.host}/old/app:v1")) == sha256(index)
    assert sha256(raw(skopeo, f"docker://{dist.host}/old/app@{sha256(child)}")) == \
        sha256(child)


def test_a_plain_http_registry_with_tls_verification_on_gets_the_option_named(
        dock: Server, tmp_path: Path) -> None:
    """TLS verification is on by default, as skopeo's: an end that answers plain HTTP
    fails, and the message says so and names the option that allows it for that end."""
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(1024,))

    def verified(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dockyard", "copy", "--src-creds", CREDS,
             "--dest-creds", CREDS, *args], text=True, capture_output=True, timeout=120,
            stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})

    hint = f"({dock.host} answers plain HTTP, not TLS; for HTTP use"
    proc = verified(f"oci:{layout.path}:v1", f"{dock.host}/plain/app:v1")
    assert proc.returncode == 1, proc.stderr
    assert _error_line(proc).endswith(f"{hint} --dest-tls-verify=false)"), proc.stderr

    ok(dockyard_copy(f"oci:{layout.path}:v1", f"{dock.host}/plain/app:v1"))
    proc = verified(f"{dock.host}/plain/app:v1", f"{dock.host}/plain/again:v1")
    assert proc.returncode == 1, proc.stderr
    assert _error_line(proc).endswith(
        f"{hint} --src-tls-verify=false and --dest-tls-verify=false)"), proc.stderr
    proc = verified("--src-tls-verify=false", f"{dock.host}/plain/app:v1",
                    f"{dock.host}/plain/again:v1")
    assert proc.returncode == 1, proc.stderr
    assert _error_line(proc).endswith(f"{hint} --dest-tls-verify=false)"), proc.stderr
    ok(dockyard_copy(f"{dock.host}/plain/app:v1", f"{dock.host}/plain/again:v1"))
