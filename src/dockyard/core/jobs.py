"""The jobs registry: background work run on a schedule by one process at a time.

Every server process runs a `JobRunner` over the same jobs. For each job it wakes every
`poll` seconds (jittered) and tries to take the job's lease `job:<name>`; the lease is
free only when nobody runs the job and its last run ended at least `interval` ago (the
runner keeps it for `interval` after a run, also a failed one, instead of releasing it).
So across all processes and hosts sharing one metadata store a job runs once per
interval, and when the process that ran it dies, another one takes over within
`interval` + the lease's time to live. A run the server stops (SIGTERM, a rolling
restart) releases the lease: another process runs the job at its next look, not an
interval later.

Each run a runner makes (not a look that found the lease taken) is recorded in the
`JobHistory` handed to it, when the job's `record` says so: its holder, start and end,
outcome and a short summary (a `JobResult` the job returns, or the exception's message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dockyard.core.jobruns import JobHistory
from dockyard.core.leases import DEFAULT_TTL, LeaseBusy, LeaseLost, Leases
from dockyard.oci.errors import RegistryError

log = logging.getLogger("dockyard.jobs")

MAX_POLL = 30.0
"""Longest wait between two looks at a job's lease (seconds)."""


@dataclass(frozen=True)
class JobResult:
    """What a run says of itself: a one-line summary ("pushed 3, kept 12, failed 0"),
    and whether it failed without raising (a rebuild whose process exited non-zero)."""

    summary: str
    ok: bool = True


@dataclass(frozen=True)
class Job:
    """A named piece of background work and how often it runs (seconds).

    `record`: whether its runs go into the job history. Off for work whose run is not
    a pass with an end: the `notifications` delivery and the `replica` follower run as
    long as their process holds the lease (their state is the outbox and
    `/admin/v1/replica`, not runs), and for `usage.sample`, one row written every ten
    minutes that is its own record (the storage trend). A recorded job adds one small
    write per run, and its history is bounded per job (`core.jobruns`), so a job that
    runs every few minutes (`uploads.purge`) cannot flood it.
    """

    name: str
    interval: float
    run: Callable[[], Awaitable[JobResult | None]]
    lease_ttl: float = DEFAULT_TTL
    record: bool = True

    @property
    def lease(self) -> str:
        return f"job:{self.name}"


class JobRunner:
    """Runs every registered job on its schedule in this process, when its lease is free."""

    def __init__(self, leases: Leases, jobs: Sequence[Job],
                 history: JobHistory | None = None) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.leases = leases
        self.history = history
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
        """Run `name` now if it is due and no process runs it; whether it ran. A run is
        recorded (see `Job.record`) however it ends, also when the server stops it."""
        job = self.jobs[name]
        started: float | None = None
        outcome, summary = "ok", ""
        try:
            async with self.leases.hold(job.lease, job.lease_ttl, rest=job.interval):
                started = time.time()
                log.debug("job %s starts", name)
                result = await job.run()
                if result is not None:
                    outcome, summary = ("ok" if result.ok else "failed"), result.summary
        except LeaseBusy as exc:
            if started is None:
                return False
            outcome, summary = "failed", str(exc)  # a lease of its own work, taken
            log.warning("job %s failed: %s", name, exc)
        except LeaseLost:
            outcome, summary = "lost", "stopped: its lease was lost"
            log.error("job %s stopped: its lease was lost", name)
        except RegistryError as exc:  # storage full or unavailable: said, no traceback
            if started is None:  # the lease could not be taken (the database down)
                log.warning("job %s did not start: %s", name, exc)
                return False
            outcome, summary = "failed", str(exc)
            log.warning("job %s failed: %s", name, exc)
        except asyncio.CancelledError:
            if started is not None:
                await self._record(job, started, "cancelled", "stopped with the server")
            raise
        except Exception as exc:
            if started is None:  # the lease could not be taken: no run
                raise
            outcome, summary = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", name)
        assert started is not None  # the body ran: every way out of it is above
        await self._record(job, started, outcome, summary)
        return True

    async def _record(self, job: Job, started: float, outcome: str, summary: str) -> None:
        if self.history is None or not job.record:
            return
        try:
            await self.history.record(job.name, self.leases.holder, started, time.time(),
                                      outcome, summary)
        except Exception as exc:  # the metadata store unreachable: the run still counts
            log.warning("job %s: could not record its run: %s", job.name, exc)

    async def _loop(self, job: Job) -> None:
        poll = min(job.interval, MAX_POLL)
        while True:
            await asyncio.sleep(poll * random.uniform(0.5, 1.0))
            try:
                await self.run_due(job.name)
            except Exception:  # the metadata store unreachable: try again next time
                log.exception("job %s: could not take its lease", job.name)
