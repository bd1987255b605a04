"""`dockyard build`: build a catalogue of images in dependency order (see builder/).

    dockyard build --catalogue images/ --registry registry.example --image-prefix toolforge
    dockyard build python311-sssd/web --push          the image, its ancestors when they
                                                      need it, and its descendants
    dockyard build --graph [--format dot]             the tree from the FROM lines

Registries are reached as `dockyard copy` reaches them: `--creds` for the target registry,
else the auth files (`--authfile`, `$REGISTRY_AUTH_FILE`, containers auth.json,
~/.docker/config.json); Basic or the token flow, for look-ups and the engine's pushes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from dockyard.builder.catalogue import Naming
    from dockyard.builder.plan import Plan
    from dockyard.remote.credentials import Credentials

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _default_work() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dockyard" / "build"


def _naming(root: Path, registry: str | None, prefix: str | None, tag: str) -> Naming:
    from dockyard.builder.catalogue import Naming
    from dockyard.builder.settings import CatalogueError, load_settings

    settings = load_settings(root)
    registry = registry or settings.registry
    if not registry:
        raise CatalogueError("no registry: give --registry or `registry:` in catalogue.yaml")
    prefix = prefix if prefix is not None else (settings.image_prefix or "")
    return Naming(registry.rstrip("/"), prefix, tag)


@click.command("build")
@click.argument("images", nargs=-1)
@click.option("--catalogue", "catalogue",
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=Path("."), show_default=True, help="The catalogue directory.")
@click.option("--registry", help="Registry host[:port] (default: catalogue.yaml's).")
@click.option("--image-prefix", "image_prefix", help="Image name prefix (default: "
              "catalogue.yaml's).")
@click.option("--tag", default="latest", show_default=True, help="The tag to build.")
@click.option("--push", is_flag=True, help="Push every image once all built and passed.")
@click.option("--single", is_flag=True, help="Only the named images, not their relatives.")
@click.option("--no-cache", "no_cache", is_flag=True, help="Rebuild even unchanged images.")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Images built at once.")
@click.option("--changed-since", "changed_since", metavar="GIT_REF",
              help="Only images whose inputs changed since GIT_REF (and their descendants).")
@click.option("--dry-run", "dry_run", is_flag=True, help="Show the plan, build nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--graph", "show_graph", is_flag=True, help="Print the dependency tree.")
@click.option("--format", "fmt", type=click.Choice(["text", "dot"]), default="text",
              show_default=True, help="Format of --graph.")
@click.option("--keep-same-layers", "keep_same_layers", is_flag=True,
              help="Do not move a tag when the rebuilt image's layers are the registry's "
              "(scheduled rebuilds, with --no-cache).")
@click.option("--sbom/--no-sbom", "sbom", default=True, show_default=True,
              help="Attach an SPDX SBOM (dpkg or apk packages) to each pushed image.")
@click.option("--engine", type=click.Choice(["buildah", "podman", "docker"]), default="buildah",
              show_default=True)
@click.option("--work-dir", "work", type=click.Path(path_type=Path, file_okay=False),
              help="Logs, rendered Dockerfiles, engine config (default: "
              "~/.cache/dockyard/build).")
@click.option("--storage", type=click.Path(path_type=Path, file_okay=False),
              help="A private image store (vfs) instead of the engine's default.")
@click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
              help="HTTPS with verified certificates (default: on, off for loopback hosts).")
@click.option("--creds", metavar="USER:PASSWORD", help="Credentials for the registry.")
@click.option("--authfile", type=click.Path(path_type=Path, dir_okay=False),
              help="Auth file to read credentials from (default: $REGISTRY_AUTH_FILE, "
                   "containers auth.json, ~/.docker/config.json).")
def build(images: tuple[str, ...], catalogue: Path, registry: str | None,
          image_prefix: str | None, tag: str, push: bool, single: bool, no_cache: bool,
          jobs: int, changed_since: str | None, dry_run: bool, as_json: bool,
          show_graph: bool, fmt: str, keep_same_layers: bool, sbom: bool, engine: str,
          work: Path | None, storage: Path | None, tls_verify: bool | None,
          creds: str | None, authfile: Path | None) -> None:
    """Build the catalogue's IMAGES (default: all) in dependency order; skip unchanged ones."""
    # imported here: `dockyard serve` and the other commands need none of this
    from dockyard.builder.display import Display
    from dockyard.builder.engine import EngineError, make_engine
    from dockyard.builder.engineconf import engine_environment
    from dockyard.builder.plan import load_graph, make_plan
    from dockyard.builder.provenance import provenance
    from dockyard.builder.remote import Registries
    from dockyard.builder.runner import Options, Result, Runner
    from dockyard.builder.settings import CatalogueError
    from dockyard.cli.common import cancel_on_sigterm
    from dockyard.cli.copy import check_authfile

    check_authfile(authfile)  # a named auth file is used, or nothing runs (exit 2)
    root = catalogue.resolve()
    try:
        naming = _naming(root, registry, image_prefix, tag)
        if show_graph:
            graph = load_graph(root, naming)[0]
            click.echo(graph.dot() if fmt == "dot" else graph.tree(), nl=fmt != "dot")
            return
        host = naming.registry.split("/", 1)[0]
        verify = tls_verify if tls_verify is not None else not host.startswith(_LOOPBACK)
        insecure = [] if verify else [host]
        credentials = _credentials(host, creds)
        registries = Registries(insecure, credentials=credentials, auth_file=authfile)

        async def planned() -> Plan:
            async with registries:
                return await make_plan(root, naming, registries, names=list(images),
                                       single=single, no_cache=no_cache,
                                       changed_since=changed_since)

        plan = asyncio.run(planned())
    except CatalogueError as exc:
        raise click.UsageError(str(exc)) from None
    out = sys.stderr if as_json else sys.stdout
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        _print_plan(plan, as_json)
        return
    work = (work or _default_work()).resolve()
    env = engine_environment(work / "engine", insecure=insecure, storage=storage,
                             credentials=credentials, auth_file=authfile)
    try:  # from here on the engine's copy of the password exists: removed however it ends
        try:
            eng = make_engine(engine, env, tls_verify=verify)
        except EngineError as exc:
            raise click.UsageError(str(exc)) from None
        names = {s.image.path: s.image.name for s in plan.steps}
        display = Display(names, stream=out, live=None if not as_json else False)
        options = Options(work, jobs=jobs, push=push, no_cache=no_cache, sbom=sbom,
                          keep_same_layers=keep_same_layers)
        runner = Runner(plan, eng, registries, options, provenance(root), display)

        async def ran() -> list[Result]:
            cancel_on_sigterm()
            async with registries:
                return await runner.run()

        with display:
            results = asyncio.run(ran())
    except asyncio.CancelledError:  # SIGTERM, after the running commands were ended
        click.echo("dockyard build: stopped by SIGTERM; nothing more was built or pushed",
                   err=True)
        sys.exit(128 + signal.SIGTERM)
    finally:
        if credentials:  # the engine's copy of the password lives only as long as the run
            (work / "engine" / "auth.json").unlink(missing_ok=True)
    display.summary([(r.name, r.state, (r.digest or "")[:19], f"{r.seconds:.1f}s")
                     for r in results])
    failed = [r for r in results if r.state == "failed"]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "images": [r.as_json() for r in results]},
                              indent=2))
    for r in failed:
        click.echo(f"failed: {r.name}: {r.error}", err=True)
    if push and failed:
        click.echo("nothing pushed: not every image built and passed its tests", err=True)
    if failed:
        sys.exit(1)


def _credentials(host: str, text: str | None) -> dict[str, Credentials]:
    """`--creds` as the credentials of the target registry's host."""
    from dockyard.remote.credentials import Credentials

    if text is None:
        return {}
    try:
        return {host: Credentials.parse(text)}
    except ValueError as exc:
        raise click.UsageError(f"--creds: {exc}") from None


def _print_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"images": [
            {"image": s.image.path, "name": s.image.name, "key": s.key, "action": s.action,
             "reason": s.reason, "parents": s.parents} for s in plan.steps]}, indent=2))
        return
    for s in plan.steps:
        click.echo(f"{s.action:5}  {s.image.name}  {s.key[7:19]}  ({s.reason})")
