"""`dockyard sync`: sync the `mirror:` sources of the config now, or show their history.

    dockyard sync --config config.yml                 # every source
    dockyard sync --config config.yml --dry-run nginx-ingress-controller
    dockyard sync --config config.yml --status --json

It writes through `core` into the stores the config names (the server may be running:
a source is synced by one process at a time) and exits 1 when a source failed, or
some of its tags did (`partial`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.config.mirror import MirrorSource

if TYPE_CHECKING:
    from dockyard.core.registry import Registry

#: runs of each source `--status` shows
STATUS_RUNS = 5


def _chosen(sources: list[MirrorSource], names: tuple[str, ...]) -> list[MirrorSource]:
    if not sources:
        raise click.UsageError("the configuration has no mirror: sources")
    known = {s.key: s for s in sources}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.UsageError(f"no mirror source called {unknown[0]!r} "
                               f"(known: {', '.join(sorted(known))})")
    return [known[n] for n in dict.fromkeys(names)] if names else sources


@click.command("sync")
@config_option
@data_option
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--prune", is_flag=True,
              help="Remove mirrored tags upstream no longer has (or no longer selected); "
                   "default: each source's `prune`.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--status", is_flag=True, help="Show the last runs of the sources instead.")
def sync(config: Path | None, data: Path | None, names: tuple[str, ...], dry_run: bool,
         prune: bool, as_json: bool, status: bool) -> None:
    """Sync the mirror sources of the configuration (all, or those NAMEd) now."""
    if status and (dry_run or prune):
        raise click.UsageError("--status cannot be used with --dry-run or --prune")
    settings = load(config, {"storage.filesystem.rootdirectory": data})
    sources = _chosen(list(settings.mirror), names)
    if status:
        _status(settings_runs(settings, sources), as_json)
        return
    from dockyard.mirror.sync import sync_sources

    async def job(registry: Registry) -> list[dict[str, Any]]:
        reports = await sync_sources(registry, sources, dry_run=dry_run,
                                     prune=True if prune else None,
                                     configured=list(settings.mirror))
        return [r.as_dict() for r in reports]

    reports = run_with_registry(settings, job)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "sources": reports}, indent=2))
    else:
        from dockyard.mirror.sync import SourceReport

        for report in reports:
            click.echo(SourceReport(**report).line())
    if any(r["status"] in ("failed", "partial", "replica") for r in reports):
        raise SystemExit(1)


def settings_runs(settings: Any, sources: list[MirrorSource]) -> dict[str, list[Any]]:
    """The last runs of each source, newest first, from the history."""

    async def job(registry: Registry) -> dict[str, list[Any]]:
        return {s.key: await registry.mirrors.runs(s.key, STATUS_RUNS) for s in sources}

    return run_with_registry(settings, job)


def _status(runs: dict[str, list[Any]], as_json: bool) -> None:
    from dockyard.core.mirrors import report_counts

    if as_json:
        click.echo(json.dumps({"sources": [
            {"source": name, "runs": [{"started_at": r.started_at,
                                       "finished_at": r.finished_at, "status": r.status,
                                       "report": json.loads(r.report)} for r in found]}
            for name, found in runs.items()]}, indent=2))
        return
    for name, found in runs.items():
        if not found:
            click.echo(f"{name}: never synced")
            continue
        for run in found:
            report = json.loads(run.report)
            counts = report_counts(report)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
            took = run.finished_at - run.started_at
            text = (f"{name}: {when} {run.status} in {took:.1f} s: "
                    f"{counts['added']} added, {counts['updated']} updated, "
                    f"{counts['pruned']} pruned")
            if report.get("error"):
                text += f"; {report['error']}"
            elif counts["failed"]:
                text += f"; {counts['failed']} tag(s) failed"
            click.echo(text)
