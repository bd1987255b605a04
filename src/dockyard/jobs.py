"""The background jobs a server runs, assembled from settings (for the app factory).

A new background job is a `core.jobs.Job` added here: a name, an interval and an async
callable over the registry's services. The runner gives it a lease, so one process on
one host runs it per interval.
"""

from __future__ import annotations

from dockyard.config.settings import Settings
from dockyard.core.jobs import Job
from dockyard.core.operations import SAMPLE_INTERVAL
from dockyard.core.registry import Registry
from dockyard.gc.scheduler import gc_job
from dockyard.gc.scrub import scrub_job
from dockyard.remote.webhook import WebhookSender
from dockyard.replica.follower import replica_job

NOTIFY_INTERVAL = 1.0
"""Seconds between two looks at the notification delivery's lease."""


def server_jobs(registry: Registry, settings: Settings) -> list[Job]:
    uploads = settings.storage.uploads

    async def purge_uploads() -> None:
        await registry.uploads.purge(uploads.expiry.total_seconds(),
                                     publish_expiry=uploads.publish_expiry.total_seconds())

    async def prune_events() -> None:
        await registry.feed.prune(settings.feed.keep.total_seconds())

    jobs = [Job("uploads.purge", uploads.purge_interval.total_seconds(), purge_uploads),
            Job("feed.prune", settings.feed.prune_interval.total_seconds(), prune_events),
            # the storage growth history behind `dockyard status`'s days-until-full
            Job("usage.sample", SAMPLE_INTERVAL, registry.operations.sample_usage)]
    if settings.gc.enabled:
        jobs.append(gc_job(registry, settings))
    if settings.replica.primary is not None:
        jobs.append(replica_job(registry, settings.replica))
    if settings.scrub.enabled:
        jobs.append(scrub_job(registry, settings))
    if settings.notifications.active:
        # runs until the server stops, on the one process holding its lease; another
        # takes over within a second of a clean stop, or when the holder's lease runs out
        jobs.append(Job("notifications", NOTIFY_INTERVAL,
                        registry.deliverer(WebhookSender).run))
    return jobs
