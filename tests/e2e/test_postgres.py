"""Dockyard with its metadata in PostgreSQL: the conformance workflows and a collection.

Proves the metadata layer carries no SQLite-only SQL. PostgreSQL 15 (Debian's package,
installed by `make test` or by scripts/services/postgres.sh) runs on a free loopback
port for this module and is stopped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dockyard.auth.ratelimit import FailureLimiter
from dockyard.metadata.engine import open_engines
from dockyard.metadata.mirrors import MirrorStore, TagOrigin
from dockyard.metadata.schema import revoked_sessions
from dockyard.metadata.sessions import RevokedSessionStore
from dockyard.metadata.statements import Statements
from dockyard.metadata.store import MetadataStore
from tests.e2e import test_conformance as conformance
from tests.support.servers import Server, start_dockyard


@contextlib.asynccontextmanager
async def migrated_store(database_url: str) -> AsyncIterator[MetadataStore]:
    """A metadata store on the database, its schema migrated; closed after."""
    from dockyard.metadata.engine import migrate

    engines = open_engines(database_url)
    await migrate(engines)
    store = MetadataStore(engines)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def planned(database_url: str, name: str
                  ) -> AsyncIterator[tuple[MetadataStore, Any, Callable[[], Awaitable[list[str]]]]]:
    """A migrated store on a database of its own (`name`: a module's registry would
    collect the rows a test writes) whose reads are not run but explained: yields the
    store, an asyncpg connection to that database, and `plans()`: the `EXPLAIN` of each
    statement the store was asked to read since."""
    import asyncpg
    from sqlalchemy import make_url
    from sqlalchemy.dialects import postgresql

    admin = await asyncpg.connect(database_url)
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        async with migrated_store(url) as store:
            statements: list[Any] = []

            async def read(stmt: Any, params: Any = None) -> list[Any]:
                statements.append(stmt)
                return []

            async def plans() -> list[str]:
                sqls = [str(stmt.compile(dialect=postgresql.dialect(),
                                         compile_kwargs={"literal_binds": True}))
                        for stmt in statements]
                statements.clear()
                return ["\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
                        for sql in sqls]

            store._read = read  # type: ignore[method-assign]
            yield store, conn, plans
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("dockyard-pg") / "data"
    server = start_dockyard(data, workers=2, env={"DOCKYARD_DATABASE_URL": database_url})
    assert not (data / "metadata.db").exists()  # the metadata really is elsewhere
    yield server
    server.stop()


@pytest.fixture(scope="class")
def client(request: pytest.FixtureRequest, registry: Server) -> Iterator[conformance.Reggie]:
    c = conformance.Reggie(registry.url, f"pg-{conformance.RUN_ID}/{request.cls.WORKFLOW}")
    yield c
    c.close()


class TestPullOnPostgres(conformance.TestPull):
    """01_pull_test.go with PostgreSQL metadata."""


class TestPushOnPostgres(conformance.TestPush):
    """02_push_test.go with PostgreSQL metadata."""


class TestContentDiscoveryOnPostgres(conformance.TestContentDiscovery):
    """03_discovery_test.go with PostgreSQL metadata."""


class TestContentManagementOnPostgres(conformance.TestContentManagement):
    """04_management_test.go with PostgreSQL metadata."""


def push_image(c: httpx.Client, repo: str, tag: str) -> tuple[str, str, str]:
    """A random one-layer image pushed as `repo:tag`: (layer, config, manifest) digests."""
    body = os.urandom(2048)
    d = conformance.sha256_digest(body)
    assert c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d},
                  content=body).status_code == 201
    cfg = b'{"architecture":"amd64","os":"linux"}' + repo.encode() + os.urandom(8).hex().encode()
    cd = conformance.sha256_digest(cfg)
    assert c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": cd},
                  content=cfg).status_code == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d, "size": len(body)}]}).encode()
    resp = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={
        "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert resp.status_code == 201, resp.text
    return d, cd, resp.headers["Docker-Content-Digest"]


def test_collection_on_postgres(registry: Server, database_url: str) -> None:
    """Delete a repository, collect with the CLI: its blob files go, the other's stay."""
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        digests = {}
        for repo in ("pg/keep", "pg/drop"):
            digests[repo] = push_image(c, repo, "v1")[:2]
        assert c.delete("/admin/v1/repositories/pg/drop").status_code == 202
        assert "pg/drop" not in c.get("/v2/_catalog").json()["repositories"]
        gc = subprocess.run(
            [sys.executable, "-m", "dockyard", "gc", "--data", str(registry.data), "--grace",
             "0s", "--json"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "DOCKYARD_DATABASE_URL": database_url})
        assert gc.returncode == 0, gc.stderr
        report = json.loads(gc.stdout)
        dropped = {r["name"]: r for r in report["repositories"]}
        assert dropped["pg/drop"]["blobs"] == 2
        stored = {p.parent.name for p in (registry.data / "blobs").rglob("data")}
        for d in digests["pg/drop"]:
            assert d.split(":")[1] not in stored
        for d in digests["pg/keep"]:
            assert d.split(":")[1] in stored
            assert c.get(f"/v2/pg/keep/blobs/{d}").status_code == 200


