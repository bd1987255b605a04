"""The SQLite writers' file lock: writers of other processes wait for its holder, a dead
holder frees it, a descriptor is never shared over fork, and the wait is bounded."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from dockyard.metadata import writelock
from dockyard.metadata.engine import open_engines
from dockyard.metadata.writelock import WriteLock

FORK = multiprocessing.get_context("fork")


def _hold(path: str, held: Any, go: Any, releasing: Any) -> None:
    """In a child: take the lock file's flock, say so, and release it when told."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.set()
    go.wait(10)
    releasing.set()
    fcntl.flock(fd, fcntl.LOCK_UN)


def _die_holding(lock: WriteLock) -> None:
    assert lock.acquire()
    os._exit(0)  # no release: the kernel drops the lock with the process


def _try(lock: WriteLock, result: Any) -> None:
    result.value = 1 if lock.acquire() else 0


def test_the_lock_file_lies_beside_the_database(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "metadata.db")
    assert lock.acquire()
    lock.release()
    lock.close()
    assert (tmp_path / "metadata.db-writer.lock").is_file()


async def test_a_write_waits_for_the_holder_in_another_process(tmp_path: Path) -> None:
    engines = open_engines(f"sqlite:///{tmp_path / 'metadata.db'}")
    try:
        await engines.compiled(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        held, go, releasing = FORK.Event(), FORK.Event(), FORK.Event()
        child = FORK.Process(target=_hold, args=(str(tmp_path / "metadata.db-writer.lock"),
                                                 held, go, releasing))
        child.start()
        assert held.wait(10)
        write = asyncio.create_task(
            engines.compiled(lambda c: c.execute("INSERT INTO t VALUES (1)")))
        await asyncio.sleep(0.5)  # a write that did not wait is done long before this
        assert not write.done()
        go.set()
        await write
        # the write ran only once the holder had let go
        assert releasing.is_set()
        child.join(10)
        rows = await engines.compiled(lambda c: c.execute("SELECT x FROM t").fetchall())
        assert rows == [(1,)]
    finally:
        await engines.dispose()


def test_a_holder_that_dies_frees_the_lock(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "metadata.db")
    child = FORK.Process(target=_die_holding, args=(lock,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert lock.acquire()
    lock.release()


def test_a_forked_process_opens_its_own_descriptor(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the parent holds the lock; a child sharing the parent's descriptor would get it too
    monkeypatch.setattr(writelock, "WAIT", 0.2)
    lock = WriteLock(tmp_path / "metadata.db")
    assert lock.acquire()
    result = FORK.Value("i", -1)
    child = FORK.Process(target=_try, args=(lock, result))
    child.start()
    child.join(10)
    lock.release()
    assert result.value == 0


def test_the_wait_is_bounded_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(writelock, "WAIT", 0.1)
    path = tmp_path / "metadata.db-writer.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: held as another process would
    try:
        with caplog.at_level(logging.WARNING, logger="dockyard.metadata.writelock"):
            assert WriteLock(tmp_path / "metadata.db").acquire() is False
        assert "held for over" in caplog.text
    finally:
        os.close(fd)


def test_a_directory_it_cannot_write_leaves_writes_to_sqlite(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = WriteLock(tmp_path / "missing" / "metadata.db")
    with caplog.at_level(logging.WARNING, logger="dockyard.metadata.writelock"):
        assert lock.acquire() is False
    assert "cannot open the SQLite writer lock" in caplog.text
