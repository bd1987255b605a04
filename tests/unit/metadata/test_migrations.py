"""The Alembic migrations build exactly the schema `metadata/schema.py` declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from dockyard.metadata.engine import HEAD_REVISION, alembic_config, migrate, open_engines
from dockyard.metadata.schema import metadata


async def test_migrations_match_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    engines = open_engines(f"sqlite:///{db}")
    await migrate(engines)
    await migrate(engines)  # idempotent
    await engines.dispose()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_head_revision_is_the_last_migration() -> None:
    """`migrate` skips Alembic when the database is at `HEAD_REVISION`: it must name the
    last migration (bump it with every new one)."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


async def test_an_older_schema_is_still_migrated(tmp_path: Path) -> None:
    """The check that skips Alembic skips it only for a current schema."""
    db = tmp_path / "m.db"
    engines = open_engines(f"sqlite:///{db}")
    await migrate(engines)
    await engines.dispose()
    with create_engine(f"sqlite:///{db}").begin() as conn:
        conn.exec_driver_sql("DROP TABLE revoked_sessions")  # made by 0017
        conn.exec_driver_sql("DROP TABLE proxy_misses")  # made by 0020
        conn.exec_driver_sql("ALTER TABLE events DROP COLUMN actor")  # made by 0021
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0016'")
    engines = open_engines(f"sqlite:///{db}")
    await migrate(engines)
    await engines.dispose()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert inspect(conn).has_table("revoked_sessions")
        assert inspect(conn).has_table("proxy_misses")
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
            (HEAD_REVISION,)]
