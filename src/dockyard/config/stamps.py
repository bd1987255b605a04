"""What tells that a configured file changed (htpasswd, TLS certificate, token keys)."""

from __future__ import annotations

from pathlib import Path

Stamp = tuple[int, int, int] | None
"""Inode, size and modification time of a file; None when it is missing."""


def file_stamps(*paths: Path) -> tuple[Stamp, ...]:
    """One stamp per path: an edit, a replacing rename or a removal changes it."""
    out: list[Stamp] = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)
