"""Open the metadata database and run transactions and reads on it.

Every write is a transaction body written once as a plain function of a synchronous
SQLAlchemy `Connection`, and run

- on SQLite (the embedded default): whole, in one dedicated writer thread of this
  process, on a pysqlite connection, starting with `BEGIN IMMEDIATE`. The database's
  write lock is then held only for the microseconds the SQL takes — never across event
  loop turns — and a process's own writers queue in the thread instead of SQLite's
  busy handler, which sleeps in steps of milliseconds. The writer threads of the
  node's processes take turns through a file lock first (`writelock`), so they do not
  meet the busy handler either. WAL mode means readers never wait for the writer.
- on PostgreSQL: through the async engine (asyncpg) with `run_sync`, which needs no
  thread and has no database-wide write lock.

A body that runs only compiled statements (`statements.run`) may go through
`compiled()`: on SQLite it gets the writer's sqlite3 connection itself and the
transaction is two plain `BEGIN IMMEDIATE`/`COMMIT` calls, which saves SQLAlchemy's
checkout, begin and reset (about a third of a small write's cost) on every push; and the
compiled bodies queued while the writer thread was busy share one transaction, each in
its savepoint (`groupcommit`).

Reads on SQLite run inline on the event loop on a read-only connection
(`fastread.FastReader`); on PostgreSQL the hot-path prepared ones go straight to asyncpg
(`pgdirect.PgDirect`), as do `compiled()` bodies, and the others through an autocommit
async engine.

A write that finds the disk full (SQLite's "database or disk is full", PostgreSQL's
disk_full) calls `on_full` — which gives back the storage reserve — and is tried once
more; if it fails again it raises `StorageFull`, never a bare database error.

PostgreSQL connections the database ended (a restart, a failover, an idle timeout) are
found without a round trip per checkout: a connection idle longer than `IDLE_PING` is
pinged when taken from the pool, and a read, or a write whose connection fails before
its commit, runs once more on a fresh connection (the pool then replaces every older
one).

`migrate` brings the schema to `HEAD_REVISION` at each start. On SQLite the upgrade is
one `BEGIN IMMEDIATE` transaction. On PostgreSQL it runs under an advisory lock held
at session level, one transaction per migration: the indexes of large tables are built
`CONCURRENTLY`, outside any transaction, so that a registry of millions of rows keeps
taking pushes (and nodes of the previous version keep writing) during the build
(`migrations/indexes.py`). The other steps (new tables and columns, indexes of new
tables) stay transactional: quick at any size, and all or nothing with the migration's
version stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import random
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import StaticPool

from dockyard.metadata.fastread import Prepared
from dockyard.metadata.groupcommit import GroupCommit
from dockyard.metadata.pgdirect import DroppedBeforeCommit, PgConn, PgDirect, Rows
from dockyard.metadata.writelock import WriteLock
from dockyard.oci.errors import StorageFull, StorageUnavailable, one_line

if TYPE_CHECKING:
    # PostgreSQL's async engine (it imports SQLAlchemy's ORM) and Alembic are imported
    # where they are used: a SQLite registry whose schema is current needs neither
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")
#: what a compiled-statement body gets: a SQLAlchemy connection, on SQLite the writer
#: thread's sqlite3 connection, on PostgreSQL an asyncpg one (`statements.run` takes any)
Conn = Connection | sqlite3.Connection | PgConn
log = logging.getLogger(__name__)

_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg"}
_PG_DISK_FULL = "53100"
_PG_FOREIGN_KEY = "23503"


def disk_full(exc: BaseException) -> bool:
    """Whether a database error says the disk is full (SQLite or PostgreSQL)."""
    orig: object = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "database or disk is full" in str(orig))
    return getattr(orig, "sqlstate", None) == _PG_DISK_FULL


def foreign_key_violated(exc: BaseException) -> bool:
    """Whether a database error says a row refers to one that is not there (SQLite or
    PostgreSQL): a write raced a delete of the row it points at."""
    orig: object = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
    return getattr(orig, "sqlstate", None) == _PG_FOREIGN_KEY


def conflicted(exc: BaseException) -> bool:
    """Whether PostgreSQL ended the transaction to break a deadlock or a serialization
    conflict: nothing of it was written, and running it again is what it asks for."""
    orig: object = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None) in _PG_CONFLICTS


#: deadlock_detected, serialization_failure
_PG_CONFLICTS = ("40P01", "40001")
#: tries of a transaction PostgreSQL ends on a conflict (`conflicted`)
CONFLICT_TRIES = 4


class _Dropped(Exception):
    """A write's connection had been ended by the database before the commit."""


CONNECT_TIMEOUT = 10.0
"""Seconds a new PostgreSQL connection may take unless told otherwise."""