def test_tag_times_on_postgres(registry: Server) -> None:
    """`/admin/v1/tags/<name>` (a replica's comparison reads it) pages by tag on
    PostgreSQL too, each tag with its digest and push time."""
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        pushed = {tag: push_image(c, "pg/times", tag)[2] for tag in ("b", "a", "c")}
        first = c.get("/admin/v1/tags/pg/times", params={"n": "2"})
        assert first.status_code == 200, first.text
        rest = c.get(first.links["next"]["url"])
        assert "link" not in rest.headers
        listed = first.json()["tags"] + rest.json()["tags"]
        assert [(t["tag"], t["digest"]) for t in listed] == sorted(pushed.items())
        at = {t["tag"]: t["pushed_at"] for t in listed}
        assert at["b"] < at["a"] < at["c"]


def test_failed_login_budget_on_postgres(tmp_path: Path, database_url: str) -> None:
    """The failed-login counters (migration 0004) work on PostgreSQL, shared by workers."""
    from tests.e2e.test_auth_hardening import basic
    from tests.support.authenv import USERS, basic_auth, write_config, write_htpasswd

    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    config = write_config(tmp_path / "config.yml", auth={
        **basic_auth(htpasswd), "ratelimit": {"failures": 3, "window": "1m"}})
    server = start_dockyard(tmp_path / "data", workers=2, config=config,
                            env={"DOCKYARD_DATABASE_URL": database_url})
    try:
        url = f"{server.url}/v2/"
        assert httpx.get(url, headers=basic("admin", USERS["admin"][0])).status_code == 200
        for i in range(3):
            assert httpx.get(url, headers=basic(f"pg{i}", "wrong")).status_code == 401
        for _ in range(8):
            assert httpx.get(url, headers=basic("reader", USERS["reader"][0])).status_code \
                == 429
    finally:
        server.stop()


def test_an_account_with_a_long_name_pushes_on_postgres(tmp_path: Path, database_url: str
                                                       ) -> None:
    """An account name longer than `tags.pushed_by` holds (an external issuer's `sub`
    may be) pushes on PostgreSQL, the name kept cut to 255 characters: PostgreSQL
    refused the tag's row, and the push failed with 500."""
    from tests.support.authenv import basic_auth, write_config, write_htpasswd
    from tests.support.oci_api import push_image

    name, password = "u" * 300, "long-secret-pw"
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {name: (password, ["admins"])})
    config = write_config(tmp_path / "config.yml",
                          auth={**basic_auth(htpasswd), "admin": ["group:admins"]})
    server = start_dockyard(tmp_path / "data", config=config,
                            env={"DOCKYARD_DATABASE_URL": database_url})
    try:
        with httpx.Client(base_url=server.url, auth=(name, password), timeout=30) as c:
            pushed = push_image(c, "long/pusher", "v1")
            listed = c.get("/admin/v1/tags/long/pusher").json()["tags"]
            assert [(t["digest"], t["pushed_by"]) for t in listed] == [
                (pushed.digest, name[:255])]
            page = c.get("/admin/v1/events", params={"limit": 1000}).json()
            assert [e["actor"] for e in page["events"]
                    if e["repository"] == "long/pusher"] == [name[:255]]
    finally:
        server.stop()


async def test_upload_session_cap_holds_under_racing_writers(database_url: str) -> None:
    """The count-then-insert of a new session is serialised on PostgreSQL too."""
    from dockyard.metadata.engine import migrate, open_engines
    from dockyard.metadata.store import MetadataStore, SessionLimit

    engines = open_engines(database_url)
    await migrate(engines)
    a, b = MetadataStore(engines), MetadataStore(open_engines(database_url))
    owner = f"user:race-{os.getpid()}"

    async def open_one(store: MetadataStore, i: int) -> bool:
        try:
            await store.create_upload(f"{owner}-{i}", "race", owner, max_total=10_000,
                                      max_per_owner=7)
        except SessionLimit:
            return False
        return True

    async def open_anonymous(store: MetadataStore, i: int, cap: int) -> str | None:
        try:
            await store.create_upload(f"anon-{os.getpid()}-{i}", "race", None,
                                      max_total=cap, max_per_owner=7)
        except SessionLimit as exc:
            return exc.which
        return None

    try:
        won = await asyncio.gather(*(open_one(a if i % 2 else b, i) for i in range(40)))
        assert sum(won) == 7
        # the total cap too, for sessions of no owner (the per-owner cap skips those)
        cap = len(await a.upload_ids()) + 5
        refused = await asyncio.gather(*(open_anonymous(a if i % 2 else b, i, cap)
                                         for i in range(20)))
        assert sorted(refused, key=str) == [None] * 5 + ["total"] * 15
    finally:
        await a.close()
        await b.close()


