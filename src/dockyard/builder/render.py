"""Render Dockerfile templates with Jinja2, loaded from the catalogue root.

Loading from the root lets templates `{% import 'macros.jinja2' as macros %}`; the
variables are those of the old build script: registry, image_prefix, tag, image_path.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from dockyard.builder.catalogue import Image, Naming
from dockyard.builder.settings import CatalogueError


class Renderer:
    """One Jinja2 environment for a catalogue, rendering each image's Dockerfile."""

    def __init__(self, root: Path, naming: Naming) -> None:
        self.root = root
        self.naming = naming
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(root)), trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, autoescape=False)

    def render(self, image: Image) -> str:
        if not image.templated:
            return image.dockerfile.read_text()
        rel = image.dockerfile.relative_to(self.root).as_posix()
        try:
            return self.env.get_template(rel).render(
                registry=self.naming.registry, image_prefix=self.naming.image_prefix,
                tag=self.naming.tag, image_path=image.path)
        except jinja2.TemplateSyntaxError as exc:
            raise CatalogueError(f"{exc.filename or image.dockerfile}:{exc.lineno}: "
                                 f"{exc.message}") from None
        except jinja2.TemplateError as exc:
            raise CatalogueError(f"{image.dockerfile}: {exc}") from None
