"""The notification outbox and its delivery loop over a real SQLite store; the HTTP
side is a fake `Sender` here (tests/e2e/test_notifications.py has the real one)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import delete

from dockyard.config.settings import EndpointSettings
from dockyard.core.notify import Deliverer, Notifier, RequestInfo, bind_request
from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.notifications import NotificationStore
from dockyard.metadata.schema import notifications
from dockyard.metadata.store import MetadataStore
from tests.support.postgres import postgres_unavailable, running_postgres


@pytest.fixture
async def outbox(sqlite_url: str) -> AsyncIterator[NotificationStore]:
    store = MetadataStore(open_engines(sqlite_url))
    yield NotificationStore(store)
    await store.close()


class FakeSender:
    """Fails the first `fail` sends, records the rest's envelopes."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.tries = 0
        self.envelopes: list[dict[str, Any]] = []

    async def send(self, endpoint: EndpointSettings, body: bytes) -> None:
        self.tries += 1
        if self.tries <= self.fail:
            raise ConnectionRefusedError("down")
        self.envelopes.append(json.loads(body))

    async def close(self) -> None:
        pass


def ep(name: str, **extra: Any) -> EndpointSettings:
    return EndpointSettings.model_validate({"name": name, "url": "http://127.0.0.1:1/",
                                            "backoff": "10ms", **extra})


async def until(check: Any) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the fake sender has no event to wait on
            await asyncio.sleep(0.01)


async def test_events_are_filtered_per_endpoint_and_carry_the_request(
        outbox: NotificationStore) -> None:
    notifier = Notifier(outbox, [ep("all"), ep("nopull", ignore={"actions": ["pull"]}),
                                 ep("off", disabled=True)], "host:5000")
    bind_request(lambda: RequestInfo(id="r1", addr="10.0.0.1", host="reg", method="GET",
                                     useragent="ua", actor="alice",
                                     base_url="https://reg"))
    await notifier.emit("pull", "a/b", digest="sha256:" + "0" * 64, tag="v1",
                        media_type="m", size=3)
    assert [r[2] for r in await outbox.pending("nopull", 10)] == []
    assert await outbox.count("off") == 0
    (row,) = await outbox.pending("all", 10)
    event = json.loads(row[2])
    assert event["target"] == {"mediaType": "m", "size": 3, "length": 3, "tag": "v1",
                               "digest": "sha256:" + "0" * 64, "repository": "a/b",
                               "url": "https://reg/v2/a/b/manifests/sha256:" + "0" * 64}
    assert event["request"] == {"id": "r1", "addr": "10.0.0.1", "host": "reg",
                                "method": "GET", "useragent": "ua"}
    assert event["actor"] == {"name": "alice"}
    assert event["source"]["addr"] == "host:5000"


async def test_delivery_in_order_in_batches_and_retried_until_accepted(
        outbox: NotificationStore) -> None:
    endpoint = ep("hook", maxevents=2, threshold=2)
    notifier = Notifier(outbox, [endpoint])
    for i in range(5):
        await notifier.emit("delete", f"repo/{i}")
    sender = FakeSender(fail=3)
    task = asyncio.create_task(Deliverer(outbox, [endpoint], lambda: sender,
                                         poll=0.01).run())
    try:
        await until(lambda: sum(len(e["events"]) for e in sender.envelopes) == 5)
        # an envelope's rows are deleted once the endpoint accepted it: after the send
        async with asyncio.timeout(10):
            while await outbox.count("hook"):  # noqa: ASYNC110 - a row count, no event
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    repos = [ev["target"]["repository"] for e in sender.envelopes for ev in e["events"]]
    assert repos == [f"repo/{i}" for i in range(5)]
    assert [len(e["events"]) for e in sender.envelopes] == [2, 2, 1]
    assert sender.tries == 6  # three refused, then three envelopes
    assert await outbox.count("hook") == 0


