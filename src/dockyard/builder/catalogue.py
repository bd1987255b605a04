"""Find a catalogue's images: every folder with a `Dockerfile` or `Dockerfile.template`.

An image's name follows the platform's convention,
`<registry>/<image_prefix>-<path with / replaced by ->:<tag>`, so a catalogue written for
the old build script builds unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockyard.builder.settings import CatalogueError, CatalogueSettings, ImageSettings

DOCKERFILE = "Dockerfile"
TEMPLATE = "Dockerfile.template"


@dataclass(frozen=True, slots=True)
class Naming:
    """Where images go: registry host, name prefix and tag."""

    registry: str
    image_prefix: str
    tag: str

    def repository(self, path: str) -> str:
        flat = path.replace("/", "-")
        name = f"{self.image_prefix}-{flat}" if self.image_prefix else flat
        return f"{self.registry}/{name}"

    def name(self, path: str) -> str:
        return f"{self.repository(path)}:{self.tag}"


@dataclass(frozen=True, slots=True)
class Image:
    """One image of the catalogue: its folder (relative, `/`-separated) and its Dockerfile."""

    path: str
    dockerfile: Path
    name: str
    settings: ImageSettings

    @property
    def templated(self) -> bool:
        return self.dockerfile.name == TEMPLATE


def discover(root: Path, naming: Naming, settings: CatalogueSettings) -> list[Image]:
    """Every image under `root` at any depth, sorted by path (hidden folders skipped)."""
    if not root.is_dir():
        raise CatalogueError(f"{root}: no such catalogue directory")
    images: list[Image] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here == root:
            continue
        found = [f for f in (TEMPLATE, DOCKERFILE) if f in filenames]
        if not found:
            continue
        if len(found) == 2:
            raise CatalogueError(f"{here}: both {TEMPLATE} and {DOCKERFILE}; keep one")
        path = here.relative_to(root).as_posix()
        images.append(Image(path, here / found[0], naming.name(path),
                            settings.for_image(path)))
    known = {i.path for i in images}
    for path in settings.images:
        if path not in known:
            raise CatalogueError(f"{root / 'catalogue.yaml'}: images.{path}: no such image "
                                 f"(no {path}/{TEMPLATE} or {path}/{DOCKERFILE})")
    return sorted(images, key=lambda i: i.path)
