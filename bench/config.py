"""Benchmark sizes: the full set from the issue, and a scaled-down set for `--quick`."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

MiB = 1 << 20
MB = 1_000_000
GB = 1_000_000_000

REGISTRIES: tuple[str, ...] = ("distribution", "dockyard")
CLUSTER = "cluster"
"""S3 mode only: Dockyard as several nodes behind nginx, compared with one node."""

STORAGES: tuple[str, ...] = ("fs", "s3")
S3_SCENARIOS: tuple[str, ...] = ("push", "pull", "small", "manifest")
"""The scenarios S3 mode runs (the others measure the filesystem or run a local tool)."""

S3_TARGETS: dict[str, float] = {
    "push.monolithic": 1.5,
    "push.chunked": 1.5,
    "push.streamed": 1.5,
    "pull.c1": 1.0,
    "pull.c4": 1.0,
    "small.rate": 3.0,
    "manifest.get": 10.0,
    "manifest.head": 10.0,
}
"""Issue 10's targets for S3 mode: least ratio Dockyard / Distribution, same run."""


@dataclass(frozen=True)
class Sizes:
    """How big and how long every scenario is. All blob sizes are multiples of 1 MiB."""

    big_blob: int = 256 * MiB
    """Scenarios 1, 2 and 7: the size of one large blob."""
    chunk: int = 16 * MiB
    """Scenario 1: PATCH size of the chunked push."""
    small_images: int = 1000
    small_concurrency: int = 16
    small_layer: int = 4096
    """Scenario 3: images pushed, workers pushing them, bytes of the random layer."""
    manifest_seconds: float = 20.0
    manifest_connections: int = 32
    """Scenario 4: wrk duration per method and open connections."""
    tags: int = 2000
    repositories: int = 2000
    page_size: int = 100
    listing_repeats: int = 5
    """Scenario 5: listing sizes, `n` per page, full listings timed (median reported)."""
    image_layers: int = 10
    image_layer_size: int = 8 * MiB
    image_pulls: int = 8
    layer_downloads_per_pull: int = 3
    """Scenario 6: the image pulled, concurrent pulls, layers in flight per pull (Docker's 3)."""
    rss_blobs: int = 4
    """Scenario 7: large blobs pushed at once (half monolithic, half chunked) while sampling."""
    rss_sample_interval: float = 0.02
    copy_layers: int = 10
    copy_layer_size: int = 20 * MiB
    copy_platform_layers: int = 4
    copy_platform_layer_size: int = 8 * MiB
    copy_tags: int = 100
    """Scenario 9: the image (10 x 20 MiB), each platform's image of the 3-platform index,
    the tags of the repository re-copied with nothing to do."""
    setup_concurrency: int = 16
    """Concurrency of untimed setup (seeding tags, repositories, layers)."""


FULL = Sizes()

QUICK = Sizes(
    big_blob=32 * MiB,
    chunk=4 * MiB,
    small_images=100,
    manifest_seconds=3.0,
    tags=300,
    repositories=300,
    listing_repeats=2,
    image_layer_size=1 * MiB,
    rss_blobs=2,
    copy_layer_size=1 * MiB,
    copy_platform_layer_size=1 * MiB,
    copy_tags=20,
)


@dataclass(frozen=True)
class Settings:
    """Everything one `python -m bench` invocation was asked to do."""

    sizes: Sizes
    scenarios: tuple[str, ...]
    registries: tuple[str, ...]
    runs: int = 1
    quick: bool = False
    workers: int = os.cpu_count() or 1
    """Dockyard `--workers`; Distribution always uses every core (GOMAXPROCS)."""
    verify: bool = False
    """Hash every pulled byte and compare with the digest (costs client CPU)."""
    keep: bool = False
    """Keep data directories and server logs after the run."""
    wrk_threads: int = max(1, min(os.cpu_count() or 1, 4))
    storage: str = "fs"
    """`fs`: each registry on its own directory; `s3`: on one S3 server (Dockyard with
    PostgreSQL), plus a cluster of `nodes` Dockyard nodes behind nginx."""
    nodes: int = 3


def sizes_for(quick: bool, manifest_seconds: float | None) -> Sizes:
    sizes = QUICK if quick else FULL
    if manifest_seconds is not None:
        sizes = replace(sizes, manifest_seconds=manifest_seconds)
    return sizes
