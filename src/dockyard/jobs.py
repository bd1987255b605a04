"""The background jobs a server runs, assembled from settings (for the app factory).

A new background job is a `core.jobs.Job` added here: a name, an interval and an async
callable over the registry's services. The runner gives it a lease, so one process on
one host runs it per interval.
"""

from __future__ import annotations

from dockyard.config.settings import Settings
from dockyard.core.jobs import Job
from dockyard.core.registry import Registry
from dockyard.gc.scheduler import gc_job
from dockyard.mirror.schedule import mirror_job


def server_jobs(registry: Registry, settings: Settings) -> list[Job]:
    uploads = settings.storage.uploads

    async def purge_uploads() -> None:
        await registry.uploads.purge(uploads.expiry.total_seconds(),
                                     publish_expiry=uploads.publish_expiry.total_seconds())

    jobs = [Job("uploads.purge", uploads.purge_interval.total_seconds(), purge_uploads)]
    if settings.gc.enabled:
        jobs.append(gc_job(registry, settings))
    jobs += [mirror_job(registry, source) for source in settings.mirror]
    return jobs
