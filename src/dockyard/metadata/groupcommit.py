"""Group commit on SQLite: the write transactions a process queued while its writer
thread was busy run in one `BEGIN IMMEDIATE ... COMMIT`, each in a savepoint of its own.

Each write would otherwise pay the database's write lock, the node's file lock
(`writelock`), a WAL commit, the readers' page cache emptied by that commit, and a
hand-off to the writer thread and back; under concurrent pushes most of a small write's
cost is that. A savepoint per body keeps each one all or nothing: a body that raises is
rolled back alone and only its caller sees the error, the others commit. The bodies run
one after another on one connection, so each sees the writes of those before it, as
when they ran as transactions in the same order. Nothing waits to fill a group: a group
is what was queued when the thread came to it. The thread takes one group per turn of
its executor, so other work queued there (the engine's ORM writes) is not starved.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

LIMIT = 64
"""Bodies in one transaction at most: bounds how long one commit holds the locks."""

Turn = Callable[[Callable[[], None]], None]
"""Runs the given function in the node's turn to write (`writelock`)."""


@dataclass(eq=False)
class Job(Generic[T]):
    """One write transaction's body, the future its caller awaits, and, once the body
    ran, its result or its error (which wins: a result of a transaction that then failed
    does not count)."""

    body: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    result: T | None = None
    error: BaseException | None = None

    def settle(self) -> None:
        """On the caller's loop: hand the outcome to the caller (unless it went away)."""
        if self.future.done():  # cancelled: the write happened all the same
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)  # type: ignore[arg-type]  # T may be None


class GroupCommit:
    """The queue of one process's compiled SQLite writes and the writer thread's drain."""

    def __init__(self, connection: Callable[[], sqlite3.Connection], turn: Turn,
                 limit: int = LIMIT) -> None:
        """`connection`: the writer's sqlite3 connection (called in the writer thread);
        `turn`: how a group takes the node's write lock."""
        self._connection = connection
        self._turn = turn
        self._limit = limit
        self._queue: deque[Job[Any]] = deque()
        self._mutex = threading.Lock()
        self._draining = False

    async def run(self, executor: Executor, body: Callable[[sqlite3.Connection], T]) -> T:
        """`body` in the next group `executor`'s thread commits; its result, or its
        error raised."""
        job: Job[T] = Job(body, asyncio.get_running_loop().create_future())
        with self._mutex:
            self._queue.append(job)
            start, self._draining = not self._draining, True
        if start:
            self._submit(executor)
        return await job.future

    def _submit(self, executor: Executor) -> None:
        try:
            executor.submit(self._drain, executor)
        except RuntimeError as exc:  # the executor was shut down: nobody will run them
            with self._mutex:
                jobs, self._draining = list(self._queue), False
                self._queue.clear()
            for job in jobs:
                job.error = exc
            _settle(jobs)

    def _drain(self, executor: Executor) -> None:
        """In the writer thread: commit one group, then queue the next turn if more
        jobs came meanwhile (behind what else the executor was given)."""
        with self._mutex:
            group = [self._queue.popleft() for _ in range(min(len(self._queue), self._limit))]
        try:
            raw = self._connection()
            self._turn(lambda: _commit(raw, group))
        except BaseException as exc:  # not a body's error (each job holds its own)
            for job in group:
                if job.error is None:
                    job.error = exc
        finally:
            _settle(group)
            with self._mutex:
                more = bool(self._queue)
                self._draining = more
        if more:
            self._submit(executor)


def _settle(jobs: list[Job[Any]]) -> None:
    """Hand each job's outcome to its caller: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job[Any]]] = {}
    for job in jobs:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: its callers are gone
            loop.call_soon_threadsafe(_settle_here, mine)


def _settle_here(jobs: list[Job[Any]]) -> None:
    for job in jobs:
        job.settle()


def _commit(raw: sqlite3.Connection, group: list[Job[Any]]) -> None:
    """Run `group` in one transaction, each body in its savepoint. When a body's error
    ended the transaction (SQLite rolls back the whole of it on some, a full disk
    among them), the others run again in a new one: every job ends with its own
    outcome."""
    if len(group) == 1:
        _alone(raw, group[0])
        return
    done: list[Job[Any]] = []
    raw.execute("BEGIN IMMEDIATE")
    try:
        for index, job in enumerate(group):
            raw.execute("SAVEPOINT job")
            try:
                job.result = job.body(raw)
            except BaseException as exc:
                job.error = exc
                if not raw.in_transaction:  # the others went with it: again, without it
                    _commit(raw, done + group[index + 1:])
                    return
                raw.execute("ROLLBACK TO job")
                raw.execute("RELEASE job")
            else:
                raw.execute("RELEASE job")
                done.append(job)
        raw.execute("COMMIT")
    except BaseException as exc:  # the transaction itself failed: nothing of it holds
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        for job in group:
            if job.error is None:
                job.error = exc


def _alone(raw: sqlite3.Connection, job: Job[Any]) -> None:
    """One job, one transaction (no savepoint to pay for)."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        job.result = job.body(raw)
        raw.execute("COMMIT")
    except BaseException as exc:
        if raw.in_transaction:  # SQLite ends some failed transactions itself
            raw.execute("ROLLBACK")
        job.error = exc
