"""O_DIRECT writes: upload bytes go from an aligned buffer to the disk, not the page cache.

A pushed blob is written once and read later, mostly by other machines. Copying it into
the page cache costs CPU on every byte and evicts what pulls need (MinIO writes objects
the same way). O_DIRECT needs the file offset, the length and the buffer's address
aligned to the device's logical block; `ALIGN` (one page) covers common devices. What
cannot be written directly goes through an ordinary descriptor of the same file; the
kernel keeps the two coherent, and `fsync` covers both. The price is that the first
pull of a fresh blob reads it from disk, so the driver does this only when asked
(`storage.filesystem.direct_writes`).
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

ALIGN = 4096
_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def open_direct(path: str | Path) -> int | None:
    """A write-only O_DIRECT descriptor of `path`, or None where the filesystem (tmpfs
    before Linux 6.6, some FUSE and network filesystems) refuses direct I/O."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise


def aligned(view: memoryview) -> bool:
    """True when `view` is writable memory whose address is a multiple of `ALIGN`.

    Read-only buffers (`bytes`) are never passed to a direct write: their address is not
    controlled, and ctypes cannot take it.
    """
    if view.readonly or not view.contiguous or not view.nbytes:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == 0


def pwrite_all(fd: int, view: memoryview, offset: int, piece: int | None = None) -> None:
    """Write all of `view` at `offset` (pwrite may write less than asked), at most
    `piece` bytes per call when given."""
    while view:
        done = os.pwrite(fd, view if piece is None else view[:piece], offset)
        view = view[done:]
        offset += done


def write_direct(fd: int, view: memoryview, offset: int) -> int:
    """Write the longest aligned prefix of `view` at `offset` through the O_DIRECT `fd`.

    Returns the bytes written, 0 when nothing qualifies. A short write that leaves the
    rest unaligned stops there; the caller writes the rest through the page cache.
    Raises `NotImplementedError` when the filesystem refuses direct I/O after all.
    """
    if offset % ALIGN or not aligned(view):
        return 0
    total = 0
    length = view.nbytes - view.nbytes % ALIGN
    while length - total >= ALIGN and (offset + total) % ALIGN == 0:
        try:
            done = os.pwrite(fd, view[total:length], offset + total)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED and total == 0:
                raise NotImplementedError("direct I/O refused") from exc
            raise
        if done <= 0:
            break
        total += done
    return total
