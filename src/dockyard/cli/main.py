"""`dockyard` command line: serve, config check. Usage errors exit with status 2."""

from __future__ import annotations

from pathlib import Path

import click

from dockyard import __version__
from dockyard.cli.common import load

_load = load


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def main() -> None:
    """Dockyard: a container image registry."""


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML configuration file.")
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on (http.addr).")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              help="Data directory (storage.filesystem.rootdirectory).")
@click.option("--workers", type=click.IntRange(min=0),
              help="Worker processes (default: one per CPU core).")
def serve(config: Path | None, listen: str | None, data: Path | None,
          workers: int | None) -> None:
    """Serve the OCI Distribution API."""
    from dockyard.server import serve as run

    settings = _load(config, {"http.addr": listen, "storage.filesystem.rootdirectory": data,
                              "http.workers": workers})
    try:
        run(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.group()
def config() -> None:
    """Inspect configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def config_check(file: Path) -> None:
    """Validate FILE (and DOCKYARD_* variables) without starting anything."""
    settings = _load(file, {})
    click.echo(f"{file}: ok (listen {settings.http.addr}, storage {settings.storage.driver} "
               f"at {settings.data_dir}, database {settings.database_url.split('://')[0]})")


def _register() -> None:
    from dockyard.cli.build import build
    from dockyard.cli.lifecycle import du, gc, retention
    from dockyard.cli.rm import rm
    from dockyard.cli.user import user

    for command in (gc, du, retention, rm, user, build):
        main.add_command(command)


_register()
