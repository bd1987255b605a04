"""The background jobs a server runs, assembled from settings (for the app factory).

A new background job is a `core.jobs.Job` added here: a name, an interval and an async
callable over the registry's services. The runner gives it a lease, so one process on
one host runs it per interval, and records each run (`Job.record`) in the job history;
the callable may return a `JobResult` to give the run a summary. A job that only some
configurations run is imported by the branch adding it (the scrub, a replica's follower,
a mirror's sync and the registry client under them, the webhook sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections import Counter

from dockyard.config.settings import BuilderSettings, Settings
from dockyard.core.jobs import Job, JobResult
from dockyard.core.operations import SAMPLE_INTERVAL
from dockyard.core.registry import Registry
from dockyard.gc.scheduler import gc_job

NOTIFY_INTERVAL = 1.0
"""Seconds between two looks at the notification delivery's lease."""

PROXY_MISSES_INTERVAL = 600.0
"""Seconds between two purges of pull-through caches' expired "not found" answers (the
rows a pull of a missing name leaves for `proxy[].not_found_ttl`)."""


def server_jobs(registry: Registry, settings: Settings) -> list[Job]:
    uploads = settings.storage.uploads

    async def purge_uploads() -> JobResult:
        removed = await registry.uploads.purge(
            uploads.expiry.total_seconds(), publish_expiry=uploads.publish_expiry.total_seconds())
        return JobResult(f"{removed} expired upload sessions removed")

    async def sample_usage() -> None:
        await registry.operations.sample_usage()

    async def prune_events() -> JobResult:
        pruned = await registry.feed.prune(settings.feed.keep.total_seconds())
        return JobResult(f"{pruned} events pruned from the change feed")

    jobs = [Job("uploads.purge", uploads.purge_interval.total_seconds(), purge_uploads),
            Job("feed.prune", settings.feed.prune_interval.total_seconds(), prune_events),
            # the storage growth history behind `dockyard status`'s days-until-full;
            # a sample row is its own record: no job history
            Job("usage.sample", SAMPLE_INTERVAL, sample_usage, record=False)]
    if settings.proxy:
        async def forget_misses() -> JobResult:
            forgotten = await registry.cache.forget_misses()
            return JobResult(f"{forgotten} expired upstream \"not found\" answers dropped")

        jobs.append(Job("proxy.misses", PROXY_MISSES_INTERVAL, forget_misses))
    if settings.gc.enabled:
        jobs.append(gc_job(registry, settings))
    if settings.replica.primary is not None:
        from dockyard.replica.follower import replica_job

        jobs.append(replica_job(registry, settings.replica))
    if settings.scrub.enabled:
        from dockyard.gc.scrub import scrub_job

        jobs.append(scrub_job(registry, settings))
    if settings.builder.enabled:
        jobs.append(builder_job(settings))
    if settings.mirror:
        from dockyard.mirror.schedule import mirror_job

        jobs += [mirror_job(registry, source, settings.mirror) for source in settings.mirror]
    if settings.notifications.active:
        from dockyard.remote.webhook import WebhookSender

        # runs until the server stops, on the one process holding its lease; another
        # takes over within a second of a clean stop, or when the holder's lease runs out
        jobs.append(Job("notifications", NOTIFY_INTERVAL,
                        registry.deliverer(WebhookSender).run, record=False))
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


RESULTS = ("pushed", "kept", "built", "skipped", "failed")
"""The results of `dockyard build --json`'s images, in the order a summary counts them."""

TAIL = 1500
"""Characters of a failed rebuild's stderr kept in its summary when its output has no
JSON (it stopped before building: the end of stderr says why)."""


def _images(stdout: bytes) -> list[dict[str, object]] | None:
    """The `images` of `dockyard build --json`'s output, or None when it is not that."""
    try:
        images = json.loads(stdout)["images"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
        return None
    return images


def rebuild_summary(stdout: bytes) -> str:
    """Counts of `dockyard build --json`'s results ("9 images: pushed 2, kept 7, failed
    0"), or "" when the output is not its JSON (it stopped before building)."""
    images = _images(stdout)
    if images is None or not all("result" in i for i in images):
        return ""
    counts = Counter(str(image["result"]) for image in images)
    shown = [r for r in RESULTS if counts[r] or r == "failed"]
    shown += sorted(r for r in counts if r not in RESULTS)
    return f"{len(images)} images: " + ", ".join(f"{r} {counts[r]}" for r in shown)


def rebuild_failures(stdout: bytes) -> list[str]:
    """`failed: NAME: ERROR` for each image `dockyard build --json` says failed."""
    return [f"failed: {i.get('name')}: {i.get('error')}" for i in _images(stdout) or []
            if i.get("result") == "failed"]


REBUILD_GRACE = 30.0
"""Seconds a stopped rebuild gets between SIGTERM and SIGKILL: `dockyard build` ends its
engine commands (each given the engine's `STOP_GRACE`, 10 s) and removes a running test
container, which outlives a killed build under conmon or the Docker daemon."""


async def end_group(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """Stop a child started in its own session and everything it started (the build's
    engine processes): SIGTERM to the group, SIGKILL after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
            return
        except TimeoutError:
            continue


def builder_job(settings: Settings) -> Job:
    limit = settings.builder.timeout.total_seconds()

    async def rebuild() -> JobResult:
        proc = await asyncio.create_subprocess_exec(
            *rebuild_command(settings), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except TimeoutError:
            await end_group(proc, REBUILD_GRACE)
            log.error("scheduled rebuild stopped: still running after %gs "
                      "(builder.timeout)", limit)
            return JobResult(f"stopped after {limit:g}s (builder.timeout)", ok=False)
        except BaseException:  # cancelled (the lease lost, the server stopping)
            await end_group(proc, REBUILD_GRACE)
            raise
        counts = rebuild_summary(out)
        if proc.returncode == 0:
            log.info("scheduled rebuild done: %s", out.decode(errors="replace")[-2000:])
            return JobResult(counts or "done")
        tail = err.decode(errors="replace").strip()[-TAIL:]
        log.error("scheduled rebuild failed (%s): %s", proc.returncode, tail)
        failures = rebuild_failures(out)
        why = "\n".join(failures) if counts and failures else tail
        head = f"{counts}; " if counts else ""
        return JobResult(f"{head}exit status {proc.returncode}: {why}", ok=False)

    return Job("builder.rebuild", settings.builder.interval.total_seconds(), rebuild)
