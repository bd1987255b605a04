r"""Regular expressions that users write (retention's `keep_tags`, a mirror source's
`tags_regex`, `dockyard copy --tags-regex`), matched with RE2.

They run against tags that whoever may push (or publish upstream) chooses. Python's
`re` backtracks: `^(a+)+$` against 58 `a` and a `-` held a worker's event loop, with the
health check and SIGTERM, for as long as it cared to. RE2 (what Distribution, Harbor and
Go use) takes time linear in the text whatever the pattern, and bounds the memory of a
compiled pattern. It refuses what only backtracking can do (backreferences, lookaround,
possessive quantifiers), verbose mode `(?x)` and repetition counts over 1,000: the error
says so, and a config naming such a pattern is refused at its key. Python's `\Z` (the
end of the text), common in patterns written for `re`, is read as RE2's `\z`.
"""

from __future__ import annotations

import functools
from typing import Protocol

import re2


class Regex(Protocol):
    """What callers ask of a compiled pattern."""

    def search(self, text: str) -> object | None: ...

    def fullmatch(self, text: str) -> object | None: ...


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error goes to the caller, not to stderr


def _from_python(pattern: str) -> str:
    r"""`pattern` with Python's `\Z` written as RE2's `\z` (outside a character class,
    where Python refuses it anyway); everything else as it is."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            out.append("\\z" if escaped == "Z" and not in_class else c + escaped)
            i += 2
            continue
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Regex:
    """`pattern` compiled by RE2; `ValueError` with RE2's reason when it cannot be."""
    try:
        compiled: Regex = re2.compile(_from_python(pattern), _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"{reason} (patterns are RE2's syntax: no backreferences, "
                         "lookaround, possessive quantifiers or (?x), repetition counts "
                         "up to 1000)") from None
    return compiled
