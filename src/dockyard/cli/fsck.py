"""`dockyard fsck`: check (and repair) the stores' integrity, beside a live server.

Exit status: 0 when nothing was found, 1 when problems were found (also when
`--repair` repaired them all: the report says what was done; run it again to see a
clean store), 2 for bad usage.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.config.types import parse_duration
from dockyard.gc.fsck import KINDS, Fsck, FsckReport

if TYPE_CHECKING:
    from dockyard.core.registry import Registry


class _Lines:
    """Progress as a plain line every few seconds (not a TTY: logs, CI)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every or done == total:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            click.echo(f"verified {done}/{total} bytes ({rate / 1e6:.1f} MB/s)", err=True)


@click.command()
@config_option
@data_option
@click.option("--verify-digests", is_flag=True,
              help="Also hash every blob's bytes and compare them with its digest.")
@click.option("--repair", is_flag=True,
              help="Repair what was found (orphans removed, damaged blobs marked).")
@click.option("--grace", metavar="DURATION",
              help="Override gc.grace: newer content is never repaired (e.g. 10m, 0s).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck(config: Path | None, data: Path | None, verify_digests: bool, repair: bool,
         grace: str | None, as_json: bool) -> None:
    """Check that metadata and stored bytes agree; exit 1 when problems were found."""
    settings = load(config, {"storage.filesystem.rootdirectory": data})
    grace_s = settings.gc.grace.total_seconds()
    if grace is not None:
        try:
            grace_s = parse_duration(grace).total_seconds()
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--grace") from None

    async def job(registry: Registry) -> FsckReport:
        if not verify_digests:
            return await Fsck(registry, grace=grace_s, repair=repair).run()
        if sys.stderr.isatty() and not as_json:
            with Progress("verifying", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True),
                          transient=True) as bar:
                task = bar.add_task("verify", total=None)

                def show(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                return await Fsck(registry, grace=grace_s, verify=True, repair=repair,
                                  progress=show).run()
        return await Fsck(registry, grace=grace_s, verify=True, repair=repair,
                          progress=_Lines()).run()

    report = run_with_registry(settings, job, existing=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print(report)
    if report.problems:
        raise SystemExit(1)


def _print(report: FsckReport) -> None:
    for f in report.findings:
        line = f"{f.kind}: {f.subject}" + (f" ({f.detail})" if f.detail else "")
        if report.repair:
            line += f" -> {f.repair or 'left as is'}"
        click.echo(line)
    checked = (f"{report.blobs} blobs ({report.bytes} bytes), {report.uploads} upload "
               f"sessions checked")
    if report.verify:
        rate = report.bytes_verified / max(report.duration, 1e-9) / 1e6
        checked += f", {report.bytes_verified} bytes hashed ({rate:.1f} MB/s)"
    click.echo(f"{checked} in {report.duration:.2f} s")
    if report.marked:
        click.echo(f"{report.marked} blobs are marked corrupt, waiting to be pushed again")
    if report.problems:
        counts: dict[str, int] = {}
        for f in report.findings:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        for kind, n in counts.items():
            click.echo(f"  {n} x {kind}: {KINDS[kind]}")
        repaired = sum(1 for f in report.findings if f.repair)
        click.echo(f"{report.problems} problems found"
                   + (f", {repaired} repaired" if report.repair else ""))
    else:
        click.echo("no problems found")
