"""`dockyard gc`, `dockyard du` and `dockyard retention`, through `core`'s services.

They work while the server runs (the stores are shared; a collection holds the same
`gc` lease as the server's scheduled one, so the two never overlap).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.config.types import parse_duration
from dockyard.globs import glob_matches
from dockyard.units import human_bytes

if TYPE_CHECKING:
    from dockyard.core.registry import Registry
    from dockyard.gc.collector import Report


@click.command()
@config_option
@data_option
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--repository", metavar="GLOB",
              help="Only repositories matching this glob (* within a path component, ** "
                   "across).")
@click.option("--grace", metavar="DURATION",
              help="Override gc.grace (e.g. 10m): newer content is never collected.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(config: Path | None, data: Path | None, dry_run: bool, repository: str | None,
       grace: str | None, as_json: bool) -> None:
    """Collect garbage now: unreferenced manifests and blobs, and their bytes."""
    from dockyard.core.leases import LeaseBusy
    from dockyard.core.lifecycle import GC_LEASE
    from dockyard.gc.scheduler import collector_for, count_collection

    settings = load(config, {"storage.filesystem.rootdirectory": data})
    grace_s: float | None = None
    if grace is not None:
        try:
            grace_s = parse_duration(grace).total_seconds()
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--grace") from None

    async def job(registry: Registry) -> Report:
        replica = await registry.replica.read_only() is not None
        collector = collector_for(registry, settings, grace=grace_s, replica=replica)
        if dry_run:
            return await collector.run(dry_run=True, repository=repository)
        try:
            async with registry.leases.hold(GC_LEASE):
                report = await collector.run(repository=repository)
            if repository is None:  # a whole collection: status and alerts see it
                await count_collection(report)
            return report
        except LeaseBusy:
            raise click.ClickException("a collection is running already; try again later"
                                       ) from None

    report = run_with_registry(settings, job, existing=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, dry_run)
    if report.failed:
        # the collection went on past them; say so, and exit non-zero for scripts
        click.echo(f"{report.failed} steps failed and were skipped:", err=True)
        for error in report.errors:
            click.echo(f"  {error}", err=True)
        raise SystemExit(1)


def _print_report(report: Report, dry_run: bool) -> None:
    table = Table(title="dry run: would remove" if dry_run else "removed")
    for column in ("repository", "manifests", "blobs", "bytes freed"):
        table.add_column(column, justify="left" if column == "repository" else "right")
    for repo in sorted(report.repositories.values(), key=lambda r: r.name):
        if repo.manifests or repo.blobs or repo.bytes_freed:
            table.add_row(repo.name, str(repo.manifests), str(repo.blobs),
                          human_bytes(repo.bytes_freed))
    console = Console()
    console.print(table)
    console.print(f"{report.blobs_deleted} blobs, {human_bytes(report.bytes_freed)} "
                  f"{'would be ' if dry_run else ''}freed in {report.duration:.2f} s; "
                  f"{report.uploads_purged} idle uploads purged")


@click.command()
@config_option
@data_option
@click.argument("globs", nargs=-1, metavar="[GLOB...]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def du(config: Path | None, data: Path | None, globs: tuple[str, ...], as_json: bool) -> None:
    """Storage used per repository (all bytes, and bytes no other repository shares)."""
    settings = load(config, {"storage.filesystem.rootdirectory": data})

    async def job(registry: Registry) -> tuple[list[Any], tuple[int, int]]:
        usage = await registry.repositories.usage()
        return usage, await registry.repositories.total_bytes()

    usage, (blob_count, total) = run_with_registry(settings, job, existing=True)
    rows = [u for u in usage if not globs or any(glob_matches(u.name, g) for g in globs)]
    if as_json:
        click.echo(json.dumps({
            "repositories": [{"name": u.name, "bytes": u.bytes, "unique_bytes": u.unique_bytes,
                              "shared_bytes": u.shared_bytes, "blobs": u.blobs,
                              "manifests": u.manifests, "tags": u.tags} for u in rows],
            "total": {"blobs": blob_count, "bytes": total},
        }, indent=2))
        return
    table = Table()
    for column in ("repository", "size", "unique", "shared", "blobs", "manifests", "tags"):
        table.add_column(column, justify="left" if column == "repository" else "right")
    for u in rows:
        table.add_row(u.name, human_bytes(u.bytes), human_bytes(u.unique_bytes),
                      human_bytes(u.shared_bytes), str(u.blobs), str(u.manifests), str(u.tags))
    console = Console()
    console.print(table)
    console.print(f"total: {blob_count} blobs, {human_bytes(total)} stored")


@click.command()
@config_option
@data_option
@click.option("--dry-run", is_flag=True, help="List the tags that would go; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def retention(config: Path | None, data: Path | None, dry_run: bool, as_json: bool) -> None:
    """Apply the retention rules of the configuration now (tags only; see `gc`)."""
    from dockyard.gc.retention import RetentionReport, apply_retention, configured_rules

    settings = load(config, {"storage.filesystem.rootdirectory": data})
    rules = configured_rules(settings)
    if not rules:
        raise click.UsageError("the configuration has no retention rules")

    async def job(registry: Registry) -> RetentionReport:
        if not dry_run and await registry.replica.read_only() is not None:
            raise click.ClickException("this registry is a read-only replica: its tags "
                                       "are its primary's (dockyard promote first)")
        return await apply_retention(registry.lifecycle, rules,
                                     dry_run=dry_run)

    report = run_with_registry(settings, job, existing=True)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "deleted": report.deleted,
                               "errors": report.errors, "regrouped": report.regrouped},
                              indent=2))
    else:
        verb = "would delete" if dry_run else "deleted"
        for name, gone in sorted(report.deleted.items()):
            for tag in gone:
                click.echo(f"{verb} {name}:{tag}")
        click.echo(f"{report.count} tags {'would be deleted' if dry_run else 'deleted'}")
        for line in report.regrouped:
            click.echo(f"note: {line}", err=True)
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
    if report.errors:
        raise SystemExit(1)
