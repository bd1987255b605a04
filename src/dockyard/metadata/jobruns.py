"""Background job runs in the metadata store (`job_runs`).

`JobRunStore` is the `core.jobruns.JobRunRecords` that the jobs runner writes and the
admin API and the web UI read (by shape; this layer does not import core). A run is one
insert that also drops the job's runs past the last `keep`, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import job_runs
from dockyard.metadata.store import MetadataStore


@dataclass(frozen=True, slots=True)
class JobRun:
    """One finished run of a background job: which process ran it (its lease holder),
    when, and how it ended (`ok`, `failed`, `lost`, `cancelled`) with a short summary."""

    job: str
    holder: str
    started_at: float
    finished_at: float
    outcome: str
    summary: str

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


class JobRunStore:
    """Job runs over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def add_run(self, run: JobRun, keep: int) -> None:
        def body(conn: Connection) -> None:
            conn.execute(insert(job_runs).values(
                job=run.job, holder=run.holder, started_at=run.started_at,
                finished_at=run.finished_at, outcome=run.outcome, summary=run.summary))
            old = [r[0] for r in conn.execute(
                select(job_runs.c.id).where(job_runs.c.job == run.job)
                .order_by(job_runs.c.started_at.desc(), job_runs.c.id.desc())
                .offset(keep))]
            if old:
                conn.execute(delete(job_runs).where(job_runs.c.id.in_(old)))

        await self.store.engines.transaction(body)

    async def runs(self, job: str | None, per_job: int) -> list[JobRun]:
        """The last `per_job` runs of `job` (of every job: None), by job, newest first."""
        rank = func.row_number().over(
            partition_by=job_runs.c.job,
            order_by=(job_runs.c.started_at.desc(), job_runs.c.id.desc())).label("rank")
        inner = select(job_runs.c.job, job_runs.c.holder, job_runs.c.started_at,
                       job_runs.c.finished_at, job_runs.c.outcome, job_runs.c.summary,
                       job_runs.c.id, rank)
        if job is not None:
            inner = inner.where(job_runs.c.job == job)
        ranked = inner.subquery()
        stmt = (select(ranked.c.job, ranked.c.holder, ranked.c.started_at,
                       ranked.c.finished_at, ranked.c.outcome, ranked.c.summary)
                .where(ranked.c.rank <= per_job)
                .order_by(ranked.c.job, ranked.c.started_at.desc(), ranked.c.id.desc()))
        return [JobRun(r[0], r[1], float(r[2]), float(r[3]), r[4], r[5])
                for r in await self.store._read(stmt)]
