from __future__ import annotations

import pytest

from dockyard.auth import ratelimit
from dockyard.auth.ratelimit import FailureLimiter


def test_limits_per_key_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    limiter = FailureLimiter(3, 60)
    for _ in range(3):
        assert limiter.retry_after("addr:a", "user:x") == 0
        limiter.failed("addr:a", "user:x")
    assert limiter.retry_after("addr:a") == 60
    assert limiter.retry_after("addr:b", "user:x") == 60
    assert limiter.retry_after("addr:b", "user:y") == 0
    now[0] += 59.5
    assert limiter.retry_after("addr:a") == 1
    now[0] += 1
    assert limiter.retry_after("addr:a", "user:x") == 0
