"""The mirror seam: sync history and tag provenance, as `dockyard sync` and the admin
API use them.

`MirrorRecords` is the part of the metadata store they may use, as a Protocol (the
metadata layer's `MirrorStore` implements it; `Registry.mirrors` hands it over), so the
layers above never import `metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from dockyard.metadata.mirrors import MirrorRun, TagOrigin

__all__ = ["COUNTED", "RUNS_KEPT", "MirrorRecords", "MirrorRun", "TagOrigin", "job_name",
           "report_counts", "visible_runs"]

RUNS_KEPT = 20
"""Runs of each source kept in the history (older ones are dropped as new ones end)."""


class MirrorRecords(Protocol):
    """Runs of mirror sources and where mirrored tags came from (one transaction each)."""

    async def add_run(self, run: MirrorRun, keep: int) -> None:
        """Record a finished run, dropping the source's runs past the last `keep`."""
        ...

    async def runs(self, source: str | None, limit: int) -> list[MirrorRun]:
        """The last `limit` runs of `source` (every source: None), newest first."""
        ...

    async def set_origin(self, origin: TagOrigin) -> None: ...

    async def drop_origin(self, repository: str, tag: str) -> None: ...

    async def origins(self, *, repository: str | None = None, source: str | None = None,
                      current: bool = False, after: str | None = None,
                      limit: int | None = None) -> list[TagOrigin]:
        """Origins by repository and tag; `current`: only tags still at the digest the
        sync set; with `repository`, only its tags after `after`, at most `limit`."""
        ...


#: the lists of tags a sync report holds, counted in its `counts`
COUNTED = ("added", "updated", "unchanged", "pruned", "failed")


def report_counts(report: dict[str, Any]) -> dict[str, int]:
    """How many tags a stored sync report counts of each kind of `COUNTED`: its
    `counts` (its lists name at most `mirror.sync.REPORT_NAMES` tags each), or for a
    report stored before it had them, its lists' lengths."""
    counts = report.get("counts")
    if isinstance(counts, dict):
        return {k: int(counts.get(k, 0)) for k in COUNTED}
    return {k: len(report.get(k) or ()) for k in COUNTED}


def job_name(source: str) -> str:
    """The jobs registry's name of the sync of source `source` (its key)."""
    return f"mirror.{source}"


async def visible_runs(records: MirrorRecords, source: str | None, limit: int,
                       visible: Callable[[str], bool] | None
                       ) -> list[tuple[MirrorRun, dict[str, Any]]]:
    """The last `limit` runs of `source` (all: None) with their reports, newest first,
    keeping, for a caller who may not pull everything, only the runs whose destination
    repository `visible` accepts: the catalog's rule, as a report names the repository
    and its tags."""
    out: list[tuple[MirrorRun, dict[str, Any]]] = []
    if source is not None and "\x00" in source:
        return out  # no source is named so (nor may PostgreSQL compare a NUL)
    for run in await records.runs(source, limit):
        report: dict[str, Any] = json.loads(run.report)
        if visible is None or visible(str(report.get("destination"))):
            out.append((run, report))
    return out
