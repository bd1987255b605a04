"""Repository-name globs: one dialect wherever Dockyard matches names against a pattern.

Access rules, retention rules, `gc --repository`, `du`, `rm` and the web UI's filter all
read a glob the same way, so one pattern means one set of repositories in every place an
operator writes it: `*` and `?` stay inside one path component (as in a shell), `**`
crosses components (`team/**` is everything under `team/`; `**/app` is every repository
named `app`, `app` included), and `[...]` (`[!...]` negated) is one character other than
`/`. Tags hold no `/`, so tag globs are plain shell globs and need none of this.
"""

from __future__ import annotations

import functools
import re

#: the characters that make a pattern a glob rather than a name
GLOB_CHARACTERS = "*?["


def is_glob(text: str) -> bool:
    """Whether `text` holds a glob character (a name never does)."""
    return any(c in text for c in GLOB_CHARACTERS)


@functools.lru_cache(maxsize=512)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The regular expression that `fullmatch`es the names `glob` stands for."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole components
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := _class_end(glob, i)) > 0:
            body = glob[i + 1:end]
            negated = body.startswith("!")
            body = body[1:] if negated else body
            body = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
            out.append(f"[^/{body}]" if negated else f"(?!/)[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def _class_end(glob: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`, or -1 when it is not
    closed (the `[` is then literal, as in fnmatch). A `]` first in the class is a
    member."""
    j = start + 1
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1
    end = glob.find("]", j)
    return end


def glob_matches(name: str, glob: str) -> bool:
    """Whether `glob` matches the whole of `name`."""
    return compile_glob(glob).fullmatch(name) is not None