async def test_login_reservations_racing_over_two_connections_take_the_budget_exactly(
        database_url: str) -> None:
    """The count-then-record of a failed-login reservation is serialised per key on
    PostgreSQL (an advisory lock): 120 guesses at once over two workers' stores check
    exactly the budget, and another key's budget is its own."""
    from dockyard.metadata.engine import migrate
    from dockyard.metadata.logins import LoginFailureStore
    from tests.unit.auth.test_ratelimit import reserve_at_once

    engines = open_engines(database_url)
    await migrate(engines)
    a, b = MetadataStore(engines), MetadataStore(open_engines(database_url))
    try:
        limiters = [FailureLimiter(10, 60, LoginFailureStore(s)) for s in (a, b)]
        key = f"addr:race-{os.getpid()}"
        assert sum(await reserve_at_once(limiters, 120, key)) == 10
        assert sum(await reserve_at_once(limiters, 40, key + "-other")) == 10
        assert await limiters[1].retry_after(key) > 0
    finally:
        await a.close()
        await b.close()


async def test_job_runs_on_postgres(database_url: str) -> None:
    """The job history's checks (record, newest first, kept per job, bounded) on
    PostgreSQL: its window query and its pruning delete."""
    from tests.unit.metadata import test_jobruns as checks

    async with migrated_store(database_url) as store:
        await checks.check_runs_are_recorded_newest_first_per_job(store)
        await checks.check_only_the_last_runs_of_each_job_are_kept(store)
        await checks.check_summaries_are_bounded(store)


async def test_proxy_misses_on_postgres(database_url: str) -> None:
    """A pull-through cache's "not found" answers (upsert, read, purge) on PostgreSQL."""
    from tests.unit.metadata import test_proxy_misses as checks

    async with migrated_store(database_url) as store:
        await checks.check_misses_are_recorded_renewed_and_purged(store)


async def test_writes_into_one_repository_do_not_wait_for_each_other(database_url: str
                                                                    ) -> None:
    """A push's writes read their repository's row FOR KEY SHARE (which only a
    collection dropping the repository waits for), not FOR NO KEY UPDATE (which took
    every push into the repository, on every node, one at a time): a link into a
    repository whose row another open write holds completes at once."""
    import asyncpg

    name = f"shared/{os.urandom(4).hex()}"
    async with migrated_store(database_url) as store:
        await store.link_blob(name, "sha256:" + "1" * 64, 1)  # the repository's row
        other = await asyncpg.connect(database_url)
        try:
            async with other.transaction():
                # an open write into the same repository, as a push's link or manifest
                await other.fetch(Statements("postgresql").repo_id.pg_sql, name)
                digest = "sha256:" + "2" * 64
                await asyncio.wait_for(store.link_blob(name, digest, 2), 5)
                claimed = "sha256:" + "3" * 64
                claim = await store.claim_blob(claimed, 3)
                assert claim is not None
                await asyncio.wait_for(store.link_blob(name, claimed, 3, claim=claim), 5)
        finally:
            await other.close()
        assert await store.blob_in_repository(name, digest) is not None
        assert await store.blob_in_repository(name, claimed) is not None


async def test_the_repair_of_a_marked_blob_and_a_manifest_write_lock_in_one_order(
        database_url: str) -> None:
    """A push repairing a blob fsck marked (its link clears the mark) and a manifest
    write naming the blob lock the blob's row before its link, both: a link written
    before the mark is cleared waited for the manifest's blob while the manifest waited
    for the link (PostgreSQL's deadlock detector then failed one of them)."""
    import asyncpg

    from dockyard.metadata.integrity import IntegrityStore

    name, digest = f"repair/{os.urandom(4).hex()}", "sha256:" + os.urandom(32).hex()
    async with migrated_store(database_url) as store:
        await store.link_blob(name, digest, 6)
        integrity = IntegrityStore(store)
        assert await integrity.begin_mark(digest)
        await integrity.end_mark(digest)
        claim = await store.claim_blob(digest, 6)
        assert claim is not None
        assert claim.mark is not None
        manifest = await asyncpg.connect(database_url)
        try:
            async with manifest.transaction():  # a manifest write's touch, then its check
                await manifest.execute(
                    "UPDATE blobs SET touched_at = touched_at WHERE digest = $1", digest)
                link = asyncio.ensure_future(store.link_blob(name, digest, 6, claim=claim))
                await asyncio.sleep(0.3)
                linked = await asyncio.wait_for(manifest.fetch(
                    "SELECT digest FROM repository_blobs WHERE digest = $1 FOR SHARE",
                    digest), 0.8)  # under deadlock_timeout (1 s)
                assert len(linked) == 1
            assert await asyncio.wait_for(link, 5)
        finally:
            await manifest.close()
        assert await store.blob(digest) is not None  # linked and unmarked


