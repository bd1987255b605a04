"""Notifications end to end: a real `dockyard serve` posting Distribution's event
envelopes to a real HTTP receiver (aiohttp on 127.0.0.1), through pushes, pulls and
deletes, the receiver going down and up, and the registry itself restarting."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.authenv import basic_auth, write_config, write_htpasswd
from tests.support.oci_api import OCI_MANIFEST, push_blob, push_image
from tests.support.postgres import postgres_unavailable, running_postgres
from tests.support.receiver import Receiver
from tests.support.servers import Server, start_dockyard

ENVELOPE = "application/vnd.docker.distribution.events.v1+json"
ADMIN = ("admin", "admin-secret-pw")


def endpoint(receiver: Receiver, name: str = "hook", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": receiver.url, "timeout": "2s", "threshold": 3,
            "backoff": "1s", **extra}


def serve(tmp_path: Path, endpoints: list[dict[str, Any]], *, workers: int = 1,
          data: str = "data") -> Server:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth=basic_auth(htpasswd),
                          notifications={"endpoints": endpoints},
                          log={"level": "info"})
    return start_dockyard(tmp_path / data, config=config, workers=workers)


def client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=ADMIN, timeout=30,
                        headers={"User-Agent": "notify-test/1.0"})


def keys(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str | None]]:
    return [(e["action"], e["target"]["repository"], e["target"].get("digest"),
             e["target"].get("tag")) for e in events]


def test_push_pull_delete_events_carry_distributions_fields(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.start()
    server = serve(tmp_path, [endpoint(receiver, headers={"Authorization": ["Bearer s3"]})],
                   workers=2)
    try:
        with client(server) as c:
            image = push_image(c, "team/app", "v1")
            assert c.head("/v2/team/app/manifests/v1").status_code == 200  # no event
            assert c.get("/v2/team/app/manifests/v1").status_code == 200
            layer = json.loads(image.payload)["layers"][0]["digest"]
            assert c.get(f"/v2/team/app/blobs/{layer}").status_code == 200
            assert c.delete(f"/v2/team/app/manifests/{image.digest}").status_code == 202
        events = receiver.wait_for(6)
        time.sleep(1.5)  # nothing more comes (no HEAD event, no duplicate)
        events = receiver.events()
        assert [e["action"] for e in events] == ["push", "push", "push", "pull", "pull",
                                                 "delete"]
        delivery = receiver.deliveries[0]
        assert delivery.headers["Content-Type"] == ENVELOPE
        assert delivery.headers["Authorization"] == "Bearer s3"
        push = events[2]
        assert push["target"] == {
            "mediaType": OCI_MANIFEST, "size": len(image.payload), "digest": image.digest,
            "length": len(image.payload), "repository": "team/app", "tag": "v1",
            "url": f"{server.url}/v2/team/app/manifests/{image.digest}"}
        assert push["request"]["method"] == "PUT"
        assert push["request"]["useragent"] == "notify-test/1.0"
        assert push["request"]["addr"] == "127.0.0.1"
        assert push["request"]["host"] == server.host
        assert push["request"]["id"]
        assert push["actor"] == {"name": "admin"}
        assert push["source"]["instanceID"]
        assert push["source"]["addr"].endswith(f":{server.port}")
        assert events[0]["target"]["mediaType"] == "application/octet-stream"
        pull = events[3]
        assert pull["request"]["method"] == "GET"
        assert (pull["target"]["digest"], pull["target"]["tag"]) == (image.digest, "v1")
        assert events[4]["target"]["digest"] == layer
        assert events[4]["target"]["url"].endswith(f"/v2/team/app/blobs/{layer}")
        assert events[5]["target"] == {"digest": image.digest, "repository": "team/app",
                                       "url": f"{server.url}/v2/team/app/manifests/"
                                              f"{image.digest}"}
        assert len({e["id"] for e in events}) == 6
        assert all(e["timestamp"].endswith("Z") for e in events)
    finally:
        server.stop()
        receiver.stop()


def test_receiver_down_then_up_gets_everything_in_order(tmp_path: Path) -> None:
    receiver = Receiver()  # not listening yet
    server = serve(tmp_path, [endpoint(receiver)])
    try:
        with client(server) as c:
            images = [push_image(c, "down/app", f"t{i}") for i in range(3)]
        time.sleep(2)
        scrape = httpx.get(f"{server.url}/metrics").text
        assert 'dockyard_notifications_failed_total{endpoint="hook"}' in scrape
        receiver.start()
        events = receiver.wait_for(9)
        manifests = [(e["target"]["digest"], e["target"]["tag"]) for e in events
                     if e["target"]["mediaType"] == OCI_MANIFEST]
        assert manifests == [(im.digest, f"t{i}") for i, im in enumerate(images)]
        assert len({e["id"] for e in events}) == len(events) == 9
        scrape = httpx.get(f"{server.url}/metrics").text
        assert 'dockyard_notifications_delivered_total{endpoint="hook"} 9.0' in scrape
    finally:
        server.stop()
        receiver.stop()


def test_restart_with_events_pending_loses_none(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.status = 503  # up, but refusing: events stay queued
    receiver.start()
    server = serve(tmp_path, [endpoint(receiver)])
    try:
        with client(server) as c:
            images = [push_image(c, "restart/app", f"r{i}") for i in range(4)]
            expected = Counter(
                [("push", im.digest) for im in images]
                + [("push", d) for im in images for d in _blob_digests(im.payload)])
        while not receiver.deliveries:  # the deliverer is at work, failing
            time.sleep(0.1)
        server.stop()
        assert server.proc.returncode == 0
        receiver.status = 200
        server = start_dockyard(server.data, config=tmp_path / "config.yml", workers=2)
        events = receiver.wait_for(sum(expected.values()))
        time.sleep(1.5)
        events = receiver.events()
        ids = {e["id"] for e in events}
        # at least once: every event arrived, each id names one event
        unique = {e["id"]: (e["action"], e["target"]["digest"]) for e in events}
        assert Counter(unique.values()) == expected
        assert len(ids) == sum(expected.values())
    finally:
        server.stop()
        receiver.stop()


def test_killed_mid_delivery_sends_again_after_restart(tmp_path: Path) -> None:
    """SIGKILL while an envelope is in flight: after the restart it is sent again (at
    least once), and nothing is missing."""
    receiver = Receiver()
    receiver.delay = 30.0  # holds the first POST until the registry is gone
    receiver.start()
    server = serve(tmp_path, [endpoint(receiver, timeout="60s")])
    try:
        with client(server) as c:
            image = push_image(c, "kill/app", "v1")
        while not receiver.deliveries:
            time.sleep(0.1)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        receiver.delay = 0.0
        server = start_dockyard(server.data, config=tmp_path / "config.yml")
        events = receiver.wait_for(3)
        first = receiver.deliveries[0].envelope["events"]
        assert {e["id"] for e in first} <= {e["id"] for e in events}  # sent again
        assert sorted(e["target"]["digest"] for e in events) == sorted(
            [image.digest, *_blob_digests(image.payload)])
    finally:
        server.stop()
        receiver.stop()


def _blob_digests(payload: bytes) -> list[str]:
    doc = json.loads(payload)
    return [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]


def test_ignored_actions_and_media_types_and_disabled_endpoints(tmp_path: Path) -> None:
    quiet, everything, off = Receiver(), Receiver(), Receiver()
    for r in (quiet, everything, off):
        r.start()
    server = serve(tmp_path, [
        endpoint(quiet, "quiet", ignore={"actions": ["pull"]},
                 ignoredmediatypes=["application/octet-stream"]),
        endpoint(everything, "everything"),
        endpoint(off, "off", disabled=True),
    ])
    try:
        with client(server) as c:
            image = push_image(c, "filter/app", "v1")
            assert c.get("/v2/filter/app/manifests/v1").status_code == 200
            push_blob(c, "filter/app", b"one more blob")
        everything.wait_for(5)
        quiet.wait_for(1)
        time.sleep(1.5)
        assert keys(quiet.events()) == [("push", "filter/app", image.digest, "v1")]
        assert [e["action"] for e in everything.events()] == ["push"] * 3 + ["pull", "push"]
        assert off.deliveries == []
    finally:
        server.stop()
        for r in (quiet, everything, off):
            r.stop()


def test_threshold_then_backoff_between_attempts(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.status = 500
    receiver.start()
    server = serve(tmp_path, [endpoint(receiver, threshold=2, backoff="2s")])
    try:
        with client(server) as c:
            push_blob(c, "retry/app", b"a blob")
        while len(receiver.deliveries) < 5:
            time.sleep(0.1)
        receiver.status = 200
        events = receiver.wait_for(1)
        at = [d.at for d in receiver.deliveries]
        # from the threshold on, attempts are at least `backoff` apart
        assert all(b - a >= 1.9 for a, b in itertools.pairwise(at[1:5])), at
        assert all(d.envelope == receiver.deliveries[0].envelope
                   for d in receiver.deliveries)  # the same event, retried
        assert [e["action"] for e in events] == ["push"]
    finally:
        server.stop()
        receiver.stop()


@pytest.mark.parametrize(("endpoints", "message"), [
    ([{"name": "a", "url": "ftp://x"}], "notifications.endpoints.0.url"),
    ([{"name": "a", "url": "http://x", "ignore": {"actions": ["pusj"]}}],
     "notifications.endpoints.0.ignore.actions"),
    ([{"name": "a", "url": "http://x", "treshold": 3}], "notifications.endpoints.0.treshold"),
])
def test_bad_endpoint_keys_are_named(tmp_path: Path, endpoints: list[dict[str, Any]],
                                     message: str) -> None:
    config = write_config(tmp_path / "config.yml", notifications={"endpoints": endpoints})
    out = subprocess.run([sys.executable, "-m", "dockyard", "serve", "--config", str(config),
                          "--data", str(tmp_path / "data")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0
    assert message in out.stderr


def test_two_nodes_on_postgres_deliver_each_event_once_in_commit_order(
        tmp_path: Path) -> None:
    """Two nodes share one PostgreSQL and take pushes at once: one process of the two
    delivers (the job's lease), so each event arrives once, each client's in order."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    receiver = Receiver()
    receiver.start()
    with running_postgres() as url:
        config = write_config(tmp_path / "config.yml",
                              notifications={"endpoints": [endpoint(receiver)]})
        env = {"DOCKYARD_DATABASE_URL": url}
        nodes = [start_dockyard(tmp_path / "data", workers=2, config=config, env=env,
                                wait=False) for _ in range(2)]
        try:
            for node in nodes:
                node.wait_ready()

            def pushes(node: Server, prefix: str) -> list[str]:
                with httpx.Client(base_url=node.url, timeout=60) as c:
                    return [push_image(c, f"pg/{prefix}", f"t{i}").digest for i in range(6)]

            with ThreadPoolExecutor(2) as pool:
                digests = dict(zip("ab", pool.map(pushes, nodes, "ab"), strict=True))
            events = receiver.wait_for(36)
            time.sleep(2)
            events = receiver.events()
            assert len(events) == len({e["id"] for e in events}) == 36
            for prefix, pushed in digests.items():
                assert [e["target"]["digest"] for e in events
                        if e["target"]["repository"] == f"pg/{prefix}"
                        and e["target"]["mediaType"] == OCI_MANIFEST] == pushed
        finally:
            for node in nodes:
                node.stop()
            receiver.stop()
