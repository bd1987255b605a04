"""Which upstream tags a mirror source keeps: globs, a regular expression, newest N by semver."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from dockyard.config.mirror import MirrorSource
from dockyard.oci.reference import is_valid_tag
from dockyard.regex import compile_regex

_SEMVER = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")

Version = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def semver(tag: str) -> Version | None:
    """A sort key for `1.2.3`, `v1.2`, `2`, `1.0.0-rc.1` (a pre-release sorts below its
    release, numeric identifiers below others, as semver says); None for other tags."""
    m = _SEMVER.match(tag)
    if m is None:
        return None
    major, minor, patch = (int(g) if g else 0 for g in m.group(1, 2, 3))
    pre = m.group(4)
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


def matches(source: MirrorSource, tag: str) -> bool:
    """Whether `tag` passes the source's globs or regular expression (all, without)."""
    if source.tags is None and source.tags_regex is None:
        return True
    if source.tags is not None and any(fnmatch.fnmatchcase(tag, g) for g in source.tags):
        return True
    return (source.tags_regex is not None
            and compile_regex(source.tags_regex).fullmatch(tag) is not None)


def select_tags(source: MirrorSource, tags: Iterable[str]) -> list[str]:
    """The upstream tags `source` keeps, sorted; with `newest`, the N highest versions
    of those matching (tags that are no version are left out then). A listed name that
    is no valid tag (which no registry could store: `invalid_tags`) is never kept."""
    chosen = sorted({t for t in tags if is_valid_tag(t) and matches(source, t)})
    if source.newest is None:
        return chosen
    versions = [(v, t) for t in chosen if (v := semver(t)) is not None]
    versions.sort(key=lambda vt: (vt[0], vt[1]), reverse=True)
    return sorted(t for _, t in versions[:source.newest])

