"""How a standby replica's follower says it runs, and that it fails: what the metrics
and the alert `DockyardReplicaNotFollowing` read (`GET /admin/v1/replica`'s `alive_at`
and `state`). Real stores in tmp_path; the primary is a port nothing listens on, or a
client whose feed request never ends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.registry import Registry
from dockyard.remote.client import RegistryClient
from dockyard.replica import follower as follower_module
from dockyard.replica.follower import Follower, replica_job

GONE = "http://127.0.0.1:9"  # the discard port: nothing answers


async def _registry(tmp_path: Path) -> Registry:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    return await open_registry(settings)


class HangingFeed(RegistryClient):
    """A primary whose feed request never answers (a step that takes long)."""

    async def events(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_a_follower_beats_while_a_step_takes_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follower_module, "HEARTBEAT", 0.05)
    registry = await _registry(tmp_path)
    try:
        await registry.replica.follow(GONE)
        await registry.replica.save(7, {"state": "following", "head": 7})
        async with HangingFeed(GONE) as client:
            task = asyncio.ensure_future(Follower(registry, client, GONE).run())
            await asyncio.sleep(0.2)
            first = (await registry.replica.status())["alive_at"]
            await asyncio.sleep(0.3)
            later = (await registry.replica.status())["alive_at"]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert first is not None
        assert later is not None
        assert later > first  # beating, though the step never ended
        status = await registry.replica.status()
        assert status["cursor"] == 7  # untouched by the beats
        assert status["state"] == "following"
    finally:
        await close_registry(registry)


async def test_a_failing_once_run_says_so_before_it_raises(tmp_path: Path) -> None:
    registry = await _registry(tmp_path)
    try:
        async with RegistryClient(GONE) as client:
            with pytest.raises(Exception):  # noqa: B017 (the client's connection error)
                await Follower(registry, client, GONE).run(until_caught_up=True)
        status = await registry.replica.status()
        assert status["state"] == "error"
        assert "127.0.0.1:9" in status["last_error"]
        assert time.time() - 60 < status["alive_at"] <= time.time()
    finally:
        await close_registry(registry)


class BrokenFeed(RegistryClient):
    """A primary whose feed answers something this registry fails on in a way no
    network failure does (here a bug's TypeError, as a store's own error would)."""

    async def events(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        raise TypeError("'NoneType' object is not subscriptable")


@pytest.mark.parametrize("once", [False, True], ids=["server", "once"])
async def test_a_follower_failing_on_its_own_fault_says_error_not_following(
        tmp_path: Path, once: bool) -> None:
    """The run ends with the fault (the server's job starts another one), and the
    status says so: it kept the last step's "following" and lag, and with the
    heartbeat of each new run the alert never saw a follower that made no progress."""
    registry = await _registry(tmp_path)
    try:
        await registry.replica.follow(GONE)
        await registry.replica.save(7, {"state": "following", "head": 7,
                                        "events_behind": 0, "seconds_behind": 0.0})
        async with BrokenFeed(GONE) as client:
            with pytest.raises(TypeError, match="not subscriptable"):
                await Follower(registry, client, GONE).run(until_caught_up=once)
        status = await registry.replica.status()
        assert status["state"] == "error"
        assert status["last_error"] == "TypeError: 'NoneType' object is not subscriptable"
        assert status["seconds_behind"] is None
        assert status["cursor"] == 7
    finally:
        await close_registry(registry)


async def test_credentials_the_server_cannot_read_are_an_error_state(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "replica.primary": GONE, "replica.username": "admin",
        "replica.password_env": "DOCKYARD_TEST_NO_SUCH_VARIABLE"})
    registry = await open_registry(settings)
    try:
        await registry.replica.follow(GONE)
        await replica_job(registry, settings.replica).run()  # logs, and says so now
        status = await registry.replica.status()
        assert status["state"] == "error"
        assert "DOCKYARD_TEST_NO_SUCH_VARIABLE" in status["last_error"]
        assert status["alive_at"] is None  # the follower never ran: never seen running
    finally:
        await close_registry(registry)


async def test_a_replica_whose_follower_never_ran_shows_as_never_seen(tmp_path: Path) -> None:
    """The series the alert reads exist from the moment a registry is a replica: a
    follower that never reported reads as last seen at 0 (so the alert fires), not as
    no series at all (so it would never fire)."""
    from dockyard.api.health import _replica_gauges

    registry = await _registry(tmp_path)
    try:
        assert list(_replica_gauges(await registry.replica.standby())) == []  # a primary
        await registry.replica.follow(GONE)
        families = {f.name: f for f in _replica_gauges(await registry.replica.standby())}
        assert {s.labels["state"]: s.value
                for s in families["dockyard_replica_state"].samples} == {
            "following": 0, "comparing": 0, "error": 0}
        assert families["dockyard_replica_last_report_timestamp_seconds"].samples[0].value \
            == 0
        assert "dockyard_replica_events_behind" not in families  # no report: no figure
        await registry.replica.promote()
        assert list(_replica_gauges(await registry.replica.standby())) == []
    finally:
        await close_registry(registry)
