"""Pull-through caches (`proxy:` rules) in front of real upstreams on loopback.

Upstreams: CNCF Distribution 2.8 with htpasswd (Basic) authentication, and a Dockyard
with token authentication; content is written by the tests (OCI layouts copied up with
skopeo, a 64 MiB blob pushed with one POST). What reached an upstream is read from its
access log. The cache runs 2 worker processes, so concurrent pulls meet across
processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.authenv import USERS, token_auth, write_config, write_htpasswd
from tests.support.clients import Podman, Skopeo
from tests.support.images import Layout, multiplatform_layout, random_layout, sha256
from tests.support.prom import samples
from tests.support.servers import Server, free_port, start_distribution, start_dockyard
from tests.support.tcpproxy import HoldingProxy, holding_proxy

USER = "builder"
PASSWORD = USERS[USER][0]
CREDS = f"{USER}:{PASSWORD}"
#: the `not_found_ttl` of the `miss/` cache, in seconds: long enough for a test's pulls
#: within it to finish on a slow machine
MISS_TTL = 8.0


def upstream_requests(server: Server, path_part: str, method: str = "") -> int:
    """Requests an upstream logged whose request line holds `path_part`."""
    lines = server.log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if re.search(rf'"{method}[A-Z]* [^"]*{re.escape(path_part)}',
                                                line))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dist")
    server = start_distribution(tmp / "data", access_log=True,
                                htpasswd=write_htpasswd(tmp / "htpasswd", {USER: USERS[USER]}))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dock_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Dockyard upstream with token authentication and its access log on."""
    tmp = tmp_path_factory.mktemp("dockup")
    config = write_config(tmp / "config.yml", auth=token_auth(write_htpasswd(tmp / "htpasswd")),
                          log={"level": "info", "accesslog": True})
    server = start_dockyard(tmp / "data", config=config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gone_port() -> int:
    """The port of an upstream the stale test starts and stops itself."""
    return free_port()


@pytest.fixture(scope="module")
def holding() -> Iterator[HoldingProxy]:
    """A proxy in front of an upstream the interrupted-fetch test starts and kills."""
    with holding_proxy(free_port()) as proxy:
        yield proxy


def proxy_rules(dist: Server, dock_up: Server, gone_port: int, secret: Path,
                holding: HoldingProxy) -> list[dict[str, Any]]:
    dist_creds = {"username": USER, "password_env": "DIST_PASSWORD"}
    return [
        {"prefix": "hub", "upstream": dist.url, "credentials": dist_creds, "tag_ttl": "1h"},
        {"prefix": "fresh", "upstream": dist.url, "upstream_prefix": "up/",
         "credentials": dist_creds, "tag_ttl": "1s"},
        {"prefix": "dy", "upstream": dock_up.url, "tag_ttl": "1h",
         "credentials": {"username_env": "DY_USER", "password_file": secret}},
        {"prefix": "gone", "upstream": f"http://127.0.0.1:{gone_port}", "tag_ttl": "1s"},
        {"prefix": "cut", "upstream": f"http://127.0.0.1:{holding.port}"},
        {"prefix": "miss", "upstream": dist.url, "upstream_prefix": "up/",
         "credentials": dist_creds, "not_found_ttl": f"{MISS_TTL:g}s"},
        {"prefix": "ask", "upstream": dist.url, "upstream_prefix": "up/",
         "credentials": dist_creds, "not_found_ttl": "0s"},
    ]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, dist: Server, dock_up: Server,
          gone_port: int, holding: HoldingProxy) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cache")
    secret = tmp / "dy-password"
    secret.write_text(PASSWORD + "\n")
    config = write_config(tmp / "config.yml", log={"level": "info"},
                          proxy=proxy_rules(dist, dock_up, gone_port, secret, holding))
    server = start_dockyard(tmp / "data", config=config, workers=2,
                            env={"DIST_PASSWORD": PASSWORD, "DY_USER": USER})
    yield server
    server.stop()
    assert PASSWORD not in server.log.read_text(errors="replace")


