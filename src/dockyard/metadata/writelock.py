"""The node's SQLite writers take turns through a file lock, not SQLite's busy handler.

Every worker process has one writer thread (`engine.Engines`). When two of them want
the database's write lock at once, SQLite's busy handler makes the loser sleep 1, 2, 5,
10, ... up to 100 ms between tries, and a process whose writer keeps losing stalls every
push it serves behind that sleep (measured: one writer waited 7 s of a 16 s small-image
push run, single waits over a second). Here a writer first takes an exclusive `flock` on
a file beside the database, trying again every 50-500 us while another holds it (a
transaction holds it for about a tenth of a millisecond), and only then
`BEGIN IMMEDIATE`. The lock only orders writers: SQLite's own locking still
keeps the data safe, and a writer that does not take it (the `sqlite3` shell, an older
Dockyard) is still arbitrated by `busy_timeout`. The kernel releases the lock of a
process that dies.

The wait is bounded: past `WAIT` seconds the writer goes on without the file lock and
leaves it to SQLite's `busy_timeout`, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

WAIT = 30.0
"""Seconds a writer waits for the file lock before leaving it to SQLite's busy timeout."""

_POLL = (0.00005, 0.0001, 0.0002, 0.0005)
"""Sleeps between tries for a held lock: short, since a transaction holds it for about a
tenth of a millisecond; the last one repeats."""


class WriteLock:
    """The exclusive file lock the writers of one SQLite database take turns with.

    Used by one thread of each process (its writer). The file is opened once per
    process: a descriptor inherited over `fork` would share its lock with the parent.
    """

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-writer.lock")
        self._fd = -1
        self._pid = -1

    def _descriptor(self) -> int:
        """This process's descriptor of the lock file; -1 if it cannot be opened (a
        read-only directory: writers then go on without it)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.warning("cannot open the SQLite writer lock %s (%s); writers take "
                            "turns through SQLite's busy timeout", self.path, exc)
                self._fd = -1
        return self._fd

    def acquire(self) -> bool:
        """Take the lock; False when it was not had within `WAIT` or cannot be had at
        all (go on without it)."""
        fd = self._descriptor()
        if fd < 0:
            return False
        deadline = 0.0
        tries = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            now = time.monotonic()
            if not deadline:
                deadline = now + WAIT
            elif now >= deadline:
                log.warning("SQLite writer lock %s held for over %.0f s; writing without it",
                            self.path, WAIT)
                return False
            time.sleep(_POLL[min(tries, len(_POLL) - 1)])
            tries += 1

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The lock for the block, or the block without it (`acquire` said no)."""
        locked = self.acquire()
        try:
            yield
        finally:
            if locked:
                self.release()

    def close(self) -> None:
        if self._pid == os.getpid() and self._fd >= 0:
            os.close(self._fd)
        self._fd, self._pid = -1, -1
