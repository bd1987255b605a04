"""Several worker processes: uploads continue across workers, and survive a worker crash.

`dockyard serve --workers 2` runs two processes on one port (SO_REUSEPORT), so the
kernel spreads new connections across them. Upload sessions live in the metadata store
and on disk, so a session started by one worker can be continued by the other, and a
worker killed in the middle of a PATCH costs only that request.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.oci_api import digest_of, image_manifest, put_manifest, with_digest
from tests.support.servers import Server, free_port, start_dockyard

MiB = 1024 * 1024


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    server = start_dockyard(tmp_path / "data", workers=2)
    try:
        wait_for_workers(server, 2)
        yield server
    finally:
        server.stop()


def workers(server: Server) -> list[psutil.Process]:
    """The live worker processes: children of the supervisor listening on its port."""
    found = []
    for child in psutil.Process(server.proc.pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == server.port
                   for c in child.net_connections(kind="tcp")):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_workers(server: Server, count: int, exclude: int | None = None,
                     timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [w for w in workers(server) if w.pid != exclude]
        if len(live) == count:
            return live
        time.sleep(0.1)
    raise AssertionError(f"expected {count} workers, have {workers(server)}")


class Connection:
    """One persistent HTTP/1.1 connection, so a test knows which worker it talks to."""

    def __init__(self, server: Server) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.conn.connect()
        assert self.conn.sock is not None
        self.local_port: int = self.conn.sock.getsockname()[1]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def worker_of(server: Server, conn: Connection) -> int:
    """The pid of the worker holding the server side of `conn`."""
    for worker in workers(server):
        for c in worker.net_connections(kind="tcp"):
            if c.raddr and c.raddr.port == conn.local_port and c.laddr.port == server.port:
                return worker.pid
    raise AssertionError(f"no worker holds the connection from port {conn.local_port}")


def connections_on_two_workers(server: Server) -> tuple[Connection, Connection]:
    """Open connections until two of them are served by different workers."""
    opened: list[Connection] = []
    by_worker: dict[int, Connection] = {}
    try:
        for _ in range(64):
            conn = Connection(server)
            opened.append(conn)
            status, _, _ = conn.request("GET", "/v2/")
            assert status == 200
            by_worker.setdefault(worker_of(server, conn), conn)
            if len(by_worker) == 2:
                first, second = by_worker.values()
                return first, second
        raise AssertionError("64 connections all landed on one worker")
    finally:
        for conn in opened:
            if conn not in by_worker.values():
                conn.close()


def _offset(range_header: str) -> int:
    m = re.fullmatch(r"0-(\d+)", range_header)
    assert m, range_header
    return int(m.group(1)) + 1


def _path(location: str) -> str:
    url = httpx.URL(location)
    return url.raw_path.decode()


# --- sessions move between workers ----------------------------------------------------


def test_upload_alternates_between_workers(two_workers: Server) -> None:
    """POST on worker A, PATCH on B, PATCH on A, PATCH on B, PUT on A."""
    server = two_workers
    a, b = connections_on_two_workers(server)
    assert worker_of(server, a) != worker_of(server, b)
    try:
        data = os.urandom(5 * MiB + 123)
        repo = "workers/alternate"
        status, headers, _ = a.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202
        location = _path(headers["location"])
        pieces = [data[:MiB], data[MiB:3 * MiB], data[3 * MiB:]]
        start = 0
        for conn, piece in zip([b, a, b], pieces, strict=True):
            end = start + len(piece) - 1
            status, headers, body = conn.request(
                "PATCH", location, body=piece,
                headers={"Content-Range": f"{start}-{end}",
                         "Content-Type": "application/octet-stream"})
            assert status == 202, body
            assert headers["range"] == f"0-{end}"
            location = _path(headers["location"])
            start = end + 1
        # both workers report the same state
        for conn in (a, b):
            status, headers, _ = conn.request("GET", location)
            assert status == 204
            assert _offset(headers["range"]) == len(data)
        digest = digest_of(data)
        status, headers, body = a.request("PUT", _path(with_digest(location, digest)), body=b"")
        assert status == 201, body
        assert headers["docker-content-digest"] == digest
        for conn in (a, b):
            status, _, body = conn.request("GET", f"/v2/{repo}/blobs/{digest}")
            assert status == 200
            assert body == data
    finally:
        a.close()
        b.close()


def test_many_sessions_on_fresh_connections(two_workers: Server) -> None:
    """Every request on a new connection, so the kernel spreads them over both workers."""
    server = two_workers
    repo = "workers/many"
    seen: set[int] = set()

    def fresh(method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = Connection(server)
        try:
            result = conn.request(method, path, body, headers)
            return result
        finally:
            conn.close()

    sessions = []
    for i in range(16):
        data = os.urandom(300_000 + i * 7919)
        status, headers, _ = fresh("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202
        sessions.append((data, _path(headers["location"])))

    # interleave the sessions' chunks, each request on a connection of its own
    cuts = [0, 100_000, 200_000, None]
    locations = [loc for _, loc in sessions]
    for step in range(3):
        for i, (data, _) in enumerate(sessions):
            lo, hi = cuts[step], cuts[step + 1]
            piece = data[lo:hi]
            end = (lo or 0) + len(piece) - 1
            status, headers, body = fresh("PATCH", locations[i], piece,
                                          {"Content-Range": f"{lo}-{end}"})
            assert status == 202, body
            assert _offset(headers["range"]) == end + 1
            locations[i] = _path(headers["location"])
    for i, (data, _) in enumerate(sessions):
        status, headers, _ = fresh("GET", locations[i])
        assert status == 204
        assert _offset(headers["range"]) == len(data)
        digest = digest_of(data)
        status, _, body = fresh("PUT", _path(with_digest(locations[i], digest)), b"")
        assert status == 201, body
        status, _, body = fresh("GET", f"/v2/{repo}/blobs/{digest}")
        assert status == 200
        assert body == data

    # and the connections really did land on both workers
    for _ in range(32):
        conn = Connection(server)
        try:
            assert conn.request("GET", "/v2/")[0] == 200
            seen.add(worker_of(server, conn))
        finally:
            conn.close()
        if len(seen) == 2:
            break
    assert len(seen) == 2


# --- a worker killed mid-PATCH --------------------------------------------------------


class SlowPatch(threading.Thread):
    """PATCH `data` to `url` as a chunked body, one MiB at a time, slowly."""

    def __init__(self, url: str, data: bytes, delay: float) -> None:
        super().__init__(daemon=True)
        self.url, self.data, self.delay = url, data, delay
        self.stop = threading.Event()
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def _body(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), MiB):
            if self.stop.is_set():
                return
            yield self.data[i:i + MiB]
            time.sleep(self.delay)

    def run(self) -> None:
        try:
            self.response = httpx.patch(self.url, content=self._body(), timeout=60,
                                        headers={"Content-Type": "application/octet-stream"})
        except BaseException as exc:
            self.error = exc


def _kill_mid_patch(server: Server, repo: str, data: bytes, head: int) -> tuple[str, int]:
    """Upload `head` bytes, then kill -9 the worker serving a slow PATCH of the rest.

    Returns the session's Location and the number of bytes the killed PATCH had stored.
    """
    resp = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/")
    assert resp.status_code == 202
    session = resp.headers["docker-upload-uuid"]
    location = resp.headers["location"]
    resp = httpx.patch(httpx.URL(server.url).join(location), content=data[:head],
                       headers={"Content-Range": f"0-{head - 1}"})
    assert resp.status_code == 202, resp.text
    location = resp.headers["location"]

    upload_file = (server.data / "uploads" / session).resolve()
    patch = SlowPatch(str(httpx.URL(server.url).join(location)), data[head:], delay=0.05)
    patch.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if upload_file.exists() and upload_file.stat().st_size >= head + 8 * MiB:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the slow PATCH never got going")
        holders = [w for w in workers(server)
                   if any(Path(f.path) == upload_file for f in w.open_files())]
        assert len(holders) == 1, holders
        victim = holders[0]
        stored = upload_file.stat().st_size
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        patch.stop.set()
        patch.join(60)
    assert not patch.is_alive()
    # the interrupted PATCH did not succeed
    assert patch.response is None or patch.response.status_code != 202, patch.response
    assert stored < len(data)
    wait_for_workers(server, 2, exclude=victim.pid)
    return location, stored


def _stream_equal(server: Server, repo: str, digest: str, data: bytes) -> None:
    got = 0
    hasher = hashlib.sha256()
    with httpx.stream("GET", f"{server.url}/v2/{repo}/blobs/{digest}", timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(len(data))
        for chunk in resp.iter_bytes():
            assert chunk == data[got:got + len(chunk)], f"bytes differ near offset {got}"
            got += len(chunk)
            hasher.update(chunk)
    assert got == len(data)
    assert f"sha256:{hasher.hexdigest()}" == digest


def test_worker_killed_mid_patch_then_resume(two_workers: Server) -> None:
    server = two_workers
    repo = "workers/crash-resume"
    data = os.urandom(200 * MiB)
    digest = digest_of(data)
    location, stored = _kill_mid_patch(server, repo, data, head=MiB)

    # nothing half-written became visible
    assert httpx.head(f"{server.url}/v2/{repo}/blobs/{digest}").status_code == 404
    assert not any((server.data / "blobs").rglob(digest.split(":")[1]))

    # the session survives: every worker reports the same, consistent offset
    url = httpx.URL(server.url).join(location)
    offsets = set()
    for _ in range(6):
        status = httpx.get(url, headers={"Connection": "close"})
        assert status.status_code == 204, status.text
        assert status.headers["docker-upload-uuid"]
        offsets.add(_offset(status.headers["range"]))
    assert len(offsets) == 1
    offset = offsets.pop()
    assert MiB <= offset <= stored

    # resume from the reported offset, then finish
    def rest() -> Iterator[bytes]:
        for i in range(offset, len(data), 4 * MiB):
            yield data[i:min(i + 4 * MiB, len(data))]

    resp = httpx.patch(url, content=rest(), timeout=120,
                       headers={"Content-Range": f"{offset}-{len(data) - 1}",
                                "Content-Type": "application/octet-stream"})
    assert resp.status_code == 202, resp.text
    assert resp.headers["range"] == f"0-{len(data) - 1}"
    resp = httpx.put(with_digest(str(httpx.URL(server.url).join(resp.headers["location"])),
                                 digest), timeout=120)
    assert resp.status_code == 201, resp.text
    assert resp.headers["docker-content-digest"] == digest
    _stream_equal(server, repo, digest, data)


def test_worker_killed_mid_patch_then_restart(two_workers: Server) -> None:
    server = two_workers
    repo = "workers/crash-restart"
    data = os.urandom(64 * MiB)
    digest = digest_of(data)
    location, _ = _kill_mid_patch(server, repo, data, head=MiB)
    assert httpx.head(f"{server.url}/v2/{repo}/blobs/{digest}").status_code == 404

    # the client gives the old session up and starts over
    old = httpx.URL(server.url).join(location)
    assert httpx.delete(old).status_code == 204
    assert httpx.get(old).status_code == 404
    resp = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/")
    assert resp.status_code == 202
    resp = httpx.put(with_digest(str(httpx.URL(server.url).join(resp.headers["location"])),
                                 digest), content=data, timeout=120)
    assert resp.status_code == 201, resp.text
    _stream_equal(server, repo, digest, data)
    # the server is whole again: both workers answer
    seen = set()
    for _ in range(32):
        conn = Connection(server)
        try:
            assert conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200
            seen.add(worker_of(server, conn))
        finally:
            conn.close()
        if len(seen) == 2:
            break
    assert len(seen) == 2


def _slow_patch(conn: Connection, location: str, data: bytes) -> tuple[int, dict[str, str]]:
    """PATCH all of `data` at offset 0 over `conn`, 64 KiB at a time, with pauses."""
    c = conn.conn
    c.putrequest("PATCH", location)
    c.putheader("Content-Range", f"0-{len(data) - 1}")
    c.putheader("Content-Length", str(len(data)))
    c.endheaders()
    for i in range(0, len(data), 64 * 1024):
        c.send(data[i:i + 64 * 1024])
        time.sleep(0.002)
    resp = c.getresponse()
    resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def test_concurrent_patches_on_two_workers(two_workers: Server) -> None:
    """Two workers receive a PATCH for the same offset at once: one wins, one gets 416,
    and the blob published afterwards is exactly the winner's bytes."""
    server = two_workers
    repo = "workers/race"
    size = 4 * MiB
    for _ in range(3):
        a, b = connections_on_two_workers(server)
        try:
            status, headers, _ = a.request("POST", f"/v2/{repo}/blobs/uploads/")
            assert status == 202
            location = _path(headers["location"])
            bodies = {"a": os.urandom(size), "b": os.urandom(size)}
            with ThreadPoolExecutor(2) as pool:
                futures = {key: pool.submit(_slow_patch, conn, location, bodies[key])
                           for key, conn in (("a", a), ("b", b))}
                results = {key: f.result(timeout=60) for key, f in futures.items()}
            statuses = sorted(status for status, _ in results.values())
            assert statuses in ([202, 416], [202, 202]), results
            if statuses == [202, 202]:
                continue  # the two requests did not overlap after all; try again
            winner = next(k for k, (status, _) in results.items() if status == 202)
            loser = "b" if winner == "a" else "a"
            # the loser is told where the upload is: before or after the winner's chunk
            assert results[loser][1]["range"] in ("0-0", f"0-{size - 1}"), results[loser]
            digest = digest_of(bodies[winner])
            status, _, body = a.request("PUT", _path(with_digest(location, digest)), b"")
            assert status == 201, body
            status, _, got = b.request("GET", f"/v2/{repo}/blobs/{digest}")
            assert status == 200
            assert got == bodies[winner]
            return
        finally:
            a.close()
            b.close()
    pytest.skip("the two PATCHes never overlapped")


