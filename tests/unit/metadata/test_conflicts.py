"""A transaction PostgreSQL ends on a deadlock or a serialization conflict runs again
(nothing of it was written); other errors do not. The end-to-end case, concurrent
pushes of indexes on a real PostgreSQL, is in tests/e2e/test_postgres.py."""

from __future__ import annotations

import errno
import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dockyard.metadata.engine import (
    CONFLICT_TRIES,
    conflicted,
    database_unreachable,
    open_engines,
)


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _raised(sqlstate: str) -> DBAPIError:
    return DBAPIError("UPDATE manifests ...", None, _PgError(sqlstate))


def test_conflicts_are_deadlocks_and_serialization_failures() -> None:
    assert conflicted(_raised("40P01"))
    assert conflicted(_raised("40001"))
    assert conflicted(_PgError("40P01"))  # asyncpg's own, on the direct path
    assert not conflicted(_raised("23505"))
    assert not conflicted(ValueError("40P01"))


@pytest.mark.parametrize(("failures", "sqlstate", "tries", "succeeds"), [
    (2, "40P01", 3, True),
    (CONFLICT_TRIES, "40001", CONFLICT_TRIES, False),
    (1, "23505", 1, False),  # a unique violation is no conflict: never run again
])
async def test_a_transaction_ended_by_a_conflict_runs_again(
        sqlite_url: str, failures: int, sqlstate: str, tries: int, succeeds: bool) -> None:
    engines = open_engines(sqlite_url)
    attempts = 0

    def body(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        if attempts <= failures:
            raise _raised(sqlstate)
        return int(conn.execute(text("SELECT 7")).scalar_one())

    try:
        if succeeds:
            assert await engines.transaction(body) == 7
        else:
            with pytest.raises(DBAPIError):
                await engines.transaction(body)
        assert attempts == tries
    finally:
        await engines.dispose()


def test_what_says_the_database_cannot_be_reached() -> None:
    """`database_unreachable`: the errors `reachable` turns into 503 UNAVAILABLE (the
    live case, PostgreSQL stopped under a server, is in tests/e2e/test_postgres.py)."""
    import asyncpg

    def raised_from(cause: BaseException) -> RuntimeError:
        try:
            raise RuntimeError("a statement failed") from cause
        except RuntimeError as exc:
            return exc

    for yes in (ConnectionRefusedError(111, "refused"), TimeoutError(),
                asyncpg.exceptions.CannotConnectNowError("starting up"),
                OSError(errno.EHOSTUNREACH, "no route"),
                raised_from(ConnectionResetError()),
                DBAPIError("SELECT 1", None, _PgError("08006"), connection_invalidated=True)):
        assert database_unreachable(yes), yes
    for no in (ValueError("bad"), sqlite3.OperationalError("database is locked"),
               _raised("40P01"), OSError(errno.ENOSPC, "full"), raised_from(KeyError())):
        assert not database_unreachable(no), no
