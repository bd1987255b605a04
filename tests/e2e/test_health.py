"""Health, readiness, metrics and `dockyard status` against real servers.

Readiness is proven against real failures: PostgreSQL stopped under a running server,
and the blob storage made read-only by a read-only bind mount (root ignores file
permissions, a read-only mount it cannot).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import SCRIPT, postgres_unavailable
from tests.support.prom import samples
from tests.support.servers import Server, free_port, start_dockyard


def _checks(response: httpx.Response) -> dict[str, str]:
    return {c["name"]: c["status"] for c in response.json()["checks"]}


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _push_small_image(url: str, repo: str, tag: str = "v1") -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    r = httpx.post(f"{url}/v2/{repo}/blobs/uploads/?digest={digest}", content=config)
    assert r.status_code == 201, r.text
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest, "size": len(config)},
        "layers": []}).encode()
    r = httpx.put(f"{url}/v2/{repo}/manifests/{tag}", content=manifest,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("health") / "data"
    s = start_dockyard(data, workers=2)
    yield s
    s.stop()


def test_healthz_and_readyz_answer_without_credentials(server: Server) -> None:
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 200, r.text
    assert _checks(r) == {"metadata": "ok", "migrations": "ok", "storage": "ok", "disk": "ok"}
    assert all(c["latency_ms"] >= 0 for c in r.json()["checks"])


def test_health_requests_are_not_logged_at_info(tmp_path: Path) -> None:
    s = start_dockyard(tmp_path / "data", workers=1,
                       env={"DOCKYARD_LOG_ACCESSLOG": "true"})
    try:
        for _ in range(3):
            assert httpx.get(s.url + "/healthz").status_code == 200
            assert httpx.get(s.url + "/readyz").status_code == 200
            assert httpx.get(s.url + "/metrics").status_code == 200
        assert httpx.get(s.url + "/v2/").status_code == 200
    finally:
        s.stop()
    text = s.log.read_text()
    assert '"GET /v2/ HTTP/1.1" 200' in text  # the access log is on
    assert "/metrics" not in text
    assert "/healthz" not in text
    assert "/readyz" not in text


def test_metrics_sum_every_worker_by_route_id(server: Server) -> None:
    repo = "health/metrics"
    _push_small_image(server.url, repo)
    # many connections, so both workers answer some
    for _ in range(40):
        with httpx.Client() as c:
            assert c.get(f"{server.url}/v2/{repo}/manifests/v1").status_code == 200
    with httpx.Client() as c:
        assert c.get(f"{server.url}/v2/{repo}/manifests/nope").status_code == 404

    def key(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("dockyard_http_requests_total",
                (("method", "GET"), ("route", "manifest"), ("status", status)))

    writes = ("dockyard_metadata_duration_seconds_count", (("kind", "write"),))

    def counted() -> bool:
        # each worker moves its figures to the shared files once a second: the 200s of
        # one worker can be there before the other's 404
        s = samples(httpx.get(server.url + "/metrics").text)
        return s.get(key("200"), 0) >= 40 and s.get(key("404"), 0) >= 1 and \
            s.get(writes, 0) >= 2

    _wait(counted)
    text = httpx.get(server.url + "/metrics").text
    s = samples(text)
    assert s[("dockyard_workers", ())] == 2
    assert s[key("200")] >= 40
    assert s[key("404")] >= 1
    assert s[("dockyard_objects", (("kind", "manifests"),))] >= 1
    assert s[("dockyard_ready", ())] == 1
    assert s[writes] >= 2  # the push's metadata writes (a blob, the manifest)
    assert s[("dockyard_uploads_in_flight", ())] == 0  # every upload request ended
    assert ("dockyard_storage_bytes", (("kind", "free"),)) in s
    # never the raw path: no repository name or tag in any label
    assert repo not in text
    assert "nope" not in text


def test_metrics_refused_to_an_address_not_allowed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("metrics:\n  allow_from: [10.9.9.9/32]\n")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    try:
        r = httpx.get(s.url + "/metrics")
        assert r.status_code == 403
        assert r.json()["errors"][0]["code"] == "DENIED"
        assert httpx.get(s.url + "/readyz").status_code == 200  # still public
    finally:
        s.stop()


def test_metrics_allow_list_from_the_environment(tmp_path: Path) -> None:
    # a deployment configured by environment alone (a unit's Environment=, a pod spec)
    # could set no list: the server refused to start, "Input should be a valid list"
    refused = start_dockyard(tmp_path / "a" / "data", workers=1,
                             env={"DOCKYARD_METRICS_ALLOW_FROM": "10.9.9.9/32"})
    try:
        assert httpx.get(refused.url + "/metrics").status_code == 403
    finally:
        refused.stop()
    allowed = start_dockyard(tmp_path / "b" / "data", workers=1,
                             env={"DOCKYARD_METRICS_ALLOW_FROM": "[10.9.9.9/32, 127.0.0.1/32]"})
    try:
        r = httpx.get(allowed.url + "/metrics")
        assert r.status_code == 200
        assert "dockyard_workers" in r.text
    finally:
        allowed.stop()


def test_metrics_for_a_listed_user_with_htpasswd(tmp_path: Path) -> None:
    import bcrypt

    users = tmp_path / "htpasswd"
    users.write_text(
        "ops:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode() + ":admins\n"
        "dev:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode() + "\n")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"auth:\n  method: htpasswd\n  htpasswd:\n    path: {users}\n"
                   "  access:\n    - repository: '**'\n      allow:\n        anonymous: [pull]\n"
                   "metrics:\n  allow_from: []\n  allow: [group:admins]\n")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    try:
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/metrics", auth=("dev", "secret")).status_code == 403
        r = httpx.get(s.url + "/metrics", auth=("ops", "secret"))
        assert r.status_code == 200
        assert "dockyard_http_requests_total" in r.text
        assert httpx.get(s.url + "/healthz").status_code == 200
        _wait(lambda: "dockyard_auth_failures_total{reason=\"denied\"}" in httpx.get(
            s.url + "/metrics", auth=("ops", "secret")).text)
    finally:
        s.stop()


def test_metrics_on_the_debug_listener_only(tmp_path: Path) -> None:
    debug = free_port()
    s = start_dockyard(tmp_path / "data", workers=2,
                       env={"DOCKYARD_HTTP_DEBUG_ADDR": f"127.0.0.1:{debug}"})
    try:
        assert httpx.get(s.url + "/metrics").status_code == 404
        assert httpx.get(s.url + "/readyz").status_code == 404
        r = httpx.get(f"http://127.0.0.1:{debug}/metrics")
        assert r.status_code == 200
        assert "dockyard_workers 2.0" in r.text
        assert httpx.get(f"http://127.0.0.1:{debug}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{debug}/v2/").status_code == 404
    finally:
        s.stop()


def test_a_killed_worker_is_counted_as_a_restart(tmp_path: Path) -> None:
    import psutil

    s = start_dockyard(tmp_path / "data", workers=2)
    try:
        children = psutil.Process(s.proc.pid).children()
        assert len(children) == 2
        children[0].kill()
        _wait(lambda: "dockyard_worker_restarts_total 1.0" in httpx.get(
            s.url + "/metrics").text)
        _wait(lambda: "dockyard_workers 2.0" in httpx.get(s.url + "/metrics").text)
    finally:
        s.stop()


def test_a_killed_runs_metrics_directory_goes_at_the_next_start(tmp_path: Path) -> None:
    # a supervisor killed -9 (the OOM killer) cannot remove its metrics directory: one
    # stayed in /tmp per such start, for ever (CI's machine had 69, one of 15 MB)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    first = start_dockyard(tmp_path / "data", workers=2, env={"TMPDIR": str(tmp)})
    first.proc.kill()  # the supervisor; its workers follow it
    first.proc.wait(10)
    killed = tmp / f"dockyard-metrics-{first.proc.pid}"
    assert killed.is_dir()
    alive = tmp / f"dockyard-metrics-{os.getpid()}"  # a live process's: not ours to take
    alive.mkdir()
    other = tmp / "dockyard-metrics-notes"
    other.mkdir()
    second = start_dockyard(tmp_path / "data", workers=2, env={"TMPDIR": str(tmp)})
    try:
        assert not killed.exists()
        assert alive.is_dir()
        assert other.is_dir()
        assert (tmp / f"dockyard-metrics-{second.proc.pid}").is_dir()
        assert "removed 1 metrics directory of earlier runs" in second.log.read_text()
        assert "dockyard_workers 2.0" in httpx.get(second.url + "/metrics").text
    finally:
        second.stop()
    assert not (tmp / f"dockyard-metrics-{second.proc.pid}").exists()


# ------------------------------------------------------------ readiness failing


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """`path` read-only for everyone, root included: a read-only bind mount on itself."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_readiness_fails_while_blob_storage_is_read_only(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    data = tmp_path / "data"
    env = {"DOCKYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'metadata.db'}"}
    s = start_dockyard(data, workers=1, env=env)
    try:
        assert httpx.get(s.url + "/readyz").status_code == 200
        with _read_only(data):
            time.sleep(2)  # past the cached result
            r = httpx.get(s.url + "/readyz")
            assert r.status_code == 503, r.text
            checks = _checks(r)
            assert checks["storage"] == "failing"
            assert checks["metadata"] == "ok"
            detail = next(c for c in r.json()["checks"] if c["name"] == "storage")["detail"]
            assert "Read-only" in detail
            assert httpx.get(s.url + "/healthz").status_code == 200
        time.sleep(2)
        assert httpx.get(s.url + "/readyz").status_code == 200
    finally:
        s.stop()


