"""Scenario 1: push one large blob monolithically, one in fixed-size chunks, and one
streamed in a single PATCH (as skopeo and podman push layers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.config import GB, MB, MiB, Settings
from bench.content import BlobSource
from bench.procstats import CpuMeter
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch


class BlobPush(Scenario):
    number = 1
    name = "push"
    title = "blob push"
    metrics = (
        MetricSpec("push.monolithic", "monolithic (POST, PUT + body)", "MB/s", "higher"),
        MetricSpec("push.monolithic.cpu", "monolithic: server CPU per GB", "CPU s/GB", "lower", 2),
        MetricSpec("push.chunked", "chunked (POST, PATCH..., PUT)", "MB/s", "higher"),
        MetricSpec("push.chunked.cpu", "chunked: server CPU per GB", "CPU s/GB", "lower", 2),
        MetricSpec("push.streamed", "streamed (POST, one PATCH, PUT)", "MB/s", "higher"),
        MetricSpec("push.streamed.cpu", "streamed: server CPU per GB", "CPU s/GB", "lower", 2),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        size = settings.sizes.big_blob
        self.monolithic = BlobSource.create(size)
        self.chunked = BlobSource.create(size)
        self.streamed = BlobSource.create(size)

    async def run(self, ctx: Context) -> Outcome:
        sizes = ctx.settings.sizes
        out = Outcome()
        cpu = CpuMeter(ctx.target.tree)
        registry = ctx.registry
        ways: list[tuple[str, BlobSource, Callable[[], Awaitable[None]]]] = [
            ("push.monolithic", self.monolithic,
             lambda: registry.push_monolithic("bench/push", self.monolithic)),
            ("push.chunked", self.chunked,
             lambda: registry.push_chunked("bench/push", self.chunked, sizes.chunk)),
            ("push.streamed", self.streamed,
             lambda: registry.push_streamed("bench/push", self.streamed)),
        ]
        for key, blob, push in ways:
            cpu.start()
            with Stopwatch() as clock:
                await push()
            cpu.stop()
            out.values[key] = blob.size / MB / clock.seconds
            out.values[f"{key}.cpu"] = cpu.seconds / (blob.size / GB)

        out.notes["blob"] = f"{sizes.big_blob // MiB} MiB, chunks of {sizes.chunk // MiB} MiB"
        return out
