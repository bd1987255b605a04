"""What Dockyard reads into memory from someone else's registry is bounded.

A manifest, a tags page, a token or an error body that never ends (or announces a
gigantic length) is refused once past its limit (`received.read_at_most`: manifests 4
MiB or `limits.manifest_max_size`, listing pages 32 MiB, tokens and errors 1 MiB), with a
one-line error, and the process reading it never holds more than that: the class of
CVE-2020-1702 in containers/image. Checked with `dockyard copy` (the CLI's peak RSS, by
`getrusage` of a wrapper whose only child it is) and with a pull-through cache (the
workers' `VmHWM`, their peak RSS, before and after). Time is bounded too: a host that
takes connections and never answers is named in seconds.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.authenv import write_config
from tests.support.hostile import (
    LYING_MANIFEST,
    MANIFEST,
    WRONG_BYTES,
    WRONG_LAYER,
    HostileRegistry,
)
from tests.support.images import random_layout
from tests.support.servers import Server, start_dockyard

MiB = 1024 * 1024
#: what a `dockyard copy` process may reach at its peak here (it idles at about 60 MiB)
COPY_PEAK = 160 * MiB

_WRAPPER = """
import json, resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(json.dumps({"code": run.returncode, "err": run.stderr, "out": run.stdout,
                  "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def dockyard(*args: str) -> dict[str, object]:
    """Run `dockyard ARGS` as the only child of a wrapper: exit code, output, and its
    peak RSS in bytes."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "dockyard",
                          *args], capture_output=True, text=True, timeout=180, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def copy(*args: str) -> dict[str, object]:
    """`dockyard copy ARGS` (`dockyard`), TLS unverified."""
    return dockyard("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *args)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hostile_token() -> Iterator[HostileRegistry]:
    server = HostileRegistry(token=True)
    server.start()
    yield server
    server.stop()


def refused(result: dict[str, object], limit: str) -> str:
    err = str(result["err"]).strip()
    assert result["code"] == 1, result
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert f"larger than {limit}" in err, err
    assert isinstance(result["maxrss"], int)
    assert result["maxrss"] < COPY_PEAK, f"peak RSS {result['maxrss'] / MiB:.0f} MiB"
    return err


def test_an_endless_manifest_is_refused_past_4_mib(hostile: HostileRegistry,
                                                  tmp_path: Path) -> None:
    before = hostile.sent
    result = copy(f"{hostile.host}/endless/app:v1", f"oci:{tmp_path / 'layout'}:v1")
    refused(result, "4 MiB")
    assert hostile.sent - before < hostile.size // 4  # it stopped reading early
    assert not (tmp_path / "layout" / "index.json").exists()


def test_a_manifest_announcing_a_huge_length_is_refused_at_its_header(
        hostile: HostileRegistry, tmp_path: Path) -> None:
    before = hostile.sent
    result = copy(f"{hostile.host}/declared/app:v1", f"oci:{tmp_path / 'layout'}:v1")
    refused(result, "4 MiB")
    assert hostile.sent - before < 16 * MiB


def test_an_index_child_whose_digest_is_a_tag_is_refused(hostile: HostileRegistry,
                                                         tmp_path: Path) -> None:
    """A child listed with the "digest" `latest` is not fetched by that tag and written
    under it at the destination: the copy stops, in one line, before writing anything."""
    layout = tmp_path / "layout"
    result = copy(f"{hostile.host}/forged/app:top", f"oci:{layout}:v1")
    err = str(result["err"]).strip()
    assert result["code"] == 1, result
    assert len(err.splitlines()) == 1, err
    assert "invalid digest format: 'latest'" in err, err
    index = layout / "index.json"
    refs = ([(m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
             for m in json.loads(index.read_text())["manifests"]] if index.exists() else [])
    assert refs == [], refs


@pytest.mark.parametrize(("kind", "said"), [("nested", "at depth 9"),
                                           ("wide", "lists 1001 manifests")])
def test_indexes_nested_too_deep_or_too_wide_stop_the_copy(
        hostile: HostileRegistry, tmp_path: Path, kind: str, said: str) -> None:
    result = copy(f"{hostile.host}/{kind}/app:top", f"oci:{tmp_path / 'layout'}:v1")
    err = str(result["err"]).strip()
    assert result["code"] == 1, result
    assert said in err, err
    assert len(err.splitlines()) == 1, err


def test_an_endless_tags_page_is_refused_past_32_mib(hostile: HostileRegistry,
                                                    tmp_path: Path) -> None:
    result = copy("--all-tags", f"{hostile.host}/endless/app", f"oci:{tmp_path / 'layout'}")
    refused(result, "32 MiB")


def test_endless_referrers_stop_the_copy_past_10000(hostile: HostileRegistry,
                                                   tmp_path: Path) -> None:
    """Pages of referrers without end: the copy stops once they list more than it would
    copy (10,000), not at the million a listing may hold (~0.5 GiB parsed)."""
    result = copy("--referrers", f"{hostile.host}/referring/app:v1",
                  f"oci:{tmp_path / 'layout'}:v1")
    err = str(result["err"]).strip()
    assert result["code"] == 1, result
    assert "Traceback" not in err, err  # the image's line, then the error's
    assert "more than 10,000 referrers" in err.splitlines()[-1], err
    assert isinstance(result["maxrss"], int)
    assert result["maxrss"] < COPY_PEAK, f"peak RSS {result['maxrss'] / MiB:.0f} MiB"


def test_an_endless_token_is_refused_past_1_mib(hostile_token: HostileRegistry,
                                               tmp_path: Path) -> None:
    result = copy(f"{hostile_token.host}/endless/app:v1", f"oci:{tmp_path / 'layout'}:v1")
    err = refused(result, "1 MiB")
    assert "token service" in err


@pytest.fixture
def silent() -> Iterator[str]:
    """host:port of a listener whose connections the kernel completes and nothing ever
    reads or answers: a hung registry."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("end", ["source", "destination"])
def test_a_host_that_never_answers_is_named_in_seconds(silent: str, tmp_path: Path,
                                                      end: str) -> None:
    # unverified TLS probes HTTPS, then HTTP (a plain server may wait for a line end a
    # TLS hello never sends); before, the copy then waited out a manifest request's
    # 120 s on the HTTP it fell back to. The message names the hung end: before, a
    # destination that failed to open was reported under the source's name
    hung, layout = f"{silent}/app:v1", f"oci:{tmp_path / 'layout'}:v1"
    src, dst = (hung, layout) if end == "source" else (layout, hung)
    started = time.monotonic()
    result = copy(src, dst)
    took = time.monotonic() - started
    err = str(result["err"]).strip()
    assert result["code"] == 1, result
    assert err.splitlines() == [f"Error: {hung}: {silent} answered neither HTTPS "
                                "nor HTTP within 10 s"]
    assert took < 60, took
    assert not (tmp_path / "layout").exists()


def test_status_refuses_an_endless_metrics_page_past_32_mib(hostile: HostileRegistry,
                                                            tmp_path: Path) -> None:
    """`dockyard status --url` may name any server: its `/metrics` is read bounded (it
    was read whole, for up to 5 s at the speed of the network)."""
    data = str(tmp_path / "data")
    (tmp_path / "data").mkdir()  # where a registry is meant to be: gc makes its stores
    subprocess.run([sys.executable, "-m", "dockyard", "gc", "--data", data],
                   capture_output=True, timeout=60, check=True)
    result = dockyard("status", "--data", data, "--url", f"http://{hostile.host}", "--json")
    server = json.loads(str(result["out"]))["server"]
    assert server["reachable"] is False, server
    assert "larger than 32 MiB" in server["error"], server
    assert isinstance(result["maxrss"], int)
    assert result["maxrss"] < COPY_PEAK, f"peak RSS {result['maxrss'] / MiB:.0f} MiB"


# ---------------------------------------------------------------- a pull-through cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, hostile: HostileRegistry
          ) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cache")
    config = write_config(tmp / "config.yml", proxy=[
        {"prefix": "bad", "upstream": f"http://{hostile.host}", "tag_ttl": "1s",
         "fetch_wait": "4s"}])
    server = start_dockyard(tmp / "data", config=config, workers=2)
    yield server
    server.stop()


def peaks(server: Server) -> list[int]:
    """The peak RSS (`VmHWM`) of each of the server's workers, in bytes."""
    out = []
    for child in psutil.Process(server.proc.pid).children():
        status = Path(f"/proc/{child.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines()
                   if line.startswith("VmHWM:"))
        out.append(int(kib) * 1024)
    assert out, "no worker found"
    return out


def test_a_cache_refuses_an_endless_upstream_manifest_without_holding_it(
        cache: Server, hostile: HostileRegistry) -> None:
    before = peaks(cache)
    for kind in ("endless", "declared"):
        resp = httpx.get(f"{cache.url}/v2/bad/{kind}/app/manifests/v1", timeout=60)
        assert resp.status_code == 503, resp.text
        error = resp.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE"
        assert "larger than 4 MiB" in error["message"]
        assert resp.headers.get("Retry-After")
    after = peaks(cache)
    grown = [a - b for a, b in zip(after, before, strict=True)]
    assert max(grown) < 48 * MiB, f"a worker's peak RSS grew {max(grown) / MiB:.0f} MiB"
    # the cache keeps serving
    assert httpx.get(f"{cache.url}/v2/", timeout=10).status_code == 200


def test_a_cache_rechecks_a_tag_whose_upstream_digest_header_is_not_a_digest(
        cache: Server) -> None:
    """Upstream answers a HEAD by tag with `Docker-Content-Digest: sha256:NOTHEX`: the
    re-check after the tag's TTL hashes the manifest instead (same bytes: the tag has
    not moved), and never asks upstream for a manifest by that text."""
    url = f"{cache.url}/v2/bad/lying/app/manifests/v1"
    want = "sha256:" + hashlib.sha256(LYING_MANIFEST).hexdigest()
    first = httpx.get(url, headers={"Accept": MANIFEST}, timeout=30)
    assert first.status_code == 200, first.text
    assert first.headers["Docker-Content-Digest"] == want
    time.sleep(1.5)  # past the rule's 1 s tag TTL: the next pull re-checks upstream
    again = httpx.get(url, headers={"Accept": MANIFEST}, timeout=30)
    assert again.status_code == 200, again.text
    assert again.headers["Docker-Content-Digest"] == want
    assert again.content == LYING_MANIFEST
    assert "X-Dockyard-Cache" not in again.headers  # re-checked, not served stale


def _first_pull(url: str) -> tuple[int, int, str]:
    """A first pull of an uncached blob, read to its end: status, bytes received, and
    how it ended ("complete", or the client's error)."""
    got, status, ended = 0, 0, "complete"
    try:
        with httpx.stream("GET", url, timeout=30) as r:
            status = r.status_code
            for chunk in r.iter_bytes():
                got += len(chunk)
    except httpx.HTTPError as exc:
        ended = type(exc).__name__
    return status, got, ended


def test_a_cache_never_completes_a_pull_of_bytes_that_do_not_match_the_digest(
        cache: Server) -> None:
    """Upstream sends other bytes than the digest names: the first puller (streamed as
    the bytes arrive) never gets the whole body with its 200, where it got all 1 MiB of
    the wrong bytes; a puller waiting for a fetch (of a range, on whichever worker)
    gets 503 UNAVAILABLE with Retry-After (the upstream's fault), where it got 400
    DIGEST_INVALID as if its GET were wrong."""
    layer = "sha256:" + hashlib.sha256(WRONG_LAYER).hexdigest()
    url = f"{cache.url}/v2/bad/wrong/app/blobs/{layer}"
    assert httpx.get(f"{cache.url}/v2/bad/wrong/app/manifests/v1",
                     headers={"Accept": MANIFEST}, timeout=30).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_first_pull, url)
        time.sleep(0.3)  # the fetch runs: a pull of a range waits for a fetch to end
        again = httpx.get(url, headers={"Range": "bytes=0-99"}, timeout=30)
        status, got, ended = first.result(30)
    assert (status, got == len(WRONG_BYTES)) != (200, True), (status, got, ended)
    assert again.status_code == 503, again.text
    error = again.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "sent blob" in error["message"]
    assert again.headers.get("Retry-After")
    assert not list((cache.data / "blobs").glob(f"sha256/{layer[7:9]}/{layer[7:]}"))


def test_a_first_puller_waits_no_longer_than_fetch_wait_for_a_stalled_upstream(
        cache: Server) -> None:
    """Upstream sends 5,000 bytes of the blob, then nothing: the first puller gets 503
    after the rule's `fetch_wait` (4 s here), where it waited for the upstream client's
    5-minute stall bound before any status line."""
    layer = "sha256:" + hashlib.sha256(WRONG_LAYER).hexdigest()
    assert httpx.get(f"{cache.url}/v2/bad/stalling/app/manifests/v1",
                     headers={"Accept": MANIFEST}, timeout=30).status_code == 200
    started = time.monotonic()
    resp = httpx.get(f"{cache.url}/v2/bad/stalling/app/blobs/{layer}", timeout=60)
    took = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert 3.5 < took < 15, took


def test_a_sync_leaves_out_listed_names_that_are_no_tag_and_says_so(
        hostile: HostileRegistry, tmp_path: Path) -> None:
    """A 5,000-digit "version" in the upstream's listing failed the source with a
    traceback on every run (Python refuses to make an int of it); a listed name longer
    than any tag is dropped as it is read, other names no tag may have are left out
    with a warning, and the rest is mirrored."""
    config = tmp_path / "mirror.yml"
    config.write_text(json.dumps({"mirror": [{
        "registry": hostile.host, "repository": "wrong/app", "tls_verify": False,
        "newest": 1, "destination": "app", "retries": 0}]}))
    run = dockyard("sync", "--config", str(config), "--data", str(tmp_path / "data"),
                   "--dry-run", "--json")
    assert run["code"] == 0, run
    assert "Traceback" not in str(run["err"]), run["err"]
    report = json.loads(str(run["out"]))["sources"][0]
    assert report["status"] == "ok", report
    assert report["added"] == ["2.0"]
    assert report["upstream_tags"] == 3
    assert report["warnings"] == [
        "left out 1 listed name(s) that are no valid tag (the first: 'not a tag')"]


def test_a_blob_sent_past_its_size_is_cut_off_at_it(hostile: HostileRegistry,
                                                   tmp_path: Path) -> None:
    """Into an OCI layout, a layer whose body goes on past the descriptor's size (1 MiB)
    was written until the body ended (a source without end fills the disk); the copy
    stops at the size, with one line, and leaves no image in the layout."""
    before = hostile.sent
    result = copy(f"{hostile.host}/overlong/app:v1", f"oci:{tmp_path / 'layout'}:v1")
    err = str(result["err"]).strip().splitlines()[-1]  # after a line per blob copied
    assert result["code"] == 1, result
    assert err.startswith("Error: "), err
    assert err.endswith(": it sent more than the 1048576 bytes the manifest says"), err
    assert hostile.sent - before < 64 * MiB
    assert not (tmp_path / "layout" / "index.json").exists() or \
        "v1" not in (tmp_path / "layout" / "index.json").read_text()


def test_a_document_nested_past_the_decoder_is_one_line(tmp_path: Path) -> None:
    """An OCI layout whose index, or whose manifest, nests 100,000 arrays: one line,
    where a RecursionError traceback ended the copy (and a sync's whole source)."""
    deep = b"[" * 100_000 + b"]" * 100_000
    index_layout = tmp_path / "index"
    index_layout.mkdir()
    (index_layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (index_layout / "index.json").write_bytes(b'{"manifests": ' + deep + b"}")
    manifest_layout = tmp_path / "manifest"
    blobs = manifest_layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (manifest_layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    body = b'{"schemaVersion": 2, "layers": ' + deep + b"}"
    digest = hashlib.sha256(body).hexdigest()
    (blobs / digest).write_bytes(body)
    (manifest_layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": MANIFEST, "digest": f"sha256:{digest}", "size": len(body),
         "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    for layout in (index_layout, manifest_layout):
        result = copy(f"oci:{layout}:v1", f"oci:{tmp_path / 'out'}:v1")
        err = str(result["err"]).strip()
        assert result["code"] == 1, result
        assert len(err.splitlines()) == 1, err
        assert "nested too deeply" in err, err


def test_a_layout_whose_blobs_are_a_link_elsewhere_is_not_written_through(
        tmp_path: Path) -> None:
    """A destination layout whose `blobs` is a symbolic link: the copy wrote the blobs
    where the link pointed, outside the layout; now it stops with one line."""
    source = random_layout(tmp_path / "src", "v1", layer_sizes=(4096,))
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "blobs").symlink_to(outside)
    result = copy(f"oci:{source.path}:v1", f"oci:{dest}:v1")
    err = str(result["err"]).strip().splitlines()[-1]
    assert result["code"] == 1, result
    assert err.startswith("Error: "), err
    assert "a symbolic link" in err, err
    assert list(outside.iterdir()) == []
    # a layout read from may keep its blobs elsewhere (another disk): what is read is
    # checked by digest
    moved = tmp_path / "moved"
    (source.path / "blobs").rename(moved)
    (source.path / "blobs").symlink_to(moved)
    result = copy(f"oci:{source.path}:v1", f"oci:{tmp_path / 'plain'}:v1")
    assert result["code"] == 0, result