def test_readiness_fails_while_postgresql_is_stopped(tmp_path: Path) -> None:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
    home.chmod(0o755)
    port = free_port()

    def pg(*args: str) -> str:
        done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    server: Server | None = None
    try:
        url = pg("start", str(home), str(port))
        server = start_dockyard(tmp_path / "data", workers=2,
                                env={"DOCKYARD_DATABASE_URL": url})
        assert httpx.get(server.url + "/readyz").status_code == 200
        pg("stop", str(home))
        time.sleep(2)
        r = httpx.get(server.url + "/readyz", timeout=10)
        assert r.status_code == 503, r.text
        checks = _checks(r)
        assert checks["metadata"] == "failing"
        assert checks["migrations"] == "failing"
        assert checks["storage"] == "ok"
        assert httpx.get(server.url + "/healthz").status_code == 200
        # the metrics still answer, with the readiness in them
        m = httpx.get(server.url + "/metrics", timeout=10)
        assert m.status_code == 200
        assert "dockyard_ready 0.0" in m.text
        pg("start", str(home), str(port))
        _wait(lambda: httpx.get(server.url + "/readyz", timeout=10).status_code == 200,
              timeout=30)
    finally:
        if server is not None:
            server.stop()
        subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------ dockyard status


def test_status_json_reads_the_stores_and_asks_the_server(server: Server) -> None:
    _push_small_image(server.url, "health/status")
    done = subprocess.run(
        [sys.executable, "-m", "dockyard", "status", "--data", str(server.data),
         "--url", server.url, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["server"]["reachable"]
    assert doc["server"]["workers"] == 2
    assert doc["server"]["uptime_seconds"] > 0
    assert doc["state"]["repositories"] >= 1
    assert doc["state"]["tags"] >= 1
    assert doc["state"]["free_bytes"] > 0
    assert doc["readiness"]["status"] == "ready"
    assert {c["name"] for c in doc["readiness"]["checks"]} == {
        "metadata", "migrations", "storage", "disk"}


def test_status_says_when_the_server_is_not_running(tmp_path: Path) -> None:
    s = start_dockyard(tmp_path / "data", workers=1)
    _push_small_image(s.url, "health/stopped")
    s.stop()
    done = subprocess.run(
        [sys.executable, "-m", "dockyard", "status", "--data", str(s.data), "--url", s.url],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{s.url}: not reachable" in done.stdout
    assert "1 repositories, 1 tags" in done.stdout
    assert "readiness: ready" in done.stdout


def test_status_refuses_a_bad_url_and_a_missing_registry_in_one_line(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "dockyard", "status", "--data", str(tmp_path), "--url",
         "notaurl"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "Invalid value for --url: 'notaurl' is not an http:// or https:// URL" in bad.stderr
    # no database in the data directory (status does not create one): one line, exit 1
    missing = subprocess.run(
        [sys.executable, "-m", "dockyard", "status", "--data", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    none = tmp_path / "none"
    assert missing.stderr.strip().splitlines() == [
        f"Error: no registry at {none}: {none / 'metadata.db'} does not exist (check "
        "--data, or storage.filesystem.rootdirectory in the config)"]



def test_status_of_a_url_that_is_not_dockyard_says_so_in_one_line(tmp_path: Path) -> None:
    """`--url` may name any web server: a `/metrics` that is not Prometheus text (a web
    page) is reported as such, not a traceback from the parser."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "metrics").write_text("<html><body>It works!</body></html>\n")
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                            "127.0.0.1", "--directory", str(site)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/metrics", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        data = str(tmp_path / "data")
        (tmp_path / "data").mkdir()  # where a registry is meant to be: gc makes its stores
        subprocess.run([sys.executable, "-m", "dockyard", "gc", "--data", data],
                       capture_output=True, timeout=60, check=True)
        done = subprocess.run(
            [sys.executable, "-m", "dockyard", "status", "--data", data, "--url", url,
             "--json"], capture_output=True, text=True, timeout=60)
    finally:
        web.terminate()
        web.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    server = json.loads(done.stdout)["server"]
    assert server["reachable"] is False, server
    assert server["error"].startswith("/metrics is not Prometheus text (is it Dockyard?)"), \
        server


# ------------------------------------------------------------ structured logs


def test_json_logs_one_object_per_line_with_the_request_id(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("log:\n  format: json\n  accesslog: true\n"
                   "http:\n  trusted_proxies: [10.0.0.0/8]\n")
    s = start_dockyard(tmp_path / "data", workers=2, config=cfg)
    try:
        _push_small_image(s.url, "logs/app")
        r = httpx.get(s.url + "/v2/logs/app/manifests/v1")
        assert r.status_code == 200
        rid = r.headers["X-Request-Id"]
        assert rid
        other = httpx.get(s.url + "/v2/logs/app/manifests/v1")
        assert other.headers["X-Request-Id"] != rid
        # an incoming id is kept only from a trusted proxy; 127.0.0.1 is not one here
        mine = httpx.get(s.url + "/v2/logs/app/manifests/nope",
                         headers={"X-Request-Id": "from-the-client"})
        assert mine.status_code == 404
        assert mine.headers["X-Request-Id"] != "from-the-client"
    finally:
        s.stop()
    lines = [json.loads(line) for line in s.log.read_text().splitlines() if line.strip()]
    access = [d for d in lines if d["logger"] == "dockyard.access"]
    mine_line = next(d for d in access if d.get("request_id") == rid)
    assert mine_line["status"] == 200
    assert mine_line["repository"] == "logs/app"
    assert mine_line["route"] == "manifest"
    assert mine_line["bytes_out"] == int(r.headers["Content-Length"])
    assert mine_line["duration_ms"] >= 0
    assert "user" in mine_line


def test_ui_pages_are_counted_and_logged_by_route_id(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("log:\n  format: json\n  accesslog: true\n")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    pages = {"/ui/": "ui-home", "/ui/repositories": "ui-repositories",
             "/ui/r/web/app": "ui-repository", "/ui/r/web/app/-/tags/v1": "ui-image-tag",
             "/ui/search?q=app": "ui-search"}
    try:
        _push_small_image(s.url, "web/app")
        for path in pages:
            r = httpx.get(s.url + path)
            assert r.status_code == 200, (path, r.text)
        assert httpx.get(s.url + "/ui/r/web/nope").status_code == 404

        def key(route: str, status: str = "200") -> tuple[str, tuple[tuple[str, str], ...]]:
            return ("dockyard_http_requests_total",
                    (("method", "GET"), ("route", route), ("status", status)))

        def counted() -> bool:
            got = samples(httpx.get(s.url + "/metrics").text)
            return all(got.get(key(route), 0) >= 1 for route in pages.values()) and \
                got.get(key("ui-repository", "404"), 0) >= 1

        _wait(counted)
        text = httpx.get(s.url + "/metrics").text
        assert 'route="other"' not in text
        assert "web/app" not in text  # route ids, never the path
    finally:
        s.stop()
    lines = [json.loads(line) for line in s.log.read_text().splitlines() if line.strip()]
    access = {d["path"]: d for d in lines if d["logger"] == "dockyard.access"}
    for path, route in pages.items():
        line = access[path.partition("?")[0]]
        assert (line["route"], line["status"]) == (route, 200), line
    assert access["/ui/r/web/app"]["repository"] == "web/app"
    assert access["/ui/r/web/app/-/tags/v1"]["repository"] == "web/app"
    assert access["/ui/"]["repository"] is None


def test_a_trusted_proxys_request_id_is_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("http:\n  trusted_proxies: [127.0.0.1/32]\n")
    s = start_dockyard(tmp_path / "data", workers=1, config=cfg)
    try:
        r = httpx.get(s.url + "/v2/", headers={"X-Request-Id": "edge-42"})
        assert r.headers["X-Request-Id"] == "edge-42"
        r = httpx.get(s.url + "/v2/", headers={"X-Request-Id": "x" * 200})  # too long
        assert r.headers["X-Request-Id"] != "x" * 200
    finally:
        s.stop()
