"""Upgrading a PostgreSQL registry: indexes are built while pushes go on, once per cluster.

Each test has a database of its own on the session's PostgreSQL, brought to revision
0017 (before the two migrations that index large tables) with rows in it, or left empty.
"A push in flight" is a transaction that inserted a blob or manifest and has not yet
committed: a plain CREATE INDEX waits for it holding a lock every later INSERT queues
behind; a concurrent build waits for it too but lets the INSERTs through.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from dockyard.metadata.engine import (
    HEAD_REVISION,
    alembic_config,
    async_url,
    migrate,
    open_engines,
)
from tests.support.postgres import postgres_unavailable, running_postgres

BLOBS, MANIFESTS = 20_000, 2_000
NEW_INDEXES = ("ix_blobs_digest_bytewise", "ix_manifests_referrers",
               "ix_manifests_referrers_by_type")
WAIT = 60.0


@pytest.fixture
def empty_database() -> Iterator[str]:
    """The URL of a new, empty database (dropped after)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as url:
        yield url


@pytest.fixture
async def at_0017(empty_database: str) -> str:
    """A database at revision 0017 holding blobs and manifests (some of them referrers)."""
    from alembic import command
    from sqlalchemy.ext.asyncio import create_async_engine

    def upgrade(connection: Any) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0017")
        connection.commit()

    engine = create_async_engine(async_url(empty_database))
    async with engine.connect() as conn:
        await conn.run_sync(upgrade)
    await engine.dispose()
    db = await asyncpg.connect(empty_database)
    try:
        await db.execute(f"""
            INSERT INTO repositories (name, created_at) VALUES ('app', 0);
            INSERT INTO blobs (digest, size, created_at, touched_at)
              SELECT 'sha256:' || md5(i::text) || md5(i::text), i, 0, 0
              FROM generate_series(1, {BLOBS}) AS i;
            INSERT INTO manifests (repository_id, digest, media_type, size, payload,
                                   subject_digest, created_at)
              SELECT 1, 'sha256:m' || md5(i::text), 'application/json', 2, '{{}}',
                     CASE WHEN i % 10 = 0 THEN 'sha256:s' || md5(i::text) END, i
              FROM generate_series(1, {MANIFESTS}) AS i""")
    finally:
        await db.close()
    return empty_database


async def revision(db: asyncpg.Connection) -> str:
    return str(await db.fetchval("SELECT version_num FROM alembic_version"))


async def validity(db: asyncpg.Connection) -> dict[str, bool]:
    """The new indexes there and whether each is valid."""
    rows = await db.fetch("SELECT c.relname, i.indisvalid FROM pg_index i "
                          "JOIN pg_class c ON c.oid = i.indexrelid "
                          "WHERE c.relname = ANY($1::text[])", list(NEW_INDEXES))
    return {r["relname"]: r["indisvalid"] for r in rows}


async def push_in_flight(url: str, table: str, n: int) -> asyncpg.Connection:
    """A connection whose open transaction has inserted row `n` into `table`."""
    conn = await asyncpg.connect(url)
    await conn.execute("BEGIN")
    await insert(conn, table, n)
    return conn


async def insert(conn: asyncpg.Connection, table: str, n: int) -> None:
    if table == "blobs":
        await conn.execute("INSERT INTO blobs (digest, size, created_at, touched_at) "
                           "VALUES ($1, 1, 0, 0)", f"sha256:pushed-{n}")
    else:
        await conn.execute("INSERT INTO manifests (repository_id, digest, media_type, size,"
                           " payload, subject_digest, created_at) VALUES (1, $1, "
                           "'application/json', 2, '{}', $2, 0)",
                           f"sha256:pushed-{n}", f"sha256:subject-{n}")


async def building(db: asyncpg.Connection, index: str) -> int:
    """Wait until a build of `index` waits for a transaction; its backend's pid."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'CREATE INDEX%' AND "
            "query LIKE '%' || $1 || ' %' AND wait_event_type = 'Lock'", index)
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no build of {index} waiting")


async def push_meanwhile(url: str, n: int) -> float:
    """Insert a blob and a manifest as a push would (each waiting 5 s at most for a
    lock); the seconds both took."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET lock_timeout = '5s'")
        start = time.monotonic()
        await insert(conn, "blobs", n)
        await insert(conn, "manifests", n)
        return time.monotonic() - start
    finally:
        await conn.close()


