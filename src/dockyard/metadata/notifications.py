"""The notification outbox: events waiting for their endpoints, in order.

One row per (endpoint, event), inserted in one transaction for every endpoint the
event is for, deleted when that endpoint accepted it. A delivery reads an endpoint's
rows by ascending id; on PostgreSQL the inserts take the `OUTBOX_LOCK` advisory lock
before drawing ids (as the change feed does), so id order is commit order and a
late-committing row never lands behind one already sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import notifications
from dockyard.metadata.store import MetadataStore

#: Key of the PostgreSQL advisory lock under which outbox ids are drawn and committed.
OUTBOX_LOCK = 0x646F636B_6E6F7466  # "docknotf"


class NotificationStore:
    """The outbox's rows, over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def enqueue(self, rows: Sequence[tuple[str, str]], now: float) -> None:
        """Queue (endpoint, event JSON) rows, in this order, in one transaction."""
        if not rows:
            return
        values = [{"endpoint": e, "at": now, "event": ev} for e, ev in rows]
        dialect = self.store.engines.dialect

        def body(conn: Connection) -> None:
            if dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(OUTBOX_LOCK)))
            conn.execute(insert(notifications), values)

        await self.store.engines.transaction(body)

    async def pending(self, endpoint: str, limit: int) -> list[tuple[int, float, str]]:
        """The oldest `limit` rows of `endpoint`: (id, queued at, event JSON)."""
        c = notifications.c
        rows = await self.store._read(select(c.id, c.at, c.event)
                                      .where(c.endpoint == endpoint)
                                      .order_by(c.id).limit(limit))
        return [(int(r[0]), float(r[1]), str(r[2])) for r in rows]

    async def delivered(self, endpoint: str, last: int) -> int:
        """Drop `endpoint`'s rows up to id `last` (all sent); how many went."""
        c = notifications.c
        stmt = delete(notifications).where(c.endpoint == endpoint, c.id <= last)
        return await self.store.engines.transaction(
            lambda conn: int(conn.execute(stmt).rowcount))

    async def trim(self, endpoint: str, keep: int) -> int:
        """Drop `endpoint`'s oldest rows past its newest `keep`; how many went."""
        c = notifications.c
        cutoff = (select(c.id).where(c.endpoint == endpoint).order_by(c.id.desc())
                  .offset(keep - 1).limit(1).scalar_subquery())
        stmt = delete(notifications).where(c.endpoint == endpoint, c.id < cutoff)
        return await self.store.engines.transaction(
            lambda conn: int(conn.execute(stmt).rowcount))

    async def forget_others(self, endpoints: Sequence[str], older_than: float) -> int:
        """Drop the rows queued before `older_than` of every endpoint not in `endpoints`
        (no longer configured, or disabled: nothing would ever deliver them; newer rows
        may be another node's, whose configuration has the endpoint); how many went."""
        c = notifications.c
        stmt = delete(notifications).where(c.endpoint.not_in(list(endpoints)),
                                           c.at < older_than)
        return await self.store.engines.transaction(
            lambda conn: int(conn.execute(stmt).rowcount))

    async def count(self, endpoint: str) -> int:
        """Rows waiting for `endpoint`."""
        c = notifications.c
        rows = await self.store._read(select(func.count()).select_from(notifications)
                                      .where(c.endpoint == endpoint))
        return int(rows[0][0])
