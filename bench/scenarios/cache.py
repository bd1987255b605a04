"""Scenario 10: the pull-through cache. A pull of a cached image against a plain pull.

The registry under test is the upstream; the cache is a Dockyard started by the scenario
(same `--workers`) with a `proxy:` rule `cache/` -> the upstream (tag TTL 1 h). The
scenario-6 image is pushed to the upstream and, with the same bytes, into a plain
repository of the cache (untimed). Timed: the first pull through the cache (fetched
upstream), then 8 concurrent pulls of the plain image and of the cached one, 3 rounds
alternating, medians kept. The issue's target: cached within 10 % of plain.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from functools import partial

from bench.config import MB, MiB, Settings
from bench.content import BlobSource
from bench.registry import (
    OCI_CONFIG,
    OCI_LAYER,
    Descriptor,
    Registry,
    RegistryError,
    client_session,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited
from bench.servers import start_dockyard

REPO = "bench/image"
TAG = "latest"
ROUNDS = 5


class PullThroughCache(Scenario):
    number = 11
    name = "cache"
    title = "pull-through cache: cached pull vs plain pull"
    metrics = (
        MetricSpec("cache.cold", "first pull through the cache (fetched upstream)", "s",
                   "lower", 3),
        MetricSpec("cache.plain", "8 pulls of a plain image of the cache", "s", "lower", 3),
        MetricSpec("cache.cached", "8 pulls of the cached image", "s", "lower", 3),
        MetricSpec("cache.overhead", "cached / plain (target <= 1.10)", "x", "lower", 3),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sizes = settings.sizes
        self.layers = [BlobSource.create(sizes.image_layer_size)
                       for _ in range(sizes.image_layers)]

    async def _push(self, registry: Registry, repo: str) -> None:
        await gather_limited(4, [partial(registry.push_monolithic, repo, layer)
                                 for layer in self.layers])
        config = await registry.push_bytes(
            repo, image_config([layer.digest for layer in self.layers], "cache"))
        await registry.put_manifest(repo, TAG, image_manifest(
            Descriptor(OCI_CONFIG, config.digest, config.size),
            [Descriptor(OCI_LAYER, layer.digest, layer.size) for layer in self.layers]))

    async def _pull(self, registry: Registry, repo: str) -> int:
        sizes = self.settings.sizes
        body, _ = await registry.get_manifest(repo, TAG)
        doc = json.loads(body)
        blobs = [doc["config"], *doc["layers"]]
        if len(blobs) != len(self.layers) + 1:
            raise RegistryError("pulled manifest does not list every layer")
        received = await gather_limited(sizes.layer_downloads_per_pull, [
            partial(registry.pull_blob, repo, blob["digest"], blob["size"],
                    self.settings.verify) for blob in blobs])
        return len(body) + sum(received)

    async def run(self, ctx: Context) -> Outcome:
        sizes = ctx.settings.sizes
        assert ctx.target.data is not None
        work = ctx.target.data.parent / "cache"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "config.yml"
        config.write_text(f"proxy:\n  - prefix: cache\n    upstream: {ctx.target.url}\n"
                          "    tag_ttl: 1h\n")
        await self._push(ctx.registry, REPO)
        cache_server = await asyncio.to_thread(start_dockyard, work / "data", config=config,
                                               workers=ctx.settings.workers)
        try:
            async with client_session(self.connections) as session:
                cache = Registry(session, cache_server.url)
                await self._push(cache, "plain/image")
                with Stopwatch() as cold:
                    await self._pull(cache, f"cache/{REPO}")
                times: dict[str, list[float]] = {"plain": [], "cached": []}
                total = 0
                for n in range(ROUNDS):
                    order = ("plain", "cached") if n % 2 == 0 else ("cached", "plain")
                    for kind in order:
                        repo = "plain/image" if kind == "plain" else f"cache/{REPO}"
                        with Stopwatch() as clock:
                            got = await asyncio.gather(*(self._pull(cache, repo)
                                                         for _ in range(sizes.image_pulls)))
                        times[kind].append(clock.seconds)
                        total = sum(got)
        finally:
            await asyncio.to_thread(cache_server.stop)
        plain, cached = statistics.median(times["plain"]), statistics.median(times["cached"])
        return Outcome(
            values={"cache.cold": cold.seconds, "cache.plain": plain, "cache.cached": cached,
                    "cache.overhead": cached / plain},
            notes={"cache": f"{sizes.image_layers} layers x "
                            f"{sizes.image_layer_size // MiB} MiB, {sizes.image_pulls} "
                            f"concurrent pulls, median of {ROUNDS} rounds; cached "
                            f"{total / MB / cached:.0f} MB/s, plain "
                            f"{total / MB / plain:.0f} MB/s; upstream: the registry of "
                            "the column"},
        )
