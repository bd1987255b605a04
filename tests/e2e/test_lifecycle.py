"""Image lifecycle end to end: deletes, repository delete, `dockyard rm`, gc, du, purges.

Every test talks to a real `dockyard serve` (2 workers) over HTTP and runs the real
`dockyard` command in a subprocess, and asserts what a user sees: answers of the API,
the catalog, the CLI's output, and the files under `<data>/blobs`.

The helpers at the top are shared with `test_gc_torture.py` and `test_toollabs.py`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mediatypes import OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST
from tests.support.oci_api import (
    Pushed,
    blob_bytes,
    canonical,
    descriptor,
    digest_of,
    index_of,
    push_blob,
    push_image,
    put_manifest,
    upload_location,
)
from tests.support.servers import Server, start_dockyard

MANIFEST_ACCEPT = ", ".join([
    OCI_MANIFEST, OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
DB_FILES = ("metadata.db", "metadata.db-wal", "metadata.db-shm")

# ---------------------------------------------------------------- helpers (shared)


def start(tmp_path: Path, config: str, *, workers: int = 2, name: str = "data") -> Server:
    """A `dockyard serve` with `config` (YAML text) written next to its data directory."""
    cfg = tmp_path / f"{name}.yml"
    cfg.write_text(config)
    return start_dockyard(tmp_path / name, workers=workers, config=cfg)


def dockyard(*args: str, stdin: str | None = None, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    """Run the `dockyard` command; stdin closed unless text is given."""
    return subprocess.run(
        [sys.executable, "-m", "dockyard", *args], text=True, capture_output=True,
        timeout=timeout, input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def age(data: Path, *digests: str, seconds: float = 7200) -> None:
    """Make blobs look uploaded and linked `seconds` ago (no sleeping in tests): the
    collector's grace counts from these times."""
    with sqlite3.connect(data / "metadata.db") as db:
        for digest in digests:
            db.execute("UPDATE blobs SET touched_at = touched_at - ? WHERE digest = ?",
                       (seconds, digest))
            db.execute("UPDATE repository_blobs SET linked_at = linked_at - ? "
                       "WHERE digest = ?", (seconds, digest))
    db.close()


def gc(data: Path, *args: str) -> dict[str, Any]:
    """`dockyard gc --data DATA --json ARGS`; the JSON report."""
    proc = dockyard("gc", "--data", str(data), "--json", *args)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def blob_files(data: Path) -> set[str]:
    """Digests of every blob file on disk (`blobs/sha256/<2 hex>/<hex>/data`).

    Entries that vanish while this walks (the collector runs meanwhile) are skipped.
    """
    found = set()
    for p in files_under(data / "blobs"):
        if p.name == "data":
            found.add(f"{p.parent.parent.parent.name}:{p.parent.name}")
    return found


def files_under(path: Path) -> list[Path]:
    """Every regular file under `path` (none when it does not exist)."""
    out = []
    for top, _dirs, names in os.walk(path):  # os.walk skips what vanishes meanwhile
        out += [Path(top, n) for n in names if Path(top, n).is_file()]
    return sorted(out)


def du_bytes(path: Path) -> int:
    """`du -sb PATH`: apparent size of everything, directories included."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def db_bytes(data: Path) -> int:
    return sum((data / f).stat().st_size for f in DB_FILES if (data / f).exists())


def catalog(client: httpx.Client) -> list[str]:
    resp = client.get("/v2/_catalog", params={"n": 10000})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["repositories"] or [])


def tags(client: httpx.Client, repo: str) -> list[str] | None:
    """The repository's tags; None when the registry does not know the repository."""
    resp = client.get(f"/v2/{repo}/tags/list")
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    return sorted(resp.json().get("tags") or [])


def get_manifest(client: httpx.Client, repo: str, ref: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})