async def test_a_failed_endpoint_keeps_its_events(outbox: NotificationStore) -> None:
    endpoint = ep("hook")
    await Notifier(outbox, [endpoint]).emit("push", "r", digest="sha256:" + "1" * 64)
    sender = FakeSender(fail=10**6)
    task = asyncio.create_task(Deliverer(outbox, [endpoint], lambda: sender,
                                         poll=0.01).run())
    await until(lambda: sender.tries >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await outbox.count("hook") == 1


class FailingStore:
    """An outbox whose reads fail for endpoint `bad` (the database gone) and wait for
    the others."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}

    async def pending(self, name: str, limit: int) -> list[Any]:
        self.reads[name] = self.reads.get(name, 0) + 1
        if name == "bad":
            await asyncio.sleep(0.05)
            raise ConnectionError("database gone")
        return []

    async def count(self, name: str) -> int:
        return 0

    async def forget_others(self, names: list[str], older_than: float) -> int:
        return 0


async def test_one_failed_loop_stops_the_others_and_closes_the_sender() -> None:
    # before, gather left the other endpoints' loops running after the failure (and
    # after the sender was closed), one more set for each run of the job
    closed: list[bool] = []

    class Closing(FakeSender):
        async def close(self) -> None:
            closed.append(True)

    store = FailingStore()
    deliverer = Deliverer(store, [ep("good"), ep("bad")], Closing, poll=0.01)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await deliverer.run()
    assert closed == [True]
    reads = dict(store.reads)
    await asyncio.sleep(0.1)
    assert store.reads == reads, "a delivery loop outlived its run"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if (why := postgres_unavailable()) is not None:
        pytest.skip(why)
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_outbox(request: pytest.FixtureRequest, sqlite_url: str
                     ) -> AsyncIterator[NotificationStore]:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres")
    engines = open_engines(url)
    await migrate(engines)
    store = MetadataStore(engines)
    yield NotificationStore(store)
    await engines.transaction(lambda conn: conn.execute(delete(notifications)))
    await store.close()


async def test_a_long_down_endpoint_keeps_its_newest_events_up_to_the_bound(
        any_outbox: NotificationStore) -> None:
    # an endpoint down for days grew the outbox without end (a full disk then failed
    # pushes, whose events are queued in their transaction)
    endpoint = ep("down", maxevents=2)
    notifier = Notifier(any_outbox, [endpoint])
    for i in range(7):
        await notifier.emit("delete", f"repo/{i}")
    sender = FakeSender(fail=10**6)
    task = asyncio.create_task(Deliverer(any_outbox, [endpoint], lambda: sender,
                                         poll=0.01, max_queued=3).run())
    try:
        await until(lambda: sender.tries >= 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    kept = [json.loads(r[2])["target"]["repository"]
            for r in await any_outbox.pending("down", 10)]
    assert kept == ["repo/4", "repo/5", "repo/6"]


async def test_events_for_an_endpoint_no_longer_configured_are_dropped(
        any_outbox: NotificationStore) -> None:
    await Notifier(any_outbox, [ep("kept")]).emit("delete", "repo/x")
    # queued two hours ago for an endpoint since removed; and just now for one that
    # only another node (its configuration rolled out first) knows: that one stays
    await any_outbox.enqueue([("old", "{}")], time.time() - 7200)
    await any_outbox.enqueue([("newer", "{}")], time.time())
    sender = FakeSender()
    task = asyncio.create_task(Deliverer(any_outbox, [ep("kept")], lambda: sender,
                                         poll=0.01).run())
    try:
        await until(lambda: len(sender.envelopes) == 1)
        async with asyncio.timeout(10):
            while await any_outbox.count("old"):  # noqa: ASYNC110 - a row, no event
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await any_outbox.count("newer") == 1


async def test_a_failed_clean_up_of_unknown_endpoints_stops_no_delivery(
        any_outbox: NotificationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # the clean-up ran as one of the delivery loops and caught nothing: one database
    # error there ended every endpoint's deliveries until the job started again
    async def broken(names: list[str], older_than: float) -> int:
        raise ConnectionError("database gone for a moment")

    monkeypatch.setattr(any_outbox, "forget_others", broken)
    await Notifier(any_outbox, [ep("kept")]).emit("delete", "repo/x")
    sender = FakeSender()
    task = asyncio.create_task(Deliverer(any_outbox, [ep("kept")], lambda: sender,
                                         poll=0.01).run())
    try:
        await until(lambda: len(sender.envelopes) == 1)
        await asyncio.sleep(0.1)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
