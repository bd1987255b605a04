"""Unauthenticated connections per client address, counted for the whole node.

`http.unauthenticated_connections` promises a cap per node, but every worker process
accepts its own connections (SO_REUSEPORT), so each counted only its own and a node of N
workers let an address hold N times the cap. The count lives in shared memory instead:
one row of counters per worker, each written only by its own worker (no lock), read as
the sum of the rows. The supervisor zeroes a dead worker's row before its replacement
starts, so the connections that died with it stop counting.

Addresses go into the row as a count-min sketch: two slots each, picked by a hash keyed
with a secret of this run (a client cannot aim at another's slots); an address's count
is the smaller of its two slot sums. It never reads less than the truth, and it reads
more only when both slots are shared with other busy addresses. Two workers admitting
the same address at the same instant may both see room: the cap can be passed by one
connection per worker for that instant, never more.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from dataclasses import dataclass
from typing import Any

#: slots of a row; a row is 64 KiB
SLOTS = 16384


@dataclass(frozen=True)
class SharedCounts:
    """What a worker needs to count in the node's table: the table (`rows` x `SLOTS`
    32-bit counters in shared memory), its own row, and the run's hash key."""

    table: Any
    rows: int
    row: int
    key: bytes


def node_table(rows: int, context: Any) -> Any:
    """A zeroed table for `rows` workers, in memory `context`'s processes share."""
    return context.RawArray(ctypes.c_int32, rows * SLOTS)


def clear_row(table: Any, row: int) -> None:
    """Forget what a dead worker counted (its connections went with it)."""
    size = SLOTS * ctypes.sizeof(ctypes.c_int32)
    ctypes.memset(ctypes.addressof(table) + row * size, 0, size)


class AddressCounts:
    """Connections per address: this process alone (`SharedCounts` not given: a
    single-process server) or the node's table."""

    def __init__(self, shared: SharedCounts | None = None) -> None:
        if shared is None:
            shared = SharedCounts((ctypes.c_int32 * SLOTS)(), 1, 0, os.urandom(16))
        self._table = shared.table
        self._rows = range(0, shared.rows * SLOTS, SLOTS)
        self._mine = shared.row * SLOTS
        self._key = shared.key

    def _slots(self, address: str) -> tuple[int, int]:
        digest = hashlib.blake2b(address.encode(), key=self._key, digest_size=8).digest()
        first = int.from_bytes(digest[:4], "little") % SLOTS
        second = int.from_bytes(digest[4:], "little") % SLOTS
        return first, second if second != first else (first + 1) % SLOTS

    def count(self, address: str) -> int:
        """The node's connections from `address` (at least; see the module's note)."""
        table = self._table
        first, second = self._slots(address)
        return min(sum(int(table[row + first]) for row in self._rows),
                   sum(int(table[row + second]) for row in self._rows))

    def add(self, address: str, delta: int) -> None:
        """Count a connection of this worker from `address` (`delta` 1) or forget one
        (-1)."""
        for slot in self._slots(address):
            self._table[self._mine + slot] += delta