async def test_a_mount_does_not_wait_for_a_push_into_its_source(database_url: str) -> None:
    """A cross-repository mount locks the source's link and the blob, not the source
    repository's row (FOR UPDATE there waited for every open push into the source, and
    every push into it for the mount)."""
    import asyncpg

    source, target = (f"{part}/{os.urandom(4).hex()}" for part in ("base", "app"))
    digest = "sha256:" + "6" * 64
    async with migrated_store(database_url) as store:
        await store.link_blob(source, digest, 6)
        push = await asyncpg.connect(database_url)
        try:
            async with push.transaction():  # an open push into the source
                await push.fetch(Statements("postgresql").repo_id.pg_sql, source)
                mounted = await asyncio.wait_for(store.mount_blob(target, digest, source), 5)
                assert mounted is not None
        finally:
            await push.close()
        assert await store.blob_in_repository(target, digest) is not None


async def test_a_link_into_a_repository_a_collection_drops_makes_a_new_one(
        database_url: str) -> None:
    """A collection drops an empty repository (its row FOR UPDATE, then deleted) while
    an upload links its claimed blob there: the link waits for it, finds no row, and
    links into a new repository row (read unlocked, it met the foreign key: a 500)."""
    import asyncpg

    name = f"dropped/{os.urandom(4).hex()}"
    async with migrated_store(database_url) as store:
        await store.link_blob(name, "sha256:" + "4" * 64, 1)
        assert await store.unlink_blob(name, "sha256:" + "4" * 64)
        digest = "sha256:" + "5" * 64
        claim = await store.claim_blob(digest, 5)
        assert claim is not None
        collector = await asyncpg.connect(database_url)
        try:
            async with collector.transaction():
                await collector.execute(
                    "SELECT id FROM repositories WHERE name = $1 FOR UPDATE", name)
                await collector.execute("DELETE FROM repositories WHERE name = $1", name)
                link = asyncio.ensure_future(store.link_blob(name, digest, 5, claim=claim))
                await asyncio.sleep(0.5)
                assert not link.done()  # waits for the collection's transaction
            assert await asyncio.wait_for(link, 5)
        finally:
            await collector.close()
        assert await store.blob_in_repository(name, digest) is not None