def pull_verified(client: httpx.Client, repo: str, ref: str,
                  expected: bytes | None = None) -> set[str]:
    """Pull `repo:ref` (manifest, children, every blob) checking bytes against digests.

    Returns every blob digest the manifest reaches (configs and layers, not manifests).
    """
    resp = get_manifest(client, repo, ref)
    assert resp.status_code == 200, (repo, ref, resp.status_code, resp.text[:300])
    body = resp.content
    digest = digest_of(body)
    assert resp.headers["Docker-Content-Digest"] == digest, (repo, ref)
    if ref.startswith("sha256:"):
        assert digest == ref
    if expected is not None:
        assert body == expected, (repo, ref, "manifest bytes differ from what was pushed")
    doc = json.loads(body)
    reached: set[str] = set()
    if "manifests" in doc:
        for child in doc["manifests"]:
            reached |= pull_verified(client, repo, child["digest"])
        return reached
    for desc in [doc["config"], *doc.get("layers", [])]:
        blob = client.get(f"/v2/{repo}/blobs/{desc['digest']}", follow_redirects=True)
        assert blob.status_code == 200, (repo, desc["digest"], blob.status_code)
        assert len(blob.content) == desc["size"], (repo, desc["digest"])
        assert digest_of(blob.content) == desc["digest"], (repo, desc["digest"])
        reached.add(desc["digest"])
    return reached


def image_blobs(payload: bytes) -> set[str]:
    doc = json.loads(payload)
    return {doc["config"]["digest"], *(d["digest"] for d in doc["layers"])}


def push_layered(client: httpx.Client, repo: str, tag: str, layers: list[bytes]
                 ) -> Pushed:
    """Push an OCI image with exactly `layers` (shared ones included) and a fresh config."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": uuid.uuid4().hex}).encode()
    push_blob(client, repo, config)
    for layer in layers:
        push_blob(client, repo, layer)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor(OCI_CONFIG, config),
           "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}
    payload = canonical(doc)
    resp = put_manifest(client, repo, tag, payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    return Pushed(payload, digest_of(payload), OCI_MANIFEST)


def push_referrer(client: httpx.Client, repo: str, subject: Pushed) -> Pushed:
    """Push a signature-like artifact whose subject is `subject` (by digest)."""
    push_blob(client, repo, b"{}")
    sig = blob_bytes(200)
    push_blob(client, repo, sig)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "artifactType": "application/vnd.dockyard.test.signature",
           "config": descriptor(OCI_EMPTY, b"{}"),
           "layers": [descriptor("application/octet-stream", sig)],
           "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                       "size": subject.size}}
    payload = canonical(doc)
    digest = digest_of(payload)
    resp = put_manifest(client, repo, digest, payload, OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    return Pushed(payload, digest, OCI_MANIFEST)


def referrer_digests(client: httpx.Client, repo: str, subject: str) -> list[str]:
    resp = client.get(f"/v2/{repo}/referrers/{subject}")
    assert resp.status_code == 200, resp.text
    return sorted(m["digest"] for m in resp.json()["manifests"])


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# ---------------------------------------------------------------- fixtures

MANUAL_GC = "gc: {enabled: false}\nlog: {level: warning}\n"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server (collector off) for the delete tests, which use repositories of their own."""
    server = start(tmp_path_factory.mktemp("lifecycle"), MANUAL_GC)
    yield server
    server.stop()


@pytest.fixture
def client(shared: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=30) as c:
        yield c


@pytest.fixture
def name() -> str:
    return f"life/{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- deletes


def test_tag_delete_removes_only_that_tag(client: httpx.Client, name: str) -> None:
    image = push_image(client, name, "v1")
    assert put_manifest(client, name, "v2", image.payload, image.media_type).status_code == 201
    resp = client.delete(f"/v2/{name}/manifests/v1")
    assert resp.status_code == 202, resp.text
    assert get_manifest(client, name, "v1").status_code == 404
    assert tags(client, name) == ["v2"]
    pull_verified(client, name, "v2", image.payload)
    pull_verified(client, name, image.digest, image.payload)
    assert client.delete(f"/v2/{name}/manifests/v1").status_code == 404


def test_manifest_delete_by_digest_takes_every_tag(client: httpx.Client, name: str) -> None:
    image = push_image(client, name, "a")
    other = push_image(client, name, "other")
    for tag in ("b", "c"):
        assert put_manifest(client, name, tag, image.payload, image.media_type
                            ).status_code == 201
    assert tags(client, name) == ["a", "b", "c", "other"]
    resp = client.delete(f"/v2/{name}/manifests/{image.digest}")
    assert resp.status_code == 202, resp.text
    assert tags(client, name) == ["other"]
    for ref in ("a", "b", "c", image.digest):
        assert get_manifest(client, name, ref).status_code == 404, ref
    pull_verified(client, name, "other", other.payload)


