"""The audit trail: one JSON line per push, tag change and delete, on logger `dockyard.audit`.

Each line names the identity (user or `anonymous`, how it authenticated, client address),
the action, the repository and what changed. Credentials never appear.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dockyard.auth.identity import Identity

log = logging.getLogger("dockyard.audit")


_stamp: tuple[int, str] = (0, "")


def _now() -> str:
    """The current second in ISO 8601 UTC, formatted once a second (a push audits
    several events)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _stamp[1]


def record(event: str, identity: Identity, repository: str, **detail: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    entry = {
        "time": _now(),
        "event": event,
        "user": identity.name,
        "auth": identity.method,
        "client": identity.client,
        "repository": repository,
        **{k: v for k, v in detail.items() if v not in (None, "")},
    }
    log.info("%s", json.dumps(entry, sort_keys=True))
