"""The scrub job: every blob's bytes re-hashed once per `scrub.period`, a slice a run.

Run number `k` (counted in `scrub.interval`s since the epoch) verifies the blobs whose
digest falls in slice `k mod n`, `n` = period / interval; blobs whose bytes no longer
hash to their digest are marked corrupt (`Fsck.scrub`), so they are never served again
until a client pushes them again. Off by default (`scrub.enabled`).
"""

from __future__ import annotations

import logging
import time

from dockyard.config.settings import Settings
from dockyard.core.jobs import Job, JobResult
from dockyard.core.registry import Registry
from dockyard.gc.fsck import Fsck, FsckReport

log = logging.getLogger("dockyard.scrub")


async def scrub_once(registry: Registry, settings: Settings, now: float | None = None
                     ) -> FsckReport:
    """Verify the slice due at `now`; log what was found."""
    scrub = settings.scrub
    parts = scrub.slices
    part = int((time.time() if now is None else now) // scrub.interval.total_seconds()) % parts
    report = await Fsck(registry, grace=settings.gc.grace.total_seconds(),
                        repair=True).scrub(part, parts)
    for finding in report.findings:
        log.error("scrub: blob %s does not match its digest: %s", finding.subject,
                  finding.repair or "left as is (being deleted, or pushed again meanwhile)")
    log.info("scrub: slice %d/%d: %d blobs, %d bytes verified in %.1f s, %d corrupt",
             part + 1, parts, report.blobs, report.bytes_verified, report.duration,
             report.problems)
    return report


def scrub_job(registry: Registry, settings: Settings) -> Job:
    """One slice every `scrub.interval`."""

    async def run() -> JobResult:
        report = await scrub_once(registry, settings)
        return JobResult(f"{report.blobs} blobs, {report.bytes_verified} bytes verified, "
                         f"{report.problems} corrupt")

    return Job("scrub", settings.scrub.interval.total_seconds(), run)
