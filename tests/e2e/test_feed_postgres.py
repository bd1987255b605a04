"""The change feed on PostgreSQL: the SQLite checks again, and commit order across nodes.

A reader with cursor N must never skip an event that commits after it read past N. On
PostgreSQL ids come from a sequence at insert time, so without the feed's lock a
transaction that drew id 5 could commit after one that drew 6 and was read. Here two
stores (two "nodes") write while one transaction holds an event uncommitted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.events import Change
from dockyard.metadata.store import MetadataStore
from tests.e2e.test_replica import snapshot, wait_converged
from tests.support.authenv import write_config
from tests.support.oci_api import push_image, put_manifest
from tests.support.postgres import running_postgres
from tests.support.servers import Server, start_dockyard
from tests.unit.metadata import test_events as checks
from tests.unit.metadata.test_store import CONFIG, LAYER, manifest


async def _open(url: str) -> MetadataStore:
    engines = open_engines(url)
    await migrate(engines)
    return MetadataStore(engines)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[MetadataStore]:
    s = await _open(database_url)
    yield s
    await s.close()


async def test_changes_are_recorded_in_order(store: MetadataStore) -> None:
    await checks.check_changes_are_recorded_in_order(store)


async def test_a_failed_change_records_nothing(store: MetadataStore) -> None:
    await checks.check_a_failed_change_records_nothing(store)


async def test_collector_deletions_are_recorded(store: MetadataStore) -> None:
    await checks.check_collector_deletions_are_recorded(store)


async def test_a_wait_ends_when_an_event_arrives(store: MetadataStore) -> None:
    await checks.check_a_wait_ends_when_an_event_arrives(store)


async def _blocked_on_the_feed_lock(store: MetadataStore) -> bool:
    assert store.engines.reader is not None
    async with store.engines.reader.connect() as conn:
        waiting = await conn.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())"))  # the server is the session's
    return bool(waiting)


async def test_an_event_committed_later_never_has_a_smaller_id(
        store: MetadataStore, database_url: str) -> None:
    other = await _open(database_url)  # a second node on the same database
    try:
        await other.link_blob("order/b", CONFIG, 2)
        await other.link_blob("order/b", LAYER, 100)
        new = manifest("ordered", blobs=(CONFIG, LAYER))
        _, _, head = await store.events_after(0, 0)
        assert store.engines.writer is not None
        async with store.engines.writer.connect() as conn:
            tx = await conn.begin()
            # T1 records an event (drawing its id) and does not commit yet
            await conn.run_sync(lambda c: store.events.record(
                c, [Change("tag.deleted", "order/a", "t1")], time.time()))
            # T2, a whole push on the other node, starts after T1 drew its id
            push = asyncio.create_task(other.put_manifest("order/b", new, "v1"))
            deadline = time.monotonic() + 30
            while not await _blocked_on_the_feed_lock(store):
                assert not push.done(), "T2 committed while T1 was still open"
                assert time.monotonic() < deadline, "T2 never waited for T1"
                await asyncio.sleep(0.05)
            # a reader now sees neither event: none can be skipped later
            assert (await store.events_after(head, 10))[0] == []
            await tx.commit()
        await asyncio.wait_for(push, 30)
        events, _, _ = await store.events_after(head, 10)
        assert checks.brief(events) == [("tag.deleted", "order/a", "t1", None),
                                        ("manifest.put", "order/b", "v1", new.digest)]
        assert events[0].id < events[1].id
    finally:
        await other.close()


async def test_a_follower_sees_every_event_of_concurrent_writers(
        store: MetadataStore, database_url: str) -> None:
    """Two nodes push 40 tags each while a reader follows the cursor: it reads every
    event exactly once, in id order."""
    other = await _open(database_url)
    try:
        _, _, start = await store.events_after(0, 0)
        for s in (store, other):
            await s.link_blob("order/c", CONFIG, 2)
            await s.link_blob("order/c", LAYER, 100)
        new = manifest("concurrent", blobs=(CONFIG, LAYER))

        async def pushes(s: MetadataStore, prefix: str) -> None:
            for i in range(40):
                await s.put_manifest("order/c", new, f"{prefix}{i}")

        writers = asyncio.gather(pushes(store, "a"), pushes(other, "b"))
        seen: list[int] = []
        cursor = start
        while not writers.done() or (await store.events_after(cursor, 1))[0]:
            events, _, _ = await store.events_after(cursor, 7)
            seen += [e.id for e in events]
            cursor = events[-1].id if events else cursor
            await asyncio.sleep(0)
        await writers
        everything, _, _ = await store.events_after(start, 1000)
        assert len(everything) == 80
        assert seen == [e.id for e in everything]
    finally:
        await other.close()


def test_a_replica_follows_two_primary_nodes_on_postgres(tmp_path: Path) -> None:
    """Two primary nodes on one PostgreSQL take pushes and retags at once; a replica
    following one of them ends with everything, in the end state of both."""
    with running_postgres() as url:
        env = {"DOCKYARD_DATABASE_URL": url}
        data = tmp_path / "primary" / "data"
        nodes = [start_dockyard(data, workers=2, env=env, wait=False) for _ in range(2)]
        replica = None
        try:
            for node in nodes:
                node.wait_ready()
            config = write_config(tmp_path / "replica.yml", replica={
                "primary": nodes[0].url, "interval": "1s", "wait": "2s", "batch": 5})
            replica = start_dockyard(tmp_path / "replica" / "data", config=config)

            def pushes(node: Server, prefix: str) -> None:
                with httpx.Client(base_url=node.url, timeout=60) as c:
                    for i in range(12):
                        pushed = push_image(c, f"pg/{prefix}", f"t{i}")
                        # a second tag on it, and a tag of a shared repository that
                        # moves with every push, from both nodes
                        assert put_manifest(c, f"pg/{prefix}", f"again{i}", pushed.payload,
                                            pushed.media_type).status_code == 201
                        push_image(c, "pg/shared", f"moving{i % 2}")
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(pushes, nodes, ["a", "b"]))
            state = wait_converged(nodes[0], replica)
            assert len(state["pg/a"]) == len(state["pg/b"]) == 24
            assert sorted(state["pg/shared"]) == ["moving0", "moving1"]
            assert snapshot(nodes[1].url) == state
        finally:
            for server in [*nodes, *([replica] if replica else [])]:
                server.stop()
