"""The catalogue's dependency graph, from the FROM lines of the rendered Dockerfiles.

An image whose FROM (or `COPY --from`) names another catalogue image depends on it.
Cycles, and FROMs that name an image of the catalogue's own registry and prefix that the
catalogue does not have, are errors naming the files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.builder.catalogue import Image, Naming
from dockyard.builder.settings import CatalogueError


def normalise(ref: str) -> str:
    """`ref` with an explicit tag (`:latest` when it has none)."""
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


@dataclass(slots=True)
class Node:
    """An image in the graph: its catalogue parents, children and external bases."""

    image: Image
    parents: list[str] = field(default_factory=list)     # catalogue paths
    children: list[str] = field(default_factory=list)    # catalogue paths
    external: list[str] = field(default_factory=list)    # references outside the catalogue
    final_base: str | None = None                        # the last stage's catalogue image


class Graph:
    """Images keyed by path, with edges from parents to children."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.order = self._topological()

    @classmethod
    def build(cls, images: Iterable[Image], bases: dict[str, list[str]], naming: Naming,
              root: Path, finals: dict[str, str | None] | None = None) -> Graph:
        nodes = {i.path: Node(i) for i in images}
        by_name = {normalise(n.image.name): p for p, n in nodes.items()}
        own = naming.repository("") if naming.image_prefix else None
        for path, node in nodes.items():
            for ref in bases.get(path, []):
                target = by_name.get(normalise(ref))
                if target is not None:
                    if target not in node.parents:
                        node.parents.append(target)
                        nodes[target].children.append(path)
                elif own is not None and ref.startswith(own):
                    rel = node.image.dockerfile.relative_to(root)
                    raise CatalogueError(f"{rel}: FROM {ref}: no such image in the catalogue")
                elif ref not in node.external:
                    node.external.append(ref)
        for path, node in nodes.items():
            node.children.sort()
            final = (finals or {}).get(path)
            target = by_name.get(normalise(final)) if final else None
            node.final_base = nodes[target].image.name if target else None
        return cls(nodes)

    def _topological(self) -> list[str]:
        """Every image after its parents (depth first, in name order), with an explicit
        stack: a FROM chain of a thousand images passed Python's recursion limit."""
        state: dict[str, int] = {}  # 1: on the path being walked, 2: placed
        order: list[str] = []
        for root in sorted(self.nodes):
            if state.get(root) == 2:
                continue
            walked = [root]
            pending = [iter(sorted(self.nodes[root].parents))]
            state[root] = 1
            while pending:
                parent = next(pending[-1], None)
                if parent is None:
                    done = walked.pop()
                    pending.pop()
                    state[done] = 2
                    order.append(done)
                elif state.get(parent) == 1:
                    cycle = [*walked[walked.index(parent):], parent]
                    files = " -> ".join(f"{p}/{self.nodes[p].image.dockerfile.name}"
                                        for p in cycle)
                    raise CatalogueError(f"FROM cycle: {files}")
                elif state.get(parent) is None:
                    state[parent] = 1
                    walked.append(parent)
                    pending.append(iter(sorted(self.nodes[parent].parents)))
        return order

    def ancestors(self, path: str) -> set[str]:
        out: set[str] = set()
        todo = list(self.nodes[path].parents)
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo += self.nodes[p].parents
        return out

    def descendants(self, path: str) -> set[str]:
        out: set[str] = set()
        todo = list(self.nodes[path].children)
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo += self.nodes[p].children
        return out

    def resolve(self, name: str) -> str:
        """The path of an image given by path, dashed name, repository or full name."""
        if name in self.nodes:
            return name
        for path, node in self.nodes.items():
            full = node.image.name
            repo = full.rsplit(":", 1)[0]
            if name in (full, repo, repo.rsplit("/", 1)[-1], path.replace("/", "-")):
                return path
        raise CatalogueError(f"{name}: no such image in the catalogue")

    def select(self, names: list[str], *, single: bool = False) -> list[str]:
        """Paths to consider, in build order: named images, their ancestors and descendants
        (`single`: only the named ones); no names: every image."""
        if not names:
            chosen = set(self.nodes)
        else:
            chosen = {self.resolve(n) for n in names}
            if not single:
                for path in list(chosen):
                    chosen |= self.ancestors(path) | self.descendants(path)
        return [p for p in self.order if p in chosen]

    def tree(self) -> str:
        """The graph drawn as an indented tree under each image's external bases."""
        lines: list[str] = []

        def draw(path: str, prefix: str, last: bool) -> None:
            # a stack, not recursion: a chain of a thousand images ended --graph on a
            # RecursionError
            stack = [(path, prefix, last)]
            while stack:
                path, prefix, last = stack.pop()
                node = self.nodes[path]
                lines.append(f"{prefix}{'└── ' if last else '├── '}{node.image.name}")
                kids = node.children
                inner = prefix + ("    " if last else "│   ")
                stack.extend((kids[i], inner, i == len(kids) - 1)
                             for i in reversed(range(len(kids))))

        roots: dict[str, list[str]] = {}
        for path in self.order:
            node = self.nodes[path]
            if not node.parents:
                for ext in node.external or ["scratch"]:
                    roots.setdefault(ext, []).append(path)
        for ext in sorted(roots):
            lines.append(ext)
            for i, path in enumerate(roots[ext]):
                draw(path, "", i == len(roots[ext]) - 1)
        return "\n".join(lines)

    def dot(self) -> str:
        """The graph in Graphviz's dot language."""
        lines = ["digraph catalogue {", "  rankdir=LR;"]
        for path in self.order:
            node = self.nodes[path]
            lines.append(f'  "{node.image.name}";')
            for parent in node.parents:
                lines.append(f'  "{self.nodes[parent].image.name}" -> "{node.image.name}";')
            if not node.parents:
                for ext in node.external:
                    lines.append(f'  "{ext}" [shape=box]; "{ext}" -> "{node.image.name}";')
        lines.append("}")
        return "\n".join(lines) + "\n"
