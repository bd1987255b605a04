"""Read what the builder needs from a rendered Dockerfile: bases, stages, COPY/ADD sources.

Only as much of the Dockerfile grammar as the graph and the build key need: logical
lines (continuations, comments), `ARG` before the first `FROM` (substituted into FROM
lines as `$VAR`, `${VAR}` and `${VAR:-default}`), stage aliases (never dependencies),
`COPY`/`ADD` sources in shell and JSON form, and `--from` naming an image.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, slots=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass(slots=True)
class Parsed:
    """The parts of a Dockerfile the builder reads."""

    bases: list[str] = field(default_factory=list)      # images: FROM and COPY --from
    stages: list[str] = field(default_factory=list)     # stage aliases, in order
    sources: list[str] = field(default_factory=list)    # COPY/ADD sources from the context
    final_base: str | None = None                       # the last stage's image (not alias)


class DockerfileError(ValueError):
    """A Dockerfile the builder cannot read (the message gives the line)."""


def instructions(text: str) -> list[Instruction]:
    """Logical lines: comments dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        line = " ".join(b.strip() for b in buf if b.strip())
        buf = []
        keyword, _, args = line.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if buf:
        line = " ".join(b.strip() for b in buf if b.strip())
        keyword, _, args = line.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    """`$VAR`, `${VAR}` and `${VAR:-default}` replaced from `values` (unknown: empty)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        value = values.get(name)
        if value:
            return value
        return m.group("default") or ""

    return _VAR.sub(repl, text)


def _split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """`--flag=value` options and the remaining words (JSON form or shell words)."""
    rest = args.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name.lower()] = value
        rest = rest.strip()
    if rest.startswith("["):
        try:
            words = json.loads(rest)
            if isinstance(words, list) and all(isinstance(w, str) for w in words):
                return flags, words
        except ValueError:
            pass
    try:
        return flags, shlex.split(rest)
    except ValueError:
        return flags, rest.split()


def parse(text: str, build_args: dict[str, str] | None = None) -> Parsed:
    """Bases, stages and context sources of a rendered Dockerfile."""
    parsed = Parsed()
    global_args: dict[str, str] = {}
    seen_from = False
    args = build_args or {}
    aliases: dict[str, str | None] = {}
    for ins in instructions(text):
        if ins.keyword == "ARG" and not seen_from:
            for word in _split_flags(ins.args)[1]:
                name, eq, default = word.partition("=")
                global_args[name] = args.get(name, default if eq else "")
        elif ins.keyword == "FROM":
            seen_from = True
            _, words = _split_flags(ins.args)
            if not words:
                raise DockerfileError(f"line {ins.line}: FROM without an image")
            base = substitute(words[0], global_args)
            if not base:
                raise DockerfileError(f"line {ins.line}: FROM {words[0]} is empty "
                                      "after ARG substitution")
            if base.lower() in aliases:
                image: str | None = aliases[base.lower()]
            else:
                image = None if base == "scratch" else base
                if image is not None:
                    parsed.bases.append(image)
            parsed.final_base = image
            if len(words) >= 3 and words[1].upper() == "AS":
                aliases[words[2].lower()] = image
                parsed.stages.append(words[2])
        elif ins.keyword in ("COPY", "ADD"):
            flags, words = _split_flags(ins.args)
            source = flags.get("from")
            if source is not None:
                if not source.isdigit() and source.lower() not in aliases:
                    parsed.bases.append(substitute(source, global_args))
                continue
            parsed.sources += words[:-1]
    return parsed