async def test_a_link_ends_its_session_in_one_statement_on_postgres(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claimed blob's link into a repository that exists and the end of its upload
    session are one statement (no BEGIN and COMMIT round trips): it links and ends the
    session; when the collector took the claimed blob meanwhile, it writes neither and
    says so; into a repository not made yet, the transaction makes it."""
    from dockyard.metadata.lifecycle import LifecycleStore

    async with migrated_store(database_url) as store:
        direct = store.engines.direct
        assert direct is not None
        calls: list[str] = []
        execute, transaction = direct.execute, direct.transaction

        async def counted_execute(*args: Any) -> Any:
            calls.append("statement")
            return await execute(*args)

        async def counted_transaction(*args: Any) -> Any:
            calls.append("transaction")
            return await transaction(*args)

        monkeypatch.setattr(direct, "execute", counted_execute)
        monkeypatch.setattr(direct, "transaction", counted_transaction)
        name = f"one/{os.urandom(4).hex()}"
        await store.link_blob(name, "sha256:" + os.urandom(32).hex(), 1)  # the repository
        digest, session = "sha256:" + os.urandom(32).hex(), f"s-{os.urandom(4).hex()}"
        await store.create_upload(session, name)
        claim = await store.claim_blob(digest, 6)
        assert claim is not None
        calls.clear()
        assert await store.link_blob(name, digest, 6, upload=session, claim=claim)
        assert calls == ["statement"]
        assert await store.blob_in_repository(name, digest) is not None
        assert await store.upload(session) is None

        # the collector deletes the claimed blob's row before the link
        life, digest = LifecycleStore(store), "sha256:" + os.urandom(32).hex()
        session = f"s-{os.urandom(4).hex()}"
        await store.create_upload(session, name)
        claim = await store.claim_blob(digest, 6)
        assert claim is not None
        assert await life.begin_blob_deletion(digest, time.time() + 10) == 6
        await life.end_blob_deletion(digest)
        calls.clear()
        assert not await store.link_blob(name, digest, 6, upload=session, claim=claim)
        assert calls == ["statement"]
        assert await store.blob_in_repository(name, digest) is None
        assert await store.upload(session) is not None

        # a repository not there yet: the statement links nothing, the transaction does
        fresh = f"one/{os.urandom(4).hex()}"
        await store.create_upload(session := f"s-{os.urandom(4).hex()}", fresh)
        claim = await store.claim_blob(digest, 6)
        assert claim is not None
        calls.clear()
        assert await store.link_blob(fresh, digest, 6, upload=session, claim=claim)
        assert calls == ["statement", "transaction"]
        assert await store.blob_in_repository(fresh, digest) is not None
        assert await store.upload(session) is None


async def test_a_corrupt_mark_goes_only_with_its_claims_link_on_postgres(database_url: str
                                                                       ) -> None:
    """The claim reads the mark back (`INSERT ... ON CONFLICT ... RETURNING`) and the link
    clears only that one, one push of two takes the repair, and a link whose claimed row
    the collector deleted writes nothing, on PostgreSQL (asyncpg's direct path) as on
    SQLite."""
    from tests.unit.metadata import test_store as checks

    async with migrated_store(database_url) as store:
        await checks.check_a_mark_goes_only_with_the_link_of_its_claim(store)
        await checks.check_one_push_takes_the_repair(store)
        await checks.check_a_link_after_the_collector_took_the_claimed_blob(store)


async def test_the_collectors_pages_of_unlinked_blobs_follow_an_index(database_url: str
                                                                     ) -> None:
    """The collector reads unlinked blobs a page at a time in byte order of their digest
    (`COLLATE "C"`), which the primary key's index (in the database's collation) does
    not serve: each page was a scan and a sort of the whole table. With the index in
    that order (0018) a page is an index scan that stops at its end."""
    from dockyard.gc.collector import PAGE
    from dockyard.metadata.lifecycle import LifecycleStore

    async with planned(database_url, f"plans_{os.getpid()}") as (store, conn, plans):
        old = time.time() - 86400
        await conn.copy_records_to_table(
            "blobs", columns=["digest", "size", "created_at", "touched_at"],
            records=[(f"sha256:{i:064x}", 1, old, old) for i in range(3 * PAGE)])
        await conn.execute("ANALYZE blobs")
        life = LifecycleStore(store)
        await life.unlinked_blobs(time.time(), limit=PAGE)
        await life.unlinked_blobs(time.time(), after=f"sha256:{PAGE:064x}", limit=PAGE)
        for plan in await plans():
            assert "ix_blobs_digest_bytewise" in plan, plan
            assert "Sort" not in plan, plan


async def test_referrers_come_in_pages_on_postgres(database_url: str) -> None:
    """The referrers' pages (row-value comparison past a cursor, ties by id) on
    PostgreSQL as on SQLite."""
    from tests.unit.metadata import test_store as checks

    async with migrated_store(database_url) as store:
        await checks.check_referrers_come_in_pages(store)


async def test_a_page_of_referrers_follows_an_index(database_url: str) -> None:
    """A subject with 20,000 referrers: each page of the referrers API is a range scan of
    an index in their order (0019) that stops at the page's end, with no sort of all of
    them; filtered by artifact type, of the index with the type before the order."""
    subject = f"sha256:{0:064x}"
    async with planned(database_url, f"referrers_{os.getpid()}") as (store, conn, plans):
        repo = await conn.fetchval("INSERT INTO repositories (name, created_at) "
                                   "VALUES ('many', 0) RETURNING id")
        await conn.copy_records_to_table(
            "manifests", columns=["repository_id", "digest", "media_type", "artifact_type",
                                  "size", "payload", "subject_digest", "created_at"],
            records=[(repo, f"sha256:{i + 1:064x}", "application/vnd.oci.image.manifest.v1+json",
                      f"application/vnd.example.{i % 7}", 2, b"{}", subject, 1e9 + i)
                     for i in range(20_000)])
        await conn.execute("ANALYZE")
        await store.referrers("many", subject, None, limit=1001)
        await store.referrers("many", subject, None, limit=1001, after=(1e9 + 5000, 5001))
        await store.referrers("many", subject, "application/vnd.example.3", limit=1001,
                              after=(1e9 + 5000, 5001))
        for plan, index in zip(await plans(), ("ix_manifests_referrers ",
                                                    "ix_manifests_referrers ",
                                                    "ix_manifests_referrers_by_type "),
                               strict=True):
            assert f"Index Scan using {index}" in plan, plan
            assert "Sort" not in plan, plan


def test_connections_the_database_dropped_are_replaced(registry: Server,
                                                      database_url: str) -> None:
    """PostgreSQL ends every session (a restart, a failover, an idle timeout): the next
    pulls and pushes still succeed, on fresh connections, with no 500."""
    from tests.support.oci_api import push_image

    with httpx.Client(base_url=registry.url, timeout=30) as c:
        before = push_image(c, "pg/dropped", "v1")
        # warm every worker's pools so they hold connections the database will end
        for _ in range(20):
            assert c.get("/v2/pg/dropped/manifests/v1", headers={
                "Accept": before.media_type}).status_code == 200
        killed = subprocess.run(
            ["psql", database_url, "-Atc",
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = current_database() AND pid <> pg_backend_pid()"],
            capture_output=True, text=True, timeout=30, check=True)
        assert int(killed.stdout) > 0
        for _ in range(20):  # every worker, reads on both engines
            got = c.get("/v2/pg/dropped/manifests/v1", headers={"Accept": before.media_type})
            assert got.status_code == 200, got.text
            assert got.content == before.payload
        after = push_image(c, "pg/dropped", "v2")
        assert c.get(f"/v2/pg/dropped/manifests/{after.digest}").status_code == 200


def test_mirror_origins_follow_the_tags_digest_on_postgres(registry: Server,
                                                          database_url: str) -> None:
    """The provenance join and the digest-conditional tag delete a prune makes, in
    PostgreSQL's SQL: an origin counts while its tag names the recorded digest."""
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        kept = push_image(c, "pg/mirrored", "kept")[2]
        over = push_image(c, "pg/mirrored", "over")[2]

        async def record() -> tuple[bool, bool]:
            store = MetadataStore(open_engines(database_url))
            try:
                mirrors = MirrorStore(store)
                for tag, digest in (("kept", kept), ("over", kept)):  # `over` pushed over
                    await mirrors.set_origin(TagOrigin("pg/mirrored", tag, "src",
                                                       f"up/app:{tag}", digest, 1.0))
                return (await store.delete_tag("pg/mirrored", "over", kept),
                        await store.delete_tag("pg/mirrored", "over", over))
            finally:
                await store.close()

        wrong, right = asyncio.run(record())
        origins = c.get("/admin/v1/sync/repositories/pg/mirrored")
        assert origins.status_code == 200, origins.text
        assert [(o["tag"], o["digest"]) for o in origins.json()["tags"]] == [("kept", kept)]
        assert (wrong, right) == (False, True)  # deleted only at the digest it names
        assert c.get("/v2/pg/mirrored/tags/list").json()["tags"] == ["kept"]
        assert c.delete("/admin/v1/repositories/pg/mirrored").status_code == 202

        async def left() -> list[TagOrigin]:
            store = MetadataStore(open_engines(database_url))
            try:
                return await MirrorStore(store).origins(repository="pg/mirrored")
            finally:
                await store.close()

        assert asyncio.run(left()) == []  # the repository's delete took its origins


def test_logged_out_sessions_are_recorded_on_postgres(database_url: str) -> None:
    """The web UI's logout record in PostgreSQL's SQL: an upsert, expiry, pruning."""

    async def run() -> tuple[bool, bool, bool, bool]:
        store = MetadataStore(open_engines(database_url))
        try:
            sessions = RevokedSessionStore(store)
            await sessions.revoke("gone-soon", time.time() + 0.5)
            await sessions.revoke("s1", time.time() + 3600)
            await sessions.revoke("s1", time.time() + 7200)  # twice: one row, later end
            first = await sessions.revoked("s1"), await sessions.revoked("never")
            await asyncio.sleep(0.6)
            await sessions.revoke("s2", time.time() + 3600)  # prunes the expired row
            rows = await store._read(select(revoked_sessions.c.sid))
            return (*first, await sessions.revoked("gone-soon"),
                    sorted(r[0] for r in rows) == ["s1", "s2"])
        finally:
            await store.close()

    assert asyncio.run(run()) == (True, False, False, True)


async def test_a_push_that_meets_a_collection_of_its_blob_waits_for_it(
        tmp_path: Path, database_url: str) -> None:
    """The collector has removed an old unlinked blob's row and holds the row's lock
    (its tombstone not yet committed) when a push of the same bytes claims the blob:
    the claim waits on the lock and then must see the tombstone, so the push waits until
    the bytes are deleted and then publishes its own. It read the tombstone before the
    wait, claimed into the deletion, and the pushed blob was linked without bytes."""
    import asyncpg

    from dockyard.backends import close_registry, open_registry
    from dockyard.config.settings import load_settings
    from dockyard.core.uploads import Chunk
    from dockyard.oci.digest import Digest
    from dockyard.storage import layout

    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "database.url": database_url})
    registry = await open_registry(settings)
    raw = await asyncpg.connect(database_url)
    collector = await asyncpg.connect(database_url)
    data = os.urandom(4096)
    digest = Digest.parse(conformance.sha256_digest(data))

    async def body() -> Any:
        yield data

    async def push(name: str) -> None:
        session = await registry.uploads.start(name)
        await registry.uploads.finish(name, session.id, digest, body(), Chunk(length=len(data)))

    try:
        await push("claim-race/old")
        await registry.blobs.delete("claim-race/old", digest)  # unlinked: garbage
        await raw.execute("UPDATE blobs SET touched_at = touched_at - 7200 WHERE digest = $1",
                          str(digest))
        # the collector's begin_blob_deletion, its statements in order, held before COMMIT
        tx = collector.transaction()
        await tx.start()
        await collector.fetchrow("SELECT size FROM blobs WHERE digest = $1 FOR UPDATE",
                                 str(digest))
        await collector.execute("DELETE FROM blobs WHERE digest = $1", str(digest))
        await collector.execute("INSERT INTO blob_deletions (digest, started_at) "
                                "VALUES ($1, $2)", str(digest), time.time())
        pushing = asyncio.create_task(push("claim-race/new"))
        await asyncio.sleep(0.5)
        await tx.commit()
        # the push must wait for the deletion to end, not finish into it
        done, _ = await asyncio.wait({pushing}, timeout=1.0)
        assert not done, "the push claimed the blob while its deletion went on"
        assert not await registry.blobs.delete_bytes([digest])  # the collector goes on
        await registry.lifecycle.end_blob_deletion(str(digest))
        await asyncio.wait_for(pushing, 30)
        assert (tmp_path / "data" / layout.blob_key(digest)).exists()
        got = await registry.blobs.stat("claim-race/new", digest)
        assert got.size == len(data)
    finally:
        await collector.close()
        await raw.close()
        await close_registry(registry)


