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
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

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
    """This process's name as a lease holder: host, pid and a random part (pids recur)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        the body runs. With `rest`, the lease is kept `rest` seconds past the body
        instead of released: a scheduled job's way to say "not due again before then"
        to every process."""
        if not await self.backend.acquire(name, self.holder, ttl):
            raise LeaseBusy(name)
        task = asyncio.current_task()
        assert task is not None
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep(name, ttl, task, lost))
        try:
            yield
        except asyncio.CancelledError:
            if lost.is_set() and task.uncancel() == 0:
                raise LeaseLost(f"lost the lease {name!r} while working") from None
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not lost.is_set():
                try:
                    await asyncio.shield(self.backend.renew(name, self.holder, rest) if rest
                                         else self.backend.release(name, self.holder))
                except Exception:  # it runs out by itself
                    log.warning("could not release lease %s; it expires in %.0f s", name,
                                ttl)

    async def _keep(self, name: str, ttl: float, task: asyncio.Task[object],
                    lost: asyncio.Event) -> None:
        """Renew every ttl/3; after a refusal, or when failures leave a third of the ttl
        before it would run out, cancel the work."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await self.backend.renew(name, self.holder, ttl):
                    log.error("lease %s was taken over; stopping its work", name)
                    break
                renewed = loop.time()
            except Exception as exc:
                if loop.time() - renewed >= ttl * 2 / 3:
                    log.error("cannot renew lease %s (%s); stopping its work", name, exc)
                    break
                log.warning("renewing lease %s failed (%s); retrying", name, exc)
        lost.set()
        task.cancel()

    async def holder_of(self, name: str) -> tuple[str, float] | None:
        """Who holds `name` now and until when (UNIX time), or None."""
        return await self.backend.holder(name)
