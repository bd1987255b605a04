"""Scenario 7: the server's peak memory while several large blobs are pushed at once."""

from __future__ import annotations

import asyncio

from bench.config import MB, MiB, Settings
from bench.content import BlobSource
from bench.procstats import RssSampler
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch


class PushMemory(Scenario):
    number = 7
    name = "rss"
    title = "server memory during large pushes"
    metrics = (
        MetricSpec("rss.total", "peak RSS, all server processes", "MB", "lower", 0),
        MetricSpec("rss.process", "peak RSS, largest single process", "MB", "lower", 0),
        MetricSpec("rss.pss", "peak PSS, all server processes", "MB", "lower", 0),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sizes = settings.sizes
        self.blobs = [BlobSource.create(sizes.big_blob) for _ in range(sizes.rss_blobs)]

    async def run(self, ctx: Context) -> Outcome:
        registry = ctx.registry
        sizes = ctx.settings.sizes
        tree = ctx.target.tree
        idle = tree.rss_by_pid()

        jobs = [
            registry.push_monolithic("bench/rss", blob) if i % 2 == 0
            else registry.push_chunked("bench/rss", blob, sizes.chunk)
            for i, blob in enumerate(self.blobs)
        ]
        with RssSampler(tree, sizes.rss_sample_interval) as sampler, Stopwatch() as clock:
            await asyncio.gather(*jobs)
        peaks = sampler.peaks
        per_process = ", ".join(f"{v / MB:.0f}" for v in sorted(peaks.per_process.values(),
                                                              reverse=True))
        return Outcome(
            values={"rss.total": peaks.total / MB, "rss.process": peaks.max_process / MB,
                    "rss.pss": peaks.total_pss / MB},
            notes={
                "load": f"{len(self.blobs)} x {sizes.big_blob // MiB} MiB pushed at once "
                        f"(half monolithic, half in {sizes.chunk // MiB} MiB chunks), "
                        f"{sum(b.size for b in self.blobs) / MB / clock.seconds:.0f} MB/s",
                "processes": f"{len(peaks.per_process)} (peak MB each: {per_process}); "
                             f"idle total {sum(idle.values()) / MB:.0f} MB; "
                             f"{peaks.samples} samples",
            },
        )
