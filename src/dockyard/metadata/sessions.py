"""Logged-out browser sessions in the metadata store (`revoked_sessions`).

A row lives until the session's cookie would have expired; each logout's transaction
also drops the rows past their time, so the table holds only sessions still worth
refusing.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import revoked_sessions
from dockyard.metadata.store import MetadataStore


class RevokedSessionStore:
    """`core.sessions.SessionRevocations` over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def revoke(self, sid: str, until: float) -> None:
        upsert = self.store._upsert(revoked_sessions).values(sid=sid, expires_at=until)
        upsert = upsert.on_conflict_do_update(index_elements=[revoked_sessions.c.sid],
                                              set_={"expires_at": until})

        def body(conn: Connection) -> None:
            conn.execute(delete(revoked_sessions).where(
                revoked_sessions.c.expires_at < time.time()))
            conn.execute(upsert)

        await self.store.engines.transaction(body)

    async def revoked(self, sid: str) -> bool:
        rows = await self.store._read(
            select(revoked_sessions.c.sid).where(revoked_sessions.c.sid == sid,
                                                 revoked_sessions.c.expires_at > time.time()))
        return bool(rows)
