"""Render Dockerfile templates with Jinja2, loaded from the catalogue root.

Loading from the root lets templates `{% import 'macros.jinja2' as macros %}`; the
variables are those of the old build script: registry, image_prefix, tag, image_path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import jinja2
from jinja2.loaders import split_template_path

from dockyard.builder.catalogue import Image, Naming
from dockyard.builder.settings import CatalogueError

#: the largest Dockerfile (or template) read, and rendered: a catalogue's Dockerfile
#: linked to /dev/zero was read until memory ran out
DOCKERFILE_LIMIT = 1024 * 1024


def read_dockerfile(path: Path) -> str:
    """The text of `path`, a regular UTF-8 file of at most `DOCKERFILE_LIMIT` bytes;
    `CatalogueError` naming it otherwise (a dangling link, a device, binary bytes)."""
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CatalogueError(f"{path}: not a regular file")
            data = f.read(DOCKERFILE_LIMIT + 1)
    except OSError as exc:
        raise CatalogueError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > DOCKERFILE_LIMIT:
        raise CatalogueError(f"{path}: larger than {DOCKERFILE_LIMIT >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8 text (byte {exc.start})") from None


class _BoundedLoader(jinja2.BaseLoader):
    """Templates under the catalogue root, each read as `read_dockerfile` reads a
    Dockerfile: Jinja2's own loader read an included file whole, whatever its size."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        path = self.root.joinpath(*split_template_path(template))  # no `..` segment
        if not os.path.lexists(path):
            raise jinja2.TemplateNotFound(template)
        text = read_dockerfile(path)
        mtime = path.stat().st_mtime
        return text, str(path), lambda: _mtime(path) == mtime


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class Renderer:
    """One Jinja2 environment for a catalogue, rendering each image's Dockerfile."""

    def __init__(self, root: Path, naming: Naming) -> None:
        self.root = root
        self.naming = naming
        self.env = jinja2.Environment(
            loader=_BoundedLoader(root), trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, autoescape=False)

    def render(self, image: Image) -> str:
        if not image.templated:
            return read_dockerfile(image.dockerfile)
        rel = image.dockerfile.relative_to(self.root).as_posix()
        try:
            text = self.env.get_template(rel).render(
                registry=self.naming.registry, image_prefix=self.naming.image_prefix,
                tag=self.naming.tag, image_path=image.path)
        except jinja2.TemplateSyntaxError as exc:
            raise CatalogueError(f"{exc.filename or image.dockerfile}:{exc.lineno}: "
                                 f"{exc.message}") from None
        except jinja2.TemplateError as exc:
            raise CatalogueError(f"{image.dockerfile}: {exc}") from None
        except RecursionError:  # a template that includes itself
            raise CatalogueError(f"{image.dockerfile}: templates include each other "
                                 "without end") from None
        except UnicodeDecodeError as exc:  # an included template
            raise CatalogueError(f"{image.dockerfile}: a template it includes is not "
                                 f"UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise CatalogueError(f"{image.dockerfile}: {exc.strerror or exc}") from None
        except MemoryError:  # `{{ 'x' * 2**31 }}`: the partial text is freed by now
            raise CatalogueError(f"{image.dockerfile}: rendering it ran out of "
                                 "memory") from None
        if len(text) > DOCKERFILE_LIMIT:
            raise CatalogueError(f"{image.dockerfile}: renders larger than "
                                 f"{DOCKERFILE_LIMIT >> 20} MiB")
        return text