async def _once_more(write: Callable[[], Awaitable[T]]) -> T:
    """`write` on PostgreSQL's direct path, run once more when its connection was found
    dead (`DroppedBeforeCommit`: the database restarted or failed over meanwhile)."""
    try:
        return await write()
    except DroppedBeforeCommit as dropped:
        log.warning("metadata connection lost, writing again on a new one: %s",
                    dropped.__cause__)
    return await write()


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says the database cannot be reached
    now: refused or lost connections, a server starting up or shutting down, a connect
    that timed out. A client is answered 503 with `Retry-After` for these, as for an
    object store that is down, not 500 with a traceback per request."""
    import asyncpg

    # TimeoutError: a connection not made within `database.connect_timeout` (what
    # `reachable` wraps is a database call only: a caller's own timeout is raised
    # outside it)
    gone = (ConnectionError, socket.gaierror, TimeoutError, DisconnectionError,
            DroppedBeforeCommit,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError)
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, gone) or (isinstance(seen, OSError) and seen.errno in _NO_ROUTE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


#: what a connect to a host that cannot be reached fails with
_NO_ROUTE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """Around a database call: a database that cannot be reached raises
    `StorageUnavailable` (503 with `Retry-After` to a client), not the driver's error
    (a 500 and a traceback for every request while PostgreSQL was down)."""
    try:
        yield
    except StorageUnavailable:
        raise
    except Exception as exc:
        if database_unreachable(exc):
            raise StorageUnavailable("the registry's metadata database is unavailable; "
                                     f"try again later ({one_line(exc)[:200]})") from exc
        raise


@dataclass
class Engines:
    """The engines of one database and the means to run transactions on them."""

    url: str
    #: PostgreSQL: the hot-path reads and compiled writes, on asyncpg itself
    direct: PgDirect | None = None
    reader: AsyncEngine | None = None
    writer: AsyncEngine | None = None
    sqlite: Engine | None = None
    sqlite_path: Path | None = None
    #: called (from any thread) when a write finds the disk full; frees space for a retry
    on_full: Callable[[], object] | None = None
    #: called with each write transaction's duration in seconds (the metrics)
    observe: Callable[[float], object] | None = None
    #: PostgreSQL: seconds a new connection may take
    connect_timeout: float = CONNECT_TIMEOUT
    _thread: ThreadPoolExecutor | None = field(default=None, repr=False)
    _raw: sqlite3.Connection | None = field(default=None, repr=False)
    #: SQLite: the compiled writes waiting for the writer thread (`groupcommit`)
    _group: GroupCommit | None = field(default=None, repr=False)
    #: SQLite: the file lock this node's writers take turns with (`writelock`)
    _lock: WriteLock | None = field(default=None, repr=False)
    #: what a failed write raises, to look for a full disk in (asyncpg's own errors
    #: too on PostgreSQL, whose hot path runs on asyncpg itself)
    _errors: tuple[type[BaseException], ...] = field(
        default=(DBAPIError, sqlite3.Error), repr=False)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a failed statement of these engines raises."""
        return self._errors

    @property
    def dialect(self) -> str:
        return "sqlite" if self.sqlite is not None else "postgresql"

    async def transaction(self, body: Callable[[Connection], T]) -> T:
        """Run `body` in one write transaction; its return value is returned.

        On a full disk: `on_full`, then `body` once more in a new transaction (the first
        one rolled back); `StorageFull` if that fails too.
        """
        return await self._retrying(lambda: self._run(body))

    async def compiled(self, body: Callable[[Conn], T]) -> T:
        """`transaction` for a body that runs only `statements.run`: on SQLite, straight
        on the sqlite3 connection in the writer thread; on PostgreSQL, on asyncpg
        itself (`pgdirect`)."""
        direct = self.direct
        if direct is not None:
            return await self._retrying(lambda: _once_more(lambda: direct.transaction(body)))
        if self.sqlite is None:
            return await self.transaction(body)
        return await self._retrying(lambda: self._grouped(body))

    async def statement(self, query: Prepared, params: Mapping[str, Any]) -> Rows | None:
        """One write statement in its own transaction, on PostgreSQL's direct path (a
        round trip, where `compiled` adds a BEGIN and a COMMIT); None elsewhere, where
        the caller runs it in a transaction body. The statement must be one that can
        run twice: a connection lost before it answered is tried once more."""
        direct = self.direct
        if direct is None:
            return None
        return await self._retrying(lambda: _once_more(lambda: direct.execute(query, params)))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        with reachable():
            for tries in range(1, CONFLICT_TRIES + 1):
                try:
                    return await self._retrying_when_full(attempt)
                except self._errors as exc:
                    if tries == CONFLICT_TRIES or not conflicted(exc):
                        raise
                    log.info("metadata transaction ended by a conflict, running it again: "
                             "%s", one_line(exc)[:200])
                await asyncio.sleep(random.uniform(0.005, 0.02) * tries)
            raise AssertionError("unreachable")

    async def _retrying_when_full(self, attempt: Callable[[], Awaitable[T]]) -> T:
        observe = self.observe
        start = time.perf_counter() if observe is not None else 0.0
        errors = self._errors
        try:
            result = await attempt()
            if observe is not None:
                observe(time.perf_counter() - start)
            return result
        except errors as exc:
            if not disk_full(exc):
                raise
            log.warning("metadata write failed, the disk is full: %s", one_line(exc))
            if self.on_full is not None:
                self.on_full()
        try:
            return await attempt()
        except errors as exc:
            if not disk_full(exc):
                raise
            raise StorageFull("insufficient storage: the metadata database cannot be "
                              "written, the disk holding it is full") from exc

    def _writer(self) -> ThreadPoolExecutor:
        """This process's SQLite writer thread, started on first use."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="dockyard-db-writer")
        return self._thread

    def _turn(self, run: Callable[[], T]) -> T:
        """In the writer thread: `run` in the node's turn to write (`writelock`)."""
        return run() if self._lock is None else _in_turn(self._lock, run)

    async def _in_writer(self, run: Callable[[], T]) -> T:
        """Run `run` (one write transaction) in this process's SQLite writer thread, in
        the node's turn."""
        return await asyncio.get_running_loop().run_in_executor(
            self._writer(), functools.partial(self._turn, run))

    async def _grouped(self, body: Callable[[Conn], T]) -> T:
        """On SQLite: `body` as one write of the next group commit (`groupcommit`) in
        this process's writer thread, in the node's turn."""
        if self._group is None:
            self._group = GroupCommit(self._connection, self._turn)
        return await self._group.run(self._writer(), body)

    def _connection(self) -> sqlite3.Connection:
        """In the writer thread: the sqlite3 connection the engine's single pooled
        connection wraps (the thread is its only user)."""
        raw = self._raw
        if raw is None:
            assert self.sqlite is not None
            proxy = self.sqlite.raw_connection()
            raw = proxy.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            proxy.close()  # back to the StaticPool, which keeps it open
            self._raw = raw
        return raw

    async def _run(self, body: Callable[[Connection], T]) -> T:
        if self.sqlite is not None:
            engine = self.sqlite

            def run() -> T:
                with engine.begin() as conn:
                    return body(conn)

            return await self._in_writer(run)
        try:
            return await self._pg_run(body)
        except _Dropped as dropped:
            log.warning("metadata connection lost, writing again on a new one: %s",
                        dropped.__cause__)
        return await self._pg_run(body)

    async def _pg_run(self, body: Callable[[Connection], T]) -> T:
        """`body` in one PostgreSQL transaction; `_Dropped` when the connection was
        found dead before the commit (so nothing was written and the body may rerun)."""
        assert self.writer is not None
        async with self.writer.connect() as aconn:
            try:
                result = await aconn.run_sync(body)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise _Dropped from exc
                raise
            await aconn.commit()  # a connection lost here may have committed: no retry
            return result

    async def dispose(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        self._raw = self._group = None
        if self._lock is not None:
            self._lock.close()
        if self.sqlite is not None:
            self.sqlite.dispose()
        for engine in (self.reader, self.writer):
            if engine is not None:
                await engine.dispose()
        if self.direct is not None:
            await self.direct.close()


def _in_turn(lock: WriteLock, run: Callable[[], T]) -> T:
    """`run` while holding the node's SQLite write lock (in the writer thread)."""
    with lock.held():
        return run()


def async_url(url: str) -> str:
    """Map `postgresql://...` to the async driver SQLAlchemy needs (asyncpg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    return parsed.render_as_string(hide_password=False)


def open_engines(url: str, *, pool_size: int = 10,
                 connect_timeout: float = CONNECT_TIMEOUT) -> Engines:
    """Create the engines for `url` (nothing connects until first use); on PostgreSQL
    a connection not made within `connect_timeout` seconds fails (`TimeoutError`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise ValueError("SQLite metadata needs a file (the processes share it)")
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # one connection, used only by the writer thread
        engine = create_engine(
            parsed.set(drivername="sqlite"), poolclass=StaticPool,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return Engines(url, sqlite=engine, sqlite_path=path, _lock=WriteLock(path))
    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine

    target = async_url(url)
    # no overflow: a worker holds at most 3 x pool_size connections (README: "Running
    # several nodes" says how many the cluster needs); a request past a full pool waits
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0,
                              "connect_args": {"timeout": connect_timeout}}
    reader = create_async_engine(target, isolation_level="AUTOCOMMIT", **kwargs)
    writer = create_async_engine(target, **kwargs)
    for pooled in (reader, writer):
        _ping_when_idle(pooled.sync_engine)
    return Engines(url, reader=reader, writer=writer,
                   direct=PgDirect(url, pool_size, connect_timeout=connect_timeout),
                   connect_timeout=connect_timeout,
                   _errors=(DBAPIError, sqlite3.Error, asyncpg.PostgresError))


IDLE_PING = 1.0
"""Seconds a pooled PostgreSQL connection may sit unused before its next checkout pings
it (pgx's default). A busy pool pays no round trip per checkout, as `pool_pre_ping`
would; a connection that sat idle long enough for a restart or an idle timeout to end
it is tested first and replaced."""


def _ping_when_idle(engine: Engine) -> None:
    """Test a connection on checkout only when it has been idle longer than `IDLE_PING`;
    a dead one raises `DisconnectionError`, on which the pool connects afresh."""

    @event.listens_for(engine, "checkin")
    def checkin(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING:
            return
        try:
            dbapi.ping()
        except Exception as exc:  # the driver's own error types: all mean "gone"
            raise DisconnectionError(str(exc)) from exc


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # take transaction control away from the driver; `_sqlite_begin` issues BEGIN
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=30000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


HEAD_REVISION = "0021"
"""The newest schema revision this build knows, what `migrate` brings a database to: the
last migration of `migrations/versions/` (`tests/unit/metadata/test_migrations.py`
checks that it is). A start finding the database at it needs no Alembic at all."""


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


MIGRATION_LOCK = 0x646F636B79617264
"""PostgreSQL advisory lock key ("dockyard") held by the process migrating the schema."""


def stored_revision(connection: Connection) -> str | None:
    """The schema revision Alembic recorded in the database (None: none, or several)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return str(rows[0][0]) if len(rows) == 1 else None


MIGRATION_POLL = 0.2
"""Seconds between a waiting node's tries of the migration lock."""


async def migrate(engines: Engines) -> None:
    """Bring the schema to the newest revision (idempotent; run once at start).

    A schema found current (most starts) is left as it is without importing Alembic or
    loading every migration script. Otherwise, on SQLite, the whole upgrade is one
    `BEGIN IMMEDIATE` transaction, which serialises the node's processes; on PostgreSQL
    see `_migrate_postgresql`.
    """
    if engines.sqlite is None:
        await _migrate_postgresql(engines.url, engines.connect_timeout)
        return

    def upgrade(connection: Connection) -> None:
        current = stored_revision(connection)
        if current != HEAD_REVISION:
            _alembic_upgrade(connection, current)

    await engines.transaction(upgrade)


async def _migrate_postgresql(url: str, connect_timeout: float) -> None:
    """Upgrade under `MIGRATION_LOCK`, held at session level on a connection of its own.

    Nodes sharing one PostgreSQL start together and each migrates: one takes the lock and
    upgrades, the others wait for it and then find the schema current. The lock is held
    across the whole upgrade, not per transaction, because an index is built
    concurrently outside any transaction (`migrations/indexes.py`) so that pushes, and
    the writes of nodes still on the previous version, go on during the build.

    The others wait by trying the lock now and then, each try a short transaction, never
    by a blocking `pg_advisory_lock`: that would hold a snapshot while it waits, which a
    concurrent index build waits for in turn (a deadlock PostgreSQL breaks by failing one
    of them). The lock is released at the end, failure included; closing the connection
    (it is not pooled) releases it whatever happened.
    """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(async_url(url), poolclass=NullPool,
                                 connect_args={"timeout": connect_timeout})
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(stored_revision)
            await conn.rollback()
            if current == HEAD_REVISION:
                return
            said = False
            while not (await conn.execute(
                    text(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK})"))).scalar():
                await conn.rollback()
                if not said:
                    log.info("waiting for another node to migrate the metadata schema")
                    said = True
                await asyncio.sleep(MIGRATION_POLL)
            await conn.commit()
            try:
                await conn.run_sync(_upgrade_locked)
            finally:
                with contextlib.suppress(DBAPIError):  # a lost connection holds nothing
                    await conn.rollback()
                    await conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                    await conn.commit()
    finally:
        await engine.dispose()


def _upgrade_locked(connection: Connection) -> None:
    """Under the migration lock: upgrade unless another node has done it meanwhile."""
    current = stored_revision(connection)
    connection.commit()  # Alembic runs each migration in a transaction of its own
    if current != HEAD_REVISION:
        _alembic_upgrade(connection, current)
        connection.commit()


def _alembic_upgrade(connection: Connection, current: str | None) -> None:
    """Alembic's upgrade to head on `connection`, from revision `current`."""
    from alembic import command

    log.info("migrating the metadata schema from revision %s to %s", current or "none",
             HEAD_REVISION)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
