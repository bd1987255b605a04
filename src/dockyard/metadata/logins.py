"""Failed logins in the metadata store: the failed-login limiter's memory, shared by
every worker of a node (SQLite) or every node (PostgreSQL).

`LoginFailureStore` is the `FailureLog` that `auth.ratelimit` asks for (by shape; this
layer does not import auth). A check is one read on the `(key, failed_at)` index; a
failure is one short transaction that also drops the failures older than the window. A
reservation (`add_failures_unless`) reads and records in one write transaction: those are
serial on SQLite; on PostgreSQL a transaction-scoped advisory lock per key serialises the
reservations of one key, so two workers (or nodes) cannot both take its last failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import login_failures
from dockyard.metadata.store import MetadataStore

LOGIN_LOCK = 0x646F636C  # "docl"
"""First half of the PostgreSQL advisory lock taken per key while a reservation counts
its failures (the second half: `_lock_id` of the key)."""


def _lock_id(key: str) -> int:
    """A 32-bit signed number for `key` (the advisory lock's second half)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big",
                          signed=True)


class LoginFailureStore:
    """Times of failed logins by key, over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        return _times(await self.store._read(_since(keys, since)))

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        def body(conn: Connection) -> None:
            _record(conn, keys, at, forget_before)

        await self.store.engines.transaction(body)

    async def add_failures_unless(self, refuse: Callable[[list[tuple[str, float]]], int],
                                  *, read: Sequence[str], since: float,
                                  keys: Sequence[str], at: float, forget_before: float
                                  ) -> int:
        locks = self.store.engines.dialect == "postgresql"

        def body(conn: Connection) -> int:
            if locks:  # in one order, so two reservations of the same keys cannot deadlock
                for key in sorted(set(keys)):
                    conn.execute(select(func.pg_advisory_xact_lock(LOGIN_LOCK, _lock_id(key))))
            wait = refuse(_times(conn.execute(_since(read, since))))
            if not wait:
                _record(conn, keys, at, forget_before)
            return wait

        return await self.store.engines.transaction(body)


def _since(keys: Sequence[str], since: float) -> Select[tuple[str, float]]:
    """The failures of `keys` after `since`, as (key, time) rows."""
    return (select(login_failures.c.key, login_failures.c.failed_at)
            .where(login_failures.c.key.in_(list(keys)), login_failures.c.failed_at > since))


def _times(rows: Iterable[Any]) -> list[tuple[str, float]]:
    """(key, time) pairs of `_since` rows (a time read back as a float on every database)."""
    return [(r[0], float(r[1])) for r in rows]


def _record(conn: Connection, keys: Sequence[str], at: float, forget_before: float) -> None:
    """One failure of each of `keys` at `at`; those of any key before `forget_before` go."""
    conn.execute(delete(login_failures).where(login_failures.c.failed_at < forget_before))
    conn.execute(insert(login_failures), [{"key": k, "failed_at": at} for k in keys])