def test_index_delete_takes_unreferenced_children_only(client: httpx.Client, name: str) -> None:
    only_child = push_image(client, name)          # only in the deleted index
    shared_child = push_image(client, name)        # also in another index
    tagged_child = push_image(client, name, "solo")  # also tagged itself
    index = index_of([only_child, shared_child, tagged_child])
    assert put_manifest(client, name, "multi", index.payload, index.media_type
                        ).status_code == 201
    other = index_of([shared_child])
    assert put_manifest(client, name, "other", other.payload, other.media_type
                        ).status_code == 201

    resp = client.delete(f"/v2/{name}/manifests/{index.digest}")
    assert resp.status_code == 202, resp.text
    assert get_manifest(client, name, index.digest).status_code == 404
    assert get_manifest(client, name, "multi").status_code == 404
    assert get_manifest(client, name, only_child.digest).status_code == 404
    pull_verified(client, name, shared_child.digest, shared_child.payload)
    pull_verified(client, name, "solo", tagged_child.payload)
    pull_verified(client, name, "other", other.payload)
    assert tags(client, name) == ["other", "solo"]


def test_referrers_go_with_their_subject(client: httpx.Client, name: str) -> None:
    subject = push_image(client, name, "signed")
    sig = push_referrer(client, name, subject)
    assert referrer_digests(client, name, subject.digest) == [sig.digest]
    resp = client.delete(f"/v2/{name}/manifests/{subject.digest}")
    assert resp.status_code == 202, resp.text
    assert get_manifest(client, name, sig.digest).status_code == 404
    assert referrer_digests(client, name, subject.digest) == []


def test_referrers_kept_when_configured(tmp_path: Path) -> None:
    server = start(tmp_path, MANUAL_GC + "storage: {delete: {referrers: false}}\n")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            subject = push_image(c, "keep/refs", "signed")
            sig = push_referrer(c, "keep/refs", subject)
            assert c.delete(f"/v2/keep/refs/manifests/{subject.digest}").status_code == 202
            assert get_manifest(c, "keep/refs", subject.digest).status_code == 404
            pull_verified(c, "keep/refs", sig.digest, sig.payload)
            # a collector with gc.keep_referrers keeps the orphan ...
            time.sleep(0.05)
            keep = tmp_path / "keep.yml"
            keep.write_text("gc: {keep_referrers: true}\n")
            report = gc(server.data, "--grace", "0s", "--config", str(keep))
            assert report["blobs_deleted"] == 2, report  # the subject's config and layer
            pull_verified(c, "keep/refs", sig.digest, sig.payload)
            # ... and without it the orphan goes, with its blobs
            report = gc(server.data, "--grace", "0s")
            assert report["repositories"][0]["manifests"] == 1, report
            assert get_manifest(c, "keep/refs", sig.digest).status_code == 404
            assert blob_files(server.data) == set()
    finally:
        server.stop()


def test_serve_logs_a_retention_glob_that_changed_meaning(tmp_path: Path) -> None:
    """`serve` starts with a retention rule for `"*"` (valid) and says in its log, once,
    that it names top-level repositories only."""
    server = start(tmp_path, "gc: {enabled: false}\nretention:\n  rules:\n"
                             "    - repositories: '*'\n      keep_tags: '.*'\n", workers=1)
    try:
        lines = [line for line in server.log.read_text().splitlines()
                 if "retention.rules[0].repositories" in line]
        assert len(lines) == 1, lines
        assert 'WARNING' in lines[0]
        assert '"*" names top-level repositories only' in lines[0]
    finally:
        server.stop()


def test_repository_delete_through_admin_api(client: httpx.Client, name: str) -> None:
    image = push_image(client, name, "v1", layers=2)
    push_image(client, name, "v2")
    other = f"{name}-other"
    kept = push_image(client, other, "v1")
    assert name in catalog(client)
    resp = client.delete(f"/admin/v1/repositories/{name}")
    assert resp.status_code == 202, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    summary = resp.json()
    assert summary["name"] == name
    assert summary["tags"] == 2
    assert summary["manifests"] == 2
    assert summary["blobs"] == 5
    # gone from the catalog at once, and from every read
    assert name not in catalog(client)
    assert other in catalog(client)
    assert tags(client, name) is None
    assert get_manifest(client, name, "v1").status_code == 404
    layer = json.loads(image.payload)["layers"][0]["digest"]
    assert client.head(f"/v2/{name}/blobs/{layer}").status_code == 404
    again = client.delete(f"/admin/v1/repositories/{name}")
    assert again.status_code == 404
    assert again.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    pull_verified(client, other, "v1", kept.payload)
    # the name can be used again
    fresh = push_image(client, name, "v3")
    assert tags(client, name) == ["v3"]
    pull_verified(client, name, "v3", fresh.payload)


