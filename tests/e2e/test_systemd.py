"""Running under systemd: `sd_notify` readiness of a real `dockyard serve` (the test
plays systemd's part with a bound AF_UNIX datagram socket) and the unit file checked by
`systemd-analyze verify`."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Server, start_dockyard

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "dockyard.service"


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket as systemd's, and its `$NOTIFY_SOCKET` value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"@dockyard-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    try:
        yield sock, name
    finally:
        sock.close()


def receive(sock: socket.socket, timeout: float = 60.0) -> dict[str, str]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def accepts(server: Server) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_after_listening_reloading_on_sighup_stopping_on_sigterm(
        tmp_path: Path, notify_socket: tuple[socket.socket, str], workers: int) -> None:
    sock, name = notify_socket
    server = start_dockyard(tmp_path / "data", workers=workers, wait=False,
                            env={"NOTIFY_SOCKET": name})
    try:
        message = receive(sock)
        # the port accepted before READY=1 was sent
        assert accepts(server), server.log.read_text()
        assert message["READY"] == "1"
        assert f"127.0.0.1:{server.port}" in message["STATUS"]
        server.proc.send_signal(signal.SIGHUP)
        assert receive(sock).get("RELOADING") == "1"
        assert receive(sock).get("READY") == "1"
        server.proc.send_signal(signal.SIGTERM)
        assert receive(sock).get("STOPPING") == "1"
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_no_ready_while_the_port_is_not_served(tmp_path: Path,
                                               notify_socket: tuple[socket.socket, str]
                                               ) -> None:
    """A server that cannot start (its port taken) never says READY=1."""
    sock, name = notify_socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_dockyard(tmp_path / "data", wait=False, port=port,
                                env={"NOTIFY_SOCKET": name})
        assert server.proc.wait(60) != 0
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # ExecStart must name an executable that exists here: the one of this checkout
    dockyard = Path(shutil.which("dockyard") or Path(__file__).parents[2] / ".venv/bin/dockyard")
    unit = tmp_path / "dockyard.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/dockyard", str(dockyard)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    if "Failed to" in out.stderr and "bus" in out.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert str(unit) not in out.stderr, out.stderr  # no warning about the unit itself
    text = UNIT.read_text()
    for line in ("Type=notify", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dockyard",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                 "ExecReload=/bin/kill -HUP $MAINPID", "StandardOutput=journal"):
        assert line in text.splitlines(), line
