"""The scenarios of the benchmark, in the issues' order (8 is the lifecycle issue's, 9 the
mirroring issue's, 10 the import's, 11 the pull-through cache, 12 the builder's, 13 the
cost of metrics)."""

from __future__ import annotations

from bench.scenarios.adopt import Adoption
from bench.scenarios.base import Scenario
from bench.scenarios.build import CatalogueBuild
from bench.scenarios.cache import PullThroughCache
from bench.scenarios.copy import CopyTools
from bench.scenarios.gc import GarbageCollection
from bench.scenarios.image_pull import ImagePull
from bench.scenarios.listing import Listing
from bench.scenarios.manifests import ManifestRate
from bench.scenarios.metrics_cost import MetricsCost
from bench.scenarios.pull import BlobPull
from bench.scenarios.push import BlobPush
from bench.scenarios.rss import PushMemory
from bench.scenarios.small_images import SmallImages

ALL: tuple[type[Scenario], ...] = (
    BlobPush,
    BlobPull,
    SmallImages,
    ManifestRate,
    Listing,
    ImagePull,
    PushMemory,
    GarbageCollection,
    CopyTools,
    Adoption,
    PullThroughCache,
    CatalogueBuild,
    MetricsCost,
)

BY_NAME: dict[str, type[Scenario]] = {s.name: s for s in ALL} | {str(s.number): s for s in ALL}

__all__ = ["ALL", "BY_NAME", "Scenario"]
