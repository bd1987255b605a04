"""The Alembic migrations build exactly the schema `metadata/schema.py` declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.schema import metadata


async def test_migrations_match_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    engines = open_engines(f"sqlite:///{db}")
    await migrate(engines)
    await migrate(engines)  # idempotent
    await engines.dispose()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
