"""Leases in the metadata store: a named right held by one holder until it expires.

Each call is one write transaction, so two processes (or two hosts on one PostgreSQL)
can never both hold a lease: SQLite serialises writers (`BEGIN IMMEDIATE`), and on
PostgreSQL the row is locked (`FOR UPDATE`) or, when it is new, the primary key refuses
the second insert. Times are each caller's own clock (`time.time()`), not the
database's: holders on hosts whose clocks differ by more than a lease's margin of
renewal could overlap, so keep the nodes' clocks in sync (NTP), as the README's
"Running several nodes" says.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dockyard.metadata.engine import Engines
from dockyard.metadata.schema import leases


class LeaseStore:
    """Acquire, renew, release and read leases (implements `core.leases.LeaseBackend`)."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take `name` for `ttl` seconds unless a valid lease exists (anyone's, the
        caller's own included: a lease is not re-entrant)."""

        def body(conn: Connection) -> bool:
            now = time.time()
            row = conn.execute(select(leases.c.holder, leases.c.expires_at)
                               .where(leases.c.name == name).with_for_update()).fetchone()
            if row is None:
                conn.execute(leases.insert().values(name=name, holder=holder,
                                                    acquired_at=now, expires_at=now + ttl))
                return True
            if row.expires_at > now:
                return False
            conn.execute(update(leases).where(leases.c.name == name).values(
                holder=holder, acquired_at=now, expires_at=now + ttl))
            return True

        try:
            return await self.engines.transaction(body)
        except IntegrityError:
            return False  # another process inserted it first

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        """Extend `holder`'s lease; False when it is no longer theirs (it expired and
        someone else took it, or it was released)."""

        def body(conn: Connection) -> bool:
            result = conn.execute(update(leases).where(
                leases.c.name == name, leases.c.holder == holder).values(
                    expires_at=time.time() + ttl))
            return bool(result.rowcount)

        return await self.engines.transaction(body)

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up at once (only when `holder` has it)."""

        def body(conn: Connection) -> None:
            conn.execute(delete(leases).where(leases.c.name == name,
                                              leases.c.holder == holder))

        await self.engines.transaction(body)

    async def holder(self, name: str) -> tuple[str, float] | None:
        """Who holds `name` and until when, or None when nobody validly does."""

        def body(conn: Connection) -> tuple[str, float] | None:
            row = conn.execute(select(leases.c.holder, leases.c.expires_at)
                               .where(leases.c.name == name)).fetchone()
            if row is None or row.expires_at <= time.time():
                return None
            return str(row.holder), float(row.expires_at)

        return await self.engines.transaction(body)
