"""Reusable page-aligned buffers for upload writes.

Anonymous mmaps are page-aligned, which O_DIRECT writes need, and reusing them keeps
their pages resident instead of faulting fresh memory in for every upload.
"""

from __future__ import annotations

import mmap


class BufferPool:
    """Buffers of `size` bytes, handed out and taken back on one event loop."""

    def __init__(self, size: int, *, keep: int = 16) -> None:
        self.size = size
        self.keep = keep
        self._free: list[memoryview] = []

    def take(self) -> memoryview:
        """A writable, page-aligned buffer of `size` bytes (contents undefined)."""
        if self._free:
            return self._free.pop()
        return memoryview(mmap.mmap(-1, self.size))

    def give(self, buf: memoryview) -> None:
        """Return a buffer nothing else uses any more."""
        if len(self._free) < self.keep:
            self._free.append(buf)
            return
        backing = buf.obj
        buf.release()
        if isinstance(backing, mmap.mmap):
            backing.close()