async def test_a_push_into_a_repository_a_collection_drops_meanwhile_succeeds(
        tmp_path: Path, database_url: str) -> None:
    """The collector drops an empty repository (row locked, deleted, not yet
    committed) while a push links a blob into it: the push must wait and make the
    repository again, not fail on the link's foreign key."""
    import asyncpg

    from dockyard.backends import close_registry, open_registry
    from dockyard.config.settings import load_settings
    from dockyard.core.uploads import Chunk
    from dockyard.oci.digest import Digest

    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "database.url": database_url})
    registry = await open_registry(settings)
    collector = await asyncpg.connect(database_url)
    name = f"fk-race/{os.urandom(4).hex()}"
    first, second = os.urandom(1000), os.urandom(1000)

    async def push(data: bytes) -> Digest:
        async def body() -> Any:
            yield data
        digest = Digest.parse(conformance.sha256_digest(data))
        await registry.uploads.upload(name, None, digest, body(), Chunk(length=len(data)))
        return digest

    try:
        await registry.blobs.delete(name, await push(first))  # the repository is empty
        # delete_empty_repository's statements, held before COMMIT
        tx = collector.transaction()
        await tx.start()
        repo_id = await collector.fetchval(
            "SELECT id FROM repositories WHERE name = $1 FOR UPDATE", name)
        await collector.execute("DELETE FROM repositories WHERE id = $1", repo_id)
        pushing = asyncio.create_task(push(second))
        await asyncio.sleep(0.5)
        await tx.commit()
        digest = await asyncio.wait_for(pushing, 30)
        assert (await registry.blobs.stat(name, digest)).size == len(second)
    finally:
        await collector.close()
        await close_registry(registry)


