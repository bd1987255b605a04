"""Named, expiring rights held by one process at a time, across processes and hosts.

A lease lives in the metadata store (`metadata/leases.py` implements `LeaseBackend`),
so it works the same on one host with SQLite and on many hosts over PostgreSQL. The
holder renews it while it works (every third of its time to live); a holder that dies
stops renewing, and its lease runs out after `ttl` seconds, when another process may
take it. Work that can no longer renew its lease (the database unreachable for a whole
`ttl`, or another holder took over) is cancelled and ends with `LeaseLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from dockyard.settle import to_the_end

log = logging.getLogger("dockyard.leases")

DEFAULT_TTL = 60.0
"""Seconds a lease lasts without renewal: how long a dead holder blocks others."""


class LeaseBusy(Exception):
    """Another process holds the lease now."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is held by another process")
        self.name = name


class LeaseLost(Exception):
    """The lease could not be renewed while its work ran; the work was cancelled."""


class LeaseBackend(Protocol):
    """Where leases are kept: one atomic transaction per call."""

    async def acquire(self, name: str, holder: str, ttl: float) -> bool: ...
    async def renew(self, name: str, holder: str, ttl: float) -> bool: ...
    async def release(self, name: str, holder: str) -> None: ...
    async def holder(self, name: str) -> tuple[str, float] | None: ...


def process_holder() -> str:
    """This process's name as a lease holder: host, pid, a random part (pids recur) and
    the machine and pid namespace it runs in (see `holder_gone`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_place()}"


@functools.cache
def _place() -> str:
    """This machine's boot and pid namespace, hashed: processes that share it see each
    other's pids ("" when unknown: then no holder is ever judged gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:12]


def holder_gone(holder: str) -> bool:
    """Whether `holder` (a `process_holder()`, maybe with a suffix) is a process of this
    machine and pid namespace that no longer runs: what it held may be taken at once
    rather than after its time to live, as a file lock is freed by its holder's death.
    A holder elsewhere, or whose pid is in use again, is not judged (False)."""
    parts = holder.split(":")
    if len(parts) < 4 or not parts[3] or parts[3] != _place() or not parts[1].isdigit():
        return False
    try:
        stat = Path(f"/proc/{parts[1]}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])  # killed, not yet reaped


class Leases:
    """Take and keep leases for this process."""

    def __init__(self, backend: LeaseBackend, holder: str | None = None) -> None:
        self.backend = backend
        self.holder = holder or process_holder()

    @contextlib.asynccontextmanager
    async def hold(self, name: str, ttl: float = DEFAULT_TTL, *, rest: float = 0.0
                   ) -> AsyncIterator[None]:
        """Run the body holding `name`: `LeaseBusy` at once when any holder has it (this
        process included: leases do not nest); `LeaseLost` if it cannot be kept while
        the body runs. With `rest`, a body that ended (returned, or raised an ordinary
        exception: a failing job must not run again at once on every node) keeps the
        lease `rest` seconds past its end instead of releasing it: a scheduled job's
        way to say "not due again before then" to every process. A body cut short
        (cancelled: the server stops) releases it, so another process takes the work
        over at once rather than after `rest`."""
        if not await self.backend.acquire(name, self.holder, ttl):
            raise LeaseBusy(name)
        lost = asyncio.Event()
        ended = False
        try:
            async with renewing(lambda: self.backend.renew(name, self.holder, ttl),
                                f"lease {name}", ttl, lost):
                try:
                    yield
                except Exception:
                    ended = True
                    raise
                ended = True
        finally:
            if not lost.is_set():  # lost: no longer ours (or it runs out by itself)
                try:
                    await to_the_end(
                        self.backend.renew(name, self.holder, rest) if rest and ended
                        else self.backend.release(name, self.holder))
                except Exception:  # it runs out by itself
                    log.warning("could not release lease %s; it expires in %.0f s", name,
                                ttl)

    async def holder_of(self, name: str) -> tuple[str, float] | None:
        """Who holds `name` now and until when (UNIX time), or None."""
        return await self.backend.holder(name)


@contextlib.asynccontextmanager
async def renewing(renew: Callable[[], Awaitable[bool]], what: str, ttl: float,
                   lost: asyncio.Event | None = None) -> AsyncIterator[asyncio.Event]:
    """Run the body while `renew` extends a right that lasts `ttl` seconds, every ttl/3.

    When `renew` says False (the right was taken over), or fails until a third of the
    ttl is left, the body is cancelled and ends with `LeaseLost`; `lost` (yielded) is
    set then. A body shorter than ttl/3 costs one timer: no task, no renewal.
    """
    task = asyncio.current_task()
    assert task is not None
    lost = lost if lost is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    since = loop.time()
    keeper: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal keeper
        keeper = loop.create_task(_keep(renew, what, ttl, since, task, lost))

    timer = loop.call_later(ttl / 3, start)
    try:
        yield lost
    except asyncio.CancelledError:
        if lost.is_set() and task.uncancel() == 0:
            raise LeaseLost(f"lost the {what} while working") from None
        raise
    finally:
        timer.cancel()
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper


async def _keep(renew: Callable[[], Awaitable[bool]], what: str, ttl: float, since: float,
                task: asyncio.Task[object], lost: asyncio.Event) -> None:
    """Renew now and every ttl/3 after; after a refusal, or when failures leave a third
    of the ttl before it would run out, cancel the work. A failed renewal is tried
    again after ttl/6; each try has at most ttl/3, and none runs past that last third:
    a renewal that does not answer (a database connection hung, a lock held) stops the
    work while the right is still ours, not after another node took it over. A renewal
    counts from when it was asked, not answered."""
    loop = asyncio.get_running_loop()
    renewed = since
    while True:
        asked = loop.time()
        deadline = renewed + ttl * 2 / 3
        if asked >= deadline:
            log.error("cannot renew %s in time; stopping its work", what)
            break
        try:
            async with asyncio.timeout_at(min(deadline, asked + ttl / 3)):
                if not await renew():
                    log.error("%s was taken over; stopping its work", what)
                    break
            renewed = asked
            await asyncio.sleep(ttl / 3)
        except Exception as exc:
            why = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError)
                               else type(exc).__name__)
            if loop.time() >= deadline:
                log.error("cannot renew %s (%s); stopping its work", what, why)
                break
            log.warning("renewing %s failed (%s); retrying", what, why)
            await asyncio.sleep(min(ttl / 6, max(0.0, deadline - loop.time())))
    lost.set()
    task.cancel()
