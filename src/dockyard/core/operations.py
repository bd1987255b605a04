"""What an operator watches: counts, storage use and its trend, the last collection.

The trend needs history, so the `usage.sample` job (`jobs.py`) records the data
filesystem's use every `SAMPLE_INTERVAL` (one process of the cluster does it); the
days until full are the free bytes over the growth per day fitted (least squares) to
the last `TREND_DAYS` days of samples. `state` is what `/metrics` and `dockyard status`
show; it is cached for `STATE_TTL` seconds so that scrapes cost a few queries a minute.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from dockyard.metadata.lifecycle import CollectionRecord
from dockyard.metadata.operations import OperationsStore
from dockyard.metadata.records import UsageSample
from dockyard.storage.blobstore import BlobStore

SAMPLE_INTERVAL = 600.0
TREND_DAYS = 7
STATE_TTL = 10.0
MIN_SPAN = 3600.0
"""Samples must span this long (seconds) before a trend is given."""


@dataclass(frozen=True)
class Trend:
    """Growth of the used bytes per day, and the days until the filesystem is full
    (None when it does not grow)."""

    bytes_per_day: float
    days_until_full: float | None
    samples: int
    since: float


@dataclass(frozen=True)
class State:
    """The registry as a whole, at `taken_at`."""

    taken_at: float
    repositories: int
    tags: int
    manifests: int
    blobs: int
    upload_sessions: int
    blob_bytes: int
    #: the data filesystem (None: the driver cannot tell, e.g. S3)
    used_bytes: int | None
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int | None
    last_collection: CollectionRecord | None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["last_collection"] = (asdict(self.last_collection)
                                   if self.last_collection else None)
        return data


def fit_trend(samples: list[UsageSample], free: int | None) -> Trend | None:
    """Least-squares growth of `used_bytes` over time; None with too little history."""
    if len(samples) < 2 or samples[-1].taken_at - samples[0].taken_at < MIN_SPAN:
        return None
    n = len(samples)
    mean_t = sum(s.taken_at for s in samples) / n
    mean_u = sum(s.used_bytes for s in samples) / n
    var = sum((s.taken_at - mean_t) ** 2 for s in samples)
    cov = sum((s.taken_at - mean_t) * (s.used_bytes - mean_u) for s in samples)
    per_day = cov / var * 86400 if var else 0.0
    left = free if free is not None else samples[-1].free_bytes
    days = left / per_day if per_day > 0 else None
    return Trend(per_day, days, n, samples[0].taken_at)


class OperationsService:
    """Counts, storage use and history for `/metrics`, `dockyard status` and jobs."""

    def __init__(self, store: OperationsStore, blobstore: BlobStore) -> None:
        self.store = store
        self.blobstore = blobstore
        self._state: State | None = None

    async def _space(self) -> tuple[int | None, int | None, int | None, int | None]:
        """(used, free, total, min_free) of the data filesystem, or Nones."""
        guard = self.blobstore.guard
        if guard is not None:
            room = await guard.headroom()
            if room is not None:
                free, threshold, total = room
                free = max(free, 0)
                return total - free, free, total, threshold
        space = self.blobstore.driver.space()
        if space is None:
            return None, None, None, None
        free, total = space
        return total - free, free, total, None

    async def state(self, *, fresh: bool = False) -> State:
        """The registry's state, at most `STATE_TTL` seconds old unless `fresh`."""
        cached = self._state
        if not fresh and cached is not None and time.time() - cached.taken_at < STATE_TTL:
            return cached
        counts = await self.store.counts()
        blob_bytes = await self.store.blob_bytes()
        used, free, total, threshold = await self._space()
        state = State(time.time(), counts["repositories"], counts["tags"],
                      counts["manifests"], counts["blobs"], counts["uploads"], blob_bytes,
                      used, free, total, threshold, await self.store.last_collection())
        self._state = state
        return state

    async def sample_usage(self) -> UsageSample | None:
        """Record the data filesystem's use now (None when it cannot be measured)."""
        used, free, total, _ = await self._space()
        if used is None or free is None or total is None:
            return None
        sample = UsageSample(time.time(), used, free, total, await self.store.blob_bytes())
        await self.store.add_usage(sample)
        return sample

    async def trend(self, free: int | None, days: int = TREND_DAYS) -> Trend | None:
        samples = await self.store.usage_since(time.time() - days * 86400)
        return fit_trend(samples, free)
