"""Metadata writes on a full disk: `on_full`, one retry, then `StorageFull`."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from dockyard.metadata.engine import disk_full, open_engines
from dockyard.oci.errors import StorageFull


def test_disk_full_recognises_sqlite_and_postgresql() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert disk_full(full)
    assert not disk_full(sqlite3.OperationalError("database is locked"))

    class PgError(Exception):
        sqlstate = "53100"

    assert disk_full(PgError())
    assert not disk_full(ValueError("no space"))


async def test_full_disk_write_frees_space_and_retries_once(sqlite_url: str) -> None:
    engines = open_engines(sqlite_url)
    freed: list[bool] = []
    engines.on_full = lambda: freed.append(True)
    attempts = 0

    def body(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return int(conn.execute(text("SELECT 7")).scalar_one())

    try:
        assert await engines.transaction(body) == 7
        assert attempts == 2
        assert freed == [True]

        def always_full(conn: Connection) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        with pytest.raises(StorageFull, match="insufficient storage"):
            await engines.transaction(always_full)

        def other(conn: Connection) -> None:
            raise sqlite3.OperationalError("no such table: nothing")

        with pytest.raises(sqlite3.OperationalError):
            await engines.transaction(other)
    finally:
        await engines.dispose()
