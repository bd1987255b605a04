"""The hot path on PostgreSQL straight on asyncpg: prepared reads and compiled writes.

A manifest GET, a blob HEAD or an upload's lookup is one indexed SELECT, and a push's
writes are transactions of a few compiled statements (`statements.run`). Through
SQLAlchemy's async engine each read cost about 150 µs of CPU and each transaction about
160 µs more than the SQL needs (pool checkout, greenlet hops, execution context, result
machinery); through asyncpg's own pool as it comes, a round trip more (a reset query on
every release). Here they run on one asyncpg pool per process, without that reset,
which connections that only run single SELECTs and whole transactions do not need:
about 40 µs a read, 50 µs a transaction.

The statements are the same Core ones (`fastread.Prepared`), compiled for PostgreSQL
once; asyncpg prepares each on a connection once and keeps it (its statement cache).
A transaction body is the same plain function as on SQLite: it runs in a greenlet,
where `PgConn.run` waits for asyncpg as SQLAlchemy's own async engine does.

A connection the database ended (a restart, a failover, an idle timeout) fails its
read, which runs once more on a fresh one (every older connection is replaced as it
comes back); a write whose connection fails before its commit likewise, and a write of
one statement (`execute`, its own transaction) whose connection fails before it
answered, which may have committed: only statements safe to run twice go that way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.util import await_only, greenlet_spawn

from dockyard.metadata.fastread import Prepared

if TYPE_CHECKING:  # imported by `PgDirect` only: a SQLite registry never loads asyncpg
    import asyncpg

T = TypeVar("T")


def dropped_errors() -> tuple[type[BaseException], ...]:
    """What a connection the database ended raises on its next use (an idle one that
    read the server's goodbye may also find its protocol in a state it cannot leave)."""
    import asyncpg

    return (asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError,
            ConnectionError)

#: seconds a connection may sit unused in the pool before it is closed
IDLE_CLOSE = 60.0


def asyncpg_dsn(url: str) -> str:
    """`url` (SQLAlchemy's form, maybe `postgresql+asyncpg://`) as asyncpg's DSN."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep(_conn: object) -> None:
    """Release without a reset query: the connection holds no session state (asyncpg
    still rolls back a transaction a cancelled body left open)."""


@dataclass(slots=True)
class Rows:
    """A statement's result, read whole: `fetchone()`, `fetchall()` and `rowcount`
    (asyncpg's here, and SQLite's in `statements.run`)."""

    rows: list[Any]
    rowcount: int

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


def _count(status: str | None) -> int:
    """Rows a command touched, from its status ("UPDATE 3", "INSERT 0 1", "SELECT 1")."""
    last = (status or "").rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


async def _run(conn: asyncpg.Connection, query: Prepared, values: list[Any]) -> Rows:
    """Execute `query` on `conn`: its rows, or the count of rows a write touched."""
    if query.answers_rows:
        rows = list(await conn.fetch(query.pg_sql, *values))
        return Rows(rows, len(rows))
    return Rows([], _count(await conn.execute(query.pg_sql, *values)))


class PgConn:
    """An asyncpg connection inside a transaction, as a transaction body sees it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def run(self, query: Prepared, params: Mapping[str, Any]) -> Rows:
        """Execute `query` (from a greenlet: `PgDirect.transaction`'s body). asyncpg
        prepares it on this connection once (its statement cache)."""
        rows: Rows = await_only(_run(self._conn, query, query.pg_values(params)))
        return rows

    def run_many(self, query: Prepared, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute a write `query` for each parameter set, pipelined (one round trip)."""
        await_only(self._conn.executemany(query.pg_sql,
                                          [query.pg_values(p) for p in params]))


class DroppedBeforeCommit(Exception):
    """A write's connection had been ended by the database before the commit: nothing
    was written, so the body may run again."""


class PgDirect:
    """One pool of at most `size` connections, opened on first use, per process."""

    def __init__(self, url: str, size: int, *, connect_timeout: float = 60.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._size = size
        self._connect_timeout = connect_timeout
        self._dropped = dropped_errors()
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                import asyncpg

                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=self._size, reset=_keep,
                    max_inactive_connection_lifetime=IDLE_CLOSE,
                    timeout=self._connect_timeout)
            return self._pool

    async def fetch(self, query: Prepared, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of `query` with `params` (tuples by position, as SQLite's)."""
        pool = self._pool or await self._open()
        sql, values = query.pg_sql, query.pg_values(params)
        try:
            rows: Sequence[Any] = await pool.fetch(sql, *values)
        except self._dropped:
            # the others the pool holds were most likely ended with it: replace them all
            await pool.expire_connections()
            rows = await pool.fetch(sql, *values)
        return rows

    async def execute(self, query: Prepared, params: Mapping[str, Any]) -> Rows:
        """One write statement as its own transaction (no BEGIN and COMMIT round trips):
        for a statement that may run again after a connection the database ended
        (`DroppedBeforeCommit`: one that fails before answering may have committed)."""
        pool = self._pool or await self._open()
        async with pool.acquire() as conn:
            try:
                return await _run(conn, query, query.pg_values(params))
            except self._dropped as exc:
                await pool.expire_connections()
                raise DroppedBeforeCommit from exc

    async def transaction(self, body: Callable[[PgConn], T]) -> T:
        """`body` in one transaction; `DroppedBeforeCommit` when the connection was
        found dead before the commit (then nothing was written)."""
        pool = self._pool or await self._open()
        async with pool.acquire() as conn:
            tx = conn.transaction()
            try:
                await tx.start()
                try:
                    result: T = await greenlet_spawn(body, PgConn(conn))
                except BaseException:
                    if not conn.is_closed():
                        await tx.rollback()
                    raise
            except self._dropped as exc:
                await pool.expire_connections()
                raise DroppedBeforeCommit from exc
            await tx.commit()  # a connection lost here may have committed: no retry
            return result

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