def test_rm_repositories_by_glob_dry_run_and_prompt(shared: Server, client: httpx.Client
                                                    ) -> None:
    prefix = f"rmtest-{uuid.uuid4().hex[:6]}"
    doomed = [f"{prefix}-{i}" for i in range(3)]
    for repo in doomed:
        push_image(client, repo, "latest")
    kept = push_image(client, f"{prefix}/kept", "latest")
    # `*` stays within one path component, as in a shell and in the access rules
    deep = push_image(client, f"{prefix}-0/deep", "latest")
    glob = f"{prefix}-*"

    dry = dockyard("rm", glob, "--registry", shared.url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for repo in doomed:
        assert f"would delete {repo} (repository)" in dry.stdout
    assert f"{prefix}/kept" not in dry.stdout
    assert "/deep" not in dry.stdout
    assert set(doomed) <= set(catalog(client))

    refused = dockyard("rm", glob, "--registry", shared.url)  # stdin closed: no answer
    assert refused.returncode != 0
    assert set(doomed) <= set(catalog(client))
    said_no = dockyard("rm", glob, "--registry", shared.url, stdin="n\n")
    assert said_no.returncode != 0
    assert "Delete these 3?" in said_no.stdout
    assert set(doomed) <= set(catalog(client))

    done = dockyard("rm", glob, "--registry", shared.url, "--yes")
    assert done.returncode == 0, done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("deleted")) == \
        sorted(f"deleted {repo} (repository)" for repo in doomed)
    listed = catalog(client)
    assert not set(doomed) & set(listed)
    assert f"{prefix}/kept" in listed
    pull_verified(client, f"{prefix}/kept", "latest", kept.payload)
    pull_verified(client, f"{prefix}-0/deep", "latest", deep.payload)

    nothing = dockyard("rm", glob, "--registry", shared.url, "--yes")
    assert nothing.returncode != 0
    assert "nothing matches" in nothing.stderr


def test_rm_tags_and_digests(shared: Server, client: httpx.Client, name: str) -> None:
    one = push_image(client, name, "1.0-rc1")
    two = push_image(client, name, "1.0-rc2")
    release = push_image(client, name, "1.0")
    assert put_manifest(client, name, "stable", release.payload, release.media_type
                        ).status_code == 201
    # one match: no prompt even with stdin closed
    single = dockyard("rm", f"{name}:1.0-rc1", "--registry", shared.url)
    assert single.returncode == 0, single.stderr
    assert tags(client, name) == ["1.0", "1.0-rc2", "stable"]
    # several tags by glob: prompt, refused without --yes
    assert dockyard("rm", f"{name}:*-rc*", f"{name}:stable", "--registry", shared.url
                    ).returncode != 0
    assert dockyard("rm", f"{name}:*-rc*", "--registry", shared.url, "--yes"
                    ).returncode == 0
    assert tags(client, name) == ["1.0", "stable"]
    # the untagged manifests stay (by digest) until the collector takes them
    pull_verified(client, name, two.digest, two.payload)
    pull_verified(client, name, one.digest, one.payload)
    # by digest: the manifest and both of its tags
    by_digest = dockyard("rm", f"{name}@{release.digest}", "--registry", shared.url)
    assert by_digest.returncode == 0, by_digest.stderr
    assert tags(client, name) == []
    assert get_manifest(client, name, release.digest).status_code == 404


