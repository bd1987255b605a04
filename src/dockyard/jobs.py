"""The background jobs a server runs, assembled from settings (for the app factory).

A new background job is a `core.jobs.Job` added here: a name, an interval and an async
callable over the registry's services. The runner gives it a lease, so one process on
one host runs it per interval.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from dockyard.config.settings import BuilderSettings, Settings
from dockyard.core.jobs import Job
from dockyard.core.operations import SAMPLE_INTERVAL
from dockyard.core.registry import Registry
from dockyard.gc.scheduler import gc_job
from dockyard.gc.scrub import scrub_job
from dockyard.mirror.schedule import mirror_job
from dockyard.remote.webhook import WebhookSender
from dockyard.replica.follower import replica_job

NOTIFY_INTERVAL = 1.0
"""Seconds between two looks at the notification delivery's lease."""


def server_jobs(registry: Registry, settings: Settings) -> list[Job]:
    uploads = settings.storage.uploads

    async def purge_uploads() -> None:
        await registry.uploads.purge(uploads.expiry.total_seconds(),
                                     publish_expiry=uploads.publish_expiry.total_seconds())

    async def sample_usage() -> None:
        await registry.operations.sample_usage()

    async def prune_events() -> None:
        await registry.feed.prune(settings.feed.keep.total_seconds())

    jobs = [Job("uploads.purge", uploads.purge_interval.total_seconds(), purge_uploads),
            Job("feed.prune", settings.feed.prune_interval.total_seconds(), prune_events),
            # the storage growth history behind `dockyard status`'s days-until-full
            Job("usage.sample", SAMPLE_INTERVAL, sample_usage)]
    if settings.gc.enabled:
        jobs.append(gc_job(registry, settings))
    if settings.replica.primary is not None:
        jobs.append(replica_job(registry, settings.replica))
    if settings.scrub.enabled:
        jobs.append(scrub_job(registry, settings))
    if settings.builder.enabled:
        jobs.append(builder_job(settings))
    jobs += [mirror_job(registry, source) for source in settings.mirror]
    if settings.notifications.active:
        # runs until the server stops, on the one process holding its lease; another
        # takes over within a second of a clean stop, or when the holder's lease runs out
        jobs.append(Job("notifications", NOTIFY_INTERVAL,
                        registry.deliverer(WebhookSender).run))
    return jobs


log = logging.getLogger("dockyard.builder")


def rebuild_command(settings: Settings) -> list[str]:
    """The `dockyard build` a scheduled rebuild runs (a client process of its own: the
    builder is not part of the server)."""
    b: BuilderSettings = settings.builder
    argv = [sys.executable, "-m", "dockyard", "build", "--catalogue", str(b.catalogue),
            "--tag", b.tag, "--engine", b.engine, "--jobs", str(b.jobs), "--push",
            "--no-cache", "--keep-same-layers", "--json",
            "--work-dir", str(b.work_dir or settings.data_dir / "builder")]
    for flag, value in (("--registry", b.registry), ("--image-prefix", b.image_prefix),
                        ("--storage", b.storage), ("--authfile", b.auth_file)):
        if value is not None:
            argv += [flag, str(value)]
    if b.tls_verify is not None:
        argv.append("--tls-verify" if b.tls_verify else "--no-tls-verify")
    return argv


def builder_job(settings: Settings) -> Job:
    async def rebuild() -> int:
        proc = await asyncio.create_subprocess_exec(
            *rebuild_command(settings), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            log.info("scheduled rebuild done: %s", out.decode(errors="replace")[-2000:])
        else:
            log.error("scheduled rebuild failed (%s): %s", proc.returncode,
                      err.decode(errors="replace")[-2000:])
        return proc.returncode or 0

    return Job("builder.rebuild", settings.builder.interval.total_seconds(), rebuild)
