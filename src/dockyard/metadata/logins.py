"""Failed logins in the metadata store: the failed-login limiter's memory, shared by
every worker of a node (SQLite) or every node (PostgreSQL).

`LoginFailureStore` is the `FailureLog` that `auth.ratelimit` asks for (by shape; this
layer does not import auth). A check is one read on the `(key, failed_at)` index; a
failure is one short transaction that also drops the failures older than the window.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import login_failures
from dockyard.metadata.store import MetadataStore


class LoginFailureStore:
    """Times of failed logins by key, over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        rows = await self.store._read(
            select(login_failures.c.key, login_failures.c.failed_at)
            .where(login_failures.c.key.in_(list(keys)), login_failures.c.failed_at > since))
        return [(r[0], float(r[1])) for r in rows]

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        def body(conn: Connection) -> None:
            conn.execute(delete(login_failures)
                         .where(login_failures.c.failed_at < forget_before))
            conn.execute(insert(login_failures), [{"key": k, "failed_at": at} for k in keys])

        await self.store.engines.transaction(body)
