"""Failed-login limits per client address and per user name, shared by all workers.

After `failures` failed logins within `window` from one address, or against one user,
further attempts from it (or for them) are refused without checking the password until
the oldest of those failures leaves the window.

The failures are kept in a `FailureLog`. The registry hands its metadata store's log to
every worker (`FailureLimiter.share`), so all workers of a node, and all nodes over one
PostgreSQL, count against one budget; until then (and in tests) they are kept in process
memory.

Parallel attempts cannot overrun the budget, nor refuse one another: an attempt is
recorded as a failure *before* its password is checked (`FailureLimiter.reserve`), in one
step with the count it is judged by (`FailureLog.add_failures_unless`: one write
transaction, serial on SQLite and under a per-key advisory lock on PostgreSQL), so of N
wrong guesses sent at once exactly `failures` are checked and the rest refused. A success
then cancels its record (`Attempt.succeeded`) with a matching record under the key's
`ok:` twin, so the log stays append-only and shared. A check costs one read when the key
is locked, else a read and one write; a success one more write; an attempt that dies half
way stays counted as a failure. The login (`auth/service.py`) reserves the client
address's budget only; a user name's failures are recorded (`failed`) once its check
failed, so many clients logging in as one account at once are not refused, and identical
attempts in flight from one address share one check (so one reservation).

An earlier reservation wrote, then read, and withdrew when it saw the budget taken by
others in flight: safe, but attempts racing that way could all withdraw, and 120 guesses
at once were sometimes all refused, none checked (the budget then still unspent).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class FailureLog(Protocol):
    """Where failed logins are kept: times of failures, by key (`addr:…`, `user:…`)."""

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        """(key, time) of every failure of `keys` after `since`."""

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        """Record one failure for each of `keys`; failures before `forget_before` (of any
        key) may be dropped."""

    async def add_failures_unless(self, refuse: Callable[[list[tuple[str, float]]], int],
                                  *, read: Sequence[str], since: float,
                                  keys: Sequence[str], at: float, forget_before: float
                                  ) -> int:
        """In one step no other caller's interleaves with: the failures of `read` after
        `since` go to `refuse`; when it answers 0, one failure of each of `keys` is
        recorded at `at` (as `add_failures`). Returns what `refuse` answered."""


class MemoryFailureLog:
    """Failures in this process's memory (one worker's view), bounded in size."""

    def __init__(self, *, keep: int = 100, max_keys: int = 100_000) -> None:
        self.keep = keep
        self.max_keys = max_keys
        self._seen: dict[str, deque[float]] = {}

    async def failures_since(self, keys: Sequence[str], since: float
                             ) -> list[tuple[str, float]]:
        return [(k, t) for k in keys for t in self._seen.get(k, ()) if t > since]

    async def add_failures(self, keys: Sequence[str], at: float, forget_before: float
                           ) -> None:
        if len(self._seen) >= self.max_keys:
            for key in list(self._seen):
                times = self._seen[key]
                while times and times[0] < forget_before:
                    times.popleft()
                if not times:
                    del self._seen[key]
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
        for key in keys:
            self._seen.setdefault(key, deque(maxlen=self.keep)).append(at)

    async def add_failures_unless(self, refuse: Callable[[list[tuple[str, float]]], int],
                                  *, read: Sequence[str], since: float,
                                  keys: Sequence[str], at: float, forget_before: float
                                  ) -> int:
        # no await between the read and the write: one step on this event loop
        wait = refuse([(k, t) for k in read for t in self._seen.get(k, ()) if t > since])
        if not wait:
            await self.add_failures(keys, at, forget_before)
        return wait


MAX_KEY_LENGTH = 200


def limit_key(kind: str, value: str) -> str:
    """`kind:value`, with an overlong value (a user name is whatever a client sends)
    replaced by its digest so keys stay short enough to index, as is one a database may
    refuse as text (PostgreSQL takes no NUL character, nor a lone surrogate)."""
    if (len(value) > MAX_KEY_LENGTH - len(kind) - 1 or "\x00" in value
            or not _storable(value)):
        value = "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    return f"{kind}:{value}"


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: the prefix of the records that cancel a reservation of the key they prefix
CANCELLED = "ok:"


class Throttled(Exception):
    """The budget of a key is spent: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Attempt:
    """A password check that holds one failure of each key's budget until it succeeds."""

    limiter: FailureLimiter
    keys: tuple[str, ...]
    at: float

    async def succeeded(self) -> None:
        """Give the reserved failure back: a right password is no failure."""
        await self.limiter.log.add_failures([CANCELLED + k for k in self.keys], self.at,
                                            time.time() - self.limiter.window)


class FailureLimiter:
    def __init__(self, failures: int, window: float, log: FailureLog | None = None) -> None:
        self.failures = failures
        self.window = window
        # reservations and their cancellations share the deques: room for both
        self.log: FailureLog = (log if log is not None
                                else MemoryFailureLog(keep=max(100, 10 * failures)))

    def share(self, log: FailureLog) -> None:
        """Count in `log` from now on (the store every worker shares)."""
        self.log = log

    async def _failures(self, keys: Sequence[str], now: float) -> dict[str, list[float]]:
        """Times of each key's failures in the window (`_tally`)."""
        return self._tally(await self.log.failures_since(self._read(keys), now - self.window),
                           keys)

    @staticmethod
    def _read(keys: Sequence[str]) -> list[str]:
        """The keys whose records tell `keys`' failures: themselves and their `ok:` twins."""
        return [*keys, *(CANCELLED + k for k in keys)]

    @staticmethod
    def _tally(rows: list[tuple[str, float]], keys: Sequence[str]) -> dict[str, list[float]]:
        """Times of each key's failures among `rows`: recorded ones (attempts in flight
        among them) less those a success cancelled."""
        cancelled = Counter((k[len(CANCELLED):], at) for k, at in rows
                            if k.startswith(CANCELLED) and k[len(CANCELLED):] in keys)
        by_key: dict[str, list[float]] = {}
        for key, at in rows:
            if key not in keys:
                continue
            if cancelled[key, at]:
                cancelled[key, at] -= 1
                continue
            by_key.setdefault(key, []).append(at)
        return by_key

    def _wait(self, by_key: dict[str, list[float]], now: float) -> int:
        wait = 0.0
        for times in by_key.values():
            if len(times) >= self.failures:
                times.sort()
                # locked until all but `failures - 1` of them have left the window
                wait = max(wait, times[len(times) - self.failures] + self.window - now, 1.0)
        return math.ceil(wait) if wait > 0 else 0

    async def retry_after(self, *keys: str) -> int:
        """Seconds to wait before any of `keys` may try again; 0 when they may now."""
        now = time.time()
        return self._wait(await self._failures(keys, now), now)

    async def reserve(self, *keys: str) -> Attempt:
        """Take one failure of each key's budget for a password check about to run;
        raise `Throttled` when a budget is spent, counting the checks still in flight.

        A plain read first: a locked key (an attack's every further guess) costs no
        write. Then the count and the record are one step of the log's."""
        wait = await self.retry_after(*keys)
        if wait:
            raise Throttled(wait)
        at = time.time()
        wait = await self.log.add_failures_unless(
            lambda rows: self._wait(self._tally(rows, keys), at),
            read=self._read(keys), since=at - self.window, keys=keys, at=at,
            forget_before=at - self.window)
        if wait:
            raise Throttled(wait)
        return Attempt(self, keys, at)

    async def failed(self, *keys: str) -> None:
        """Record one failure of each of `keys` (a failed check that reserved nothing)."""
        now = time.time()
        await self.log.add_failures(keys, now, now - self.window)
