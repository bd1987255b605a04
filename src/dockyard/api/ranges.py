"""Parse the Range and Content-Range headers registries meet."""

from __future__ import annotations

import re

from dockyard.core.uploads import Chunk
from dockyard.oci.errors import RangeInvalid

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?\s*([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")

#: Offsets are int64 (the image-spec's sizes); longer numbers are not converted at all
#: (Python refuses to convert more than 4300 digits, and no blob is that large).
_MAX_OFFSET = 2**63 - 1


def _offset(digits: str) -> int | None:
    """The offset `digits` spells, or None when it is beyond int64."""
    if len(digits) > len(str(_MAX_OFFSET)):
        return None
    value = int(digits)
    return value if value <= _MAX_OFFSET else None


def parse_content_range(header: str | None, length: int | None) -> Chunk:
    """`0-399`, `bytes=0-399` or `bytes 0-399/1000` -> Chunk; RangeInvalid otherwise."""
    if header is None:
        return Chunk(length=length)
    m = _CONTENT_RANGE.fullmatch(header.strip())
    if not m:
        raise RangeInvalid(f"malformed Content-Range {header[:100]!r}")
    start, end = _offset(m.group(1)), _offset(m.group(2))
    if start is None or end is None:
        raise RangeInvalid(f"Content-Range {header[:100]!r} is beyond any blob size")
    return Chunk(start, end, length)


def range_applies(if_range: str | None, etag: str) -> bool:
    """Whether a `Range` is honoured under `If-Range` (RFC 9110 13.1.5): only when the
    validator is this response's strong entity tag. A date never matches (no
    Last-Modified is sent) nor does a weak tag; the client then gets the whole blob,
    not a piece of a representation it does not hold."""
    return if_range is None or if_range.strip() == etag


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names this response's entity tag (RFC 9110 13.1.2, weak
    comparison: `W/` aside), or is `*`: a GET or HEAD is then answered 304, no body
    (a poller or a cache holding the manifest or blob already). Bounded: a header of
    more tags than any client sends is taken as no match."""
    if not if_none_match:
        return False
    listed = if_none_match.split(",", 64)[:64]
    for tag in listed:
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range -> (start, end inclusive); None for the whole blob.

    Raises ValueError when the range cannot be satisfied (the caller answers 416).
    Multiple ranges are not supported: the whole blob is sent, as RFC 9110 allows.
    Numbers beyond int64 count as larger than the blob.
    """
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        count = _offset(last)
        if count == 0:
            raise ValueError("empty suffix range")
        if size == 0:
            return None  # satisfiable, but no Content-Range can say so: the empty blob
        return max(0, size - count) if count is not None else 0, size - 1
    start = _offset(first)
    stop = _offset(last) if last else None
    if start is None or start >= size or (stop is not None and stop < start):
        raise ValueError("range not satisfiable")
    return start, min(stop, size - 1) if stop is not None else size - 1
