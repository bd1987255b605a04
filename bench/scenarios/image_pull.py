"""Scenario 6: several clients pull the same multi-layer image (manifest, config, layers)."""

from __future__ import annotations

import asyncio
import json
from functools import partial

from bench.config import GB, MB, MiB, Settings
from bench.content import BlobSource
from bench.procstats import CpuMeter
from bench.registry import (
    OCI_CONFIG,
    OCI_LAYER,
    Descriptor,
    RegistryError,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited

REPO = "bench/image"
TAG = "latest"


class ImagePull(Scenario):
    number = 6
    name = "image"
    title = "concurrent image pull"
    metrics = (
        MetricSpec("image.seconds", "time until every pull is done", "s", "lower", 3),
        MetricSpec("image.cpu", "server CPU per GB pulled", "CPU s/GB", "lower", 2),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sizes = settings.sizes
        self.layers = [BlobSource.create(sizes.image_layer_size) for _ in range(sizes.image_layers)]

    async def run(self, ctx: Context) -> Outcome:
        registry = ctx.registry
        sizes = ctx.settings.sizes
        verify = ctx.settings.verify

        await gather_limited(4, [partial(registry.push_monolithic, REPO, layer)
                                 for layer in self.layers])
        config = await registry.push_bytes(
            REPO, image_config([layer.digest for layer in self.layers], "image"))
        manifest = image_manifest(
            Descriptor(OCI_CONFIG, config.digest, config.size),
            [Descriptor(OCI_LAYER, layer.digest, layer.size) for layer in self.layers],
        )
        await registry.put_manifest(REPO, TAG, manifest)

        async def pull() -> int:
            body, _ = await registry.get_manifest(REPO, TAG)
            doc = json.loads(body)
            blobs = [doc["config"], *doc["layers"]]
            if len(blobs) != len(self.layers) + 1:
                raise RegistryError("pulled manifest does not list every layer")
            received = await gather_limited(sizes.layer_downloads_per_pull, [
                partial(registry.pull_blob, REPO, blob["digest"], blob["size"], verify)
                for blob in blobs
            ])
            return len(body) + sum(received)

        cpu = CpuMeter(ctx.target.tree)
        cpu.start()
        with Stopwatch() as clock:
            totals = await asyncio.gather(*(pull() for _ in range(sizes.image_pulls)))
        cpu.stop()
        total = sum(totals)
        return Outcome(
            values={"image.seconds": clock.seconds, "image.cpu": cpu.seconds / (total / GB)},
            notes={"image": f"{sizes.image_layers} layers x {sizes.image_layer_size // MiB} MiB, "
                            f"{sizes.image_pulls} concurrent pulls, "
                            f"{sizes.layer_downloads_per_pull} layers in flight per pull, "
                            f"{total / MB / clock.seconds:.0f} MB/s aggregate"},
        )