async def test_a_worker_holds_at_most_three_pools_of_connections(
        tmp_path: Path, database_url: str) -> None:
    """The README's connection budget (`3 x pool_size` per worker) holds under load:
    the pools had as many again in overflow."""
    import asyncpg
    from sqlalchemy import make_url

    base = make_url(database_url)
    admin = await asyncpg.connect(base.set(drivername="postgresql")
                                  .render_as_string(hide_password=False))
    name = f"budget_{os.urandom(4).hex()}"
    await admin.execute(f"CREATE DATABASE {name}")
    url = base.set(database=name).render_as_string(hide_password=False)
    server = start_dockyard(tmp_path / "data", workers=1, env={
        "DOCKYARD_DATABASE_URL": url, "DOCKYARD_DATABASE_POOL_SIZE": "2"})
    peak = 0
    try:
        async def count() -> None:
            nonlocal peak
            while True:
                n = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
                peak = max(peak, int(n))
                await asyncio.sleep(0.01)

        async def load(i: int) -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
                for _ in range(20):
                    body = os.urandom(64)
                    r = await c.post(f"/v2/budget/{i}/blobs/uploads/",
                                     params={"digest": conformance.sha256_digest(body)},
                                     content=body)
                    assert r.status_code == 201, r.text
                    assert (await c.get("/v2/_catalog")).status_code == 200
                    assert (await c.get(f"/v2/budget/{i}/tags/list")).status_code in (200, 404)

        sampler = asyncio.create_task(count())
        try:
            await asyncio.gather(*(load(i) for i in range(32)))
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        assert 0 < peak <= 3 * 2, peak
    finally:
        server.stop()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def test_serve_on_a_database_that_is_not_there_is_one_line(tmp_path: Path,
                                                             database_url: str) -> None:
    """PostgreSQL answers but refuses the database (asyncpg's own error, not an OSError):
    one line, exit 1."""
    from tests.e2e.test_cli_storage_errors import error_line, serve

    url = database_url.rsplit("/", 1)[0] + "/no_such_database"
    line = error_line(serve(tmp_path / "data", env={"DOCKYARD_DATABASE_URL": url}))
    assert line == 'Error: the registry\'s storage: database "no_such_database" does not exist'


