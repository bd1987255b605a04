"""The files of a layer blob, for the UI's layer page: a bounded, streamed tar listing.

A layer is a tar archive, usually gzip-compressed. Python's `tarfile` reads it in stream
mode (`r|*`: plain, gzip, bzip2 or xz) in a worker thread, pulling the blob's chunks from
the event loop as it needs them, so nothing is spooled and memory stays at one chunk.
A listing stops at `MAX_ENTRIES` entries, `MAX_BYTES` stored bytes or `DEADLINE` seconds
and says where it stopped; a zstd layer (no decoder in the standard library) or bytes
that are not a tar archive are reported, not raised.
"""

from __future__ import annotations

import asyncio
import io
import stat
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

#: entries listed at most (the rest is counted as "stopped")
MAX_ENTRIES = 10_000
#: stored (compressed) bytes read at most
MAX_BYTES = 512 * 1024 * 1024
#: seconds a listing may take
DEADLINE = 10.0
#: the zstd frame's magic number: `tarfile` has no decoder for it
_ZSTD = b"\x28\xb5\x2f\xfd"
#: the OCI whiteout prefix: the entry deletes a file of a lower layer
WHITEOUT = ".wh."


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One entry of the archive, as `ls -l` would show it."""

    path: str
    kind: str  # file, dir, symlink, hardlink, whiteout, other
    size: int
    mode: str
    target: str = ""


@dataclass
class LayerFiles:
    """The entries read, the archive's format, and why the listing stopped early (if)."""

    entries: list[LayerEntry] = field(default_factory=list)
    format: str = ""
    stopped: str = ""
    error: str = ""
    files_bytes: int = 0


class _Stop(Exception):
    """A bound was reached: end the listing where it is."""


class _Unreadable(Exception):
    """The store failed to give the next chunk (not a fault of the archive)."""


class _Chunks(io.RawIOBase):
    """A blocking file over the blob's async chunks, read from a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop,
                 head: bytes, deadline: float) -> None:
        self._chunks = chunks
        self._loop = loop
        self._pending = memoryview(head)
        self._deadline = deadline
        self.read_bytes = len(head)
        self.cancelled = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.cancelled:
            raise _Stop("cancelled")
        if not self._pending:
            if self.read_bytes >= MAX_BYTES:
                raise _Stop(f"after reading {MAX_BYTES // (1024 * 1024)} MiB of the layer")
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise _Stop(f"after {DEADLINE:.0f} s")
            future = asyncio.run_coroutine_threadsafe(_next(self._chunks), self._loop)
            try:
                data = future.result(timeout=left)
            except TimeoutError:
                future.cancel()
                raise _Stop(f"after {DEADLINE:.0f} s") from None
            except Exception as exc:
                raise _Unreadable(_why(exc)) from exc
            self.read_bytes += len(data)
            self._pending = memoryview(data)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _why(exc: Exception) -> str:
    """Why the store gave no bytes, for the page: an OS error by its reason alone (its
    text names the file's path under the storage tree)."""
    if isinstance(exc, FileNotFoundError):
        return "they are missing from storage; `dockyard fsck` marks such blobs"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    """The next chunk, or b"" at the end (what a file's read says)."""
    return await anext(chunks, b"")


def _entry(member: tarfile.TarInfo) -> LayerEntry:
    path = member.name.removeprefix("./") or "."
    base = path.rstrip("/").rpartition("/")[2]
    # the permission bits only: a base-256 mode field may say anything, negative too
    mode = stat.filemode((member.mode & 0o7777) | _TYPE_BITS.get(member.type, stat.S_IFREG))
    if base.startswith(WHITEOUT):  # the target: what it hides of the layers below
        folder = path.rstrip("/").rpartition("/")[0]
        hidden = base.removeprefix(WHITEOUT)
        gone = f"{folder}/{'*' if hidden == '.wh..opq' else hidden}".removeprefix("/")
        return LayerEntry(path, "whiteout", 0, mode, gone)
    if member.isdir():
        return LayerEntry(path, "dir", 0, mode)
    if member.issym():
        return LayerEntry(path, "symlink", 0, mode, member.linkname)
    if member.islnk():
        return LayerEntry(path, "hardlink", 0, mode, member.linkname)
    if member.isfile():
        return LayerEntry(path, "file", member.size, mode)
    return LayerEntry(path, "other", member.size, mode)


_TYPE_BITS = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
              tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
              tarfile.FIFOTYPE: stat.S_IFIFO}
_FORMATS = {"gz": "tar+gzip", "bz2": "tar+bzip2", "xz": "tar+xz", "tar": "tar"}


def _list(source: _Chunks, out: LayerFiles) -> None:
    """Read the archive's headers (skipping the file contents) until the end or a bound."""
    try:
        with tarfile.open(fileobj=io.BufferedReader(source, 1024 * 1024), mode="r|*") as tar:
            out.format = _FORMATS.get(str(getattr(tar.fileobj, "comptype", "")), "tar")
            for member in tar:
                if len(out.entries) >= MAX_ENTRIES:
                    out.stopped = f"at {MAX_ENTRIES:,} entries"
                    return
                out.entries.append(_entry(member))
                if member.isfile():
                    out.files_bytes += member.size
                cast(Any, tar).members.clear()  # stream mode keeps every header otherwise
    except _Stop as exc:
        out.stopped = str(exc)
    except _Unreadable as exc:
        out.error = f"its stored bytes could not be read ({exc})"
    except (tarfile.TarError, EOFError, OSError, ValueError, OverflowError) as exc:
        out.error = f"not a tar archive this page can read ({exc})"


async def list_layer(chunks: AsyncIterator[bytes]) -> LayerFiles:
    """The entries of the layer whose stored bytes `chunks` yields, within the bounds."""
    out = LayerFiles()
    try:
        try:
            head = await _next(chunks)
        except Exception as exc:  # the store's first read, as `_Chunks` does the others
            out.error = f"its stored bytes could not be read ({_why(exc)})"
            return out
        if head.startswith(_ZSTD):
            out.format = "tar+zstd"
            out.error = "compressed with zstd, which this page cannot read"
            return out
        source = _Chunks(chunks, asyncio.get_running_loop(), head,
                         time.monotonic() + DEADLINE)
        work = asyncio.ensure_future(asyncio.to_thread(_list, source, out))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # the page's request went away: the thread stops at its next read, and
            # only then may the stream be closed (it may be inside a read of it)
            source.cancelled = True
            await asyncio.wait([work])
            raise
        return out
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()  # a listing stopped early lets go of the store's stream
