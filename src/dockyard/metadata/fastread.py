"""Hot-path reads on SQLite without a thread hop: one read-only connection per process.

A manifest GET or blob HEAD is one indexed point query that SQLite answers in a few
microseconds from its page cache; in WAL mode readers never wait for writers. Running it
on the event loop thread is cheaper than handing it to a worker thread and back,
which dominated the request's cost. Statements are SQLAlchemy Core, compiled once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

#: SQL text, the bind parameters' names in order, values bound in the statement, and
#: whether it answers rows (a SELECT, or a write with RETURNING)
_Compiled = tuple[str, tuple[str, ...], dict[str, Any], bool]


def _compile(stmt: Any, dialect: Dialect) -> _Compiled:
    # render_postcompile expands IN (...) lists into one parameter per value
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    # values bound in the statement itself (literals compared in WHERE clauses)
    rows = not (compiled.isinsert or compiled.isupdate or compiled.isdelete) or bool(
        compiled.effective_returning)
    return (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params),
            rows)


class Prepared:
    """A Core statement with named bind parameters, compiled once (lazily) for SQLite
    (`sql`, `values`) and for PostgreSQL's asyncpg (`pg_sql`, `pg_values`)."""

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt  # a Core SELECT, INSERT, UPDATE or DELETE

    @cached_property
    def _compiled(self) -> _Compiled:
        return _compile(self.stmt, sqlite.dialect())

    @cached_property
    def _pg(self) -> _Compiled:
        # imported here: a registry on SQLite never compiles for PostgreSQL
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        return _compile(self.stmt, PGDialect_asyncpg())  # type: ignore[no-untyped-call]

    @property
    def sql(self) -> str:
        return self._compiled[0]

    @property
    def pg_sql(self) -> str:
        return self._pg[0]

    @property
    def answers_rows(self) -> bool:
        """Whether it answers rows (else only how many it touched)."""
        return self._pg[3]

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional parameters for `sql`, from `params` and the statement's own."""
        _, order, defaults, _ = self._compiled
        return [params[k] if k in params else defaults[k] for k in order]

    def pg_values(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional parameters for `pg_sql` ($1, $2, ...)."""
        _, order, defaults, _ = self._pg
        return [params[k] if k in params else defaults[k] for k in order]


class FastReader:
    """Synchronous, read-only SQLite connection used only from the event loop thread."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False,
            isolation_level=None,
        )
        self._conn.execute("PRAGMA query_only=1")
        self._conn.execute("PRAGMA busy_timeout=2000")

    def fetch(self, query: Prepared, params: Mapping[str, Any]) -> Sequence[Any]:
        return self._conn.execute(query.sql, query.values(params)).fetchall()

    def close(self) -> None:
        self._conn.close()
