"""`dockyard replicate --from URL` (follow a primary) and `dockyard promote`.

`replicate` runs the same follower as a server with `replica.primary` set, in the
foreground, holding the same lease (`job:replica`), so it never runs beside a server's
follower on the same stores. Both work while the servers run: the state they change
(the primary followed, the cursor, the promotion) is in the metadata store.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.oci.errors import one_line

if TYPE_CHECKING:
    from dockyard.core.registry import Registry


@click.command()
@config_option
@data_option
@click.option("--from", "primary", metavar="URL",
              help="The primary's base URL (default: replica.primary).")
@click.option("--username", help="User name at the primary (replica.username).")
@click.option("--password-env", metavar="VAR",
              help="Environment variable holding the password (replica.password_env).")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the password (replica.password_file).")
@click.option("--tls-verify/--no-tls-verify", default=None,
              help="Verify the primary's certificate (replica.tls_verify).")
@click.option("--once", is_flag=True,
              help="Catch up with the primary, then exit (instead of following).")
def replicate(config: Path | None, data: Path | None, primary: str | None,
              username: str | None, password_env: str | None, password_file: Path | None,
              tls_verify: bool | None, once: bool) -> None:
    """Keep this registry a read-only copy of a primary Dockyard, following its feed."""
    from dockyard.core.leases import LeaseBusy
    from dockyard.replica.follower import FAILURES, LEASE_TTL, follow

    settings = load(config, {"storage.filesystem.rootdirectory": data,
                             "replica.primary": primary, "replica.username": username,
                             "replica.password_env": password_env,
                             "replica.password_file": password_file,
                             "replica.tls_verify": tls_verify})
    url = settings.replica.primary
    if url is None:
        raise click.UsageError("give the primary with --from URL (or replica.primary)")
    try:
        settings.replica.password()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def job(registry: Registry) -> None:
        try:
            async with registry.leases.hold("job:replica", LEASE_TTL):
                await follow(registry, settings.replica, url, until_caught_up=once)
        except LeaseBusy:
            raise click.ClickException("a follower runs already (a server with "
                                       "replica.primary, or another replicate)") from None
        except FAILURES as exc:  # --once: the primary unreachable, refusing, ...
            raise click.ClickException(f"{url}: {one_line(exc)}") from None

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop following, quietly
        run_with_registry(settings, job)


@click.command()
@config_option
@data_option
def promote(config: Path | None, data: Path | None) -> None:
    """Make this replica a primary: accept pushes and deletes, stop following."""
    settings = load(config, {"storage.filesystem.rootdirectory": data})

    async def job(registry: Registry) -> str | None:
        return await registry.replica.promote()

    former = run_with_registry(settings, job, existing=True)
    if former is None:
        raise click.ClickException("this registry is not a replica (or was promoted)")
    click.echo(f"promoted: no longer a replica of {former}; pushes are accepted within "
               "a second on every node")
