"""Group commit on a real SQLite file: writes queued while the writer thread is busy
commit together, yet each stays all or nothing and only its own caller sees its error;
and a caller never waits forever."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dockyard.metadata import groupcommit
from dockyard.metadata.engine import open_engines
from dockyard.metadata.groupcommit import GroupCommit


class Writer:
    """A writer thread, its connection and its group commit, counting the turns (one
    per transaction group) and able to hold the thread busy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(1)
        self.turns = 0
        self.raw: sqlite3.Connection | None = None
        self.group = GroupCommit(self.connection, self.turn)

    def connection(self) -> sqlite3.Connection:
        if self.raw is None:
            self.raw = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self.raw.execute("PRAGMA foreign_keys=ON")
        return self.raw

    def turn(self, run: Callable[[], None]) -> None:
        self.turns += 1
        run()

    async def busy(self) -> threading.Event:
        """Hold the writer thread until the returned event is set."""
        release, started = threading.Event(), threading.Event()

        def hold(raw: sqlite3.Connection) -> None:
            started.set()
            release.wait(10)

        self.holding = asyncio.ensure_future(self.group.run(self.executor, hold))
        await asyncio.to_thread(started.wait, 10)
        return release

    async def queued(self, bodies: list[Callable[[sqlite3.Connection], int]], *,
                     meanwhile: Callable[[list[asyncio.Future[int]]], object] | None = None,
                     ) -> list[object]:
        """Run `bodies` queued together behind a busy writer thread (`meanwhile` is
        given their calls before the thread is let go); each one's result or error."""
        release = await self.busy()
        calls = [asyncio.ensure_future(self.group.run(self.executor, body))
                 for body in bodies]
        await asyncio.sleep(0.05)  # all queued behind the busy thread
        if meanwhile is not None:
            meanwhile(calls)
        release.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        await self.holding
        return results

    def rows(self) -> list[tuple[int, str]]:
        with sqlite3.connect(self.path) as reader:
            return reader.execute("SELECT id, note FROM t ORDER BY id").fetchall()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        setup.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        setup.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
                      "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    w = Writer(path)
    yield w
    w.executor.shutdown(wait=True)
    if w.raw is not None:
        w.raw.close()


def insert(row: int, note: str = "ok") -> Callable[[sqlite3.Connection], int]:
    def body(raw: sqlite3.Connection) -> int:
        raw.execute("INSERT INTO t VALUES (?, ?)", (row, note))
        return row
    return body


async def test_writes_queued_behind_a_busy_writer_commit_as_one_group(writer: Writer) -> None:
    assert await writer.queued([insert(i) for i in range(10)]) == list(range(10))
    assert writer.rows() == [(i, "ok") for i in range(10)]
    assert writer.turns == 2  # the holder's transaction, then the ten together


async def test_a_failing_write_is_rolled_back_alone_and_only_its_caller_sees_it(
        writer: Writer) -> None:
    def half_then_fail(raw: sqlite3.Connection) -> int:
        raw.execute("INSERT INTO t VALUES (100, 'half')")
        raw.execute("INSERT INTO t VALUES (1, 'clash')")  # row 1 is the write before
        return 100

    first, failed, last = await writer.queued([insert(1), half_then_fail, insert(2)])
    assert (first, last) == (1, 2)
    assert isinstance(failed, sqlite3.IntegrityError)
    assert writer.rows() == [(1, "ok"), (2, "ok")]  # nothing of the failed one, not 100
    assert writer.turns == 2


async def test_a_write_whose_error_ends_the_transaction_leaves_the_others_written(
        writer: Writer) -> None:
    """SQLite rolls a whole transaction back on some errors (a full disk): the writes
    that ran before in the group are run again, those after in a new transaction."""
    def ends_it(raw: sqlite3.Connection) -> int:
        raw.execute("INSERT INTO t VALUES (50, 'gone')")
        raw.execute("ROLLBACK")  # as SQLite does on such an error
        raise sqlite3.OperationalError("database or disk is full")

    results = await writer.queued([insert(1), insert(2), ends_it, insert(3)])
    assert results[:2] == [1, 2]
    assert results[3] == 3
    assert isinstance(results[2], sqlite3.OperationalError)
    assert writer.rows() == [(1, "ok"), (2, "ok"), (3, "ok")]


async def test_a_commit_that_fails_fails_every_write_of_its_group(writer: Writer) -> None:
    """A deferred constraint is checked at COMMIT: the group's transaction fails, and
    with it every write in it; each caller hears so and nothing was written."""
    def orphan(raw: sqlite3.Connection) -> int:
        raw.execute("INSERT INTO child VALUES (1, 99)")  # no parent 99
        return 0

    results = await writer.queued([insert(1), orphan, insert(2)])
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert writer.rows() == []
    assert await writer.group.run(writer.executor, insert(7)) == 7  # the writer goes on
    assert writer.rows() == [(7, "ok")]


async def test_a_cancelled_caller_does_not_undo_its_write_nor_block_the_others(
        writer: Writer) -> None:
    first, cancelled, last = await writer.queued(
        [insert(i) for i in range(3)], meanwhile=lambda calls: calls[1].cancel())
    assert (first, last) == (0, 2)
    assert isinstance(cancelled, asyncio.CancelledError)
    assert writer.rows() == [(0, "ok"), (1, "ok"), (2, "ok")]


async def test_a_group_is_bounded_and_what_comes_later_still_runs(writer: Writer) -> None:
    writer.group = GroupCommit(writer.connection, writer.turn, limit=4)
    assert await writer.queued([insert(i) for i in range(10)]) == list(range(10))
    assert writer.turns == 1 + 3  # 4 + 4 + 2


async def test_a_write_after_the_writer_stopped_fails_instead_of_waiting(
        writer: Writer) -> None:
    writer.executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(writer.group.run(writer.executor, insert(1)), 5)


async def test_the_engine_groups_concurrent_writes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine, as the store runs them: 200 concurrent compiled writes all
    land, in fewer transactions than writes."""
    transactions: list[int] = []
    commit = groupcommit._commit

    def counted(raw: sqlite3.Connection, group: list[Any]) -> None:
        transactions.append(len(group))
        commit(raw, group)

    monkeypatch.setattr(groupcommit, "_commit", counted)
    engines = open_engines(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        await engines.transaction(lambda conn: conn.exec_driver_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"))
        results = await asyncio.gather(*(engines.compiled(insert(i)) for i in range(200)))
        assert results == list(range(200))
        count = await engines.transaction(lambda conn: conn.exec_driver_sql(
            "SELECT count(*) FROM t").scalar_one())
        assert count == 200
        assert sum(transactions) == 200
        assert len(transactions) < 100, transactions
    finally:
        await engines.dispose()