async def test_an_upgrade_builds_its_indexes_while_pushes_go_on(at_0017: str) -> None:
    """0018 and 0019 each wait for a push in flight on their table; pushes meanwhile are
    written at once, a second node waits and finds the schema current; all valid."""
    url = at_0017
    db = await asyncpg.connect(url)
    blob_push = await push_in_flight(url, "blobs", 0)
    manifest_push = await push_in_flight(url, "manifests", 0)
    first, second = open_engines(url), open_engines(url)
    upgrade = asyncio.create_task(migrate(first))
    waiting = None
    try:
        await building(db, "ix_blobs_digest_bytewise")
        assert await push_meanwhile(url, 1) < 2
        waiting = asyncio.create_task(migrate(second))  # another node starting now
        await asyncio.sleep(1)
        assert not waiting.done()
        await blob_push.execute("COMMIT")
        await building(db, "ix_manifests_referrers")
        assert await push_meanwhile(url, 2) < 2
        await manifest_push.execute("COMMIT")
        await asyncio.wait_for(upgrade, WAIT)
        await asyncio.wait_for(waiting, WAIT)
        assert await revision(db) == HEAD_REVISION
        assert await validity(db) == dict.fromkeys(NEW_INDEXES, True)
        assert await db.fetchval("SELECT count(*) FROM blobs") == BLOBS + 3
        assert await db.fetchval("SELECT count(*) FROM manifests") == MANIFESTS + 3
    finally:
        for push in (blob_push, manifest_push):
            if push.is_in_transaction():
                await push.execute("COMMIT")
            await push.close()
        for task in (upgrade, waiting):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        await first.dispose()
        await second.dispose()
        await db.close()


async def test_a_rerun_rebuilds_an_index_a_failed_build_left_invalid(at_0017: str) -> None:
    """A build that failed leaves its index INVALID under the migration's name: the
    next upgrade builds it again instead of taking it for done."""
    db = await asyncpg.connect(at_0017)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):  # sizes repeat in manifests
            await db.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_manifests_referrers "
                             "ON manifests (size)")
        assert await validity(db) == {"ix_manifests_referrers": False}
        engines = open_engines(at_0017)
        await migrate(engines)
        await engines.dispose()
        assert await revision(db) == HEAD_REVISION
        assert await validity(db) == dict.fromkeys(NEW_INDEXES, True)
        definition = await db.fetchval("SELECT pg_get_indexdef('ix_manifests_referrers'"
                                       "::regclass)")
        assert "(repository_id, subject_digest, created_at, id)" in definition
        assert "WHERE (subject_digest IS NOT NULL)" in definition
    finally:
        await db.close()


async def test_a_build_cancelled_midway_releases_the_lock_and_a_rerun_ends_it(
        at_0017: str) -> None:
    """An upgrade whose build is cancelled fails, holds the migration lock no more and
    leaves the index INVALID; the next start upgrades to a valid index."""
    db = await asyncpg.connect(at_0017)
    blob_push = await push_in_flight(at_0017, "blobs", 0)
    engines = open_engines(at_0017)
    upgrade = asyncio.create_task(migrate(engines))
    try:
        pid = await building(db, "ix_blobs_digest_bytewise")
        assert await db.fetchval("SELECT pg_cancel_backend($1)", pid)
        with pytest.raises(Exception, match="canceling statement"):
            await asyncio.wait_for(upgrade, WAIT)
        assert await db.fetchval("SELECT count(*) FROM pg_locks "
                                 "WHERE locktype = 'advisory'") == 0
        assert await validity(db) == {"ix_blobs_digest_bytewise": False}
        assert await revision(db) == "0017"
        await blob_push.execute("COMMIT")
        await migrate(engines)
        assert await revision(db) == HEAD_REVISION
        assert await validity(db) == dict.fromkeys(NEW_INDEXES, True)
    finally:
        if blob_push.is_in_transaction():
            await blob_push.execute("COMMIT")
        await blob_push.close()
        await asyncio.gather(upgrade, return_exceptions=True)
        await engines.dispose()
        await db.close()


MIGRATE = """
import asyncio, logging, sys
from dockyard.metadata.engine import migrate, open_engines
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
async def main():
    engines = open_engines(sys.argv[1])
    await migrate(engines)
    await engines.dispose()
asyncio.run(main())
"""


def test_processes_starting_together_migrate_an_empty_database_once(
        empty_database: str) -> None:
    """Four processes migrate one empty database at once: each migration runs once (in
    one of them), every process ends well, and the schema is current."""
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, empty_database],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    log = "".join(outputs)
    assert log.count("Running upgrade  -> 0001") == 1, log
    assert log.count("Running upgrade 0018 -> 0019") == 1, log

    async def check() -> None:
        db = await asyncpg.connect(empty_database)
        try:
            assert await revision(db) == HEAD_REVISION
            assert await validity(db) == dict.fromkeys(NEW_INDEXES, True)
        finally:
            await db.close()

    asyncio.run(check())
