"""Scenario 13: what `/metrics` costs the hottest path, manifest GET by tag.

The registry under test (Dockyard, metrics on: the default) and a second Dockyard the
scenario starts beside it with `metrics.enabled: false` (same workers, same content)
take wrk's GET load in turn, rounds alternating which goes first, each round timed and
its server CPU metered; the medians are compared. The operations issue's target: the
metrics cost under 5% of the throughput. Distribution has no such switch: its column
stays empty.
"""

from __future__ import annotations

import asyncio
import os
import statistics

from bench.loadgen import run_wrk
from bench.procstats import CpuMeter, ProcessTree
from bench.registry import (
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_LAYER,
    Descriptor,
    Registry,
    client_session,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario
from bench.servers import start_dockyard

REPO = "bench/metrics"
TAG = "latest"
ROUNDS = 4


class MetricsCost(Scenario):
    number = 13
    name = "metrics"
    title = "manifest GET with and without /metrics"
    metrics = (
        MetricSpec("metrics.on", "GET by tag, metrics on", "req/s", "higher", 0),
        MetricSpec("metrics.off", "GET by tag, metrics off", "req/s", "higher", 0),
        MetricSpec("metrics.cost", "throughput lost to metrics", "%", "lower", 1),
        MetricSpec("metrics.cpu", "CPU per GET, on / off", "ratio", "lower", 3),
    )

    async def _content(self, registry: Registry, layer: bytes) -> None:
        blob = await registry.push_bytes(REPO, layer)
        config = await registry.push_bytes(REPO, image_config([blob.digest], "metrics"))
        await registry.put_manifest(REPO, TAG, image_manifest(
            Descriptor(OCI_CONFIG, config.digest, config.size),
            [Descriptor(OCI_LAYER, blob.digest, blob.size)]))

    async def run(self, ctx: Context) -> Outcome:
        if ctx.target.name != "dockyard":
            return Outcome({}, {"metrics": "Dockyard only (Distribution has no switch)"})
        assert ctx.target.data is not None
        sizes = ctx.settings.sizes
        layer = os.urandom(sizes.small_layer)
        await self._content(ctx.registry, layer)
        work = ctx.target.data.parent / "no-metrics"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "config.yml"
        config.write_text("metrics:\n  enabled: false\n")
        other = await asyncio.to_thread(start_dockyard, work / "data", config=config,
                                        workers=ctx.settings.workers)
        try:
            async with client_session(self.connections) as session:
                await self._content(Registry(session, other.url), layer)
            servers = {"on": (ctx.target.url, ctx.target.tree),
                       "off": (other.url, ProcessTree(other.proc.pid))}
            rates: dict[str, list[float]] = {"on": [], "off": []}
            cpu: dict[str, list[float]] = {"on": [], "off": []}
            seconds = max(2.0, sizes.manifest_seconds / 2)
            for n in range(ROUNDS):
                for kind in ("on", "off") if n % 2 == 0 else ("off", "on"):
                    url, tree = servers[kind]
                    meter = CpuMeter(tree)
                    meter.start()
                    result = await run_wrk(f"{url}/v2/{REPO}/manifests/{TAG}", method="GET",
                                           headers={"Accept": MANIFEST_ACCEPT},
                                           connections=sizes.manifest_connections,
                                           threads=ctx.settings.wrk_threads, seconds=seconds)
                    meter.stop()
                    if result.good == 0:
                        raise RuntimeError(f"metrics {kind}: no successful GET")
                    rates[kind].append(result.good / result.seconds)
                    cpu[kind].append(meter.seconds / result.requests)
        finally:
            await asyncio.to_thread(other.stop)
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        return Outcome(
            values={"metrics.on": on, "metrics.off": off,
                    "metrics.cost": max(0.0, (off - on) / off * 100),
                    "metrics.cpu": statistics.median(cpu["on"]) / statistics.median(cpu["off"])},
            notes={"metrics": f"{ROUNDS} rounds of {seconds:.0f} s each, alternating; "
                              f"req/s on {[round(r) for r in rates['on']]}, off "
                              f"{[round(r) for r in rates['off']]}; target: cost < 5%"})
