"""Repository-name globs: one dialect wherever Dockyard matches names against a pattern.

Access rules, retention rules, `gc --repository`, `du`, `rm` and the web UI's filter all
read a glob the same way, so one pattern means one set of repositories in every place an
operator writes it. A glob is matched component by component (split at `/`): within a
component `*`, `?` and `[...]` (`[!...]` negated) are a shell's, so `team/*` is
`team/app` and not `team/sub/app`; a component that is `**` stands for any number of
components, none included (`team/**` is `team` and everything under it, `**/app` every
repository named `app`, `**` every repository), as in gitignore and Harbor's doublestar.
Tags hold no `/`, so tag globs are plain shell globs and need none of this.

Each component is matched with fnmatch's translation, which does not backtrack without
bound, and a `**` inside a glob by a pass over the name's components per component of
the glob: whatever glob anyone types into the web UI's filter, matching takes time
proportional to the name and the glob. (One regular expression of a whole glob, `*` as
`[^/]*`, had not answered after 30 s for `*a*a*a*a*a*a*a*a*a*a*a*a*b` against forty
`a`.) The access policy asks on every request, so the usual shapes (`team/*`,
`team/**`, `**`) take a regular expression of the whole glob, or a constant.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

#: the characters that make a pattern a glob rather than a name
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True, slots=True)
class _Glob:
    """A glob made ready: its components' matchers (None for `**`); for a glob with no
    class and no `**` component but perhaps a last one (`team/**`), one expression of
    the rest and its `/` count."""

    parts: tuple[re.Pattern[str] | None, ...]
    whole: re.Pattern[str] | None
    slashes: int
    #: whether a last `**` component follows `whole`
    then_any: bool
    #: whether every component is `**`: the glob matches every name
    every: bool


def is_glob(text: str) -> bool:
    """Whether `text` holds a glob character (a name never does)."""
    return any(c in text for c in GLOB_CHARACTERS)


@functools.lru_cache(maxsize=512)
def _compiled(glob: str) -> _Glob:
    # fnmatch's translation: written not to backtrack without bound (atomic groups).
    # Within one component its `*` and `?` cannot cross a `/` (there is none); for the
    # whole glob they could, but a name with as many `/` as the glob has leaves them
    # none to take, each `/` of the name matching one of the glob's (a class, which may
    # hold a `/`, takes the component way).
    parts = tuple(None if part == "**" else re.compile(fnmatch.translate(part))
                  for part in glob.split("/"))
    then_any = len(parts) > 1 and parts[-1] is None
    head = glob.removesuffix("/**") if then_any else glob
    whole = (re.compile(fnmatch.translate(head))
             if "[" not in glob and None not in parts[:-1 if then_any else None] else None)
    return _Glob(parts, whole, head.count("/"), then_any, all(p is None for p in parts))


def matches_every_name(glob: str) -> bool:
    """Whether `glob` matches every repository name (its components all `**`)."""
    return _compiled(glob).every


def glob_matches(name: str, glob: str) -> bool:
    """Whether `glob` matches the whole of `name`."""
    compiled = _compiled(glob)
    if compiled.every:
        return True
    if compiled.whole is not None:
        if compiled.then_any:  # the name's first components, and any after them
            name = "/".join(name.split("/", compiled.slashes + 1)[:compiled.slashes + 1])
        return name.count("/") == compiled.slashes and compiled.whole.match(name) is not None
    components = name.split("/")
    # reach[j]: the components matched so far can be the first j of the name
    reach = [True] + [False] * len(components)
    for part in compiled.parts:
        if part is None:  # any number of components: what reaches j reaches j+1 on
            for j in range(1, len(reach)):
                reach[j] = reach[j] or reach[j - 1]
        else:
            reach = [False] + [reach[j] and part.match(c) is not None
                               for j, c in enumerate(components)]
            if not any(reach):
                return False
    return reach[-1]
