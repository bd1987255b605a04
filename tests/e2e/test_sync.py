"""`dockyard sync` and the scheduled mirror job against a real upstream on loopback.

The upstream is CNCF Distribution 2.8 (Debian's `docker-registry`) with htpasswd
authentication; its content is random images written as OCI layouts and pushed with the
copy engine. `dockyard sync` writes into a data directory a `dockyard serve` shares, and
what it did is read back over the server's /v2 and /admin/v1 APIs.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dockyard.copying.connect import Access, open_end
from dockyard.copying.engine import Copier
from dockyard.copying.refs import parse
from dockyard.remote.credentials import Credentials
from tests.support.authenv import USERS, basic_auth, write_htpasswd
from tests.support.authenv import write_config as write_serve_config
from tests.support.images import multiplatform_layout, random_layout
from tests.support.servers import Server, free_port, start_distribution, start_dockyard

USER = "builder"
PASSWORD = USERS[USER][0]
ENV = {"UPSTREAM_PW": PASSWORD, "WRONG_PW": "not-the-password"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("upstream")
    server = start_distribution(tmp / "data", htpasswd=write_htpasswd(
        tmp / "htpasswd", {USER: USERS[USER]}))
    yield server
    server.stop()


def push(layout_dir: Path, tag: str, dist: Server, repo: str, upstream_tag: str) -> str:
    """Copy the layout's `tag` to the upstream as `repo:upstream_tag`; its digest."""

    async def run() -> str:
        dest = parse(f"docker://{dist.host}/{repo}:{upstream_tag}")
        access = Access(Credentials(USER, PASSWORD), verify_tls=False)
        async with open_end(parse(f"oci:{layout_dir}:{tag}"), Access()) as src, \
                open_end(dest, access) as dst:
            return await Copier(src, dst).copy(tag, upstream_tag)

    return asyncio.run(run())


def new_image(tmp: Path, dist: Server, repo: str, tag: str) -> str:
    layout = random_layout(tmp / f"lay-{repo.replace('/', '-')}-{tag}", tag,
                           layer_sizes=(4096, 2048))
    return push(layout.path, tag, dist, repo, tag)


def source(dist: Server, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "registry": dist.host, "repository": "up/app", "tls_verify": False,
        "credentials": {"username": USER, "password_env": "UPSTREAM_PW"},
        "retries": 1, "retry_backoff": "100ms"}
    return {**base, **fields}


def write_config(path: Path, sources: list[dict[str, Any]], **sections: Any) -> Path:
    path.write_text(yaml.safe_dump({"mirror": sources, **sections}))
    return path


def dockyard_sync(config: Path, data: Path, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard", "sync", "--config", str(config), "--data",
         str(data), *args], text=True, capture_output=True, timeout=300,
        stdin=subprocess.DEVNULL, env={**os.environ, **ENV})


