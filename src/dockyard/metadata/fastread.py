"""Hot-path reads on SQLite without a thread hop: one read-only connection per process.

A manifest GET or blob HEAD is one indexed point query that SQLite answers in a few
microseconds from its page cache; in WAL mode readers never wait for writers. Running it
on the event loop thread is cheaper than handing it to a worker thread and back,
which dominated the request's cost. Statements are SQLAlchemy Core, compiled once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Select
from sqlalchemy.dialects import sqlite


class Prepared:
    """A Core SELECT with named bind parameters, compiled for SQLite once."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        # render_postcompile expands IN (...) lists into one parameter per value
        compiled = stmt.compile(dialect=sqlite.dialect(),
                                compile_kwargs={"render_postcompile": True})
        self.sql = compiled.string
        self.order = tuple(compiled.positiontup or ())
        #: values bound in the statement itself (literals compared in WHERE clauses)
        self.defaults = dict(compiled.params)


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
        values = [params[k] if k in params else query.defaults[k] for k in query.order]
        return self._conn.execute(query.sql, values).fetchall()

    def close(self) -> None:
        self._conn.close()
