"""Scenario 3: many small images (random layer, config, manifest) pushed concurrently."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

from bench.config import Settings
from bench.content import sha256_digest
from bench.procstats import CpuMeter
from bench.registry import OCI_CONFIG, OCI_LAYER, Descriptor, image_config, image_manifest
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited

REPO = "bench/small"


@dataclass(frozen=True)
class SmallImage:
    tag: str
    layer: bytes
    layer_digest: str
    config: bytes
    config_digest: str
    manifest: bytes


def make_image(index: int, layer_size: int) -> SmallImage:
    layer = os.urandom(layer_size)
    layer_digest = sha256_digest(layer)
    config = image_config([layer_digest], f"small-{index}")
    config_digest = sha256_digest(config)
    manifest = image_manifest(
        Descriptor(OCI_CONFIG, config_digest, len(config)),
        [Descriptor(OCI_LAYER, layer_digest, len(layer))],
    )
    return SmallImage(f"i{index:05d}", layer, layer_digest, config, config_digest, manifest)


class SmallImages(Scenario):
    number = 3
    name = "small"
    title = "small image push"
    metrics = (
        MetricSpec("small.rate", "images pushed by concurrent workers", "images/s", "higher"),
        MetricSpec("small.cpu", "server CPU per image", "CPU ms/image", "lower", 2),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sizes = settings.sizes
        self.images = [make_image(i, sizes.small_layer) for i in range(sizes.small_images)]

    async def run(self, ctx: Context) -> Outcome:
        registry = ctx.registry
        sizes = ctx.settings.sizes

        async def push(image: SmallImage) -> None:
            await registry.push_bytes(REPO, image.layer, image.layer_digest)
            await registry.push_bytes(REPO, image.config, image.config_digest)
            await registry.put_manifest(REPO, image.tag, image.manifest)

        cpu = CpuMeter(ctx.target.tree)
        cpu.start()
        with Stopwatch() as clock:
            await gather_limited(sizes.small_concurrency,
                                 [partial(push, image) for image in self.images])
        cpu.stop()
        count = len(self.images)
        return Outcome(
            values={"small.rate": count / clock.seconds, "small.cpu": cpu.seconds * 1000 / count},
            notes={"images": f"{count} x ({sizes.small_layer} B layer + config + OCI manifest), "
                             f"{sizes.small_concurrency} workers, one repository, "
                             "5 requests each (POST+PUT x2, PUT manifest)"},
        )
