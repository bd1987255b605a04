"""Stopping `dockyard serve`: SIGTERM drains uploads in flight; workers die with the supervisor.

On SIGTERM every worker stops listening at once, lets the requests in flight finish (up
to `http.drain_timeout`) and exits. A supervisor killed with -9 takes its workers with it,
so a restart on the same port works at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from tests.support.authenv import write_config
from tests.support.oci_api import blob_bytes, digest_of
from tests.support.servers import Server, start_dockyard

DRAIN = 10.0


def slow_body(data: bytes, pieces: int, pause: float) -> Iterator[bytes]:
    step = -(-len(data) // pieces)
    for i in range(0, len(data), step):
        yield data[i:i + step]
        time.sleep(pause)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_slow_uploads_finish(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", http={"drain_timeout": f"{DRAIN}s"})
    server = start_dockyard(tmp_path / "data", workers=2, config=config)
    blobs = [blob_bytes(200_000 + i, f"drain-{i}") for i in range(5)]
    results: dict[int, httpx.Response | BaseException] = {}
    sessions = []
    try:
        with httpx.Client(base_url=server.url) as c:
            for i in range(5):
                r = c.post(f"/v2/drain/app{i}/blobs/uploads/")
                assert r.status_code == 202
                sessions.append(r.headers["Location"])

        def upload(i: int) -> None:
            try:
                # each body takes about 4 s to arrive; SIGTERM comes after about 1 s
                results[i] = httpx.put(
                    server.url + sessions[i], params={"digest": digest_of(blobs[i])},
                    content=slow_body(blobs[i], 16, 0.25),
                    headers={"Content-Length": str(len(blobs[i]))}, timeout=30)
            except BaseException as exc:  # reported by the assertion below
                results[i] = exc

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while not refused(server.port):
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        for t in threads:
            t.join(30)
        server.proc.wait(DRAIN + 5)
        exited = time.monotonic() - sent
    finally:
        server.stop()

    for i, blob in enumerate(blobs):
        result = results[i]
        assert isinstance(result, httpx.Response), result
        assert result.status_code == 201, result.text
        assert result.headers["Docker-Content-Digest"] == digest_of(blob)
    assert exited < DRAIN
    again = start_dockyard(tmp_path / "data", workers=1, config=config)
    try:
        for i, blob in enumerate(blobs):
            assert httpx.get(f"{again.url}/v2/drain/app{i}/blobs/{digest_of(blob)}").content \
                == blob
    finally:
        again.stop()


def test_sigterm_cuts_off_at_drain_timeout_and_the_upload_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", http={"drain_timeout": "1s"})
    server = start_dockyard(tmp_path / "data", workers=1, config=config)
    blob = blob_bytes(100_000, "cut-off")
    try:
        r = httpx.post(f"{server.url}/v2/cut/app/blobs/uploads/")
        session = r.headers["Location"]
        r = httpx.patch(server.url + session, content=blob[:40_000],
                        headers={"Content-Range": "0-39999"})
        assert r.status_code == 202
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(f"PATCH {session} HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
                     f"Content-Range: 40000-99999\r\n\r\n".encode() + blob[40_000:50_000])
        time.sleep(0.3)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(10)
        assert time.monotonic() - sent < 1 + 3
        sock.close()
    finally:
        server.stop()
    again = start_dockyard(tmp_path / "data", workers=1, config=config)
    try:
        with httpx.Client(base_url=again.url) as c:
            r = c.get(session)
            assert r.status_code == 204
            offset = int(r.headers["Range"].split("-")[1]) + 1
            r = c.patch(session, content=blob[offset:],
                        headers={"Content-Range": f"{offset}-{len(blob) - 1}"})
            assert r.status_code == 202, r.text
            r = c.put(session, params={"digest": digest_of(blob)})
            assert r.status_code == 201, r.text
            assert c.get(f"/v2/cut/app/blobs/{digest_of(blob)}").content == blob
    finally:
        again.stop()


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    server = start_dockyard(tmp_path / "data", workers=2)
    workers: list[psutil.Process] = []
    again: Server | None = None
    try:
        deadline = time.monotonic() + 20
        while len(workers) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            workers = psutil.Process(server.proc.pid).children()
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(5)
        # at once: the new supervisor checks the port before its workers start
        again = start_dockyard(tmp_path / "data", workers=2, port=server.port)
        deadline = time.monotonic() + 2
        for worker in workers:
            while _alive(worker):
                assert time.monotonic() < deadline, f"worker {worker.pid} outlived the kill"
                time.sleep(0.05)
        # what answers now is the new server, not a leftover
        assert again.proc.poll() is None, again.log.read_text()[-2000:]
        assert httpx.get(again.url + "/v2/").status_code == 200
        assert again.proc.poll() is None, again.log.read_text()[-2000:]
    finally:
        server.stop()
        if again is not None:
            again.stop()
        for worker in workers:  # on failure: the orphans this test made, by pid
            if _alive(worker):
                worker.kill()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

