"""The history of background job runs: what the jobs runner records, what the admin API
(`GET /admin/v1/jobs`) and the web UI's operations page read.

`JobRunRecords` is the part of the metadata store the history uses, as a Protocol (the
metadata layer's `JobRunStore` implements it; `Registry.job_runs` hands a `JobHistory`
over it), so the layers above never import `metadata`.

Kept bounded where it is written: each insert drops the job's runs past the last
`RUNS_KEPT`, in the insert's own transaction. A pruning job would have let the table
grow between its runs (and its own runs would be history to prune); on insert, the
table never holds more than `RUNS_KEPT` rows per job, at the cost of one indexed
select per run, and runs are minutes to days apart (see `core.jobs.Job.record`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from dockyard.metadata.jobruns import JobRun

__all__ = ["OUTCOMES", "RUNS_KEPT", "SUMMARY_MAX", "JobHistory", "JobRun", "JobRunRecords"]

RUNS_KEPT = 50
"""Runs of each job kept (older ones are dropped as new ones are recorded)."""

SUMMARY_MAX = 2000
"""Characters of a run's summary kept (a longer one is cut, marked with `…`)."""

OUTCOMES = ("ok", "failed", "lost", "cancelled")
"""How a run can end: done; failed (an exception, or a result saying so); its lease
lost (cancelled because it could not be renewed); cancelled (the server stopped)."""


class JobRunRecords(Protocol):
    """Where job runs are kept (one transaction each)."""

    async def add_run(self, run: JobRun, keep: int) -> None:
        """Record a finished run, dropping the job's runs past the last `keep`."""
        ...

    async def runs(self, job: str | None, per_job: int) -> list[JobRun]:
        """The last `per_job` runs of `job` (of every job: None), by job, newest first."""
        ...


def bounded(text: str, limit: int = SUMMARY_MAX) -> str:
    """`text` cut to `limit` characters, the cut marked."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


class JobHistory:
    """Records finished runs (bounded per job, summaries bounded) and reads them back.

    `repositories` names the one repository a job acts on (a mirror source's sync: its
    destination), for callers who may not see every repository (`recent`'s `visible`).
    """

    def __init__(self, records: JobRunRecords, keep: int = RUNS_KEPT,
                 repositories: Mapping[str, str] | None = None) -> None:
        self.records = records
        self.keep = keep
        self.repositories = dict(repositories or {})

    async def record(self, job: str, holder: str, started_at: float, finished_at: float,
                     outcome: str, summary: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        await self.records.add_run(
            JobRun(job, holder[:255], started_at, finished_at, outcome, bounded(summary)),
            self.keep)

    async def recent(self, per_job: int, job: str | None = None,
                     visible: Callable[[str], bool] | None = None
                     ) -> dict[str, list[JobRun]]:
        """The last `per_job` runs of each job (or of `job`), newest first, by job name.

        For a caller who may not pull everything (`visible`, the catalog's filter), a job
        acting on one repository is left out unless `visible` accepts it, and the other
        jobs' summaries are withheld (""): they are free text, an error or a failed
        build's image names, that may name any repository.
        """
        out: dict[str, list[JobRun]] = {}
        if job is not None and "\x00" in job:
            return out  # no job is named so (nor may PostgreSQL compare a NUL)
        for run in await self.records.runs(job, per_job):
            if visible is not None:
                repository = self.repositories.get(run.job)
                if repository is None:
                    run = replace(run, summary="")
                elif not visible(repository):
                    continue
            out.setdefault(run.job, []).append(run)
        return out
