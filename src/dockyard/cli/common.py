"""Helpers shared by the `dockyard` subcommands."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.oci.errors import RegistryError, StorageUnavailable, one_line

T = TypeVar("T")

config_option = click.option(
    "--config", "config", type=click.Path(path_type=Path, dir_okay=False),
    help="YAML configuration file.")
data_option = click.option(
    "--data", type=click.Path(path_type=Path, file_okay=False),
    help="Data directory (storage.filesystem.rootdirectory).")


def cancel_on_sigterm() -> None:
    """Make SIGTERM cancel the running task (call it from `asyncio.run`'s main), as ^C
    does, so that its cleanup runs: a command stopped by a supervisor (the server's
    scheduled rebuild at `builder.timeout` or at shutdown, systemd, a CI runner) ends
    what it started and removes its temporary files instead of dying at once.
    `asyncio.run` then raises `CancelledError`."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def load(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from file, env and flags; a bad setting is a usage error (exit 2)."""
    try:
        return load_settings(config, overrides={k: v for k, v in overrides.items()
                                                if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def storage_errors(settings: Settings) -> tuple[type[BaseException], ...]:
    """What opening the stores raises when they cannot be opened: a data directory that
    cannot be made, a database file missing (not migrating) or unreadable, a database
    or object store that does not answer (SQLAlchemy, and asyncpg with a PostgreSQL
    database only, are imported here: they are slow to import for the commands that
    never open a store)."""
    from sqlalchemy.exc import SQLAlchemyError

    errors = (OSError, sqlite3.Error, SQLAlchemyError, StorageUnavailable)
    if not settings.database_url.startswith("postgresql"):
        return errors
    import asyncpg

    return (*errors, asyncpg.PostgresError, asyncpg.InterfaceError)


def _must_exist(settings: Settings) -> None:
    """ClickException when neither the SQLite database of `settings` nor its directory
    is there (PostgreSQL's is found, or not, by connecting to it)."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        return
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if path and not Path(path).exists() and not Path(path).parent.is_dir():
        raise click.ClickException(
            f"no registry at {settings.data_dir}: {path} does not exist (check --data, "
            "or storage.filesystem.rootdirectory in the config)")


def storage_failure(exc: BaseException) -> click.ClickException:
    """The stores could not be opened: one line (exit 1), not a traceback."""
    return click.ClickException(f"the registry's storage: {one_line(exc)[:300]}")


def run_with_registry(settings: Settings, job: Callable[[Any], Awaitable[T]], *,
                      migrate: bool = True, existing: bool = False) -> T:
    """Open the stores named by `settings` (migrating the schema unless not to), run
    `job(registry)`, close them; what goes wrong in the stores or the registry is one
    line (exit 1). `existing`: a command that checks or changes a registry: a mistyped
    `--data` made a new, empty registry there, and `fsck` said it had no problems. It
    refuses a data directory that does not exist (one that does, empty, is where the
    operator meant a registry to be)."""
    from dockyard.backends import close_registry, open_registry
    from dockyard.core.leases import LeaseLost

    if existing:
        _must_exist(settings)

    async def main() -> T:
        registry = await open_registry(settings, run_migrations=migrate)
        try:
            return await job(registry)
        finally:
            await close_registry(registry)

    unopened = storage_errors(settings)
    try:
        return asyncio.run(main())
    except unopened as exc:
        raise storage_failure(exc) from None
    except (RegistryError, LeaseLost) as exc:
        # the disk full, the lease of the work lost, a refusal: said as the registry
        # says it to a client
        raise click.ClickException(one_line(exc)[:300]) from None
