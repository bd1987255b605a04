"""Failed-login limits per client address and per user name, shared by all workers.

After `failures` failed logins within `window` from one address, or against one user,
further attempts from it (or for them) are refused without checking the password until
the oldest of those failures leaves the window.

The failures are kept in a `FailureLog`. The registry hands its metadata store's log to
every worker (`FailureLimiter.share`), so all workers of a node, and all nodes over one
PostgreSQL, count against one budget; until then (and in tests) they are kept in process
memory. A check costs one indexed read, a failure one write; a success costs nothing.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol


class FailureLog(Protocol):
    """Where failed logins are kept: times of failures, by key (`addr:…`, `user:…`)."""

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        """(key, time) of every failure of `keys` after `since`."""

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        """Record one failure for each of `keys`; failures before `forget_before` (of any
        key) may be dropped."""


class MemoryFailureLog:
    """Failures in this process's memory (one worker's view), bounded in size."""

    def __init__(self, *, keep: int = 100, max_keys: int = 100_000) -> None:
        self.keep = keep
        self.max_keys = max_keys
        self._seen: dict[str, deque[float]] = {}

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        return [(k, t) for k in keys for t in self._seen.get(k, ()) if t > since]

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        if len(self._seen) >= self.max_keys:
            for key in list(self._seen):
                times = self._seen[key]
                while times and times[0] < forget_before:
                    times.popleft()
                if not times:
                    del self._seen[key]
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
        for key in keys:
            self._seen.setdefault(key, deque(maxlen=self.keep)).append(at)


MAX_KEY_LENGTH = 200


def limit_key(kind: str, value: str) -> str:
    """`kind:value`, with an overlong value (a user name is whatever a client sends)
    replaced by its digest so keys stay short enough to index, as is one a database may
    refuse as text (PostgreSQL takes no NUL character, nor a lone surrogate)."""
    if (len(value) > MAX_KEY_LENGTH - len(kind) - 1 or "\x00" in value
            or not _storable(value)):
        value = "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    return f"{kind}:{value}"


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class FailureLimiter:
    def __init__(self, failures: int, window: float, log: FailureLog | None = None) -> None:
        self.failures = failures
        self.window = window
        self.log: FailureLog = log if log is not None else MemoryFailureLog(keep=failures)

    def share(self, log: FailureLog) -> None:
        """Count in `log` from now on (the store every worker shares)."""
        self.log = log

    async def retry_after(self, *keys: str) -> int:
        """Seconds to wait before any of `keys` may try again; 0 when they may now."""
        now = time.time()
        by_key: dict[str, list[float]] = {}
        for key, at in await self.log.failures_since(keys, now - self.window):
            by_key.setdefault(key, []).append(at)
        wait = 0.0
        for times in by_key.values():
            if len(times) >= self.failures:
                times.sort()
                # locked until all but `failures - 1` of them have left the window
                wait = max(wait, times[len(times) - self.failures] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    async def failed(self, *keys: str) -> None:
        now = time.time()
        await self.log.add_failures(keys, now, now - self.window)
