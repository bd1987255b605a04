"""Secrets the configuration names by reference, never by value: read from an
environment variable or the first line of a file (`replica:`, `proxy:` and `mirror:`
credentials all read them here)."""

from __future__ import annotations

import os
from pathlib import Path


def from_env(name: str, where: str) -> str:
    """The value of the environment variable `name`; ValueError naming the config key
    `where` (never a value) when it is unset or empty."""
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{where}: ${name} is not set")
    return value


def from_file(path: Path, where: str) -> str:
    """The first line of `path` (a trailing newline is no part of a secret); ValueError
    naming the config key `where` when it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{where}: cannot read {path}: {exc.strerror}") from None
    return lines[0] if lines else ""


def read_secret(env: str | None, file: Path | None, where: str) -> str | None:
    """The secret `where.password_env` or `where.password_file` refers to; None when
    neither is given."""
    if env:
        return from_env(env, f"{where}.password_env")
    if file is not None:
        return from_file(file, f"{where}.password_file")
    return None
