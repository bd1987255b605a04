"""systemd's readiness protocol (`sd_notify`) without libsystemd: one datagram per
state change to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or a name in the
abstract namespace when it starts with '@'). Without the variable nothing is sent."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("dockyard.server")


def notify(*states: str) -> bool:
    """Send `states` (`READY=1`, `STATUS=...`) as one message; whether it was sent."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not states:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall("\n".join(states).encode())
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", target, exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def reloading() -> bool:
    # MONOTONIC_USEC: what Type=notify-reload (systemd 253+) wants with RELOADING=1
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=draining requests and stopping")
