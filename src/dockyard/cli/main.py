"""`dockyard` command line: serve, config check. Usage errors exit with status 2.

Subcommands of other modules are imported when they run (or when help lists them), so
a command such as `dockyard copy` does not pay for loading the server's settings and
stores.
"""

from __future__ import annotations

import gc
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dockyard import __version__

if TYPE_CHECKING:
    from dockyard.config.settings import Settings

#: name -> "module:attribute" of the commands loaded on first use.
LAZY = {
    "gc": "dockyard.cli.lifecycle:gc",
    "du": "dockyard.cli.lifecycle:du",
    "retention": "dockyard.cli.lifecycle:retention",
    "rm": "dockyard.cli.rm:rm",
    "user": "dockyard.cli.user:user",
    "copy": "dockyard.cli.copy:copy",
    "replicate": "dockyard.cli.replica:replicate",
    "promote": "dockyard.cli.replica:promote",
    "fsck": "dockyard.cli.fsck:fsck",
    "import": "dockyard.cli.importer:import_",
    "status": "dockyard.cli.status:status",
    "build": "dockyard.cli.build:build",
    "sync": "dockyard.cli.sync:sync",
}


def _load(config: Path | None, overrides: dict[str, Any]) -> Settings:
    from dockyard.cli.common import load

    return load(config, overrides)


class LazyGroup(click.Group):
    """A group whose `LAZY` commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY and cmd_name not in self.commands:
            module, _, attr = LAZY[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockyard")
def main() -> None:
    """Dockyard: a container image registry."""


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML configuration file.")
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on (http.addr).")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              help="Data directory (storage.filesystem.rootdirectory).")
# http.workers' limit (settings.MAX_WORKERS, not imported: every command would load it)
@click.option("--workers", type=click.IntRange(0, 256),
              help="Worker processes (default: one per CPU core).")
def serve(config: Path | None, listen: str | None, data: Path | None,
          workers: int | None) -> None:
    """Serve the OCI Distribution API."""
    overrides = {"http.addr": listen, "storage.filesystem.rootdirectory": data,
                 "http.workers": workers}
    # the server's modules make objects that live as long as the process: with the
    # collector paused while they are imported, its full collections do not walk them
    # again and again as they grow (about a sixth of the imports' CPU time)
    gc.disable()
    try:
        from dockyard.backends import preload
        from dockyard.cli.common import storage_errors, storage_failure
        from dockyard.server import serve as run

        settings = _load(config, overrides)
        preload(settings)  # what this configuration uses, once, before the workers fork
    finally:
        gc.enable()
    # re-read on SIGHUP (paths as strings, so a spawned worker can take them)
    source = (str(config) if config else None,
              {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()
               if v is not None})
    unopened = storage_errors(settings)
    try:
        run(settings, source)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except unopened as exc:  # the data directory or the database: one line, exit 1
        raise storage_failure(exc) from None


@main.group()
def config() -> None:
    """Inspect configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def config_check(file: Path) -> None:
    """Validate FILE (and DOCKYARD_* variables) without starting anything."""
    settings = _load(file, {})
    s3 = settings.storage.s3
    where = (f"in bucket {s3.bucket}" + (f" under {s3.rootdirectory.strip('/')}/"
                                         if s3.rootdirectory.strip("/") else "")
             if settings.storage.driver == "s3" else f"at {settings.data_dir}")
    click.echo(f"{file}: ok (listen {settings.http.addr}, storage {settings.storage.driver} "
               f"{where}, database {settings.database_url.split('://')[0]})")
    from dockyard.config.advice import advice

    for line in advice(settings):
        click.echo(f"{file}: warning: {line}", err=True)
