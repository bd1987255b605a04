"""The dialect-specific statements of the metadata modules: `postgresql.insert` and
`sqlite.insert` (upserts; both dialects' share `on_conflict_do_*`).

`sqlalchemy.dialects.postgresql` imports every PostgreSQL driver SQLAlchemy supports
(asyncpg's, psycopg's, pg8000's...), which a registry on SQLite never needs: here it is
imported by the first PostgreSQL upsert built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.dialects import sqlite

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert
    from sqlalchemy.sql.expression import TableClause

__all__ = ["postgresql", "sqlite"]


class _PostgreSQL:
    """`sqlalchemy.dialects.postgresql` as far as the metadata modules use it."""

    @staticmethod
    def insert(table: TableClause) -> Insert:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)


postgresql = _PostgreSQL()
