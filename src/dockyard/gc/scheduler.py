"""Retention then the collector, as one job of the jobs registry (`core/jobs.py`).

The collection itself holds the lease `gc` while it runs, so a scheduled collection and
`dockyard gc` never run at once, on any host.
"""

from __future__ import annotations

import json
import logging

from dockyard.config.settings import Settings
from dockyard.core.jobs import Job
from dockyard.core.leases import LeaseBusy
from dockyard.core.registry import Registry
from dockyard.gc.collector import Collector, Report
from dockyard.gc.retention import apply_retention, configured_rules, keeps_untagged

log = logging.getLogger("dockyard.gc")

GC_LEASE = "gc"
"""Held by whoever collects now: the scheduled job or `dockyard gc`."""


def collector_for(registry: Registry, settings: Settings, *, grace: float | None = None
                  ) -> Collector:
    rules = configured_rules(settings)
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
        async with registry.leases.hold(GC_LEASE):
            await registry.pulls.flush()
            retention = await apply_retention(registry.lifecycle,
                                              configured_rules(settings))
            if retention.count:
                log.info("retention deleted %d tags: %s", retention.count,
                         json.dumps(retention.deleted))
            report = await collector_for(registry, settings).run()
    except LeaseBusy:
        return None
    log.info("collection: %s", json.dumps(report.to_json()))
    return report


def gc_job(registry: Registry, settings: Settings) -> Job:
    """Retention and collection every `gc.interval`."""

    async def run() -> None:
        await collect_once(registry, settings)

    return Job("gc", settings.gc.interval.total_seconds(), run)
