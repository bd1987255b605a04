"""Monitoring with the real tools: Debian's `prometheus` scrapes a 2-worker Dockyard,
and `promtool` checks and unit-tests the alert rules of deploy/prometheus.

Never skipped: `make install` installs the `prometheus` package (DEB_PACKAGES).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Server, free_port, start_dockyard

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_alert_rules_are_valid() -> None:
    done = subprocess.run([PROMTOOL, "check", "rules", str(DEPLOY / "prometheus/alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def test_alert_rules_fire_on_recorded_series() -> None:
    done = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"],
                          cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # every alert has its test there (a rule with none would pass unseen)
    rules = (DEPLOY / "prometheus/alerts.yml").read_text()
    tested = (DEPLOY / "prometheus/alerts_test.yml").read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)$", rules, re.M)
    assert len(alerts) == 12
    assert [a for a in alerts if f"alertname: {a}\n" not in tested] == []


def test_the_dashboard_uses_only_exported_series() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dockyard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        assert "dockyard_" in expr, expr


@pytest.fixture(scope="module")
def dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_dockyard(tmp_path_factory.mktemp("prom") / "data", workers=2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, dockyard: Server) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{DEPLOY / 'prometheus/alerts.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: dockyard\n"
        f"    static_configs:\n      - targets: ['{dockyard.host}']\n")
    log = (home / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
         f"--storage.tsdb.path={home / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (home / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("prometheus did not become ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(url: str, promql: str) -> list[dict[str, object]]:
    r = httpx.get(url + "/api/v1/query", params={"query": promql}, timeout=5)
    assert r.status_code == 200, r.text
    result: list[dict[str, object]] = r.json()["data"]["result"]
    return result


def _eventually(url: str, promql: str, timeout: float = 45) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _query(url, promql)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no data for {promql}")


def test_prometheus_scrapes_the_registry(dockyard: Server, prometheus: str) -> None:
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert httpx.post(f"{dockyard.url}/v2/prom/app/blobs/uploads/?digest={digest}",
                      content=config).status_code == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest, "size": 2}, "layers": []}).encode()
    assert httpx.put(f"{dockyard.url}/v2/prom/app/manifests/v1", content=manifest, headers={
        "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).status_code == 201
    for _ in range(20):
        with httpx.Client() as c:  # new connections: both workers answer some
            assert c.get(f"{dockyard.url}/v2/prom/app/manifests/v1").status_code == 200

    up = _eventually(prometheus, 'up{job="dockyard"} == 1')
    assert len(up) == 1
    served = _eventually(prometheus, 'sum(dockyard_http_requests_total{route="manifest",'
                                     'method="GET",status="200"}) >= 20')
    assert float(served[0]["value"][1]) >= 20  # type: ignore[index]
    workers = _eventually(prometheus, "dockyard_workers")
    assert workers[0]["value"][1] == "2"  # type: ignore[index]
    manifests = _eventually(prometheus, 'dockyard_objects{kind="manifests"} >= 1')
    assert manifests
    # the rules loaded and evaluate: a healthy registry raises no alert of its own
    rules = httpx.get(prometheus + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} >= {
        "DockyardNotReady", "DockyardDiskFullIn3Days", "DockyardWorkerRestartLoop"}
