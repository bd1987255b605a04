"""Open the metadata database: engines for reads and writes, pragmas, migrations.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer;
write transactions start with `BEGIN IMMEDIATE` so concurrent processes queue on the
busy timeout instead of failing a lock upgrade. Reads use an autocommit engine, so a
manifest GET is one statement with no transaction around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


@dataclass(frozen=True)
class Engines:
    """The two engines of one database: `reader` (autocommit) and `writer`."""

    reader: AsyncEngine
    writer: AsyncEngine
    sqlite_path: Path | None = None

    @property
    def dialect(self) -> str:
        return self.writer.dialect.name

    async def dispose(self) -> None:
        await self.reader.dispose()
        await self.writer.dispose()


def async_url(url: str) -> str:
    """Map `sqlite:///x` / `postgresql://...` to the async driver SQLAlchemy needs."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return parsed.render_as_string(hide_password=False)


def open_engines(url: str, *, pool_size: int = 10) -> Engines:
    """Create the reader and writer engines for `url` (not yet connected)."""
    target = async_url(url)
    if make_url(target).get_backend_name() == "sqlite":
        reader = create_async_engine(target, isolation_level="AUTOCOMMIT",
                                     connect_args={"timeout": 30})
        # one writer connection per process: local writers queue in the pool (async)
        # rather than in SQLite's busy handler, which sleeps in steps of milliseconds
        writer = create_async_engine(target, connect_args={"timeout": 30}, pool_size=1,
                                     max_overflow=0, pool_timeout=120)
        for engine in (reader, writer):
            event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(writer.sync_engine, "begin", _sqlite_begin)
        database = make_url(target).database
        path = Path(database) if database and database != ":memory:" else None
        return Engines(reader, writer, path)
    kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size,
                              "pool_pre_ping": True}
    return Engines(
        create_async_engine(target, isolation_level="AUTOCOMMIT", **kwargs),
        create_async_engine(target, **kwargs),
    )


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


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


async def migrate(engines: Engines) -> None:
    """Bring the schema to the newest revision (idempotent; run once at start)."""

    def _upgrade(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engines.writer.begin() as conn:
        await conn.run_sync(_upgrade)
