"""The plan of a build: every image rendered, parsed, placed in the graph and keyed, and,
for the selected ones, whether the registry already holds their key (skip) or not (build).
"""

from __future__ import annotations

import asyncio
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


async def make_plan(root: Path, naming: Naming, registries: Registries, *,
                    names: list[str], single: bool = False, no_cache: bool = False,
                    only: set[str] | None = None) -> Plan:
    """Key every image, then ask the registry about the selected ones' target tags."""
    graph, rendered, parsed = await asyncio.to_thread(load_graph, root, naming)
    plan = Plan(root, naming, graph)
    selected = [p for p in graph.select(names, single=single)
                if not graph.nodes[p].image.settings.skip]
    if only is not None:
        selected = [p for p in selected if p in only]
    externals = sorted({e for n in graph.nodes.values() for e in n.external})
    found = await registries.lookup_many(externals)
    ext_ids: dict[str, str] = {}
    for ref, result in found.items():
        if isinstance(result, RemoteImage):
            ext_ids[ref] = result.digest
        else:
            ext_ids[ref] = ref
            why = "not found" if result is None else str(result)
            plan.warnings.append(f"base {ref}: {why}; its digest is not in the build keys")
    ignore = DockerIgnore.of(root)
    keys: dict[str, str] = {}
    for path in graph.order:
        node = graph.nodes[path]
        files = await asyncio.to_thread(context_files, root, parsed[path].sources, ignore)
        parents = {graph.nodes[p].image.name: keys[p] for p in node.parents}
        parents |= {e: ext_ids[e] for e in node.external}
        settings = node.image.settings
        keys[path] = await asyncio.to_thread(build_key, rendered[path], files,
                                             settings.build_args, settings.platforms, parents)
    targets = await registries.lookup_many([graph.nodes[p].image.name for p in selected])
    for path in selected:
        node = graph.nodes[path]
        step = Step(node.image, rendered[path], parsed[path], keys[path], list(node.parents))
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
