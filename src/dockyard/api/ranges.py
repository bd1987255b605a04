"""Parse the Range and Content-Range headers registries meet."""

from __future__ import annotations

import re

from dockyard.core.uploads import Chunk
from dockyard.oci.errors import RangeInvalid

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?\s*(\d+)-(\d+)(?:/(?:\d+|\*))?")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_content_range(header: str | None, length: int | None) -> Chunk:
    """`0-399`, `bytes=0-399` or `bytes 0-399/1000` -> Chunk; RangeInvalid otherwise."""
    if header is None:
        return Chunk(length=length)
    m = _CONTENT_RANGE.fullmatch(header.strip())
    if not m:
        raise RangeInvalid(f"malformed Content-Range {header[:100]!r}")
    return Chunk(int(m.group(1)), int(m.group(2)), length)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range -> (start, end inclusive); None for the whole blob.

    Raises ValueError when the range cannot be satisfied (the caller answers 416).
    Multiple ranges are not supported: the whole blob is sent, as RFC 9110 allows.
    """
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        count = int(last)
        if count == 0:
            raise ValueError("empty suffix range")
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range not satisfiable")
    return start, end
