"""The statements every push runs, built once per dialect and run without compiling.

A push of one small image runs about twenty statements. Through SQLAlchemy's execution
path each costs far more (cache key, coercions, result machinery) than SQLite spends
running it, and the writer thread holds the GIL meanwhile. On SQLite `run` therefore
sends the statement compiled once straight to the driver's connection; on PostgreSQL it
goes through SQLAlchemy (asyncpg) as usual. Same Core statements, same SQL.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import (
    ARRAY,
    Float,
    Integer,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from dockyard.metadata.dialects import postgresql, sqlite
from dockyard.metadata.engine import Conn
from dockyard.metadata.fastread import Prepared
from dockyard.metadata.pgdirect import PgConn, Rows
from dockyard.metadata.schema import (
    DIGEST,
    blob_deletions,
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)

UPLOAD_LOCK = 0x646F636B_75706C64  # "dockupld"
"""PostgreSQL advisory lock key taken while a session opening counts the open ones."""


def _p(name: str, type_: Any = None) -> Any:
    # INSERT/UPDATE reserve bind names equal to column names: prefix every one (`type_`
    # where no column gives it: a value selected into an INSERT, an array)
    return bindparam("p_" + name, type_=type_)


def run(conn: Conn, query: Prepared, **named: Any) -> Any:
    """Execute `query`; the result has `fetchone()`, `fetchall()` and `rowcount`.

    `conn` is a SQLAlchemy connection, or (in `Engines.compiled`) a sqlite3 or an
    asyncpg one. A SQLite result is read to the end (a COMMIT refuses to run while an
    `UPDATE ... RETURNING` has rows left to step through).
    """
    params = {"p_" + k: v for k, v in named.items()}
    if isinstance(conn, PgConn):
        return conn.run(query, params)
    raw: Any = conn
    if isinstance(conn, Connection):
        if conn.dialect.name != "sqlite":
            return conn.execute(query.stmt, params)
        raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    cursor = raw.execute(query.sql, query.values(params))
    return Rows(cursor.fetchall(), cursor.rowcount)


def run_many(conn: Conn, query: Prepared, rows: list[dict[str, Any]]) -> None:
    """Execute a write `query` once per parameter set in `rows`, in order, as one batch
    (asyncpg pipelines them: one round trip for all, not one each)."""
    if not rows:
        return
    params = [{"p_" + k: v for k, v in named.items()} for named in rows]
    if isinstance(conn, PgConn):
        conn.run_many(query, params)
        return
    raw: Any = conn
    if isinstance(conn, Connection):
        if conn.dialect.name != "sqlite":
            conn.execute(query.stmt, params)
            return
        raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    raw.executemany(query.sql, [query.values(p) for p in params])


class Statements:
    """The hot writes of one dialect (upserts differ between SQLite and PostgreSQL)."""

    def __init__(self, dialect: str) -> None:
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        b = _p
        # FOR KEY SHARE on PostgreSQL: a collection dropping the empty repository (FOR
        # UPDATE) waits until what this write links into it committed, or, first, makes
        # this read find no row (a new one is made); read unlocked, the link's foreign
        # key met the deleted row and the push failed
        self.repo_id = Prepared(select(repositories.c.id).where(repositories.c.name == b("name"))
                                .with_for_update(read=True, key_share=True))
        # PostgreSQL: serialises the openings of upload sessions while caps are counted
        # (SQLite's write transactions are serial already)
        self.upload_lock = (Prepared(select(func.pg_advisory_xact_lock(UPLOAD_LOCK)))
                            if dialect == "postgresql" else None)
        self.add_repo = Prepared(ins(repositories).values(name=b("name"), created_at=b("now"))
                                 .on_conflict_do_nothing())
        self.create_upload = Prepared(insert(uploads).values(
            id=b("id"), repository=b("name"), offset=0, started_at=b("now"), updated_at=b("now"),
            owner=b("owner"), holder=b("holder"), held_until=b("until")))
        # the same row, only while the caps (0: none) leave room: count and insert are
        # one statement, so one round trip; on PostgreSQL it runs after `upload_lock`,
        # and its snapshot, taken then, sees every session opened before
        cols = (uploads.c.id, uploads.c.repository, uploads.c.offset, uploads.c.started_at,
                uploads.c.updated_at, uploads.c.owner, uploads.c.holder, uploads.c.held_until)
        id_, name, _, now, _, owner, holder, until = (
            b(key, col.type) for key, col in zip(
                ("id", "name", "", "now", "", "owner", "holder", "until"), cols, strict=True))
        max_total, max_owner = b("max_total", Integer), b("max_owner", Integer)
        total = select(func.count()).select_from(uploads).scalar_subquery()
        owned = (select(func.count()).select_from(uploads).where(uploads.c.owner == owner)
                 .scalar_subquery())
        room = select(id_, name, literal(0, uploads.c.offset.type), now, now, owner, holder,
                      until).where(or_(max_total == 0, total < max_total),
                                   or_(max_owner == 0, owner.is_(None), owned < max_owner))
        self.create_upload_capped = Prepared(insert(uploads).from_select(cols, room))
        # the hold and the read a request needs, in one write: no row when the session
        # is unknown (in this repository) or another request validly holds it
        self.hold_upload = Prepared(
            update(uploads).where(
                uploads.c.id == b("id"), uploads.c.repository == b("name"),
                or_(uploads.c.holder.is_(None), uploads.c.held_until < b("now"),
                    uploads.c.holder == b("gone")))
            .values(holder=b("holder"), held_until=b("until"))
            .returning(uploads.c.id, uploads.c.repository, uploads.c.offset,
                       uploads.c.started_at, uploads.c.updated_at))
        self.renew_upload = Prepared(
            update(uploads).where(uploads.c.id == b("id"), uploads.c.holder == b("holder"))
            .values(held_until=b("until")))
        self.release_upload = Prepared(
            update(uploads).where(uploads.c.id == b("id"), uploads.c.holder == b("holder"))
            .values(holder=null(), held_until=null()))
        # open sessions, all and `owner`'s, in one statement: which cap refused one
        self.open_uploads = Prepared(
            select(func.count(), func.count().filter(uploads.c.owner == b("owner")))
            .select_from(uploads))
        self.advance_upload = Prepared(
            update(uploads).where(uploads.c.id == b("id"), uploads.c.offset == b("old"))
            .values(offset=b("new"), updated_at=b("now")))
        # a holder's PATCH: the offset moves and the hold is released in one write
        self.advance_held = Prepared(
            update(uploads).where(uploads.c.id == b("id"), uploads.c.offset == b("old"),
                                  uploads.c.holder == b("holder"))
            .values(offset=b("new"), updated_at=b("now"), holder=null(), held_until=null()))
        self.delete_upload = Prepared(delete(uploads).where(uploads.c.id == b("id")))
        self.tombstone = Prepared(select(blob_deletions.c.started_at)
                                  .where(blob_deletions.c.digest == b("digest")))
        self.drop_tombstone = Prepared(delete(blob_deletions)
                                       .where(blob_deletions.c.digest == b("digest")))
        upsert_blob = ins(blobs).values(digest=b("digest"), size=b("size"), created_at=b("now"),
                                        touched_at=b("now"))
        self.upsert_blob = Prepared(upsert_blob.on_conflict_do_update(
            index_elements=[blobs.c.digest], set_={"touched_at": upsert_blob.excluded.touched_at}))
        # a claim before new bytes are published: the size a blob fsck found damaged
        # recorded goes (it may be what was wrong), its mark stays and is read back.
        # Until the verified bytes replaced the stored ones those are still the damaged
        # ones (or none): a push that fails after its claim leaves the blob marked
        self.claim_blob = Prepared(upsert_blob.on_conflict_do_update(
            index_elements=[blobs.c.digest],
            set_={"touched_at": upsert_blob.excluded.touched_at,
                  "size": upsert_blob.excluded.size})
            .returning(blobs.c.corrupt_at))
        # the link after the publish clears the mark its claim read, only that one: fsck
        # marks under a tombstone, which a claim waits for, so a push that claimed before
        # a mark and published into its deletion leaves the blob marked (pushed once
        # more), never unmarked and empty
        self.clear_mark = Prepared(
            update(blobs).where(blobs.c.digest == b("digest"), blobs.c.corrupt_at == b("mark"))
            .values(corrupt_at=null()))
        link = ins(repository_blobs).values(repository_id=b("repo"), digest=b("digest"),
                                            linked_at=b("now"))
        self.link = Prepared(link.on_conflict_do_update(
            index_elements=[repository_blobs.c.repository_id, repository_blobs.c.digest],
            set_={"linked_at": link.excluded.linked_at}))
        # the link of an upload's blob, its repository found by name in the same
        # statement (one round trip fewer than `repo_id` then `link`), under the same
        # FOR KEY SHARE: a collection dropping the repository makes it insert nothing
        # (then `repo_id` and `add_repo` make a new one), never meet the foreign key
        named = ins(repository_blobs).from_select(
            ["repository_id", "digest", "linked_at"],
            select(repositories.c.id, b("digest", DIGEST), b("now", Float))
            .where(repositories.c.name == b("name")).with_for_update(read=True, key_share=True))
        link_named = named.on_conflict_do_update(
            index_elements=[repository_blobs.c.repository_id, repository_blobs.c.digest],
            set_={"linked_at": named.excluded.linked_at})
        self.link_named = Prepared(link_named)
        # PostgreSQL: that link and the end of its upload session in one statement, so
        # one round trip with no BEGIN and COMMIT of its own (a data-modifying CTE;
        # SQLite has none): the session goes only when the link was written, and a
        # foreign key the link meets fails both
        self.link_ending_upload: Prepared | None = None
        if dialect == "postgresql":
            linked = link_named.returning(repository_blobs.c.digest).cte("linked")
            self.link_ending_upload = Prepared(
                delete(uploads).where(uploads.c.id == b("id"),
                                      exists(select(linked.c.digest))))
        self.has_link = Prepared(
            select(repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id == b("repo"),
                   repository_blobs.c.digest == b("digest")).with_for_update(read=True))
        # PostgreSQL: which of a manifest's blobs the repository links, in one statement
        # (locked in digest order, as the touches before); SQLite asks one at a time
        self.has_links = (Prepared(
            select(repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id == b("repo"),
                   repository_blobs.c.digest == any_(b("digests", ARRAY(DIGEST))))
            .order_by(repository_blobs.c.digest).with_for_update(read=True))
            if dialect == "postgresql" else None)
        self.manifest_id = Prepared(
            select(manifests.c.id)
            .where(manifests.c.repository_id == b("repo"), manifests.c.digest == b("digest"))
            .with_for_update(read=True))
        # no row back when a concurrent push of the same manifest committed it first
        self.add_manifest = Prepared(ins(manifests).values(
            repository_id=b("repo"), digest=b("digest"), media_type=b("media_type"),
            artifact_type=b("artifact_type"), size=b("size"), payload=b("payload"),
            subject_digest=b("subject"), config_digest=b("config"),
            annotations=b("annotations"), created_at=b("now"), touched_at=b("now"),
        ).on_conflict_do_nothing(index_elements=[manifests.c.repository_id,
                                                 manifests.c.digest])
         .returning(manifests.c.id))
        self.add_manifest_blob = Prepared(ins(manifest_blobs).values(
            manifest_id=b("manifest"), digest=b("digest")).on_conflict_do_nothing())
        self.touch_blob = Prepared(update(blobs).where(blobs.c.digest == b("digest"))
                                   .values(touched_at=b("now")))
        self.add_child = Prepared(ins(manifest_children).values(
            manifest_id=b("manifest"), child_digest=b("digest")).on_conflict_do_nothing())
        # a manifest's grace starts over, its row locked for the transaction: its id, or
        # no row when the repository has no such manifest (a write lock at once, where a
        # shared one taken to check it first and then this write deadlocked two pushes)
        self.touch_manifest = Prepared(
            update(manifests)
            .where(manifests.c.repository_id == b("repo"), manifests.c.digest == b("digest"))
            .values(touched_at=b("now")).returning(manifests.c.id))
        self.retag = Prepared(
            update(tags).where(tags.c.repository_id == b("repo"), tags.c.name == b("tag"))
            .values(manifest_id=b("manifest"), updated_at=b("now"), pushed_by=b("by")))
        # a new tag or a moved one, in one statement (`retag` moves one that exists)
        add_tag = ins(tags).values(repository_id=b("repo"), name=b("tag"),
                                   manifest_id=b("manifest"), updated_at=b("now"),
                                   pushed_by=b("by"))
        self.add_tag = Prepared(add_tag.on_conflict_do_update(
            index_elements=[tags.c.repository_id, tags.c.name],
            set_={"manifest_id": add_tag.excluded.manifest_id,
                  "updated_at": add_tag.excluded.updated_at,
                  "pushed_by": add_tag.excluded.pushed_by}))
