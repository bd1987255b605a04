"""The jobs registry: background work run on a schedule by one process at a time.

Every server process runs a `JobRunner` over the same jobs. For each job it wakes every
`poll` seconds (jittered) and tries to take the job's lease `job:<name>`; the lease is
free only when nobody runs the job and its last run ended at least `interval` ago (the
runner keeps it for `interval` after a run instead of releasing it). So across all
processes and hosts sharing one metadata store a job runs once per interval, and when
the process that ran it dies, another one takes over within `interval` + the lease's
time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dockyard.core.leases import DEFAULT_TTL, LeaseBusy, LeaseLost, Leases
from dockyard.oci.errors import RegistryError

log = logging.getLogger("dockyard.jobs")

MAX_POLL = 30.0
"""Longest wait between two looks at a job's lease (seconds)."""


@dataclass(frozen=True)
class Job:
    """A named piece of background work and how often it runs (seconds)."""

    name: str
    interval: float
    run: Callable[[], Awaitable[object]]
    lease_ttl: float = DEFAULT_TTL

    @property
    def lease(self) -> str:
        return f"job:{self.name}"


class JobRunner:
    """Runs every registered job on its schedule in this process, when its lease is free."""

    def __init__(self, leases: Leases, jobs: Sequence[Job]) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.leases = leases
        self.jobs = {job.name: job for job in jobs}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(job), name=f"job {job.name}")
                       for job in self.jobs.values()]

    async def stop(self) -> None:
        """Cancel the loops; a job running now is cancelled and its lease released."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def run_due(self, name: str) -> bool:
        """Run `name` now if it is due and no process runs it; whether it ran."""
        job = self.jobs[name]
        try:
            async with self.leases.hold(job.lease, job.lease_ttl, rest=job.interval):
                log.debug("job %s starts", name)
                await job.run()
        except LeaseBusy:
            return False
        except LeaseLost:
            log.error("job %s stopped: its lease was lost", name)
        except RegistryError as exc:  # storage full or unavailable: said, no traceback
            log.warning("job %s failed: %s", name, exc)
        except Exception:
            log.exception("job %s failed", name)
        return True

    async def _loop(self, job: Job) -> None:
        poll = min(job.interval, MAX_POLL)
        while True:
            await asyncio.sleep(poll * random.uniform(0.5, 1.0))
            try:
                await self.run_due(job.name)
            except Exception:  # the metadata store unreachable: try again next time
                log.exception("job %s: could not take its lease", job.name)
