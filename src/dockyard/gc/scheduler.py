"""Run retention then the collector inside the server on a schedule, one process at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import random

from dockyard.config.settings import Settings
from dockyard.core.registry import Registry
from dockyard.drivers.base import DriverBusy
from dockyard.gc.collector import Collector, Report
from dockyard.gc.retention import apply_retention, keeps_untagged
from dockyard.metadata.lifecycle import LifecycleStore

log = logging.getLogger("dockyard.gc")


def collector_for(registry: Registry, settings: Settings, *, grace: float | None = None
                  ) -> Collector:
    rules = settings.retention.rules
    return Collector(
        registry,
        grace=settings.gc.grace.total_seconds() if grace is None else grace,
        keep_referrers=settings.gc.keep_referrers,
        upload_expiry=settings.storage.uploads.expiry.total_seconds(),
        keep_untagged=lambda name: keeps_untagged(rules, name),
    )


async def collect_once(registry: Registry, settings: Settings) -> Report | None:
    """One scheduled collection; None when another process is collecting now."""
    try:
        async with registry.blobstore.exclusive("gc"):
            await registry.pulls.flush()
            retention = await apply_retention(LifecycleStore(registry.store),
                                              settings.retention.rules)
            if retention.count:
                log.info("retention deleted %d tags: %s", retention.count,
                         json.dumps(retention.deleted))
            report = await collector_for(registry, settings).run()
    except DriverBusy:
        return None
    log.info("collection: %s", json.dumps(report.to_json()))
    return report


async def gc_loop(registry: Registry, settings: Settings) -> None:
    """Collect every `gc.interval` (with jitter, so workers do not line up), forever."""
    interval = settings.gc.interval.total_seconds()
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            await collect_once(registry, settings)
        except Exception:
            log.exception("scheduled collection failed")