def test_rm_by_digest_finds_it_first(shared: Server, client: httpx.Client, name: str) -> None:
    # a dry run said "would delete" a digest no repository held (the real run then
    # failed on a 404), and a repository glob deleted the digest where it was and
    # failed with a 404 everywhere else
    image = push_image(client, f"{name}/a", "v1")
    push_image(client, f"{name}/b", "v1")  # another image: not this digest
    missing = "sha256:" + "0" * 64
    dry = dockyard("rm", f"{name}/a@{missing}", "--dry-run", "--registry", shared.url)
    assert dry.returncode == 1
    assert dry.stderr.strip() == f"Error: nothing matches {name}/a@{missing}"
    dry = dockyard("rm", f"{name}/*@{image.digest}", "--dry-run", "--registry", shared.url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == f"would delete {name}/a@{image.digest}\n"
    done = dockyard("rm", f"{name}/*@{image.digest}", "--registry", shared.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"deleted {name}/a@{image.digest}\n"
    assert get_manifest(client, f"{name}/a", image.digest).status_code == 404
    assert tags(client, f"{name}/b") == ["v1"]


# ---------------------------------------------------------------- collection


def test_gc_frees_bytes_of_deleted_images(tmp_path: Path) -> None:
    server = start(tmp_path, MANUAL_GC)
    data = server.data
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            base = blob_bytes(64 * 1024)
            kept = push_layered(c, "gc/app", "v2", [base, blob_bytes(8 * 1024)])
            old = push_layered(c, "gc/app", "v1", [base, blob_bytes(16 * 1024)])
            gone_repo = push_layered(c, "gc/tmp", "x", [base, blob_bytes(32 * 1024)])
            on_disk = blob_files(data)
            assert on_disk == image_blobs(kept.payload) | image_blobs(old.payload) | \
                image_blobs(gone_repo.payload)
            before = len(files_under(data / "blobs"))

            assert c.delete("/v2/gc/app/manifests/v1").status_code == 202
            assert c.delete("/admin/v1/repositories/gc/tmp").status_code == 202
            # nothing is freed by the deletes themselves
            assert blob_files(data) == on_disk
            time.sleep(0.05)
            report = gc(data, "--grace", "0s")
            expect_gone = (image_blobs(old.payload) | image_blobs(gone_repo.payload)) - \
                image_blobs(kept.payload)
            assert blob_files(data) == image_blobs(kept.payload)
            assert len(files_under(data / "blobs")) == before - len(expect_gone)
            assert report["blobs_deleted"] == len(expect_gone)
            assert report["bytes_freed"] > 16 * 1024 + 32 * 1024
            # --json shape
            assert set(report) >= {"dry_run", "grace_seconds", "started_at", "duration",
                                   "repositories", "blobs_deleted", "bytes_freed",
                                   "uploads_purged"}
            assert report["dry_run"] is False
            assert report["grace_seconds"] == 0
            for entry in report["repositories"]:
                assert set(entry) == {"name", "manifests", "blobs", "bytes_freed"}
            app = {r["name"]: r for r in report["repositories"]}["gc/app"]
            assert app["manifests"] == 1
            assert app["blobs"] == 2  # v1's config and unique layer
            # what is left pulls; what went is gone everywhere, and pushes again cleanly
            pull_verified(c, "gc/app", "v2", kept.payload)
            assert get_manifest(c, "gc/app", old.digest).status_code == 404
            old_layer = json.loads(old.payload)["layers"][1]["digest"]
            assert c.head(f"/v2/gc/app/blobs/{old_layer}").status_code == 404
            assert catalog(c) == ["gc/app"]
            again = push_layered(c, "gc/tmp", "x", [base, blob_bytes(32 * 1024)])
            pull_verified(c, "gc/tmp", "x", again.payload)
            # a second collection finds nothing more
            assert gc(data, "--grace", "0s")["blobs_deleted"] == 0
    finally:
        server.stop()


def test_grace_head_check_and_repository_glob(tmp_path: Path) -> None:
    # the server renews a blob's time on HEAD at most every gc.grace / 4 (and 60 s)
    server = start(tmp_path, "gc: {enabled: false, grace: 2s}\n")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            # young content survives a long grace
            loose = push_blob(c, "grace/repo", blob_bytes(4096))  # uploaded, never used
            checked = push_blob(c, "head/repo", blob_bytes(4096))
            idle = push_blob(c, "head/repo", blob_bytes(4096))
            assert gc(server.data, "--grace", "1h")["blobs_deleted"] == 0
            assert blob_files(server.data) == {loose, checked, idle}
            # a blob checked with HEAD within the grace survives; the others go
            age(server.data, loose, checked, idle)
            assert c.head(f"/v2/head/repo/blobs/{checked}").status_code == 200
            report = gc(server.data, "--grace", "1h")
            assert report["blobs_deleted"] == 2
            assert blob_files(server.data) == {checked}
            assert c.head(f"/v2/grace/repo/blobs/{loose}").status_code == 404
            assert c.head(f"/v2/head/repo/blobs/{idle}").status_code == 404
            # and a manifest can still use it: the HEAD is what a pushing client does first
            doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": OCI_CONFIG, "digest": checked, "size": 4096},
                   "layers": []}
            resp = put_manifest(c, "head/repo", "t", canonical(doc), OCI_MANIFEST)
            assert resp.status_code == 201, resp.text

            # --repository limits the collection to matching repositories
            a = push_image(c, "team-a/app")  # untagged
            b = push_image(c, "team-b/app")  # untagged
            loose = push_blob(c, "grace/repo", blob_bytes(4096))
            time.sleep(0.05)  # a grace of 0 still only takes what is older than now
            report = gc(server.data, "--grace", "0s", "--repository", "team-a/*")
            assert [r["name"] for r in report["repositories"]] == ["team-a/app"]
            assert get_manifest(c, "team-a/app", a.digest).status_code == 404
            pull_verified(c, "team-b/app", b.digest, b.payload)
            assert image_blobs(b.payload) | {loose} <= blob_files(server.data)
            # without it, everything unreferenced goes
            gc(server.data, "--grace", "0s")
            assert blob_files(server.data) == {checked}
            assert get_manifest(c, "team-b/app", b.digest).status_code == 404
            assert sorted(catalog(c)) == ["head/repo"]
    finally:
        server.stop()


def test_head_check_protects_against_a_shorter_cli_grace(shared: Server, client: httpx.Client,
                                                         name: str) -> None:
    # the shared server has gc.grace 1h; a HEAD renews the blob's time all the same
    checked = push_blob(client, name, blob_bytes(4096))
    age(shared.data, checked)
    assert client.head(f"/v2/{name}/blobs/{checked}").status_code == 200
    gc(shared.data, "--grace", "30s", "--repository", name)
    assert checked in blob_files(shared.data)


def test_dry_run_removes_nothing_and_counts_what_a_real_run_removes(tmp_path: Path
                                                                    ) -> None:
    server = start(tmp_path, MANUAL_GC)
    data = server.data
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            base = blob_bytes(32 * 1024)
            kept = push_layered(c, "dry/kept", "v1", [base, blob_bytes(1024)])
            for repo in ("dry/x", "dry/y"):
                push_layered(c, repo, "v1", [base, blob_bytes(4096)])
                assert c.delete(f"/admin/v1/repositories/{repo}").status_code == 202
            time.sleep(0.05)
            files = files_under(data / "blobs")
            dry = gc(data, "--grace", "0s", "--dry-run")
            assert dry["dry_run"] is True
            assert files_under(data / "blobs") == files
            assert dry["blobs_deleted"] == 4  # two configs, two unique layers
            real = gc(data, "--grace", "0s")
            assert real["dry_run"] is False
            for key in ("blobs_deleted", "bytes_freed"):
                assert dry[key] == real[key], (key, dry, real)
            assert len(files_under(data / "blobs")) == len(files) - 4
            assert blob_files(data) == image_blobs(kept.payload)
            table = dockyard("gc", "--data", str(data), "--grace", "0s", "--dry-run")
            assert table.returncode == 0, table.stderr
            assert "0 blobs, 0 B would be freed" in table.stdout
    finally:
        server.stop()


def test_dry_run_reports_what_the_real_run_removes(tmp_path: Path) -> None:
    server = start(tmp_path, MANUAL_GC)
    data = server.data
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            base = blob_bytes(32 * 1024)
            for repo in ("dry/a", "dry/b"):
                push_layered(c, repo, "keep", [base, blob_bytes(1024)])
                push_layered(c, repo, "drop", [base, blob_bytes(2048)])
                push_image(c, repo)  # untagged from the start
                assert c.delete(f"/v2/{repo}/manifests/drop").status_code == 202
            push_layered(c, "dry/c", "x", [base, blob_bytes(4096)])
            assert c.delete("/admin/v1/repositories/dry/c").status_code == 202
            push_blob(c, "dry/a", blob_bytes(512))  # linked, unreferenced
            time.sleep(0.05)
            files = files_under(data / "blobs")

            dry = gc(data, "--grace", "0s", "--dry-run")
            assert files_under(data / "blobs") == files
            real = gc(data, "--grace", "0s")
            for key in ("blobs_deleted", "bytes_freed"):
                assert dry[key] == real[key], (key, dry, real)
            assert sorted(dry["repositories"], key=lambda r: r["name"]) == \
                sorted(real["repositories"], key=lambda r: r["name"])
            assert len(files_under(data / "blobs")) == len(files) - real["blobs_deleted"]
            by_name = {r["name"]: r for r in real["repositories"]}
            assert by_name["dry/a"]["manifests"] == 2
            assert by_name["dry/b"]["manifests"] == 2
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server collecting every second (grace 2 s) and purging idle uploads after 1 s."""
    server = start(tmp_path_factory.mktemp("scheduled"),
                   "gc: {interval: 1s, grace: 2s}\nlog: {level: warning}\n"
                   "storage: {uploads: {expiry: 1s, purge_interval: 500ms}}\n")
    yield server
    server.stop()


def test_scheduled_collection_in_the_server(scheduled: Server) -> None:
    server = scheduled
    with httpx.Client(base_url=server.url, timeout=30) as c:
        base = blob_bytes(16 * 1024)
        kept = push_layered(c, "sched/app", "v1", [base, blob_bytes(1024)])
        gone = push_layered(c, "sched/tmp", "v1", [base, blob_bytes(2048)])
        assert c.delete("/admin/v1/repositories/sched/tmp").status_code == 202
        expect = image_blobs(kept.payload)
        assert wait_until(lambda: blob_files(server.data) == expect, timeout=12), \
            (blob_files(server.data), expect, server.log.read_text()[-3000:])
        assert not image_blobs(gone.payload) - expect & blob_files(server.data)
        pull_verified(c, "sched/app", "v1", kept.payload)
        assert catalog(c) == ["sched/app"]
    assert "Traceback" not in server.log.read_text()


def test_du_unique_and_shared_bytes(tmp_path: Path) -> None:
    server = start(tmp_path, MANUAL_GC)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            base = blob_bytes(100_000)
            a_layer, b_layer = blob_bytes(10_000), blob_bytes(20_000)
            a = push_layered(c, "du/a", "v1", [base, a_layer])
            b = push_layered(c, "du/b", "v1", [base, b_layer])
            push_layered(c, "other/c", "v1", [blob_bytes(5_000)])
        a_config = json.loads(a.payload)["config"]["size"]
        b_config = json.loads(b.payload)["config"]["size"]
        proc = dockyard("du", "--data", str(server.data), "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        rows = {r["name"]: r for r in doc["repositories"]}
        assert set(rows) == {"du/a", "du/b", "other/c"}
        assert rows["du/a"]["bytes"] == 100_000 + 10_000 + a_config
        assert rows["du/a"]["unique_bytes"] == 10_000 + a_config
        assert rows["du/a"]["shared_bytes"] == 100_000
        assert rows["du/b"]["unique_bytes"] == 20_000 + b_config
        assert rows["du/b"]["shared_bytes"] == 100_000
        assert rows["du/a"]["blobs"] == 3
        assert rows["du/a"]["manifests"] == 1
        assert rows["du/a"]["tags"] == 1
        assert doc["total"]["blobs"] == len(blob_files(server.data)) == 7
        on_disk = sum(p.stat().st_size for p in files_under(server.data / "blobs"))
        assert doc["total"]["bytes"] == on_disk
        globbed = json.loads(dockyard("du", "du/*", "--data", str(server.data), "--json"
                                      ).stdout)
        assert [r["name"] for r in globbed["repositories"]] == ["du/a", "du/b"]
        table = dockyard("du", "--data", str(server.data))
        assert table.returncode == 0, table.stderr
        assert "du/a" in table.stdout
        assert "total" in table.stdout
    finally:
        server.stop()


def test_stale_upload_sessions_are_purged(scheduled: Server) -> None:
    server = scheduled
    with httpx.Client(base_url=server.url, timeout=30) as c:
        location = upload_location(c, "stale/repo")
        resp = c.patch(location, content=b"x" * 10_000,
                       headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 202, resp.text
        location = resp.headers["location"]
        assert files_under(server.data / "uploads")
        assert wait_until(lambda: not files_under(server.data / "uploads"), timeout=8), \
            files_under(server.data / "uploads")
        status = c.get(location)
        assert status.status_code == 404
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        # an active session is not purged
        live = upload_location(c, "stale/repo")
        payload = b"y" * 1000
        for _ in range(4):
            time.sleep(0.4)
            r = c.patch(live, content=payload[:10],
                        headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            live = r.headers["location"]
            payload = payload[10:]


def test_gc_finishes_a_deletion_a_dead_collector_began(tmp_path: Path) -> None:
    """A collector killed between removing a blob's row and its bytes leaves a tombstone
    and the file; the next collection past the tombstone timeout deletes the file."""
    server = start(tmp_path, MANUAL_GC)
    data = server.data
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            orphan, kept = blob_bytes(4096), blob_bytes(2048)
            d_orphan, d_kept = push_blob(c, "gc/crash", orphan), push_blob(c, "gc/crash", kept)
            assert blob_files(data) == {d_orphan, d_kept}
            # what begin_blob_deletion leaves, ten minutes ago: row gone, tombstone, bytes
            db = sqlite3.connect(data / "metadata.db")
            with db:
                db.execute("DELETE FROM repository_blobs WHERE digest = ?", (d_orphan,))
                db.execute("DELETE FROM blobs WHERE digest = ?", (d_orphan,))
                db.execute("INSERT INTO blob_deletions (digest, started_at) VALUES (?, ?)",
                           (d_orphan, time.time() - 600))
            db.close()
            gc(data, "--grace", "1h")
            assert blob_files(data) == {d_kept}
            with sqlite3.connect(data / "metadata.db") as db:
                assert db.execute("SELECT count(*) FROM blob_deletions").fetchone() == (0,)
            # the digest pushes and pulls again; the other blob was never touched
            assert push_blob(c, "gc/crash", orphan) == d_orphan
            assert c.get(f"/v2/gc/crash/blobs/{d_orphan}").content == orphan
            assert c.get(f"/v2/gc/crash/blobs/{d_kept}").content == kept
    finally:
        server.stop()


def _push_in_background(url: str, repo: str, payload: bytes) -> Any:
    """POST ?digest= of `payload` on a thread; the future of its status."""
    import concurrent.futures
    import hashlib

    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(lambda: httpx.post(
        f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=payload,
        timeout=120).status_code)
    pool.shutdown(wait=False)
    return future


@pytest.mark.parametrize("collector", ["lease runs out", "holder process dead"])
def test_a_push_waits_on_a_deletion_only_while_its_collector_runs(
        tmp_path: Path, collector: str) -> None:
    """A collector killed mid-deletion left a fresh tombstone: every push of the digest
    waited for it to age (`TOMBSTONE_TIMEOUT`, 5 minutes). A push waits while the
    collector's lease is held by a live process, and no longer once it is not."""
    from dockyard.core.leases import process_holder

    server = start(tmp_path, MANUAL_GC)
    data = server.data
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            payload = blob_bytes(4096)
            digest = push_blob(c, "gc/tomb", payload)
            dead = subprocess.Popen(["true"])
            dead.wait()
            holders = {"lease runs out": "elsewhere.example:1:cafe:feedface",
                       "holder process dead": process_holder().replace(
                           f":{os.getpid()}:", f":{dead.pid}:")}
            # what begin_blob_deletion leaves, just now, under a collector's lease
            db = sqlite3.connect(data / "metadata.db")
            with db:
                db.execute("DELETE FROM repository_blobs WHERE digest = ?", (digest,))
                db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
                db.execute("INSERT INTO blob_deletions (digest, started_at) VALUES (?, ?)",
                           (digest, time.time()))
                db.execute("INSERT INTO leases (name, holder, acquired_at, expires_at) "
                           "VALUES ('gc', ?, ?, ?)", (holders["lease runs out"],
                                                      time.time(), time.time() + 60))
            pushed = _push_in_background(server.url, "gc/tomb", payload)
            time.sleep(3)
            assert not pushed.done()  # a live collector's deletion is waited for
            with db:
                if collector == "lease runs out":
                    db.execute("UPDATE leases SET expires_at = ? WHERE name = 'gc'",
                               (time.time() - 1,))
                else:
                    db.execute("UPDATE leases SET holder = ? WHERE name = 'gc'",
                               (holders[collector],))
            db.close()
            assert pushed.result(timeout=20) == 201
            assert c.get(f"/v2/gc/tomb/blobs/{digest}").content == payload
            with sqlite3.connect(data / "metadata.db") as db:
                assert db.execute("SELECT count(*) FROM blob_deletions").fetchone() == (0,)
    finally:
        server.stop()
