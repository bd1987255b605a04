"""The plan of a build: every image rendered, parsed, placed in the graph and keyed, and,
for the selected ones, whether the registry already holds their key (skip) or not (build).
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dockyard.builder.catalogue import Image, Naming, discover
from dockyard.builder.dockerfile import DockerfileError, Parsed, parse
from dockyard.builder.graph import Graph
from dockyard.builder.ignore import DockerIgnore
from dockyard.builder.keys import build_key, context_files
from dockyard.builder.remote import Registries, RemoteImage
from dockyard.builder.render import Renderer
from dockyard.builder.settings import CatalogueError, load_settings

KEY_LABEL = "org.dockyard.build.key"

Action = Literal["build", "skip"]


@dataclass(slots=True)
class Step:
    """One selected image: what it is, its key and what the build will do with it."""

    image: Image
    dockerfile: str
    parsed: Parsed
    key: str
    parents: list[str]
    action: Action = "build"
    reason: str = ""
    remote: RemoteImage | None = None
    inputs: list[str] = field(default_factory=list)  # catalogue files the build reads


@dataclass(slots=True)
class Plan:
    root: Path
    naming: Naming
    graph: Graph
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def by_path(self) -> dict[str, Step]:
        return {s.image.path: s for s in self.steps}


def load_graph(root: Path, naming: Naming) -> tuple[Graph, dict[str, str], dict[str, Parsed]]:
    """Discover, render and parse every image; the graph with rendered texts and parses."""
    settings = load_settings(root)
    images = discover(root, naming, settings)
    renderer = Renderer(root, naming)
    rendered: dict[str, str] = {}
    parsed: dict[str, Parsed] = {}
    for image in images:
        rendered[image.path] = renderer.render(image)
        try:
            parsed[image.path] = parse(rendered[image.path], image.settings.build_args)
        except DockerfileError as exc:
            raise CatalogueError(f"{image.dockerfile.relative_to(root)}: {exc}") from None
    graph = Graph.build(images, {p: v.bases for p, v in parsed.items()}, naming, root,
                        {p: v.final_base for p, v in parsed.items()})
    return graph, rendered, parsed


async def _external_ids(graph: Graph, registries: Registries, plan: Plan) -> dict[str, str]:
    """Each external base's manifest digest (its reference when the look-up fails)."""
    externals = sorted({e for n in graph.nodes.values() for e in n.external})
    found = await registries.lookup_many(externals)
    ids: dict[str, str] = {}
    for ref, result in found.items():
        if isinstance(result, RemoteImage):
            ids[ref] = result.digest
        else:
            ids[ref] = ref
            why = "not found" if result is None else str(result)
            plan.warnings.append(f"base {ref}: {why}; its digest is not in the build keys")
    return ids


def compute_keys(root: Path, graph: Graph, rendered: dict[str, str],
                 parsed: dict[str, Parsed], external: dict[str, str],
                 inputs: dict[str, list[str]] | None = None) -> dict[str, str]:
    """The build key of every image of the graph, parents before children (and, into
    `inputs`, the catalogue files each image's build reads)."""
    ignore = DockerIgnore.of(root)
    shared = sorted(p.name for p in root.iterdir()
                    if p.is_file() and (p.suffix in (".jinja2", ".j2", ".jinja")
                                        or p.name == "catalogue.yaml"))
    keys: dict[str, str] = {}
    for path in graph.order:
        node = graph.nodes[path]
        files = context_files(root, parsed[path].sources, ignore)
        if inputs is not None:
            own = node.image.dockerfile.relative_to(root).as_posix()
            inputs[path] = [own, *shared, *(name for name, _ in files)]
        parents = {graph.nodes[p].image.name: keys[p] for p in node.parents}
        parents |= {e: external.get(e, e) for e in node.external}
        settings = node.image.settings
        keys[path] = build_key(rendered[path], files, settings.build_args, settings.platforms,
                               parents)
    return keys


def keys_at(root: Path, ref: str, naming: Naming, external: dict[str, str]) -> dict[str, str]:
    """The build keys of the catalogue as it was at git `ref` (a checkout in a temporary
    folder), to tell which images changed since."""
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=False)
    if top.returncode != 0:
        raise CatalogueError(f"{root}: --changed-since needs a git checkout")
    toplevel = Path(top.stdout.strip())
    with tempfile.TemporaryDirectory(prefix="dockyard-build-") as tmp:
        archive = subprocess.run(["git", "-C", str(toplevel), "archive", "--format=tar", ref],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            raise CatalogueError(f"--changed-since {ref}: "
                                 f"{archive.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        old_root = Path(tmp) / root.resolve().relative_to(toplevel.resolve())
        if not old_root.is_dir():
            return {}
        graph, rendered, parsed = load_graph(old_root, naming)
        return compute_keys(old_root, graph, rendered, parsed, external)


async def make_plan(root: Path, naming: Naming, registries: Registries, *,
                    names: list[str], single: bool = False, no_cache: bool = False,
                    changed_since: str | None = None) -> Plan:
    """Key every image, then ask the registry about the selected ones' target tags."""
    graph, rendered, parsed = await asyncio.to_thread(load_graph, root, naming)
    plan = Plan(root, naming, graph)
    selected = [p for p in graph.select(names, single=single)
                if not graph.nodes[p].image.settings.skip]
    external = await _external_ids(graph, registries, plan)
    inputs: dict[str, list[str]] = {}
    keys = await asyncio.to_thread(compute_keys, root, graph, rendered, parsed, external,
                                   inputs)
    if changed_since is not None:
        before = await asyncio.to_thread(keys_at, root, changed_since, naming, external)
        selected = [p for p in selected if before.get(p) != keys[p]]
    targets = await registries.lookup_many([graph.nodes[p].image.name for p in selected])
    for path in selected:
        node = graph.nodes[path]
        step = Step(node.image, rendered[path], parsed[path], keys[path], list(node.parents),
                    inputs=inputs[path])
        remote = targets[node.image.name]
        if isinstance(remote, Exception):
            plan.warnings.append(f"{node.image.name}: registry look-up failed: {remote}")
            remote = None
        step.remote = remote
        if no_cache:
            step.reason = "--no-cache"
        elif remote is None:
            step.reason = "not in the registry"
        elif remote.annotations.get(KEY_LABEL) != step.key:
            step.reason = "inputs changed"
        else:
            step.action, step.reason = "skip", "unchanged"
        plan.steps.append(step)
    return plan
