"""Helpers shared by the `dockyard` subcommands."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.oci.errors import StorageUnavailable, one_line

T = TypeVar("T")

config_option = click.option(
    "--config", "config", type=click.Path(path_type=Path, dir_okay=False),
    help="YAML configuration file.")
data_option = click.option(
    "--data", type=click.Path(path_type=Path, file_okay=False),
    help="Data directory (storage.filesystem.rootdirectory).")


def load(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from file, env and flags; a bad setting is a usage error (exit 2)."""
    try:
        return load_settings(config, overrides={k: v for k, v in overrides.items()
                                                if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def run_with_registry(settings: Settings, job: Callable[[Any], Awaitable[T]], *,
                      migrate: bool = True) -> T:
    """Open the stores named by `settings` (migrating the schema unless not to), run
    `job(registry)`, close them."""
    from dockyard.backends import close_registry, open_registry

    async def main() -> T:
        registry = await open_registry(settings, run_migrations=migrate)
        try:
            return await job(registry)
        finally:
            await close_registry(registry)

    try:
        return asyncio.run(main())
    except (OSError, sqlite3.Error, SQLAlchemyError, StorageUnavailable) as exc:
        # a data directory that cannot be made (or, not migrating, a database file that
        # is not there), a database or object store that does not answer: one line
        # (exit 1), not a traceback
        raise click.ClickException(f"the registry's storage: {one_line(exc)[:300]}"
                                   ) from None
