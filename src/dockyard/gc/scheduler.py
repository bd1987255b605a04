"""Retention then the collector, as one job of the jobs registry (`core/jobs.py`).

The collection itself holds the lease `gc` while it runs, so a scheduled collection and
`dockyard gc` never run at once, on any host.
"""

from __future__ import annotations

import json
import logging

from dockyard.config.settings import Settings
from dockyard.core.jobs import Job, JobResult
from dockyard.core.leases import LeaseBusy
from dockyard.core.lifecycle import GC_LEASE
from dockyard.core.metrics import metrics
from dockyard.core.registry import Registry
from dockyard.gc.collector import Collector, Report
from dockyard.gc.retention import apply_retention, configured_rules, keeps_untagged
from dockyard.units import human_bytes

log = logging.getLogger("dockyard.gc")



def collector_for(registry: Registry, settings: Settings, *, grace: float | None = None,
                  replica: bool = False) -> Collector:
    """The collector of `settings`. On a read-only `replica` it deletes no manifest:
    those deletions come from the primary's feed (its own collector's included); it
    still frees the bytes of blobs nothing links any more."""
    rules = configured_rules(settings)
    return Collector(
        registry,
        grace=settings.gc.grace.total_seconds() if grace is None else grace,
        keep_referrers=settings.gc.keep_referrers,
        upload_expiry=settings.storage.uploads.expiry.total_seconds(),
        keep_untagged=(lambda _name: True) if replica
        else (lambda name: keeps_untagged(rules, name)),
    )


async def count_collection(report: Report) -> None:
    """Count a finished collection in the metrics (its row, for status and the UI, is
    written by the collector itself)."""
    m = metrics()
    m.gc_runs.labels("failed_steps" if report.failed else "ok").inc()
    m.gc_duration.observe(report.duration)
    m.gc_freed.inc(report.bytes_freed)
    if not report.failed:
        m.gc_last_success.set(report.started_at + report.duration)


async def collect_once(registry: Registry, settings: Settings) -> Report | None:
    """One scheduled collection; None when another process is collecting now."""
    try:
        async with registry.leases.hold(GC_LEASE):
            # a step before the collection that fails is counted in its report; the
            # collection goes on (it must not wait a whole interval for one failure)
            failed: list[str] = []
            try:
                await registry.pulls.flush()
            except Exception as exc:
                log.warning("gc: writing pull times failed: %s", exc)
                failed.append(f"writing pull times: {exc}")
            # a replica's tags are its primary's: no retention of its own; nor any when
            # this worker's pull times could not be written (a `keep_pulled_within` rule
            # would judge tags by stale times)
            replica = await registry.replica.read_only() is not None
            if failed and not replica:
                failed.append("retention skipped: the pull times are not written")
            elif not replica:
                retention = await apply_retention(registry.lifecycle,
                                                  configured_rules(settings))
                failed += retention.errors
                for line in retention.regrouped:
                    log.warning("retention: %s", line)
                if retention.count:
                    log.info("retention deleted %d tags: %s", retention.count,
                             json.dumps(retention.deleted))
            report = await collector_for(registry, settings, replica=replica).run(
                failed_before=failed)
    except LeaseBusy:
        return None
    except Exception:
        metrics().gc_runs.labels("error").inc()
        raise
    log.info("collection: %s", json.dumps(report.to_json()))
    await count_collection(report)
    return report


def gc_job(registry: Registry, settings: Settings) -> Job:
    """Retention and collection every `gc.interval`."""

    async def run() -> JobResult:
        report = await collect_once(registry, settings)
        if report is None:
            return JobResult("skipped: another process is collecting")
        removed = sum(r.manifests for r in report.repositories.values())
        summary = (f"{removed} manifests and {report.blobs_deleted} blobs removed, "
                   f"{human_bytes(report.bytes_freed)} freed in {report.duration:.1f} s")
        if report.failed:
            summary += f"; {report.failed} steps failed: " + "; ".join(report.errors)
        return JobResult(summary, ok=not report.failed)

    return Job("gc", settings.gc.interval.total_seconds(), run)
