"""The job history over a real SQLite store: runs recorded, newest first, bounded per job,
summaries bounded.

The checks are plain functions of a store, so `tests/e2e/test_postgres.py` runs them on
PostgreSQL too, on a database its server's own jobs write to (hence job names no server
job has).
"""

from __future__ import annotations

from dockyard.core.jobruns import SUMMARY_MAX, JobHistory
from dockyard.metadata.jobruns import JobRunStore
from dockyard.metadata.store import MetadataStore


async def check_runs_are_recorded_newest_first_per_job(store: MetadataStore) -> None:
    history = JobHistory(JobRunStore(store), keep=5)
    await history.record("t.gc", "host:1:a:b", 100.0, 102.5, "ok", "3 blobs removed")
    await history.record("t.rebuild", "host:2:c:d", 110.0, 170.0, "failed",
                         "exit status 1: failed: app: RUN exit 3")
    await history.record("t.gc", "host:1:a:b", 200.0, 201.0, "lost", "its lease was lost")
    recent = await history.recent(10)
    assert {"t.rebuild", "t.gc"} <= recent.keys()
    assert [(r.started_at, r.outcome, r.summary) for r in recent["t.gc"]] == [
        (200.0, "lost", "its lease was lost"), (100.0, "ok", "3 blobs removed")]
    build = recent["t.rebuild"][0]
    assert (build.holder, build.finished_at, build.duration) == ("host:2:c:d", 170.0, 60.0)
    assert list(await history.recent(1, "t.gc")) == ["t.gc"]
    assert [r.started_at for r in (await history.recent(1, "t.gc"))["t.gc"]] == [200.0]
    assert await history.recent(3, "no-such-job") == {}


async def check_only_the_last_runs_of_each_job_are_kept(store: MetadataStore) -> None:
    history = JobHistory(JobRunStore(store), keep=5)
    for i in range(12):
        await history.record("t.prune", "h", 1000.0 + i, 1000.5 + i, "ok", f"run {i}")
    await history.record("t.scrub", "h", 999.0, 999.5, "ok", "other job")
    recent = await history.recent(50)
    assert [r.summary for r in recent["t.prune"]] == [f"run {i}" for i in range(11, 6, -1)]
    assert [r.summary for r in recent["t.scrub"]] == ["other job"]  # not pruned by others
    assert [r.summary for r in (await history.recent(2))["t.prune"]] == ["run 11",
                                                                              "run 10"]


async def check_summaries_are_bounded(store: MetadataStore) -> None:
    history = JobHistory(JobRunStore(store))
    await history.record("t.purge", "h", 1.0, 2.0, "failed", "x" * 10_000)
    [run] = (await history.recent(1, "t.purge"))["t.purge"]
    assert len(run.summary) == SUMMARY_MAX
    assert run.summary.endswith("…")


async def test_runs_are_recorded_newest_first_per_job(store: MetadataStore) -> None:
    await check_runs_are_recorded_newest_first_per_job(store)


async def test_only_the_last_runs_of_each_job_are_kept(store: MetadataStore) -> None:
    await check_only_the_last_runs_of_each_job_are_kept(store)


async def test_summaries_are_bounded(store: MetadataStore) -> None:
    await check_summaries_are_bounded(store)
