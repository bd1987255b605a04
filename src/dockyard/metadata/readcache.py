"""A per-process cache of hot SQLite reads, emptied whenever any process commits.

A manifest GET on SQLite was one indexed query, but under load that query (a read
transaction: shared-memory locks, a stat, the VDBE) cost a third of the request's CPU.
Its answer only changes when some connection commits, and SQLite says when that happens
in a place every process can read for free: the WAL-index header at the start of the
database's `-shm` file, which every commit rewrites (its `iChange` counter, `mxFrame`
and salts; https://www.sqlite.org/walformat.html, "The WAL-Index Header"). So a cached
answer is served while those bytes are the ones seen when it was cached, and the whole
cache is dropped the moment they differ, whoever committed: another worker, a CLI such
as `dockyard gc` beside the server, a hand-run `sqlite3` (SQLite metadata is one node's,
so these are every writer there is). Nothing has to remember to invalidate it.

Exactness: a reader copies both 48-byte header copies at once; SQLite writes the second
copy before the first, so equal copies are a complete header and unequal ones a commit
in progress (then nothing is served from or put into the cache). An answer read after
the header was looked at is at least as new as that header, so keeping it under that
header is safe: the next commit changes the header and drops it.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

HEADER = 96
"""The two copies of the WAL-index header (48 bytes each) at the start of `-shm`."""
_IS_INIT = 12
"""Offset of `isInit` in a header copy: zero until the WAL-index is built."""

MAX_ENTRY = 64 * 1024
"""Answers larger than this (bytes of their values) are not kept: a rare huge manifest
would push out hundreds of ordinary ones."""


class WalHeader:
    """The `-shm` header of a WAL-mode database, mapped read-only."""

    def __init__(self, database: Path) -> None:
        fd = os.open(f"{database}-shm", os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def read(self) -> bytes | None:
        """The header now, or None while a commit is writing it (or before it exists)."""
        header = self._map[:HEADER]
        if header[:48] != header[48:] or not header[_IS_INIT]:
            return None
        return header

    def close(self) -> None:
        self._map.close()


def _weight(rows: Sequence[Any]) -> int:
    """About how many bytes an answer holds (its strings and payloads)."""
    return 100 + sum(len(v) for row in rows for v in row if isinstance(v, (bytes, str)))


class ReadCache:
    """Answers by key, valid while the WAL header is the one they were stored under;
    least recently used first out past `max_bytes` or `max_entries`."""

    def __init__(self, header: WalHeader, *, max_bytes: int = 8 << 20,
                 max_entries: int = 4096) -> None:
        self._header = header
        self._seen: bytes | None = None
        self._answers: OrderedDict[Hashable, tuple[Sequence[Any], int]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_entries = max_entries

    def get(self, key: Hashable) -> tuple[bytes | None, Sequence[Any] | None]:
        """(the header now, the cached answer or None). Pass the header to `put`."""
        header = self._header.read()
        if header != self._seen:
            self._drop()
            self._seen = header
        if header is None:
            return None, None
        found = self._answers.get(key)
        if found is None:
            return header, None
        self._answers.move_to_end(key)
        return header, found[0]

    def put(self, header: bytes | None, key: Hashable, rows: Sequence[Any]) -> None:
        """Keep `rows`, read after `get` returned `header`, unless a commit came since."""
        if header is None or header != self._seen:
            return
        weight = _weight(rows)
        if weight > MAX_ENTRY:
            return
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._answers[key] = (rows, weight)
        self._bytes += weight
        while self._bytes > self.max_bytes or len(self._answers) > self.max_entries:
            _, (_, dropped) = self._answers.popitem(last=False)
            self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._answers)

    def _drop(self) -> None:
        self._answers.clear()
        self._bytes = 0

    def close(self) -> None:
        self._drop()
        self._header.close()
