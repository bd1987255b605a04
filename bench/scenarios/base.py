"""What every scenario is: content prepared once per run, then timed against each registry."""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from bench.config import Settings
from bench.registry import Registry, client_session
from bench.results import MetricSpec, Outcome
from bench.servers import Target

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """A scenario's view of one registry: the server, a client on it, the settings."""

    target: Target
    registry: Registry
    settings: Settings


class Scenario(abc.ABC):
    """One scenario of the issue. The constructor prepares content shared by both registries
    within a run (so both receive identical bytes); `run` measures one fresh registry."""

    number: ClassVar[int]
    name: ClassVar[str]
    title: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    connections: ClassVar[int] = 64
    min_timeout: ClassVar[float] = 0.0
    """Seconds this scenario may take at least, whatever `--timeout` says."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def execute(self, target: Target) -> Outcome:
        async with client_session(self.connections) as session:
            return await self.run(Context(target, Registry(session, target.url), self.settings))

    @abc.abstractmethod
    async def run(self, ctx: Context) -> Outcome:
        """Set up (untimed), measure, and return the figures named in `metrics`."""


async def gather_limited(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs with at most `limit` in flight, in order; the first failure cancels the
    rest. Returns the results in job order."""
    queue = list(jobs)
    results: dict[int, T] = {}
    pending = iter(range(len(queue)))

    async def worker() -> None:
        for index in pending:
            results[index] = await queue[index]()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(limit, len(queue))):
            group.create_task(worker())
    return [results[i] for i in range(len(queue))]


class Stopwatch:
    """Wall-clock seconds around a block."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
