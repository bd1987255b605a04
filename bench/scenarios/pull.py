"""Scenario 2: pull one large blob, alone and by several clients at once."""

from __future__ import annotations

from bench.config import GB, MB, MiB, Settings
from bench.content import BlobSource
from bench.procstats import CpuMeter
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited

CLIENTS = (1, 4)
ROUNDS = 4
"""Pulls per client in one measurement: one 256 MiB pull lasts about 0.1 s, and CPU
times come in 10 ms ticks, so a single pull's CPU per GB was only good to +-0.04."""


class BlobPull(Scenario):
    number = 2
    name = "pull"
    title = "blob pull"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.blob = BlobSource.create(settings.sizes.big_blob)

    metrics = (
        MetricSpec("pull.c1", "1 client", "MB/s", "higher"),
        MetricSpec("pull.c1.cpu", "1 client: server CPU per GB", "CPU s/GB", "lower", 2),
        MetricSpec("pull.c4", "4 concurrent clients", "MB/s", "higher"),
        MetricSpec("pull.c4.cpu", "4 clients: server CPU per GB", "CPU s/GB", "lower", 2),
    )

    async def run(self, ctx: Context) -> Outcome:
        repo = "bench/pull"
        blob = self.blob
        await ctx.registry.push_monolithic(repo, blob)
        out = Outcome()
        for clients in CLIENTS:
            cpu = CpuMeter(ctx.target.tree)
            cpu.start()
            with Stopwatch() as clock:
                received = await gather_limited(clients, [
                    lambda: ctx.registry.pull_blob(repo, blob.digest, blob.size,
                                                   ctx.settings.verify)
                    for _ in range(clients * ROUNDS)
                ])
            cpu.stop()
            total = sum(received)
            out.values[f"pull.c{clients}"] = total / MB / clock.seconds
            out.values[f"pull.c{clients}.cpu"] = cpu.seconds / (total / GB)
        out.notes["blob"] = (f"{blob.size // MiB} MiB, same blob for every client, "
                             f"{ROUNDS} pulls per client")
        return out