# --- manifest reads cached per worker -------------------------------------------------


def test_every_worker_answers_what_any_process_committed(two_workers: Server) -> None:
    """Each worker keeps manifest reads until some process commits (on SQLite): a tag
    moved through one worker, a manifest deleted through the other and one collected by
    `dockyard gc` in a process of its own are answered at once by both workers, each
    having served the old answer just before."""
    server = two_workers
    a, b = connections_on_two_workers(server)
    repo = "cached/app"
    try:
        with httpx.Client(base_url=server.url) as client:
            one, two, three = (image_manifest(client, repo) for _ in range(3))
            for pushed, ref in ((one, "v1"), (three, three.digest)):
                assert put_manifest(client, repo, ref, pushed.payload,
                                    pushed.media_type).status_code == 201

        def answers(path: str, method: str = "GET") -> list[tuple[int, str]]:
            # each worker twice: the second answer is its cached one
            got = []
            for conn in (a, b, a, b):
                status, headers, body = conn.request(method, path)
                got.append((status, headers.get("docker-content-digest", "")
                            if status == 200 else body.decode()[:80]))
            return got

        tag, by_one = f"/v2/{repo}/manifests/v1", f"/v2/{repo}/manifests/{one.digest}"
        assert answers(tag) == [(200, one.digest)] * 4
        assert answers(tag, "HEAD") == [(200, one.digest)] * 4
        # the tag moves through worker a: both answer the new manifest at once
        status, _, _ = a.request("PUT", tag, body=two.payload,
                                 headers={"Content-Type": two.media_type})
        assert status == 201
        assert answers(tag) == [(200, two.digest)] * 4
        assert answers(tag, "HEAD") == [(200, two.digest)] * 4
        # the untagged manifest, deleted through worker b
        assert answers(by_one) == [(200, one.digest)] * 4
        status, _, _ = b.request("DELETE", by_one)
        assert status == 202
        assert [status for status, _ in answers(by_one)] == [404] * 4
        # another process: the collector takes the untagged manifest `three`
        by_three = f"/v2/{repo}/manifests/{three.digest}"
        assert answers(by_three) == [(200, three.digest)] * 4
        collected = subprocess.run(
            [sys.executable, "-m", "dockyard", "gc", "--data", str(server.data), "--grace",
             "0s"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert collected.returncode == 0, collected.stderr
        assert [status for status, _ in answers(by_three)] == [404] * 4
        assert answers(tag) == [(200, two.digest)] * 4
    finally:
        a.close()
        b.close()


# --- workers that cannot start ----------------------------------------------------------


def test_workers_dying_at_start_make_serve_fail(tmp_path: Path) -> None:
    """Storage only the workers open (the data directory under a regular file; the
    supervisor migrates a database elsewhere) kills every worker at start: the
    supervisor gives up with its one error line and exits 1, so systemd's
    `Restart=on-failure` or a container runtime sees a failure, not a clean stop."""
    (tmp_path / "a-file").write_text("not a directory\n")
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard", "serve", "--listen", f"127.0.0.1:{port}",
         "--data", str(tmp_path / "a-file" / "data"), "--workers", "2"],
        env={**os.environ, "DOCKYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'meta.db'}"},
        capture_output=True, text=True, timeout=120, start_new_session=True)
    assert proc.returncode == 1, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert errors[0].endswith("dockyard.server: workers keep dying at start; giving up")
    assert "NotADirectoryError" in proc.stderr  # why they died, from the workers


def test_the_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """Started from a shell's 256 (of a hard 8,192), the master and its workers ran with
    256 open files at most: a few hundred idle connections used them up. They take the
    hard limit, as Go's runtime does for Distribution."""
    import resource

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 8192))

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard", "serve", "--listen", f"127.0.0.1:{port}",
         "--data", str(tmp_path / "data"), "--workers", "2"], stdout=log,
        stderr=subprocess.STDOUT, preexec_fn=low, start_new_session=True)
    server = Server("dockyard", port, tmp_path / "data", proc, tmp_path / "serve.log")
    try:
        server.wait_ready()
        master = psutil.Process(proc.pid)
        workers = master.children()
        assert len(workers) == 2
        for p in (master, *workers):
            assert p.rlimit(psutil.RLIMIT_NOFILE) == (8192, 8192), p
    finally:
        server.stop()
        log.close()
