"""Each mirror source as a job of the jobs registry: synced every `schedule`, on one
process of one host at a time (the job's lease), its report in the server's log."""

from __future__ import annotations

import json
import logging

from dockyard.config.mirror import MirrorSource
from dockyard.core.jobs import Job
from dockyard.core.registry import Registry
from dockyard.mirror.sync import sync_source

log = logging.getLogger("dockyard.sync")


def mirror_job(registry: Registry, source: MirrorSource) -> Job:
    """The job `mirror.<name>`: one sync of `source` per `schedule`."""

    async def run() -> None:
        report = await sync_source(registry, source)
        level = logging.INFO if report.status in ("ok", "busy", "replica") else logging.WARNING
        log.log(level, "sync %s: %s %s", source.key, report.status,
                json.dumps(report.as_dict()))

    return Job(f"mirror.{source.key}", source.schedule.total_seconds(), run)
