"""Failed-login limits per client address and per user name (in each worker process).

After `failures` failed logins within `window` from one address, or against one user, further
attempts from it (or for them) are refused without checking the password until the oldest
failure leaves the window. The counters live in process memory: with N workers an attacker
gets at most N times the budget, which still turns a password search into years.
"""

from __future__ import annotations

import math
import time
from collections import deque


class FailureLimiter:
    def __init__(self, failures: int, window: float, *, max_keys: int = 100_000) -> None:
        self.failures = failures
        self.window = window
        self.max_keys = max_keys
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._seen.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[key]
            return None
        return times

    def retry_after(self, *keys: str) -> int:
        """Seconds to wait before any of `keys` may try again; 0 when they may now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.failures:
                wait = max(wait, times[0] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._seen) >= self.max_keys:
            for key in list(self._seen):
                self._recent(key, now)
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
        for key in keys:
            self._seen.setdefault(key, deque(maxlen=self.failures)).append(now)
