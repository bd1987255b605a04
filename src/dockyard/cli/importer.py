"""`dockyard import`: adopt a CNCF Distribution registry's storage tree.

Bytes: with `--in-place` (the default) no byte is copied. When the data directory is
the tree's `docker/registry/v2` the blobs are already where Dockyard keeps them; when it
is elsewhere on the same filesystem each blob is hard-linked (not renamed: the tree
stays whole, so Distribution can still serve it until the move is done, and removing
the old tree later frees nothing twice). `--copy` copies each blob through the storage
driver instead, hashing it against its digest (another filesystem, or into S3).
`--distribution-config` reads Distribution's own config.yml instead of a path: its
`storage.filesystem` tree, or its `storage.s3` bucket and `rootdirectory` (imported in
place when Dockyard's `storage.s3` is the same bucket at that `rootdirectory` plus
`/docker/registry/v2`, else with `--copy`).

Exit status: 0 when imported (inconsistencies of the source are reported, and are not
errors), 1 when the import failed (run it again: it resumes), 2 for bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml
from pydantic import ValidationError

from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.config.settings import S3Settings, yaml_problem
from dockyard.config.yamlfile import load_yaml
from dockyard.core.importer import (
    DISTRIBUTION_ROOT,
    KINDS,
    AdoptionRefused,
    DistributionTree,
    ImportReport,
)

if TYPE_CHECKING:
    from dockyard.core.registry import Registry

#: inconsistencies of one kind listed in the text report (all are in --json)
SHOWN = 20


@click.command("import")
@config_option
@data_option
@click.option("--distribution", "source", type=click.Path(path_type=Path, file_okay=False),
              help="Distribution's storage.filesystem.rootdirectory (holds docker/registry/v2).")
@click.option("--distribution-config", "source_config",
              type=click.Path(path_type=Path, dir_okay=False),
              help="Distribution's config.yml: its filesystem or s3 storage is read.")
@click.option("--in-place/--copy", "in_place", default=True,
              help="Adopt the bytes where they are or hard-link them (default), or copy "
                   "and verify them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_(config: Path | None, data: Path | None, source: Path | None,
            source_config: Path | None, in_place: bool, as_json: bool) -> None:
    """Import a CNCF Distribution registry's repositories, tags and blobs."""
    settings = load(config, {"storage.filesystem.rootdirectory": data})
    if (source is None) == (source_config is None):
        raise click.UsageError("give one of --distribution or --distribution-config")
    tree = (_tree_of(source, "--distribution") if source is not None
            else _configured_tree(source_config))
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, report: ImportReport) -> None:
        if tty or done == total or done % max(1, total // 100) == 0:  # each 1%
            lead = "\r" if tty else ""
            click.echo(f"{lead}repositories {done}/{total}: {report.tags} "
                       f"tags, {report.manifests} manifests", err=True,
                       nl=not tty or done == total)

    async def job(registry: Registry) -> ImportReport:
        try:
            importer = registry.importer(
                tree, copy=not in_place, progress=progress,
                max_manifest_size=settings.limits.manifest_max_size)
            return await importer.run()
        finally:
            await tree.close()

    try:
        report = run_with_registry(settings, job)
    except AdoptionRefused as exc:
        raise click.ClickException(f"{exc}; nothing is lost: run the import again") from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _print(report)


def _tree_of(root: Path, hint: str) -> DistributionTree:
    from dockyard.backends import distribution_tree

    if not (root / DISTRIBUTION_ROOT).is_dir():
        raise click.BadParameter(f"{root} holds no {DISTRIBUTION_ROOT} tree",
                                 param_hint=hint)
    return distribution_tree(root)


def _configured_tree(path: Path | None) -> DistributionTree:
    """The tree Distribution's own config.yml names: `storage.filesystem` or
    `storage.s3` (its keys are Dockyard's `storage.s3` keys; others are ignored)."""
    from dockyard.backends import distribution_tree

    assert path is not None
    hint = "--distribution-config"
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint=hint) from None
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path}: not UTF-8 text (byte {exc.start})",
                                 param_hint=hint) from None
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{path}: invalid YAML: {yaml_problem(exc)}",
                                 param_hint=hint) from None
    storage = doc.get("storage") if isinstance(doc, dict) else None
    if not isinstance(storage, dict):
        raise click.BadParameter(f"{path} has no storage section", param_hint=hint)
    fs, s3 = storage.get("filesystem"), storage.get("s3")
    if isinstance(fs, dict):
        return _tree_of(Path(str(fs.get("rootdirectory", "/var/lib/registry"))), hint)
    if isinstance(s3, dict):
        keys = {k: v for k, v in s3.items() if k in S3Settings.model_fields and v is not None
                and k != "chunksize"}
        # Distribution uses path-style addressing whenever an endpoint is given
        keys.setdefault("forcepathstyle", bool(keys.get("regionendpoint")))
        try:
            return distribution_tree(s3=S3Settings.model_validate(keys))
        except ValidationError as exc:
            raise click.BadParameter(f"{path}: storage.s3: {exc.errors()[0]['msg']}",
                                     param_hint=hint) from None
    raise click.BadParameter(f"{path}: storage is neither filesystem nor s3",
                             param_hint=hint)


def _print(report: ImportReport) -> None:
    by_kind: dict[str, list[str]] = {}
    for i in report.inconsistencies:
        where = f"{i.repository}: " if i.repository else ""
        by_kind.setdefault(i.kind, []).append(
            f"{where}{i.subject}" + (f" ({i.detail})" if i.detail else ""))
    for kind, lines in by_kind.items():
        click.echo(f"{len(lines)} x {kind}: {KINDS[kind]}")
        for line in lines[:SHOWN]:
            click.echo(f"  {line}")
        if len(lines) > SHOWN:
            click.echo(f"  ... {len(lines) - SHOWN} more (see --json)")
    rate = report.tags / max(report.duration, 1e-9)
    click.echo(f"imported {report.repositories} repositories, {report.tags} tags, "
               f"{report.manifests} manifests ({report.untagged} untagged), {report.blobs} "
               f"blobs ({report.bytes} bytes: {report.present} in place, {report.linked} "
               f"hard-linked, {report.copied} copied) in {report.duration:.1f} s "
               f"({rate:.0f} tags/s)")
