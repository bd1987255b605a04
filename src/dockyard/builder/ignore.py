"""`.dockerignore` matching with the engines' rules (moby's patternmatcher).

Patterns are relative to the context root (a leading `/` is dropped), `*` and `?` stay
within one path element, `**` spans any number of them, a pattern that matches a
folder excludes everything under it, `!` re-includes, and the last matching pattern wins.
No PyPI library implements these rules and is kept up; gitignore matchers differ
(unanchored patterns), so this is the small matcher the engines' documentation describes.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from dockyard.builder.settings import CatalogueError


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    exclusion: bool


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    try:
        return re.compile("".join(out))
    except re.error as exc:  # a range written backwards, `[z-a]`
        raise CatalogueError(f".dockerignore: {pattern!r}: {exc}") from None


class DockerIgnore:
    """The patterns of one `.dockerignore`; `excluded(path)` for paths relative to the root."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = posixpath.normpath(line).lstrip("/")
            if line in ("", "."):
                continue
            self.patterns.append(_Pattern(_compile(line), exclusion))

    @classmethod
    def of(cls, root: Path) -> DockerIgnore:
        file = root / ".dockerignore"
        if not file.is_file():
            return cls([])
        try:
            return cls(file.read_bytes().decode("utf-8").splitlines())
        except UnicodeDecodeError as exc:
            raise CatalogueError(f"{file}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise CatalogueError(f"{file}: {exc.strerror or exc}") from None

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) is left out of the build context."""
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for pattern in self.patterns:
            if any(pattern.regex.match(p) for p in prefixes):
                result = not pattern.exclusion
        return result
