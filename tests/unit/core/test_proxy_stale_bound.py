"""A worker's memory of tags whose re-check against upstream failed is bounded (a long
outage over many cached tags must not grow it without end)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core import proxy


async def test_tags_answered_stale_are_remembered_up_to_a_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "proxy": [{"prefix": "hub", "upstream": "http://127.0.0.1:9"}]})
    registry = await open_registry(settings)
    try:
        cache = registry.cache
        monkeypatch.setattr(proxy, "STALE_KEPT", 100)
        for n in range(250):
            cache._mark_stale("hub/app", f"t{n}")
        assert len(cache._stale) == 100
        assert cache._still_stale("hub/app", "t99")
        assert not cache._still_stale("hub/app", "t100")  # full of fresh ones: not kept
        # once they run out, the expired ones make room (the clock moved for the proxy
        # module only: the event loop keeps its own)
        later = time.monotonic() + proxy.STALE_RETRY + 1
        with monkeypatch.context() as patch:
            patch.setattr(proxy, "time", SimpleNamespace(monotonic=lambda: later,
                                                         time=time.time))
            cache._mark_stale("hub/app", "new")
            assert list(cache._stale) == [("hub/app", "new")]
            assert cache._still_stale("hub/app", "new")
        # a tag marked again is remembered anew, last: the map stays in expiry order,
        # and only the entries that ran out go when a later one is marked
        cache._stale.clear()
        clock = [1000.0]
        with monkeypatch.context() as patch:
            patch.setattr(proxy, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                         time=time.time))
            for tag in ("a", "b", "c", "a"):
                cache._mark_stale("hub/app", tag)
                clock[0] += 1
            assert [tag for _, tag in cache._stale] == ["b", "c", "a"]
            clock[0] = 1001 + proxy.STALE_RETRY + 0.5  # b ran out, c and a did not
            cache._mark_stale("hub/app", "d")
            assert [tag for _, tag in cache._stale] == ["c", "a", "d"]
    finally:
        await close_registry(registry)
