"""Each mirror source as a job of the jobs registry: synced every `schedule`, on one
process of one host at a time (the job's lease), its report in the server's log."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from dockyard.config.mirror import MirrorSource
from dockyard.core.jobs import Job, JobResult
from dockyard.core.mirrors import job_name
from dockyard.core.registry import Registry
from dockyard.mirror.sync import LOGGED_NAMES, sync_source

log = logging.getLogger("dockyard.sync")


def mirror_job(registry: Registry, source: MirrorSource,
               configured: Sequence[MirrorSource] = ()) -> Job:
    """The job `mirror.<name>`: one sync of `source` per `schedule`; `configured` (all
    the sources) keeps its prune off what another source into the same repository
    selects."""

    async def run() -> JobResult:
        report = await sync_source(registry, source, configured=configured)
        fine = report.status in ("ok", "busy", "replica")
        log.log(logging.INFO if fine else logging.WARNING, "sync %s: %s %s", source.key,
                report.status, json.dumps(report.as_dict(LOGGED_NAMES)))
        summary = (f"{report.status}: {len(report.added)} added, {len(report.updated)} "
                   f"updated, {len(report.pruned)} pruned, {len(report.failed)} failed")
        if report.error:
            summary += f"; {report.error}"
        return JobResult(summary, ok=fine)

    return Job(job_name(source.key), source.schedule.total_seconds(), run)
