"""The change feed in the metadata store: ordered events, written with the change itself.

Every write that changes what a pull can see (a manifest put, a tag set or deleted, a
manifest, blob link or repository deleted, by a client or by the collector and retention)
records `Change`s with `EventWriter.record` as the last statements of its own transaction:
an event exists if and only if its change committed.

**Ids grow in commit order.** A reader holding cursor N asks for ids > N, so it must never
happen that an event with a smaller id commits after one with a larger id was read (on
PostgreSQL a sequence hands out ids at insert, not at commit: T1 takes 5, T2 takes 6, T2
commits, a reader advances to 6, T1 commits 5 — lost). So the writer first takes a
transaction-scoped advisory lock (`EVENTS_LOCK`, `pg_advisory_xact_lock`) and only then
draws ids; the lock is released by the commit. The next writer draws its ids after that
commit, so id order is commit order across every process and node. The lock is taken as
the transaction's last step, after every row lock it needs, so it is held only for the
inserts and the commit and cannot take part in a deadlock (a holder waits for nothing
else). On SQLite write transactions are serial (`BEGIN IMMEDIATE`), which gives the same
order for free; ids there are AUTOINCREMENT, never reused after pruning.

Events older than `feed.keep` are pruned (`prune`); the highest pruned id is kept in
`registry_state` as `feed.pruned_through`, so a cursor below it is known to be too old.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.engine import Connection

from dockyard.metadata.dialects import postgresql, sqlite
from dockyard.metadata.engine import Conn
from dockyard.metadata.fastread import Prepared
from dockyard.metadata.schema import events, registry_state
from dockyard.metadata.statements import run

#: Key of the PostgreSQL advisory lock under which event ids are drawn and committed.
EVENTS_LOCK = 0x646F636B_65766E74  # "dockevnt"

PRUNED_THROUGH = "feed.pruned_through"

MANIFEST_PUT = "manifest.put"
TAG_SET = "tag.set"
TAG_DELETED = "tag.deleted"
MANIFEST_DELETED = "manifest.deleted"
BLOB_DELETED = "blob.deleted"
REPOSITORY_DELETED = "repository.deleted"
KINDS = (MANIFEST_PUT, TAG_SET, TAG_DELETED, MANIFEST_DELETED, BLOB_DELETED,
         REPOSITORY_DELETED)


@dataclass(frozen=True, slots=True)
class Change:
    """One change to record: its kind and what it names."""

    kind: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    media_type: str | None = None
    #: on a `manifest.put` or `tag.set` from a push, the account that pushed (a
    #: replica's pusher of the tag); None otherwise
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A recorded change, with its place in the feed (`id`) and time."""

    id: int
    at: float
    kind: str
    repository: str
    tag: str | None
    digest: str | None
    media_type: str | None
    actor: str | None


class EventWriter:
    """Records changes inside a caller's transaction (see the module docstring)."""

    def __init__(self, dialect: str) -> None:
        self.lock = (Prepared(select(func.pg_advisory_xact_lock(EVENTS_LOCK)))
                     if dialect == "postgresql" else None)
        p = bindparam
        self.insert = Prepared(events.insert().values(
            at=p("p_at"), kind=p("p_kind"), repository=p("p_repository"), tag=p("p_tag"),
            digest=p("p_digest"), media_type=p("p_media_type"), actor=p("p_actor")))

    def record(self, conn: Conn, changes: Sequence[Change], now: float) -> None:
        """Insert `changes` in order; the last statements of the transaction."""
        if not changes:
            return
        if self.lock is not None:
            run(conn, self.lock)
        for c in changes:
            run(conn, self.insert, at=now, kind=c.kind, repository=c.repository, tag=c.tag,
                digest=c.digest, media_type=c.media_type, actor=c.actor)


COLUMNS = (events.c.id, events.c.at, events.c.kind, events.c.repository, events.c.tag,
           events.c.digest, events.c.media_type, events.c.actor)


def prune(conn: Connection, dialect: str, before: float) -> int:
    """Delete events recorded before `before`, moving the floor up; how many went."""
    cut = conn.scalar(select(func.max(events.c.id)).where(events.c.at < before))
    if cut is None:
        return 0
    gone = conn.execute(delete(events).where(events.c.id <= cut)).rowcount
    floor = int(conn.scalar(select(registry_state.c.value)
                            .where(registry_state.c.key == PRUNED_THROUGH)) or 0)
    set_state(conn, dialect, PRUNED_THROUGH, str(max(floor, int(cut))))
    return int(gone)


def set_state(conn: Connection, dialect: str, key: str, value: str) -> None:
    """Upsert one named value of `registry_state`."""
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = ins(registry_state).values(key=key, value=value, updated_at=time.time())
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[registry_state.c.key],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}))