async def test_the_longest_mirror_source_key_runs_its_job_on_postgres(
        database_url: str) -> None:
    """A source's key as long as the config allows: its job's lease, the job's run and
    the sync's own lease, run and tag origin are all stored (PostgreSQL holds columns
    to their length)."""
    from dockyard.config.mirror import MAX_KEY
    from dockyard.core.jobruns import JobHistory
    from dockyard.core.jobs import Job, JobRunner
    from dockyard.core.leases import Leases
    from dockyard.core.mirrors import job_name
    from dockyard.metadata.jobruns import JobRunStore
    from dockyard.metadata.leases import LeaseStore
    from dockyard.metadata.mirrors import MirrorRun

    key = "k" * MAX_KEY
    async with migrated_store(database_url) as store:
        ran: list[str] = []

        async def run() -> None:
            ran.append(key)
            async with leases.hold(f"mirror:{key}"):
                await MirrorStore(store).add_run(MirrorRun(key, 1.0, 2.0, "ok", "{}"), 20)
                await MirrorStore(store).set_origin(TagOrigin(
                    "pg/long", "v1", key, "up/app:v1", "sha256:" + "b" * 64, 1.0))

        leases = Leases(LeaseStore(store.engines), "pg-long")
        history = JobHistory(JobRunStore(store))
        runner = JobRunner(leases, [Job(job_name(key), 60, run)], history)
        assert await runner.run_due(job_name(key))
        assert ran == [key]
        [recorded] = (await history.recent(10))[job_name(key)]
        assert recorded.outcome == "ok", recorded.summary
        assert [o.source for o in await MirrorStore(store).origins(source=key)] == [key]


def test_postgresql_down_is_503_and_back_is_served_without_a_restart(
        tmp_path: Path, database_url: str) -> None:
    """PostgreSQL stopped under a running registry: every request answered 500 UNKNOWN
    and logged a traceback; now 503 UNAVAILABLE with `Retry-After` in the OCI format,
    as with the object store down, and once PostgreSQL is back, the same requests are
    served without restarting Dockyard."""
    from tests.support.oci_api import push_image
    from tests.support.postgres import own_postgres, postgres_start, postgres_stop

    with own_postgres() as (url, home):
        server = start_dockyard(tmp_path / "data", workers=2,
                                env={"DOCKYARD_DATABASE_URL": url})
        try:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                image = push_image(c, "pg/down", "v1")
                postgres_stop(home)
                for method, path in [
                        ("POST", "/v2/pg/down/blobs/uploads/"),
                        ("GET", "/v2/pg/down/tags/list"), ("GET", "/v2/_catalog"),
                        ("GET", "/v2/pg/down/manifests/v1"),
                        ("GET", f"/v2/pg/down/manifests/{image.digest}"),
                        ("PUT", "/v2/pg/down/manifests/v2")]:
                    for _ in range(2):  # each worker, most likely
                        resp = c.request(method, path, content=image.payload if method ==
                                         "PUT" else None, headers={
                                             "Content-Type": image.media_type})
                        assert resp.status_code == 503, (method, path, resp.text)
                        assert resp.headers["Retry-After"] == "5"
                        assert resp.json()["errors"][0]["code"] == "UNAVAILABLE", resp.text
                postgres_start(home)
                served = c.get("/v2/pg/down/manifests/v1",
                               headers={"Accept": image.media_type})
                assert served.status_code == 200, served.text
                assert served.content == image.payload
                assert c.get("/v2/pg/down/tags/list").json()["tags"] == ["v1"]
        finally:
            server.stop()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log
    # the pool's replacing of the connections the database ended is awaited (it was
    # not: a read's one retry could take another dead connection and answer 500)
    assert "was never awaited" not in log


@pytest.mark.parametrize("mode", ["the same index", "indexes sharing children"])
def test_concurrent_pushes_of_indexes_all_succeed(registry: Server, mode: str) -> None:
    """Eight clients pushing indexes over the same children to three tags at once: on
    PostgreSQL two such pushes locked a child (or the index) to read it, then to touch
    it, and deadlocked; most answered 500 UNKNOWN after a second."""
    import random
    import threading

    from tests.support.oci_api import index_of, push_image

    repo = f"pg/indexes-{mode.split()[0]}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        kids = [push_image(c, repo, f"kid{i}") for i in range(6)]
    statuses: list[int] = []

    def pusher(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=registry.url, timeout=60) as c:
            for _ in range(10):
                chosen = kids[:4] if mode == "the same index" else rng.sample(kids, 4)
                index = index_of(chosen)
                resp = c.put(f"/v2/{repo}/manifests/t{rng.randrange(3)}",
                             content=index.payload,
                             headers={"Content-Type": index.media_type})
                statuses.append(resp.status_code)

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [201], sorted(statuses)
    assert len(statuses) == 80