def reports(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return {r["source"]: r for r in json.loads(proc.stdout)["sources"]}


def local_tags(server: Server, repo: str) -> list[str]:
    resp = httpx.get(f"{server.url}/v2/{repo}/tags/list")
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return sorted(resp.json()["tags"] or [])


def digest_of(url: str, repo: str, tag: str, auth: tuple[str, str] | None = None) -> str:
    resp = httpx.head(f"{url}/v2/{repo}/manifests/{tag}", auth=auth, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"]


def push_by_hand(server: Server, tmp: Path, repo: str, tag: str) -> str:
    """A new random image pushed to `server` as `repo:tag` over its API (not by a
    sync); its digest."""
    layout = random_layout(tmp, tag, layer_sizes=(1024,))

    async def run() -> str:
        async with open_end(parse(f"oci:{layout.path}:{tag}"), Access()) as src, \
                open_end(parse(f"docker://{server.host}/{repo}:{tag}"),
                         Access(verify_tls=False)) as dst:
            return await Copier(src, dst).copy(tag, tag)

    return asyncio.run(run())


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Server]:
    """A Dockyard without mirror sources over the data directory `dockyard sync` writes."""
    config = tmp_path / "serve.yml"
    config.write_text("log: {level: info}\n")
    server = start_dockyard(tmp_path / "data", config=config)
    yield server
    server.stop()


# ---------------------------------------------------------------- selection, dry run


def test_initial_sync_keeps_only_the_selected_tags_and_records_where_they_came_from(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "sel/app"
    upstream = {t: new_image(tmp_path, dist, repo, t) for t in
                ("v1.0.0", "v1.1.0", "v1.10.0", "v2.0.0-rc.1", "latest", "dev-abc", "v1.9")}
    config = write_config(tmp_path / "c.yml", [
        source(dist, name="globs", repository=repo, tags=["v1.1*", "latest"],
               destination="globbed"),
        source(dist, name="regex", repository=repo, tags_regex=r"dev-[a-z]+",
               prefix="mirror"),
        source(dist, name="newest", repository=repo, newest=2, destination="newest"),
    ])

    dry = dockyard_sync(config, local.data, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = reports(dry)
    assert planned["globs"]["added"] == ["latest", "v1.1.0", "v1.10.0"]
    assert planned["globs"]["dry_run"] is True
    assert local_tags(local, "globbed") == []  # the dry run wrote nothing
    assert httpx.get(f"{local.url}/admin/v1/sync").json()["runs"] == []

    proc = dockyard_sync(config, local.data, "--json")
    assert proc.returncode == 0, proc.stderr
    done = reports(proc)
    assert local_tags(local, "globbed") == ["latest", "v1.1.0", "v1.10.0"]
    assert local_tags(local, "mirror/app") == ["dev-abc"]  # prefix + last component
    # newest 2 by semver: 1.10.0 > 1.9 > 1.1.0 (not by text), a pre-release of 2.0.0 is
    # above every 1.x
    assert local_tags(local, "newest") == ["v1.10.0", "v2.0.0-rc.1"]
    assert done["newest"]["added"] == ["v1.10.0", "v2.0.0-rc.1"]
    assert all(r["status"] == "ok" for r in done.values()), done
    for tag in ("latest", "v1.1.0", "v1.10.0"):
        assert digest_of(local.url, "globbed", tag) == upstream[tag]

    origins = httpx.get(f"{local.url}/admin/v1/sync/repositories/globbed").json()["tags"]
    assert [(o["tag"], o["source"], o["upstream"], o["digest"]) for o in origins] == [
        (t, "globs", f"{dist.host}/{repo}:{t}", upstream[t])
        for t in ("latest", "v1.1.0", "v1.10.0")]
    assert all(abs(o["mirrored_at"] - time.time()) < 300 for o in origins)
    # paged as the tags list is (it answered every tag at once)
    page = httpx.get(f"{local.url}/admin/v1/sync/repositories/globbed", params={"n": 2})
    assert [o["tag"] for o in page.json()["tags"]] == ["latest", "v1.1.0"]
    assert page.headers["link"] == \
        '</admin/v1/sync/repositories/globbed?n=2&last=v1.1.0>; rel="next"'
    rest = httpx.get(f"{local.url}/admin/v1/sync/repositories/globbed",
                     params={"n": 2, "last": "v1.1.0"})
    assert [o["tag"] for o in rest.json()["tags"]] == ["v1.10.0"]
    assert "link" not in rest.headers
    none = httpx.get(f"{local.url}/admin/v1/sync/repositories/globbed", params={"n": 0})
    assert none.status_code == 200, none.text
    assert none.json()["tags"] == []
    assert "link" not in none.headers
    runs = httpx.get(f"{local.url}/admin/v1/sync", params={"source": "newest"}).json()
    assert [r["status"] for r in runs["runs"]] == ["ok"]
    assert runs["runs"][0]["report"]["added"] == ["v1.10.0", "v2.0.0-rc.1"]

    again = reports(dockyard_sync(config, local.data, "--json"))
    assert again["globs"]["unchanged"] == ["latest", "v1.1.0", "v1.10.0"]
    assert again["globs"]["added"] == again["globs"]["updated"] == []
    assert again["globs"]["copy"]["blobs_copied"] == 0


def test_a_sync_sends_again_a_blob_fsck_set_aside(dist: Server, local: Server,
                                                  tmp_path: Path) -> None:
    """A mirrored layer damaged on disk and set aside by `fsck --repair`: the next sync
    took the tag for unchanged and left the image broken at every run; it looks at the
    blobs of what it keeps and fetches the one the registry lacks."""
    digest = new_image(tmp_path, dist, "heal/app", "1.0")
    config = write_config(tmp_path / "c.yml", [source(dist, name="heal",
                                                      repository="heal/app")])
    assert reports(dockyard_sync(config, local.data, "--json"))["heal"]["added"] == ["1.0"]
    manifest = httpx.get(f"{local.url}/v2/app/manifests/1.0", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    layer = manifest["layers"][0]["digest"]
    hex_ = layer.split(":")[1]
    path = local.data / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
    damaged = path.read_bytes()
    path.write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 0xFF]))
    fsck = [sys.executable, "-m", "dockyard", "fsck", "--data", str(local.data),
            "--verify-digests"]
    repaired = subprocess.run([*fsck, "--repair"], capture_output=True, timeout=120)
    assert repaired.returncode == 1, repaired.stdout
    assert httpx.head(f"{local.url}/v2/app/blobs/{layer}").status_code == 404

    report = reports(dockyard_sync(config, local.data, "--json"))["heal"]
    assert report["unchanged"] == ["1.0"]
    assert report["copy"]["blobs_copied"] == 1, report
    assert digest_of(local.url, "app", "1.0") == digest
    pulled = httpx.get(f"{local.url}/v2/app/blobs/{layer}")
    assert "sha256:" + hashlib.sha256(pulled.content).hexdigest() == layer
    assert subprocess.run(fsck, capture_output=True, timeout=120).returncode == 0


# ---------------------------------------------------------------- moved tags, pruning


def test_a_moved_tag_is_updated_and_prune_removes_only_what_upstream_removed(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "mv/app"
    first = {t: new_image(tmp_path, dist, repo, t) for t in ("1.0", "1.1", "1.2")}
    config = write_config(tmp_path / "c.yml", [source(dist, name="app", repository=repo)])
    assert reports(dockyard_sync(config, local.data, "--json"))["app"]["added"] == \
        ["1.0", "1.1", "1.2"]

    moved = new_image(tmp_path / "again", dist, repo, "1.1")  # the tag moves upstream
    assert moved != first["1.1"]
    report = reports(dockyard_sync(config, local.data, "--json"))["app"]
    assert report["updated"] == ["1.1"]
    assert report["unchanged"] == ["1.0", "1.2"]
    assert digest_of(local.url, "app", "1.1") == moved
    origins = {o["tag"]: o for o in httpx.get(
        f"{local.url}/admin/v1/sync/repositories/app").json()["tags"]}
    assert origins["1.1"]["digest"] == moved

    resp = httpx.delete(f"{dist.url}/v2/{repo}/manifests/{first['1.0']}",
                        auth=(USER, PASSWORD))
    assert resp.status_code == 202, resp.text
    report = reports(dockyard_sync(config, local.data, "--json"))["app"]
    assert report["pruned"] == []
    assert local_tags(local, "app") == ["1.0", "1.1", "1.2"]  # without --prune it stays

    dry = reports(dockyard_sync(config, local.data, "--json", "--prune", "--dry-run"))["app"]
    assert dry["pruned"] == ["1.0"]
    assert local_tags(local, "app") == ["1.0", "1.1", "1.2"]

    report = reports(dockyard_sync(config, local.data, "--json", "--prune"))["app"]
    assert report["pruned"] == ["1.0"]
    assert local_tags(local, "app") == ["1.1", "1.2"]
    assert [o["tag"] for o in httpx.get(
        f"{local.url}/admin/v1/sync/repositories/app").json()["tags"]] == ["1.1", "1.2"]


def test_prune_never_removes_a_tag_the_sync_did_not_mirror(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "own/app"
    new_image(tmp_path, dist, repo, "1.0")
    config = write_config(tmp_path / "c.yml", [source(dist, name="own", repository=repo,
                                                      destination="own", prune=True)])
    reports(dockyard_sync(config, local.data, "--json"))
    # a tag pushed locally by hand into the same repository
    push_by_hand(local, tmp_path / "mine", "own", "mine")
    report = reports(dockyard_sync(config, local.data, "--json"))["own"]
    assert report["pruned"] == []
    assert local_tags(local, "own") == ["1.0", "mine"]


def test_a_mirrored_tag_pushed_over_is_kept_by_prune_and_no_longer_called_mirrored(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "over/app"
    for tag in ("1.0", "1.1"):
        new_image(tmp_path, dist, repo, tag)
    config = write_config(tmp_path / "c.yml", [source(dist, name="over", repository=repo,
                                                      destination="over", prune=True)])
    assert reports(dockyard_sync(config, local.data, "--json"))["over"]["added"] == \
        ["1.0", "1.1"]
    origins_url = f"{local.url}/admin/v1/sync/repositories/over"
    assert [o["tag"] for o in httpx.get(origins_url).json()["tags"]] == ["1.0", "1.1"]

    # someone pushes their own image over the mirrored 1.0, then upstream drops 1.0
    mine = push_by_hand(local, tmp_path / "mine", "over", "1.0")
    assert [o["tag"] for o in httpx.get(origins_url).json()["tags"]] == ["1.1"]
    resp = httpx.delete(f"{dist.url}/v2/{repo}/manifests/"
                        f"{digest_of(dist.url, repo, '1.0', (USER, PASSWORD))}",
                        auth=(USER, PASSWORD))
    assert resp.status_code == 202, resp.text
    dry = reports(dockyard_sync(config, local.data, "--json", "--dry-run"))["over"]
    assert dry["pruned"] == []
    report = reports(dockyard_sync(config, local.data, "--json"))["over"]
    assert report["pruned"] == []
    assert local_tags(local, "over") == ["1.0", "1.1"]
    assert digest_of(local.url, "over", "1.0") == mine

    # a deleted repository forgets where its tags came from: pushed again by hand, the
    # same tag is not called mirrored
    deleted = httpx.delete(f"{local.url}/admin/v1/repositories/over")
    assert deleted.status_code == 202, deleted.text
    push_by_hand(local, tmp_path / "again", "over", "1.1")
    assert httpx.get(origins_url).json()["tags"] == []


def test_platforms_narrow_an_index_and_the_next_run_finds_it_unchanged(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "multi/app"
    index = multiplatform_layout(tmp_path / "multi", "v1", layer_sizes=(2048,))
    push(index.path, "v1", dist, repo, "v1")
    arm64 = next(c["digest"] for c in index.children()
                 if c["platform"]["architecture"] == "arm64")
    config = write_config(tmp_path / "c.yml", [source(
        dist, name="multi", repository=repo, destination="multi",
        platforms=["linux/amd64", "linux/arm64"])])
    first = reports(dockyard_sync(config, local.data, "--json"))["multi"]
    assert first["added"] == ["v1"]
    assert len(first["copy"]["narrowed"]) == 1
    resp = httpx.get(f"{local.url}/v2/multi/manifests/v1",
                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    children = resp.json()["manifests"]
    assert sorted(c["platform"]["architecture"] for c in children) == ["amd64", "arm64"]
    assert arm64 in [c["digest"] for c in children]  # children keep their digests
    assert resp.headers["Docker-Content-Digest"] == first["copy"]["narrowed"][0]
    again = reports(dockyard_sync(config, local.data, "--json"))["multi"]
    assert again["unchanged"] == ["v1"]


# ---------------------------------------------------------------- failures


def test_a_broken_source_is_reported_and_does_not_stop_the_others(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "ok/app"
    new_image(tmp_path, dist, repo, "v1")
    config = write_config(tmp_path / "c.yml", [
        source(dist, name="down", registry=f"127.0.0.1:{free_port()}"),
        source(dist, name="refused", repository=repo, destination="refused",
               credentials={"username": USER, "password_env": "WRONG_PW"}),
        source(dist, name="unset", repository=repo, destination="unset",
               credentials={"username": USER, "password_env": "NO_SUCH_VARIABLE"}),
        source(dist, name="good", repository=repo, destination="good"),
    ])
    proc = dockyard_sync(config, local.data, "--json")
    assert proc.returncode == 1, proc.stderr
    found = reports(proc)
    assert found["good"]["status"] == "ok"
    assert local_tags(local, "good") == ["v1"]
    for name in ("down", "refused", "unset"):
        assert found[name]["status"] == "failed", found[name]
        assert found[name]["attempts"] == 2  # retried once, after the backoff
    assert "listing tags" in found["down"]["error"]
    assert "401" in found["refused"]["error"] or "UNAUTHORIZED" in found["refused"]["error"]
    assert "NO_SUCH_VARIABLE is not set" in found["unset"]["error"]
    assert "not-the-password" not in proc.stdout + proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr

    text = dockyard_sync(config, local.data)
    assert text.returncode == 1
    assert "down: failed: upstream 127.0.0.1:" in text.stdout, text.stdout
    assert "good: " in text.stdout, text.stdout
    assert "1 unchanged" in text.stdout, text.stdout

    status = dockyard_sync(config, local.data, "--status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert sum(1 for line in lines if line.startswith("down: ") and " failed " in line) == 2
    assert sum(1 for line in lines if line.startswith("good: ") and " ok " in line) == 2
    runs = httpx.get(f"{local.url}/admin/v1/sync", params={"source": "refused"}).json()
    assert [r["status"] for r in runs["runs"]] == ["failed", "failed"]


def upstream_file(dist: Server, digest: str) -> Path:
    """Where Distribution keeps the bytes of `digest` (its filesystem driver's layout)."""
    hexdigest = digest.split(":", 1)[1]
    return dist.data / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def test_bad_content_upstream_fails_its_tag_only(
        dist: Server, local: Server, tmp_path: Path) -> None:
    repo = "bad/app"
    new_image(tmp_path, dist, repo, "good")
    layouts = {t: random_layout(tmp_path / f"lay-{t}", t, layer_sizes=(4096,))
               for t in ("badblob", "badmanifest")}
    for tag, layout in layouts.items():
        push(layout.path, tag, dist, repo, tag)
    layer = upstream_file(dist, layouts["badblob"].layer_digests()[0])
    data = bytearray(layer.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes: the digest no longer matches
    layer.write_bytes(bytes(data))
    upstream_file(dist, layouts["badmanifest"].digest).write_bytes(b"{not json")

    config = write_config(tmp_path / "c.yml", [source(dist, name="bad", repository=repo,
                                                      destination="bad")])
    proc = dockyard_sync(config, local.data, "--json")
    # partial: the source itself works, but what was asked for is not all there
    assert proc.returncode == 1, proc.stderr
    report = reports(proc)["bad"]
    assert report["status"] == "partial"
    assert report["added"] == ["good"]
    assert sorted(report["failed"]) == ["badblob", "badmanifest"]
    assert "digest" in report["failed"]["badblob"].lower(), report["failed"]
    # Distribution cannot parse what it stored, and says so with a 500
    assert "source: manifest badmanifest: 500" in report["failed"]["badmanifest"]
    assert local_tags(local, "bad") == ["good"]
    runs = httpx.get(f"{local.url}/admin/v1/sync", params={"source": "bad"}).json()["runs"]
    assert runs[0]["status"] == "partial"
    assert runs[0]["report"]["attempts"] == 2  # the failed tags were tried again


def test_the_history_needs_the_catalog_and_origins_need_pull(
        dist: Server, tmp_path: Path) -> None:
    repo = "acl/app"
    new_image(tmp_path, dist, repo, "v1")
    config = write_config(tmp_path / "c.yml", [source(dist, name="acl", repository=repo,
                                                      destination="private/app")])
    serve = write_serve_config(tmp_path / "serve.yml",
                               auth=basic_auth(write_htpasswd(tmp_path / "htpasswd")))
    server = start_dockyard(tmp_path / "data", config=serve)
    try:
        assert reports(dockyard_sync(config, server.data, "--json"))["acl"]["status"] == "ok"
        reader = ("reader", USERS["reader"][0])
        admin = ("admin", USERS["admin"][0])
        # the platform's policy: the catalog is the admins', `private/**` is pulled by
        # the authenticated only
        refused = httpx.get(f"{server.url}/admin/v1/sync", auth=reader)
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["code"] == "DENIED"
        assert httpx.get(f"{server.url}/admin/v1/sync").status_code == 401
        origins_url = f"{server.url}/admin/v1/sync/repositories/private/app"
        assert httpx.get(origins_url).status_code == 401
        assert httpx.get(origins_url, auth=reader).status_code == 200
        runs = httpx.get(f"{server.url}/admin/v1/sync", auth=admin)
        assert [r["source"] for r in runs.json()["runs"]] == ["acl"]
        origins = httpx.get(f"{server.url}/admin/v1/sync/repositories/private/app",
                            auth=admin)
        assert [o["tag"] for o in origins.json()["tags"]] == ["v1"]
        missing = httpx.get(f"{server.url}/admin/v1/sync/repositories/private/none",
                            auth=admin)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    finally:
        server.stop()


def test_the_history_shows_a_user_only_the_sources_they_may_pull(
        dist: Server, tmp_path: Path) -> None:
    """With the catalog open to every user, the sync history, the job runs and the
    operations page are filtered like the catalog: a source's runs and its job are shown
    to those who may pull its destination; other jobs' free-text summaries only to
    those who may pull everything."""
    repo = "acl2/app"
    new_image(tmp_path, dist, repo, "v1")
    sources = [source(dist, name=name, repository=repo, destination=destination,
                      schedule="2s")
               for name, destination in (("open", "public/app"), ("closed", "secret/app"))]
    auth = {"method": "htpasswd", "htpasswd": {"path": write_htpasswd(tmp_path / "htp")},
            "catalog": ["authenticated"], "access": [
                {"repository": "public/**", "allow": {"authenticated": ["pull"],
                                                      "group:admins": ["*"]}},
                {"repository": "**", "allow": {"group:admins": ["*"]}}]}
    serve = write_serve_config(tmp_path / "serve.yml", auth=auth, mirror=sources,
                               storage={"uploads": {"purge_interval": "1s"}})
    server = start_dockyard(tmp_path / "data", config=serve, env=ENV)

    def get(user: str, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{server.url}{path}", params=params, timeout=10,
                         auth=(user, USERS[user][0]))

    def jobs(user: str) -> dict[str, list[dict[str, Any]]]:
        resp = get(user, "/admin/v1/jobs")
        assert resp.status_code == 200, resp.text
        return {job["name"]: job["runs"] for job in resp.json()["jobs"]}

    try:
        # the server's own schedule syncs both sources; the purge job runs beside them
        wanted = {"mirror.open", "mirror.closed", "uploads.purge"}
        deadline = time.monotonic() + 90
        while not wanted <= jobs("admin").keys():
            assert time.monotonic() < deadline, (jobs("admin"), server.log.read_text()[-3000:])
            time.sleep(0.5)

        def sources(user: str) -> set[str]:
            resp = get(user, "/admin/v1/sync")
            assert resp.status_code == 200, resp.text
            return {r["source"] for r in resp.json()["runs"]}

        assert sources("reader") == {"open"}
        assert sources("admin") == {"closed", "open"}
        catalog = get("reader", "/v2/_catalog")
        assert catalog.json()["repositories"] == ["public/app"]  # the same view

        admin, reader = jobs("admin"), jobs("reader")
        assert "mirror.closed" not in reader  # its name is its destination's business
        assert reader["mirror.open"][0]["summary"].startswith("ok: ")
        assert admin["mirror.closed"][0]["summary"].startswith("ok: ")
        assert admin["uploads.purge"][0]["summary"].endswith("expired upload sessions removed")
        assert reader["uploads.purge"][0]["outcome"] == "ok"
        assert {r["summary"] for r in reader["uploads.purge"]} == {""}  # withheld

        page = get("reader", "/ui/operations")
        assert page.status_code == 200, page.text
        for shown in ("mirror.open", ">open<"):
            assert shown in page.text
        for hidden in ("mirror.closed", ">closed<"):
            assert hidden not in page.text
        assert "expired upload sessions" not in page.text
        assert "expired upload sessions" in get("admin", "/ui/operations").text

        for path in ("/admin/v1/sync", "/admin/v1/jobs"):  # a digit int() refuses
            bad = get("reader", path, n="\u00b2")
            assert bad.status_code == 400, (path, bad.text)
            assert bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    finally:
        server.stop()


# ---------------------------------------------------------------- the schedule


def test_the_schedule_runs_each_source_on_one_node_at_a_time(
        dist: Server, tmp_path: Path) -> None:
    repo = "sched/app"
    digest = new_image(tmp_path, dist, repo, "v1")
    config = write_config(tmp_path / "c.yml", [
        source(dist, name="sched", repository=repo, destination="sched", schedule="1s"),
        source(dist, name="down", registry=f"127.0.0.1:{free_port()}", schedule="1s",
               retries=0),
    ], log={"level": "info"})
    data = tmp_path / "data"
    a = start_dockyard(data, config=config, workers=2, env=ENV)
    b = start_dockyard(data, config=config, workers=2, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and local_tags(a, "sched") != ["v1"]:
            time.sleep(0.2)
        assert local_tags(a, "sched") == ["v1"], a.log.read_text()[-3000:]
        assert digest_of(b.url, "sched", "v1") == digest
        started = time.monotonic()
        time.sleep(6)
        elapsed = time.monotonic() - started
        runs = httpx.get(f"{a.url}/admin/v1/sync",
                         params={"source": "sched", "n": "1000"}).json()["runs"]
        recent = sorted((r["started_at"], r["finished_at"]) for r in runs
                        if r["started_at"] >= time.time() - elapsed)
        # due every second: about `elapsed` runs; four schedulers (two nodes with two
        # workers each) without the job's lease would have run about four times as many
        assert 2 <= len(recent) <= elapsed + 2, recent
        for (_, end), (start, _) in itertools.pairwise(recent):
            assert start >= end  # never two at once
        logs = a.log.read_text() + b.log.read_text()
        assert "Traceback" not in logs
        assert "sync down: failed" in logs  # the broken source is said, and the
        assert a.proc.poll() is None  # servers go on
        assert b.proc.poll() is None
    finally:
        a.stop()
        b.stop()


def test_an_upstream_listing_no_tags_at_all_prunes_nothing(
        dist: Server, local: Server, tmp_path: Path) -> None:
    # every tag gone upstream at once (a registry mid-restore, the wrong repository
    # behind the name) is not taken as "delete them all here": the run says so
    repo = "empty/app"
    digests = {t: new_image(tmp_path, dist, repo, t) for t in ("1.0", "1.1")}
    config = write_config(tmp_path / "c.yml", [source(dist, name="empty", repository=repo,
                                                      destination="empty", prune=True)])
    assert reports(dockyard_sync(config, local.data, "--json"))["empty"]["added"] == \
        ["1.0", "1.1"]
    for digest in set(digests.values()):
        resp = httpx.delete(f"{dist.url}/v2/{repo}/manifests/{digest}",
                            auth=(USER, PASSWORD))
        assert resp.status_code == 202, resp.text
    listed = httpx.get(f"{dist.url}/v2/{repo}/tags/list", auth=(USER, PASSWORD))
    assert listed.status_code == 200, listed.text
    assert not listed.json().get("tags"), listed.text
    report = reports(dockyard_sync(config, local.data, "--json"))["empty"]
    assert report["pruned"] == []
    assert report["warnings"] == ["the upstream lists no tags at all: nothing pruned"]
    assert local_tags(local, "empty") == ["1.0", "1.1"]


def test_prune_spares_a_tag_another_source_into_the_same_repository_selects(
        dist: Server, local: Server, tmp_path: Path) -> None:
    # `redis` keeps the newest three 7.*, `redis-pin` keeps 7.1, both into `redis`: when
    # 7.4 appears, 7.1 leaves the first's selection but not the second's
    repo = "two/redis"
    for tag in ("7.0", "7.1", "7.2", "7.3"):
        new_image(tmp_path, dist, repo, tag)
    newest = source(dist, name="redis", repository=repo, destination="redis",
                    tags=["7.*"], newest=3, prune=True)
    pinned = source(dist, name="redis-pin", repository=repo, destination="redis",
                    tags=["7.1"], prune=True)
    config = write_config(tmp_path / "c.yml", [newest, pinned])
    assert reports(dockyard_sync(config, local.data, "--json", "redis-pin"))[
        "redis-pin"]["added"] == ["7.1"]
    first = reports(dockyard_sync(config, local.data, "--json", "redis"))["redis"]
    assert first["added"] == ["7.2", "7.3"], first
    assert first["unchanged"] == ["7.1"], first
    assert owners(local, "redis") == {"7.1": "redis-pin", "7.2": "redis", "7.3": "redis"}

    new_image(tmp_path, dist, repo, "7.4")
    report = reports(dockyard_sync(config, local.data, "--json", "redis"))["redis"]
    assert report["added"] == ["7.4"], report
    assert report["pruned"] == [], report
    assert local_tags(local, "redis") == ["7.1", "7.2", "7.3", "7.4"]
    pin = reports(dockyard_sync(config, local.data, "--json", "redis-pin"))["redis-pin"]
    assert pin["unchanged"] == ["7.1"], pin
    assert pin["pruned"] == [], pin

    # a pin added later, over a tag the first source mirrored (so owns): when the first
    # lets it go, the tag is kept and handed to the pin, whose own prune decides later
    for tag in ("7.91", "7.92"):
        new_image(tmp_path, dist, repo, tag)
    config = write_config(tmp_path / "c.yml", [
        {**newest, "tags": ["7.9*"]}])
    assert reports(dockyard_sync(config, local.data, "--json"))["redis"]["added"] == \
        ["7.91", "7.92"]
    config = write_config(tmp_path / "c.yml", [
        {**newest, "tags": ["7.9*"]}, {**pinned, "tags": ["7.91"]}])
    for tag in ("7.93", "7.94"):
        new_image(tmp_path, dist, repo, tag)
    report = reports(dockyard_sync(config, local.data, "--json", "redis"))["redis"]
    assert report["pruned"] == [], report  # 7.91 left the newest 3, but the pin has it
    assert "7.91" in local_tags(local, "redis")
    assert owners(local, "redis")["7.91"] == "redis-pin"
    pin = reports(dockyard_sync(config, local.data, "--json", "redis-pin"))["redis-pin"]
    assert pin["unchanged"] == ["7.91"], pin
    assert pin["pruned"] == ["7.1"], pin  # its own, no longer selected by anyone
    assert "7.91" in local_tags(local, "redis")


def owners(server: Server, repo: str) -> dict[str, str]:
    """Which source each mirrored tag of `repo` is recorded as coming from."""
    return {o["tag"]: o["source"] for o in httpx.get(
        f"{server.url}/admin/v1/sync/repositories/{repo}").json()["tags"]}


def test_an_auth_file_that_cannot_be_used_fails_its_source(local: Server, tmp_path: Path
                                                           ) -> None:
    """`credentials.auth_file` naming a missing or invalid file fails the source, naming
    the file and why, as a password file that cannot be read does: not a sync that goes
    on anonymously (this upstream lets anonymous pull, so it would have succeeded)."""
    push_by_hand(local, tmp_path / "lay", "open/app", "v1")
    (tmp_path / "broken.json").write_text("{")
    missing = tmp_path / "nowhere.json"
    good = tmp_path / "auth.json"
    good.write_text(json.dumps({"auths": {}}))
    config = write_config(tmp_path / "c.yml", [
        {"name": name, "registry": local.host, "repository": "open/app",
         "destination": f"copy-{name}", "tls_verify": False, "retries": 0,
         "credentials": {"auth_file": str(path)}}
        for name, path in (("missing", missing), ("broken", tmp_path / "broken.json"),
                           ("good", good))])
    proc = dockyard_sync(config, local.data, "--json")
    assert proc.returncode == 1, proc.stderr
    found = reports(proc)
    assert found["good"]["status"] == "ok", found["good"]
    assert local_tags(local, "copy-good") == ["v1"]
    assert found["missing"]["status"] == "failed", found["missing"]
    assert found["missing"]["error"] == \
        f"credentials.auth_file: {missing}: cannot read it: No such file or directory"
    assert found["broken"]["status"] == "failed", found["broken"]
    assert found["broken"]["error"] == (
        f"credentials.auth_file: {tmp_path / 'broken.json'}: not valid JSON: Expecting "
        "property name enclosed in double quotes (line 1 column 2)")
    assert local_tags(local, "copy-missing") == local_tags(local, "copy-broken") == []


async def test_a_stored_report_names_a_bounded_number_of_tags_and_counts_them_all(
        dist: Server, local: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report kept in the history (20 runs a source) and logged each run named every
    tag of the source, unchanged ones included: thousands for a large upstream. It now
    names at most `REPORT_NAMES` of each kind (20 in the log) and counts them all, and
    the history's readers (`--status`, the operations page) show the counts."""
    from dockyard.backends import close_registry, open_registry
    from dockyard.config.mirror import MirrorSource
    from dockyard.config.settings import load_settings
    from dockyard.mirror import schedule, sync

    monkeypatch.setattr(sync, "REPORT_NAMES", 2)
    monkeypatch.setattr(schedule, "LOGGED_NAMES", 1)
    monkeypatch.setenv("UPSTREAM_PW", PASSWORD)
    repo = "cap/app"
    tags = [f"v{n}" for n in range(5)]
    for tag in tags:
        await asyncio.to_thread(new_image, tmp_path, dist, repo, tag)
    settings = load_settings(env=ENV, overrides={
        "storage.filesystem.rootdirectory": str(local.data)})
    fields = source(dist, name="cap", repository=repo, tags=["*"])
    mirror = MirrorSource.model_validate(fields)
    registry = await open_registry(settings)
    try:
        report = await sync.sync_source(registry, mirror)
        assert sorted(report.added) == tags  # the run's own report names them all
        stored = json.loads((await registry.mirrors.runs(mirror.key, 1))[0].report)
        assert len(stored["added"]) == 2
        assert set(stored["added"]) < set(tags)
        assert stored["counts"] == {"added": 5, "updated": 0, "unchanged": 0,
                                    "pruned": 0, "failed": 0}
        assert stored["truncated"] is True
        # the operations page counts the newest run's tags, not the names it keeps
        async with httpx.AsyncClient(base_url=local.url) as http:
            page = await http.get("/ui/operations")
        assert page.status_code == 200
        row = page.text[page.text.index(f'<td class="name">{mirror.key}</td>'):]
        row = row[:row.index("</tr>")]
        assert re.findall(r'<td class="num">(\d+)</td>', row) == ["5", "0", "0"], row
        # the scheduled run logs one line with at most LOGGED_NAMES of each kind
        seen: list[str] = []
        monkeypatch.setattr(schedule.log, "log", lambda _level, text, *args: seen.append(
            text % args))
        await schedule.mirror_job(registry, mirror).run()
        logged = json.loads(seen[-1].split(" ", 3)[3])
        assert len(logged["unchanged"]) == 1
        assert logged["counts"]["unchanged"] == 5
    finally:
        await close_registry(registry)
    async with httpx.AsyncClient(base_url=local.url) as http:
        history = (await http.get("/admin/v1/sync")).json()["runs"]
    assert [(r["report"]["counts"]["unchanged"], len(r["report"]["unchanged"]))
            for r in history] == [(5, 2), (0, 0)]
    status = await asyncio.to_thread(dockyard_sync, write_config(tmp_path / "cap.yml",
                                                                 [fields]), local.data,
                                     "--status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert ": 0 added, 0 updated, 0 pruned" in lines[0], status.stdout
    assert ": 5 added, 0 updated, 0 pruned" in lines[1], status.stdout
