"""Leases held by work, and the jobs registry and its history of runs, over a real
SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator

import pytest

from dockyard.core.jobruns import JobHistory
from dockyard.core.jobs import Job, JobResult, JobRunner
from dockyard.core.leases import LeaseBusy, LeaseLost, Leases
from dockyard.metadata.engine import open_engines
from dockyard.metadata.jobruns import JobRunStore
from dockyard.metadata.leases import LeaseStore
from dockyard.metadata.store import MetadataStore
from dockyard.oci.errors import StorageUnavailable


@pytest.fixture
async def backend(sqlite_url: str) -> AsyncIterator[LeaseStore]:
    engines = open_engines(sqlite_url)
    yield LeaseStore(engines)
    await engines.dispose()


async def test_hold_is_exclusive_and_released(backend: LeaseStore) -> None:
    a, b = Leases(backend, "a"), Leases(backend, "b")
    async with a.hold("gc"):
        with pytest.raises(LeaseBusy):
            async with b.hold("gc"):
                pass
        assert await b.holder_of("gc") is not None
    assert await b.holder_of("gc") is None
    async with b.hold("gc"):
        pass


async def test_a_lease_is_renewed_while_its_work_runs(backend: LeaseStore) -> None:
    a, b = Leases(backend, "a"), Leases(backend, "b")
    async with a.hold("long", ttl=0.3):
        await asyncio.sleep(0.8)  # well past the first expiry: renewed meanwhile
        with pytest.raises(LeaseBusy):
            async with b.hold("long", ttl=0.3):
                pass


async def test_work_that_loses_its_lease_is_cancelled(backend: LeaseStore) -> None:
    a = Leases(backend, "a")

    async def work() -> None:
        async with a.hold("gc", ttl=0.3):
            await backend.release("gc", "a")  # as if it expired and was taken over
            assert await backend.acquire("gc", "b", 30)
            await asyncio.sleep(5)

    with pytest.raises(LeaseLost):
        await asyncio.wait_for(work(), 2)
    held = await backend.holder("gc")
    assert held is not None
    assert held[0] == "b"


async def test_work_whose_renewal_hangs_stops_before_its_lease_runs_out(
        backend: LeaseStore, sqlite_url: str) -> None:
    """Another connection holds the database's write lock (as a stuck transaction
    would): the renewal waits for it (up to SQLite's 30 s busy timeout) and the lease
    runs out meanwhile, so another node may take the job over. The work is stopped
    within two thirds of the ttl, while the lease is still its own."""
    a = Leases(backend, "a")
    ttl = 1.5
    started = time.monotonic()

    async def work() -> None:
        async with a.hold("gc", ttl=ttl):
            blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"),
                                      isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # the write lock, held
            try:
                await asyncio.sleep(10)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()

    with pytest.raises(LeaseLost):
        await asyncio.wait_for(work(), 8)
    assert time.monotonic() - started < ttl


class HiccupStore(LeaseStore):
    """The real store, whose second renewal fails once at once (a connection reset)."""

    renewals = 0

    async def renew(self, name: str, holder: str, ttl: float) -> bool:
        self.renewals += 1
        if self.renewals == 2:
            raise OSError("connection reset by peer")
        return await super().renew(name, holder, ttl)


async def test_one_failed_renewal_is_tried_again_and_the_work_goes_on(
        sqlite_url: str) -> None:
    engines = open_engines(sqlite_url)
    try:
        store = HiccupStore(engines)
        async with Leases(store, "a").hold("gc", ttl=0.9):
            await asyncio.sleep(2.0)  # several renewals, the second of them failing
        assert store.renewals >= 4
    finally:
        await engines.dispose()


async def test_rest_keeps_the_lease_after_the_work(backend: LeaseStore) -> None:
    a, b = Leases(backend, "a"), Leases(backend, "b")
    async with a.hold("job:x", rest=0.4):
        pass
    with pytest.raises(LeaseBusy):
        async with b.hold("job:x"):
            pass
    await asyncio.sleep(0.5)
    async with b.hold("job:x"):
        pass


async def test_a_job_runs_once_per_interval_across_runners(backend: LeaseStore) -> None:
    """Three runners (three processes) over one store: the job runs once per interval."""
    runs: list[str] = []

    def job_for(who: str) -> Job:
        async def run() -> None:
            runs.append(who)
        return Job("tick", 0.5, run)

    runners = [JobRunner(Leases(backend, w), [job_for(w)]) for w in ("a", "b", "c")]
    for r in runners:
        r.start()
    await asyncio.sleep(2.6)
    for r in runners:
        await r.stop()
    # due every 0.5 s, looked at every 0.25-0.5 s: between 3 and 6 runs in 2.6 s,
    # where three independent loops would have run 6 to 15 times
    assert 3 <= len(runs) <= 6, runs


async def test_a_failing_job_does_not_stop_the_runner(backend: LeaseStore) -> None:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    runner = JobRunner(Leases(backend, "a"), [Job("bad", 0.2, run)])
    assert await runner.run_due("bad")
    assert not await runner.run_due("bad")  # not due again before its interval
    await asyncio.sleep(0.25)
    assert await runner.run_due("bad")
    assert calls == 2


def test_job_names_are_unique(backend: LeaseStore) -> None:
    async def run() -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        JobRunner(Leases(backend, "a"), [Job("x", 1, run), Job("x", 2, run)])


async def test_a_job_failing_on_unavailable_storage_logs_one_line(
        backend: LeaseStore, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        raise StorageUnavailable("the store is down")

    runner = JobRunner(Leases(backend, "a"), [Job("sync", 0.2, run)])
    assert await runner.run_due("sync")
    assert "job sync failed: the store is down" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.fixture
async def history(sqlite_url: str) -> AsyncIterator[JobHistory]:
    store = MetadataStore(open_engines(sqlite_url))
    yield JobHistory(JobRunStore(store))
    await store.close()


async def test_each_run_is_recorded_with_its_outcome_and_summary(
        backend: LeaseStore, history: JobHistory) -> None:
    async def fine() -> JobResult:
        return JobResult("pushed 3, kept 12, failed 0")

    async def refused() -> JobResult:
        return JobResult("exit status 1: failed: app: RUN exit 3", ok=False)

    async def broken() -> None:
        raise RuntimeError("the disk is on fire")

    async def down() -> None:
        raise StorageUnavailable("the store is down")

    async def quiet() -> None:
        return None

    leases = Leases(backend, "host:42:abcd:place")
    runner = JobRunner(leases, [Job("fine", 60, fine), Job("refused", 60, refused),
                                Job("broken", 60, broken), Job("down", 60, down),
                                Job("quiet", 60, quiet)], history)
    before = time.time()
    for name in runner.jobs:
        assert await runner.run_due(name)
        assert not await runner.run_due(name)  # not due: a look, not a run, not recorded
    recent = await history.recent(10)
    got = {name: [(r.outcome, r.summary) for r in runs] for name, runs in recent.items()}
    assert got == {"fine": [("ok", "pushed 3, kept 12, failed 0")],
                   "refused": [("failed", "exit status 1: failed: app: RUN exit 3")],
                   "broken": [("failed", "RuntimeError: the disk is on fire")],
                   "down": [("failed", "the store is down")],
                   "quiet": [("ok", "")]}
    run = recent["fine"][0]
    assert run.holder == "host:42:abcd:place"
    assert before <= run.started_at <= run.finished_at <= time.time()


async def test_jobs_not_recorded_and_a_lost_lease(backend: LeaseStore,
                                                  history: JobHistory) -> None:
    async def tick() -> None:
        return None

    async def stolen() -> None:
        await backend.release("job:stolen", "a")  # as if it expired and was taken over
        assert await backend.acquire("job:stolen", "b", 30)
        await asyncio.sleep(5)

    runner = JobRunner(Leases(backend, "a"), [Job("tick", 60, tick, record=False),
                                              Job("stolen", 60, stolen, lease_ttl=0.3)],
                       history)
    assert await runner.run_due("tick")
    assert await asyncio.wait_for(runner.run_due("stolen"), 3)
    recent = await history.recent(10)
    assert list(recent) == ["stolen"]
    assert [r.outcome for r in recent["stolen"]] == ["lost"]


async def test_a_run_the_server_stops_is_recorded_as_cancelled(
        backend: LeaseStore, history: JobHistory) -> None:
    started = asyncio.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    runner = JobRunner(Leases(backend, "a"), [Job("long", 0.1, long)], history)
    runner.start()
    await asyncio.wait_for(started.wait(), 5)
    await runner.stop()
    [run] = (await history.recent(10))["long"]
    assert (run.outcome, run.summary) == ("cancelled", "stopped with the server")


async def test_a_body_cut_short_releases_a_resting_lease(backend: LeaseStore) -> None:
    """Only a body that ended rests the lease; a cancelled one (the server stopping)
    gives it up, so another process can take the work over at once."""
    a, b = Leases(backend, "a"), Leases(backend, "b")
    entered = asyncio.Event()

    async def work() -> None:
        async with a.hold("job:x", rest=3600):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await b.holder_of("job:x") is None
    async with b.hold("job:x"):
        pass

    with pytest.raises(RuntimeError):  # a body that failed: it rests like one that ended
        async with a.hold("job:y", rest=3600):
            raise RuntimeError("boom")
    with pytest.raises(LeaseBusy):
        async with b.hold("job:y"):
            pass


async def test_a_job_the_server_stops_runs_at_once_on_another_runner(
        backend: LeaseStore, history: JobHistory) -> None:
    """A gc of interval 1h interrupted by a stop: the next node runs it at its next
    look, not an hour later."""
    started = asyncio.Event()
    runs: list[str] = []

    def job_for(who: str) -> Job:
        async def run() -> None:
            runs.append(who)
            started.set()
            await asyncio.sleep(60)
        return Job("gc", 3600, run)

    a = JobRunner(Leases(backend, "a"), [job_for("a")], history)
    first = asyncio.create_task(a.run_due("gc"))  # as its loop does, at its first look
    await asyncio.wait_for(started.wait(), 5)
    first.cancel()  # as `stop()` cancels the loop
    with pytest.raises(asyncio.CancelledError):
        await first
    b = JobRunner(Leases(backend, "b"), [job_for("b")], history)
    started.clear()
    task = asyncio.create_task(b.run_due("gc"))
    await asyncio.wait_for(started.wait(), 5)
    assert runs == ["a", "b"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_lease_the_database_cannot_give_is_no_run(backend: LeaseStore,
                                                          caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The database down while a job takes its lease: logged as a job that failed and
    then an AssertionError traceback (the body never ran); now one line, no run."""
    ran = []

    async def run() -> JobResult:
        ran.append(1)
        return JobResult(True, "")

    async def unavailable(name: str, holder: str, ttl: float) -> bool:
        raise StorageUnavailable("the registry's metadata database is unavailable")

    monkeypatch.setattr(backend, "acquire", unavailable)
    runner = JobRunner(Leases(backend, "a"), [Job("gc", 60, run)])
    with caplog.at_level("WARNING", logger="dockyard.jobs"):
        assert await runner.run_due("gc") is False
    assert ran == []
    assert "Traceback" not in caplog.text
    assert "job gc did not start: the registry's metadata database is unavailable" \
        in caplog.text