@pytest.fixture
def skopeo(tmp_path: Path, dist: Server, dock_up: Server, cache: Server) -> Skopeo:
    return Skopeo(tmp_path / "skopeo", insecure_hosts=[dist.host, dock_up.host, cache.host])


def fresh_skopeo(tmp_path: Path, name: str, cache: Server) -> Skopeo:
    """A skopeo with an empty blob-info cache (nothing of an earlier pull known)."""
    return Skopeo(tmp_path / name, insecure_hosts=[cache.host])


def digest_of_pull(skopeo: Skopeo, ref: str) -> str:
    return sha256(skopeo.inspect_raw(ref))


# ---------------------------------------------------------------- pulls


def test_skopeo_pulls_through_distribution_and_the_second_pull_stays_local(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/up/sk:v1", "--dest-creds", CREDS)
    before = upstream_requests(dist, "/v2/up/sk/")

    first = fresh_skopeo(tmp_path, "first", cache)
    first.copy(f"docker://{cache.host}/hub/up/sk:v1", f"oci:{tmp_path / 'out1'}:v1")
    assert digest_of_pull(first, f"docker://{cache.host}/hub/up/sk:v1") == layout.digest
    fetched = upstream_requests(dist, "/v2/up/sk/")
    assert fetched > before
    out1 = json.loads((tmp_path / "out1" / "index.json").read_text())
    assert out1["manifests"][0]["digest"] == layout.digest

    # a second client, by tag and by digest: nothing reaches the upstream
    second = fresh_skopeo(tmp_path, "second", cache)
    second.copy(f"docker://{cache.host}/hub/up/sk:v1", f"oci:{tmp_path / 'out2'}:v1")
    second.copy(f"docker://{cache.host}/hub/up/sk@{layout.digest}",
                f"oci:{tmp_path / 'out3'}:v1")
    assert upstream_requests(dist, "/v2/up/sk/") == fetched

    # provenance: where the tag came from, through the admin API
    prov = httpx.get(f"{cache.url}/admin/v1/cache/hub/up/sk").json()
    assert prov["tags"][0]["tag"] == "v1"
    assert prov["tags"][0]["digest"] == layout.digest
    assert prov["tags"][0]["upstream"] == f"{dist.url}/up/sk:v1"


def test_the_provenance_of_a_cache_is_paged_as_a_tags_list(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """`/admin/v1/cache/<name>` answered every cached tag at once: now pages of `n`
    (at most `limits.tags_page_max`), `Link` naming the next."""
    layout = random_layout(tmp_path / "lay", "v1")
    for tag in ("a", "b", "c"):
        skopeo.copy(layout.ref, f"docker://{dist.host}/up/paged:{tag}", "--dest-creds", CREDS)
        assert digest_of_pull(skopeo, f"docker://{cache.host}/hub/up/paged:{tag}") == \
            layout.digest
    url = f"{cache.url}/admin/v1/cache/hub/up/paged"
    whole = httpx.get(url)
    assert [t["tag"] for t in whole.json()["tags"]] == ["a", "b", "c"]
    assert "link" not in whole.headers
    first = httpx.get(url, params={"n": 2})
    assert [t["tag"] for t in first.json()["tags"]] == ["a", "b"]
    assert first.headers["link"] == '</admin/v1/cache/hub/up/paged?n=2&last=b>; rel="next"'
    rest = httpx.get(f"{cache.url}/admin/v1/cache/hub/up/paged?n=2&last=b")
    assert [(t["tag"], t["digest"]) for t in rest.json()["tags"]] == [("c", layout.digest)]
    assert "link" not in rest.headers
    none = httpx.get(url, params={"n": 0})
    assert none.status_code == 200, none.text
    assert none.json()["tags"] == []
    assert "link" not in none.headers


def test_an_index_and_its_platforms_arrive_lazily_with_their_digests(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = multiplatform_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/up/multi:v1", "--all", "--dest-creds",
                CREDS)
    ref = f"docker://{cache.host}/hub/up/multi:v1"
    # one platform first: the index and that platform's image only
    one = fresh_skopeo(tmp_path, "one", cache)
    one.copy(ref, f"oci:{tmp_path / 'arm'}:v1", "--override-arch", "arm64")
    child = next(c["digest"] for c in layout.children() if c["platform"]["architecture"]
                 == "arm64")
    assert sha256(one.inspect_raw(f"docker://{cache.host}/hub/up/multi@{child}")) == child
    # then every platform, digests kept byte for byte
    every = fresh_skopeo(tmp_path, "every", cache)
    every.copy(ref, f"oci:{tmp_path / 'all'}:v1", "--all")
    assert sha256(every.inspect_raw(ref)) == layout.digest
    for c in layout.children():
        got = every.inspect_raw(f"docker://{cache.host}/hub/up/multi@{c['digest']}")
        assert sha256(got) == c["digest"]
    fetched = upstream_requests(dist, "/v2/up/multi/")
    fresh_skopeo(tmp_path, "again", cache).copy(ref, f"oci:{tmp_path / 'again'}:v1", "--all")
    assert upstream_requests(dist, "/v2/up/multi/") == fetched


def test_podman_pulls_through_a_token_auth_dockyard(
        dock_up: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(2_000_000, 40_000))
    skopeo.copy(layout.ref, f"docker://{dock_up.host}/team/pod:v1", "--dest-creds", CREDS)
    before = upstream_requests(dock_up, "/v2/team/pod/")

    podman = Podman(tmp_path / "podman", insecure_hosts=[cache.host])
    if (reason := podman.usable()) is not None:
        pytest.skip(reason)
    image_id = podman.pull(f"{cache.host}/dy/team/pod:v1")
    assert image_id == layout.config_digest().split(":", 1)[1]
    assert podman.image_inspect(f"{cache.host}/dy/team/pod:v1")["Digest"] == layout.digest
    fetched = upstream_requests(dock_up, "/v2/team/pod/")
    assert fetched > before

    again = Podman(tmp_path / "podman2", insecure_hosts=[cache.host])
    assert again.pull(f"{cache.host}/dy/team/pod:v1") == image_id
    assert upstream_requests(dock_up, "/v2/team/pod/") == fetched


def test_a_tag_moved_upstream_is_seen_after_its_ttl(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    one = random_layout(tmp_path / "one", "latest")
    two = random_layout(tmp_path / "two", "latest")
    skopeo.copy(one.ref, f"docker://{dist.host}/up/mv:latest", "--dest-creds", CREDS)
    ref = f"docker://{cache.host}/fresh/mv:latest"
    assert digest_of_pull(skopeo, ref) == one.digest

    skopeo.copy(two.ref, f"docker://{dist.host}/up/mv:latest", "--dest-creds", CREDS)
    time.sleep(1.2)  # the rule's tag_ttl is 1s
    gets = upstream_requests(dist, "/v2/up/mv/manifests/latest", "GET")
    assert digest_of_pull(skopeo, ref) == two.digest
    # re-checked with a HEAD; the new manifest fetched by digest, not by tag
    assert upstream_requests(dist, "/v2/up/mv/manifests/latest", "GET") == gets
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:latest")
    prov = httpx.get(f"{cache.url}/admin/v1/cache/fresh/mv").json()["tags"][0]
    assert prov["digest"] == two.digest
    # the old digest stays pullable from the cache
    assert digest_of_pull(skopeo, f"docker://{cache.host}/fresh/mv@{one.digest}") == one.digest


def test_fsck_takes_a_cached_image_whose_blobs_were_not_pulled_for_sound(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """A cached manifest names blobs the cache fetches when first pulled: fsck does not
    report it broken, where every cache failed its check (exit 1) and monitoring built
    on fsck alarmed for good. A blob of the cache that is damaged still counts."""
    image = random_layout(tmp_path / "lazy", "latest")
    skopeo.copy(image.ref, f"docker://{dist.host}/up/lazy:latest", "--dest-creds", CREDS)
    r = httpx.get(f"{cache.url}/v2/fresh/lazy/manifests/latest", timeout=30, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200, r.text
    config = cache.data.parent / "config.yml"
    run = subprocess.run([sys.executable, "-m", "dockyard", "fsck", "--config", str(config),
                          "--data", str(cache.data), "--json"],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "DIST_PASSWORD": PASSWORD, "DY_USER": USER})
    report = json.loads(run.stdout)
    broken = [f for f in report["findings"] if f["kind"] == "broken_manifest"]
    assert broken == [], broken
    assert run.returncode == 0, run.stdout[-2000:]


def test_cached_tags_still_pull_when_the_upstream_is_down_and_say_so(
        cache: Server, gone_port: int, tmp_path: Path) -> None:
    upstream = start_distribution(tmp_path / "gone", port=gone_port)
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[upstream.host, cache.host])
    try:
        layout = random_layout(tmp_path / "lay", "v1")
        skopeo.copy(layout.ref, f"docker://{upstream.host}/app:v1")
        skopeo.copy(f"docker://{cache.host}/gone/app:v1", f"oci:{tmp_path / 'warm'}:v1")
        fresh = httpx.get(f"{cache.url}/v2/gone/app/manifests/v1",
                          headers={"Accept": layout.media_type})
        assert fresh.status_code == 200
        assert "X-Dockyard-Cache" not in fresh.headers
    finally:
        upstream.stop()

    time.sleep(1.2)  # past the tag's ttl: the cache tries upstream, which is gone
    resp = httpx.get(f"{cache.url}/v2/gone/app/manifests/v1",
                     headers={"Accept": layout.media_type})
    assert resp.status_code == 200
    assert sha256(resp.content) == layout.digest
    assert resp.headers["X-Dockyard-Cache"] == "stale"
    assert resp.headers["Warning"] == '110 - "Response is Stale"'
    skopeo.copy(f"docker://{cache.host}/gone/app:v1", f"oci:{tmp_path / 'cold'}:v1")
    # something never cached: the upstream's absence, in OCI form
    missing = httpx.get(f"{cache.url}/v2/gone/app/manifests/v2")
    assert missing.status_code == 503
    assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"


def answered_lately(url: str, code: str, headers: dict[str, str] | None = None) -> None:
    """GETs and HEADs of `url` are answered 404 `code` by the cache from a recorded "not
    found" (8 connections: both workers answer some)."""
    for method in ("GET", "HEAD") * 4:
        resp = httpx.request(method, url, headers=headers)
        assert resp.status_code == 404, (method, resp.status_code)
        if method == "GET":
            error = resp.json()["errors"][0]
            assert error["code"] == code
            assert "as it answered lately" in error["message"]


def test_a_name_missing_upstream_is_asked_for_again_only_after_not_found_ttl(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """For `not_found_ttl` after upstream said it has no tag (or digest), the cache
    answers 404 itself, from either worker, even once the tag exists upstream; then it
    asks again, and the tag pushed meanwhile pulls."""
    url = f"{cache.url}/v2/miss/nf/manifests/v1"
    asked_at = time.monotonic()
    first = httpx.get(url)
    assert first.status_code == 404
    assert first.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    asked = upstream_requests(dist, "/v2/up/nf/manifests/v1", "GET")
    assert asked >= 1

    layout = random_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/up/nf:v1", "--dest-creds", CREDS)
    answered_lately(url, "MANIFEST_UNKNOWN", {"Accept": layout.media_type})
    digest = "sha256:" + os.urandom(32).hex()
    by_digest = []
    for _ in range(3):
        resp = httpx.get(f"{cache.url}/v2/miss/nf/manifests/{digest}")
        assert resp.status_code == 404
        assert resp.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        by_digest.append(upstream_requests(dist, f"/v2/up/nf/manifests/{digest}"))
    assert time.monotonic() - asked_at < MISS_TTL, "too slow to test within the TTL"
    assert upstream_requests(dist, "/v2/up/nf/manifests/v1", "GET") == asked
    assert by_digest[0] >= 1
    assert by_digest[0] == by_digest[2]

    time.sleep(max(0.0, asked_at + MISS_TTL + 0.2 - time.monotonic()))
    assert digest_of_pull(skopeo, f"docker://{cache.host}/miss/nf:v1") == layout.digest
    assert upstream_requests(dist, "/v2/up/nf/manifests/v1", "GET") > asked


def test_a_blob_missing_upstream_is_asked_for_again_only_after_not_found_ttl(
        dist: Server, cache: Server) -> None:
    """A blob upstream lacks is answered 404 `BLOB_UNKNOWN` by the cache itself for
    `not_found_ttl`, to GETs and HEADs on either worker, even once upstream has it;
    then it is asked for again and pulls. Before, every request went upstream."""
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{cache.url}/v2/miss/blobnf/blobs/{digest}"
    asked_at = time.monotonic()
    first = httpx.get(url)
    assert first.status_code == 404
    assert first.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    asked = upstream_requests(dist, f"/v2/up/blobnf/blobs/{digest}")
    assert asked >= 1
    assert push_blob(dist, "up/blobnf", data, (USER, PASSWORD)) == digest
    answered_lately(url, "BLOB_UNKNOWN")
    assert time.monotonic() - asked_at < MISS_TTL, "too slow to test within the TTL"
    assert upstream_requests(dist, f"/v2/up/blobnf/blobs/{digest}") == asked

    time.sleep(max(0.0, asked_at + MISS_TTL + 0.2 - time.monotonic()))
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.content == data
    # upstream's "no such manifest" for the digest is another record: a registry may
    # hold bytes as a blob (a config) and not as a manifest
    assert httpx.get(f"{cache.url}/v2/miss/blobnf2/manifests/{digest}").status_code == 404
    assert push_blob(dist, "up/blobnf2", data, (USER, PASSWORD)) == digest
    resp = httpx.get(f"{cache.url}/v2/miss/blobnf2/blobs/{digest}")
    assert resp.status_code == 200, resp.text
    assert resp.content == data


@pytest.mark.parametrize(("path", "code"), [
    ("nf0/manifests/v1", "MANIFEST_UNKNOWN"),
    (f"blobnf0/blobs/sha256:{os.urandom(32).hex()}", "BLOB_UNKNOWN")],
    ids=["tag", "blob"])
def test_with_a_zero_not_found_ttl_every_pull_of_what_upstream_lacks_asks_upstream(
        dist: Server, cache: Server, path: str, code: str) -> None:
    counts = []
    for _ in range(3):
        resp = httpx.get(f"{cache.url}/v2/ask/{path}")
        assert resp.status_code == 404
        assert resp.json()["errors"][0]["code"] == code
        counts.append(upstream_requests(dist, f"/v2/up/{path}"))
    assert 1 <= counts[0] < counts[1] < counts[2]


def test_an_unreachable_upstream_is_not_taken_for_a_missing_name(
        cache: Server, gone_port: int, tmp_path: Path) -> None:
    """Only upstream's own "not found" is remembered: a pull while it is down answers
    503, and the tag pulls as soon as upstream has it (the rule's `not_found_ttl` is
    the default 30 s)."""
    down = httpx.get(f"{cache.url}/v2/gone/late/manifests/v1")
    assert down.status_code == 503
    assert down.json()["errors"][0]["code"] == "UNAVAILABLE"
    upstream = start_distribution(tmp_path / "up", port=gone_port)
    try:
        skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[upstream.host, cache.host])
        layout = random_layout(tmp_path / "lay", "v1")
        skopeo.copy(layout.ref, f"docker://{upstream.host}/late:v1")
        assert digest_of_pull(skopeo, f"docker://{cache.host}/gone/late:v1") == layout.digest
    finally:
        upstream.stop()


def proxy_counts(cache: Server) -> dict[tuple[str, str, str], float]:
    """The cache's `dockyard_proxy_*_total` counters, by (metric, prefix, outcome);
    summed over both workers by the server."""
    counts = {}
    for (name, labels), value in samples(httpx.get(f"{cache.url}/metrics").text).items():
        if name.startswith("dockyard_proxy_") and name.endswith("_total"):
            by = dict(labels)
            metric = name.removeprefix("dockyard_proxy_").removesuffix("_total")
            counts[metric, by["prefix"], by.get("outcome", "")] = value
    return counts


def test_the_metrics_say_how_manifest_pulls_were_answered_and_what_was_fetched(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    time.sleep(1.5)  # each worker adds its pulls to the shared figures once a second:
    before = proxy_counts(cache)  # those of the tests before are all in
    layout = random_layout(tmp_path / "lay", "v1")
    skopeo.copy(layout.ref, f"docker://{dist.host}/up/met:v1", "--dest-creds", CREDS)
    url = f"{cache.url}/v2/miss/met/manifests"
    accept = {"Accept": layout.media_type}
    assert httpx.get(f"{url}/v1", headers=accept).status_code == 200  # fetched
    for _ in range(3):
        assert httpx.get(f"{url}/v1", headers=accept).status_code == 200  # hits
    assert httpx.get(f"{url}/{layout.digest}", headers=accept).status_code == 200  # hit
    assert httpx.get(f"{url}/v9").status_code == 404  # asked upstream
    assert httpx.get(f"{url}/v9").status_code == 404  # answered from the miss
    down = httpx.get(f"{cache.url}/v2/gone/met/manifests/v1")
    assert down.status_code == 503
    fresh_skopeo(tmp_path, "pull", cache).copy(f"docker://{cache.host}/miss/met:v1",
                                               f"oci:{tmp_path / 'out'}:v1")
    time.sleep(1.5)
    after = proxy_counts(cache)

    def added(metric: str, prefix: str, outcome: str) -> float:
        key = (metric, prefix, outcome)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert added("manifest_pulls", "miss", "fetched") == 1
    assert added("manifest_pulls", "miss", "hit") >= 5  # and skopeo's own
    assert added("manifest_pulls", "miss", "not_found") == 1
    assert added("manifest_pulls", "miss", "not_found_cached") == 1
    assert added("manifest_pulls", "gone", "unavailable") == 1
    # the image's config and layer came from upstream once, bytes and all
    manifest = layout.manifest()
    sizes = [d["size"] for d in manifest["layers"]] + [manifest["config"]["size"]]
    assert added("blob_fetches", "miss", "stored") == len(sizes)
    assert added("blob_fetched_bytes", "miss", "") == sum(sizes)
    assert added("blob_fetches", "miss", "failed") == 0


def test_concurrent_pulls_of_an_uncached_blob_fetch_it_once(
        dist: Server, cache: Server) -> None:
    data = os.urandom(64 * 1024 * 1024)
    digest = push_blob(dist, "up/big", data, (USER, PASSWORD))
    del data
    url = f"{cache.url}/v2/hub/up/big/blobs/{digest}"

    def pull(_: int) -> tuple[str, int]:
        h = hashlib.sha256()
        with httpx.Client(timeout=300) as client, client.stream("GET", url) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_bytes():
                h.update(chunk)
        return "sha256:" + h.hexdigest(), int(r.headers["Content-Length"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(pull, range(8)))
    assert results == [(digest, 64 * 1024 * 1024)] * 8
    assert upstream_requests(dist, f"/v2/up/big/blobs/{digest}", "GET") == 1
    assert pull(0) == (digest, 64 * 1024 * 1024)  # now from the cache
    assert upstream_requests(dist, f"/v2/up/big/blobs/{digest}", "GET") == 1


def test_a_first_puller_that_stops_reading_holds_up_no_one(
        dist: Server, tmp_path: Path) -> None:
    # a client that starts the fetch and then takes no byte (stalled, or a slow link)
    # is cut off after `http.body_timeout`; the fetch goes on at upstream's speed and
    # the next pull gets the blob. Before, the fetch went at the first puller's pace:
    # the next pull waited as long as that client held its connection open.
    data = os.urandom(64 * 1024 * 1024)  # far past what socket buffers hold
    digest = push_blob(dist, "up/stall", data, (USER, PASSWORD))
    del data
    config = write_config(
        tmp_path / "config.yml", log={"level": "info"}, http={"body_timeout": "2s"},
        proxy=[{"prefix": "hub", "upstream": dist.url, "fetch_wait": "60s",
                "credentials": {"username": USER, "password_env": "DIST_PASSWORD"}}])
    cache = start_dockyard(tmp_path / "data", config=config,
                           env={"DIST_PASSWORD": PASSWORD})
    path = f"/v2/hub/up/stall/blobs/{digest}"
    try:
        stalled = socket.create_connection(("127.0.0.1", cache.port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: {cache.host}\r\n\r\n".encode())
        head = stalled.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        began = time.monotonic()
        h = hashlib.sha256()
        with httpx.Client(timeout=90) as client, client.stream("GET", cache.url + path) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_bytes():
                h.update(chunk)
        took = time.monotonic() - began
        assert "sha256:" + h.hexdigest() == digest
        assert took < 45, f"the second pull waited {took:.0f} s"
        # the stalled client got a cut stream, not the whole blob
        stalled.settimeout(30)
        got = len(head)
        while chunk := stalled.recv(1 << 20):
            got += len(chunk)
        stalled.close()
        assert got < 64 * 1024 * 1024, "the stalled pull got the whole blob"
        assert upstream_requests(dist, f"/v2/up/stall/blobs/{digest}", "GET") == 1
    finally:
        cache.stop()
    log = cache.log.read_text(errors="replace")
    # cut by the fetch's tee (`follow_lag`) or, first, by the response's own bound on a
    # stalled write (`http.body_timeout` too): either way that client, not the fetch
    assert ("the first pull took no byte for 2 s" in log
            or "the client took no byte for 2s" in log), log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def push_blob(server: Server, repo: str, data: bytes,
              auth: tuple[str, str] | None = None) -> str:
    """Push `data` as a blob (POST, then PUT ?digest=: Distribution 2.8 has no
    monolithic POST); its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url, auth=auth, timeout=120) as up:
        started = up.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        sep = "&" if "?" in location else "?"
        resp = up.put(f"{location}{sep}digest={digest}", content=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    return digest


def test_an_upstream_dying_mid_blob_cuts_the_pull_and_keeps_nothing(
        cache: Server, holding: HoldingProxy, tmp_path: Path) -> None:
    # bigger than what the kernel's socket buffers hold, so the kill does cut it
    data = os.urandom(48 * 1024 * 1024)
    upstream = start_distribution(tmp_path / "cut", port=holding.target_port)
    try:
        digest = push_blob(upstream, "app", data)
        url = f"{cache.url}/v2/cut/app/blobs/{digest}"
        holding.hold_after = holding.forwarded + 2 * 1024 * 1024

        def pull() -> int | str:
            got = 0
            try:
                with httpx.stream("GET", url, timeout=60) as r:
                    assert r.status_code == 200
                    for chunk in r.iter_bytes():
                        got += len(chunk)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return got

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(pull)
            assert holding.held.wait(60)
            upstream.proc.kill()  # the upstream dies with the blob half sent
            upstream.proc.wait()
            holding.release()
            result = first.result(60)
        assert result != len(data), "the cut pull looked complete"
        assert not list((cache.data / "blobs").glob(f"sha256/{digest[7:9]}/{digest[7:]}"))
        assert not [f for f in (cache.data / "uploads").glob("*") if f.stat().st_size], \
            "the cut fetch left its bytes behind"

        upstream = start_distribution(tmp_path / "cut", port=holding.target_port)
        with httpx.stream("GET", url, timeout=60) as r:
            assert r.status_code == 200
            body = r.read()
        assert hashlib.sha256(body).hexdigest() == digest[7:]
    finally:
        upstream.stop()


# ---------------------------------------------------------------- writes refused


def test_pushes_and_deletes_into_a_cache_are_refused_naming_the_upstream(
        dist: Server, cache: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    def refused(resp: httpx.Response) -> None:
        assert resp.status_code == 403, resp.text
        error = resp.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert dist.url in error["message"]

    base = f"{cache.url}/v2/hub/up/pushed"
    refused(httpx.post(f"{base}/blobs/uploads/"))
    refused(httpx.post(f"{base}/blobs/uploads/?digest=sha256:{'0' * 64}", content=b""))
    refused(httpx.post(f"{base}/blobs/uploads/?mount=sha256:{'0' * 64}&from=other/repo"))
    refused(httpx.put(f"{base}/manifests/v1", content=b"{}",
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    refused(httpx.delete(f"{base}/manifests/sha256:{'0' * 64}"))
    refused(httpx.delete(f"{base}/blobs/sha256:{'0' * 64}"))

    layout = random_layout(tmp_path / "lay", "v1", layer_sizes=(1000,))
    result = skopeo.copy(layout.ref, f"docker://{cache.host}/hub/up/pushed:v1", check=False)
    assert result.returncode != 0
    assert "denied" in result.stderr.lower()
    # outside the prefix, pushes work as ever
    skopeo.copy(layout.ref, f"docker://{cache.host}/local/app:v1")


# ---------------------------------------------------------------- retention


def test_cache_retention_collects_what_was_not_pulled_within_the_window(
        dist: Server, skopeo: Skopeo, tmp_path: Path) -> None:
    """A cache whose rule keeps content 2 s after its last pull, collected every second."""
    config = write_config(
        tmp_path / "config.yml", log={"level": "info"},
        # a grace of 0 let a collection take the blob a pull had just fetched and
        # claimed, before its link: the pull got a 503 (once in CI); a second is far
        # longer than a fetch's claim-to-link, far shorter than the wait below
        gc={"interval": "1s", "grace": "1s"},
        retention={"pull_flush_interval": "1s"},
        proxy=[{"prefix": "short", "upstream": dist.url, "retention": "2s",
                "credentials": {"username": USER, "password_env": "DIST_PASSWORD"}},
               {"prefix": "long", "upstream": dist.url, "retention": "30d",
                "credentials": {"username": USER, "password_env": "DIST_PASSWORD"}}])
    cache = start_dockyard(tmp_path / "data", config=config,
                           env={"DIST_PASSWORD": PASSWORD})
    try:
        gone = random_layout(tmp_path / "gone", "v1")
        kept = random_layout(tmp_path / "kept", "v1")
        skopeo.copy(gone.ref, f"docker://{dist.host}/up/ret:v1", "--dest-creds", CREDS)
        skopeo.copy(kept.ref, f"docker://{dist.host}/up/keep:v1", "--dest-creds", CREDS)
        puller = Skopeo(tmp_path / "puller", insecure_hosts=[cache.host])
        puller.copy(f"docker://{cache.host}/short/up/ret:v1", f"oci:{tmp_path / 'o1'}:v1")
        puller.copy(f"docker://{cache.host}/long/up/keep:v1", f"oci:{tmp_path / 'o2'}:v1")

        def stored(layout: Layout) -> Path:
            layer = layout.layer_digests()[0].split(":", 1)[1]
            return tmp_path / "data" / "blobs" / "sha256" / layer[:2] / layer / "data"

        assert stored(gone).exists()
        assert stored(kept).exists()
        deadline = time.monotonic() + 60
        while stored(gone).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not stored(gone).exists(), "the short-lived cache's layer was never collected"
        short = httpx.get(f"{cache.url}/v2/short/up/ret/tags/list")
        assert short.status_code == 404 or not short.json().get("tags")
        assert httpx.get(f"{cache.url}/admin/v1/cache/short/up/ret").json()["tags"] == []
        # the other cache's content, pulled as long ago, stays
        assert stored(kept).exists()
        assert httpx.get(f"{cache.url}/v2/long/up/keep/tags/list").json()["tags"] == ["v1"]
        # and what was collected comes back from upstream on the next pull
        assert sha256(puller.inspect_raw(f"docker://{cache.host}/short/up/ret:v1")) == \
            gone.digest
    finally:
        cache.stop()
