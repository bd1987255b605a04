"""The change feed over a real SQLite store: every change records its event in its own
transaction, in order; pruning, expired and foreign cursors, the long poll.

The checks are plain functions of a store, so `tests/e2e/test_feed_postgres.py` runs
them on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dockyard.core.feed import FeedService
from dockyard.metadata.events import EventRecord
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.store import MetadataStore, MissingReferences
from dockyard.oci.errors import CursorExpired
from tests.unit.metadata.test_store import CONFIG, LAYER, dg, image, manifest


def brief(events: list[EventRecord]) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.kind, e.repository, e.tag, e.digest) for e in events]


async def check_changes_are_recorded_in_order(store: MetadataStore) -> None:
    _, _, start = await store.events_after(0, 0)
    one = await image(store, "feed/a", "one", tag="v1")
    two = await image(store, "feed/a", "two", tag="v1")  # v1 moves
    await store.put_manifest("feed/a", one, "old")  # an existing manifest tagged
    await store.put_manifest("feed/a", one, None)  # pushed again untagged: no change
    assert await store.delete_tag("feed/a", "old")
    assert not await store.delete_tag("feed/a", "old")  # nothing deleted: no event
    assert await store.delete_manifest("feed/a", one.digest) == [one.digest]
    assert await store.unlink_blob("feed/a", LAYER)
    lifecycle = LifecycleStore(store)
    assert await lifecycle.delete_repository("feed/a") is not None
    events, _, head = await store.events_after(start, 100)
    assert brief(events) == [
        ("manifest.put", "feed/a", "v1", one.digest),
        ("manifest.put", "feed/a", "v1", two.digest),
        ("tag.set", "feed/a", "old", one.digest),
        ("tag.deleted", "feed/a", "old", None),
        ("manifest.deleted", "feed/a", None, one.digest),
        ("blob.deleted", "feed/a", None, LAYER),
        ("repository.deleted", "feed/a", None, None),
    ]
    assert events[0].media_type == one.media_type
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    assert head == ids[-1]


async def check_a_failed_change_records_nothing(store: MetadataStore) -> None:
    _, _, head = await store.events_after(0, 0)
    with pytest.raises(MissingReferences):
        await store.put_manifest("feed/b", manifest("x", blobs=(dg("absent"),)), "v1")
    assert (await store.events_after(head, 10))[0] == []


async def check_collector_deletions_are_recorded(store: MetadataStore) -> None:
    lifecycle = LifecycleStore(store)
    kept = await image(store, "feed/c", "kept", tag="latest")
    dead = await image(store, "feed/c", "dead", tag="gone")
    _, _, head = await store.events_after(0, 0)
    repo_id = next(i for i, n in await lifecycle.repositories() if n == "feed/c")
    pushed = {t: at for t, at, _ in await lifecycle.tags(repo_id)}
    assert await lifecycle.delete_tag_if_unchanged(repo_id, "gone", pushed["gone"])
    node = next(m for m in await lifecycle.manifest_graph(repo_id) if m.digest == dead.digest)
    assert await lifecycle.delete_dead_manifest(repo_id, node.id, time.time() + 1)
    events, _, _ = await store.events_after(head, 10)
    assert brief(events) == [("tag.deleted", "feed/c", "gone", None),
                             ("manifest.deleted", "feed/c", None, dead.digest)]
    assert kept.digest != dead.digest


async def check_pruning_and_cursors(store: MetadataStore) -> None:
    feed = FeedService(store, poll=0.01)
    await image(store, "feed/d", "d1", tag="1")
    await image(store, "feed/d", "d2", tag="2")
    page = await feed.changes(0, 1000)
    head = page.head
    assert page.next == head
    assert await feed.prune(-10) >= 2  # everything recorded before now + 10 s
    assert (await feed.changes(head, 10)).events == []  # a reader at the head goes on
    with pytest.raises(CursorExpired) as expired:
        await feed.changes(head - 1, 10)  # it missed a pruned event
    assert expired.value.detail == {"floor": head, "head": head}
    with pytest.raises(CursorExpired):
        await feed.changes(head + 5, 10)  # past every event this feed ever had
    three = await image(store, "feed/d", "d3", tag="3")
    page = await feed.changes(head, 10)
    # ids are never reused after pruning
    assert brief(page.events) == [("manifest.put", "feed/d", "3", three.digest)]
    assert page.events[0].id > head


async def check_a_wait_ends_when_an_event_arrives(store: MetadataStore) -> None:
    feed = FeedService(store, poll=0.02)
    _, _, head = await store.events_after(0, 0)
    await store.link_blob("feed/e", CONFIG, 2)
    await store.link_blob("feed/e", LAYER, 100)
    waiting = asyncio.create_task(feed.changes(head, 10, wait=60))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    new = manifest("late", blobs=(CONFIG, LAYER))
    await store.put_manifest("feed/e", new, "late")
    page = await asyncio.wait_for(waiting, 30)  # far sooner than the 60 s asked for
    assert brief(page.events) == [("manifest.put", "feed/e", "late", new.digest)]
    # without events the wait ends at its bound, with an empty page at the same cursor
    empty = await feed.changes(page.next, 10, wait=0.05)
    assert empty.events == []
    assert empty.next == page.next


async def test_changes_are_recorded_in_order(store: MetadataStore) -> None:
    await check_changes_are_recorded_in_order(store)


async def test_a_failed_change_records_nothing(store: MetadataStore) -> None:
    await check_a_failed_change_records_nothing(store)


async def test_collector_deletions_are_recorded(store: MetadataStore) -> None:
    await check_collector_deletions_are_recorded(store)


async def test_pruning_and_cursors(store: MetadataStore) -> None:
    await check_pruning_and_cursors(store)


async def test_a_wait_ends_when_an_event_arrives(store: MetadataStore) -> None:
    await check_a_wait_ends_when_an_event_arrives(store)


async def test_an_import_is_recorded(store: MetadataStore) -> None:
    """`dockyard import` writes the feed too: a replica follows adopted content."""
    from dockyard.metadata.adoption import AdoptionStore

    _, _, start = await store.events_after(0, 0)
    child = manifest("imported", blobs=(CONFIG, LAYER))
    await AdoptionStore(store).import_repository(
        "feed/imported", [(CONFIG, 2), (LAYER, 100)], [child], [("v1", child.digest)])
    events, _, _ = await store.events_after(start, 10)
    assert brief(events) == [("manifest.put", "feed/imported", None, child.digest),
                             ("tag.set", "feed/imported", "v1", child.digest)]
    assert events[1].media_type == child.media_type
