"""Build keys: one hash of everything an image's build reads.

The rendered Dockerfile, every context file its COPY/ADD lines bring in (after
`.dockerignore`; path, executable bit and content, symlink targets), its build args,
its platforms and its parents' identities (an external base's manifest digest, a
catalogue parent's own key, which is what decides that parent's digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from dockyard.builder.ignore import DockerIgnore
from dockyard.builder.settings import CatalogueError

KEY_VERSION = "dockyard-build-key/1"
_GLOB = re.compile(r"[*?\[]")


def _walk(base: Path, rel: str) -> Iterator[tuple[str, Path]]:
    """Every file or link at or under `base` (relative name `rel`)."""
    if base.is_symlink() or base.is_file():
        yield rel, base
        return
    if base.is_dir():
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            here = Path(dirpath)
            for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
                path = here / name
                yield (Path(rel) / path.relative_to(base)).as_posix(), path


def context_files(root: Path, sources: list[str], ignore: DockerIgnore) -> list[tuple[str, Path]]:
    """The context files the sources name, sorted, without the ignored ones."""
    found: dict[str, Path] = {}
    for source in sources:
        if "://" in source:
            continue  # a URL: its text is in the Dockerfile, which is hashed
        pattern = source.lstrip("/") or "."
        if posixpath.normpath(pattern).split("/")[0] == "..":
            # what docker refuses ("outside the build context"): `../../etc/hostname`
            # was read, and hashed into the key
            raise CatalogueError(f"COPY/ADD {source!r}: outside the build context")
        matches = sorted(root.glob(pattern)) if _GLOB.search(pattern) else [root / pattern]
        inside = root.resolve()
        for match in matches:
            # the directory it is in (the context itself for `.`), links followed
            where = match if match == root else match.parent
            if not where.resolve().is_relative_to(inside):
                raise CatalogueError(f"COPY/ADD {source!r}: {match.relative_to(root)} "
                                     "is outside the build context (through a link)")
            rel = match.relative_to(root).as_posix() if match != root else ""
            for name, path in _walk(match, rel):
                if name and not ignore.excluded(name):
                    found[name] = path
    return sorted(found.items())


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    kind = stat.S_IFMT(os.lstat(path).st_mode)
    if kind != stat.S_IFREG:  # a FIFO held the build's planning for good: not read
        return f"special:{kind:o}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    mode = "x" if os.access(path, os.X_OK) else "-"
    return f"{mode}:{h.hexdigest()}"


def build_key(dockerfile: str, files: list[tuple[str, Path]], build_args: dict[str, str],
              platforms: list[str], parents: dict[str, str]) -> str:
    """The image's key: `sha256:` of a canonical JSON of its inputs."""
    doc = {
        "version": KEY_VERSION,
        "dockerfile": dockerfile,
        "files": [[name, _file_digest(path)] for name, path in files],
        "build_args": dict(sorted(build_args.items())),
        "platforms": sorted(platforms),
        "parents": dict(sorted(parents.items())),
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()
