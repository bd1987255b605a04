"""Hot-path reads on SQLite without a thread hop: one read-only connection per process.

A manifest GET or blob HEAD is one indexed point query that SQLite answers in a few
microseconds from its page cache; in WAL mode readers never wait for writers. Running it
on the event loop thread is cheaper than handing it to a worker thread and back,
which dominated the request's cost. Statements are SQLAlchemy Core, compiled once.
Statements declared `cacheable` are answered from a per-process cache while no
connection has committed (`readcache.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from dockyard.metadata.readcache import ReadCache, WalHeader

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

    def __init__(self, stmt: Any, *, cacheable: bool = False) -> None:
        self.stmt = stmt  # a Core SELECT, INSERT, UPDATE or DELETE
        #: a read whose answer `FastReader` may keep until the next commit
        self.cacheable = cacheable

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
        self._path = path
        #: None until the first cacheable read; False where the database has no WAL index
        self._cache: ReadCache | Literal[False] | None = None

    def fetch(self, query: Prepared, params: Mapping[str, Any]) -> Sequence[Any]:
        values = query.values(params)
        if not query.cacheable:
            return self._conn.execute(query.sql, values).fetchall()
        cache = self._cache
        if cache is None or cache is False:
            rows = self._conn.execute(query.sql, values).fetchall()
            if cache is None:  # the read above opened the WAL index, if there is one
                self._cache = self._open_cache()
            return rows
        key = (query, *values)
        header, found = cache.get(key)
        if found is not None:
            return found
        answer = tuple(self._conn.execute(query.sql, values).fetchall())  # shared: immutable
        cache.put(header, key, answer)
        return answer

    def _open_cache(self) -> ReadCache | Literal[False]:
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":  # no WAL index tells of commits: never cache
            return False
        try:
            return ReadCache(WalHeader(self._path))
        except (OSError, ValueError):  # no -shm to map (e.g. a read-only copy)
            return False

    @property
    def cached(self) -> int:
        """How many answers the cache holds now."""
        return len(self._cache) if isinstance(self._cache, ReadCache) else 0

    def close(self) -> None:
        if isinstance(self._cache, ReadCache):
            self._cache.close()
        self._conn.close()
