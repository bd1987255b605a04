"""Filesystem driver: keys are files under one root directory.

Writes go to the key's own file (upload sessions) and are published with `rename`,
which is atomic on POSIX filesystems; `move` fsyncs the directory it renames into so a
published blob survives a power loss. With `direct_writes`, upload bytes in page-aligned
buffers are written with O_DIRECT (`directio`), so a push does not fill the page cache.

A failing filesystem is a `DriverError` (503 with Retry-After), as a failing object
store is: any OSError but a missing key (FileNotFoundError, the contract's) and a full
disk (ENOSPC, EDQUOT: `StorageFull`, 507, above the driver) — EIO, a data filesystem
remounted read-only (EROFS), refused permissions — is raised as one (`_faults`).

What can wait for the disk — fsync, reads and writes of large buffers, walking and
removing trees — runs in worker threads. Opening and small writes run inline,
as nginx does them: on a local filesystem they take microseconds, a tenth of what a
thread hop costs in CPU and context switches. On a network filesystem an open can take
milliseconds and would hold the event loop meanwhile: keep the data directory local.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from dockyard.drivers import directio
from dockyard.drivers.base import Driver, DriverError, Writer

_READ_CHUNK = 1024 * 1024
INLINE_WRITE = 64 * 1024
"""Writes up to this size go to the page cache inline instead of in a thread."""
PAGE_CACHE_PIECE = 64 * 1024
"""Largest single write into the page cache.

The kernel sizes page-cache folios after the write, so a 512 KiB pwrite asks for
512 KiB of contiguous memory at a time: such blocks come from the large free areas a
VM's balloon has handed back to the host (cold, 2-2.5 CPU s/GB more to fill on the
benchmark VM) or, on a fragmented host, from compaction. 64 KiB pieces cost a few more
syscalls and kept a 256 MiB push at 1.5-1.9 instead of 3.6-4 CPU s/GB there."""
T = TypeVar("T")
P = ParamSpec("P")

#: errors that mean a full disk: left as they are, `BlobStore` answers them 507
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _faults() -> Iterator[None]:
    """Raise an OSError of the filesystem as a `DriverError` (a storage fault: 503),
    but for a missing key (FileNotFoundError) and a full disk, which callers tell
    apart."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in _FULL:
            raise
        raise DriverError(f"filesystem: {exc}") from exc


def _faulting(method: Callable[P, Coroutine[Any, Any, T]]
              ) -> Callable[P, Coroutine[Any, Any, T]]:
    """`method` with its OSErrors raised as `_faults` says."""

    @functools.wraps(method)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        with _faults():
            return await method(*args, **kwargs)

    return wrapped

KEEP_TRYING = 10.0
"""Seconds `_in_dir` keeps making a directory that concurrent deletes keep pruning."""


class FilesystemWriter(Writer):
    """An open file descriptor appending to one key, and an O_DIRECT one when it can.

    Aligned stretches of page-aligned buffers (what `BlobStore` hands over) go through
    `direct_fd`, bypassing the page cache; everything else through `fd`.
    """

    def __init__(self, fd: int, size: int, direct_fd: int | None = None) -> None:
        self._fd = fd
        self._direct_fd = direct_fd
        self._size = size
        self._busy: asyncio.Future[None] | None = None  # a write running in a thread
        #: bytes that went through O_DIRECT (for tests and diagnostics)
        self.direct_bytes = 0

    @property
    def size(self) -> int:
        return self._size

    @_faulting
    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if view.nbytes <= INLINE_WRITE and self._direct_fd is None:
            directio.pwrite_all(self._fd, view, self._size)
        else:
            # shielded: a cancelled request cannot stop the thread, and `close` must
            # know when it is done before it closes the descriptor under it
            self._busy = asyncio.get_running_loop().run_in_executor(
                None, self._write_all, view, self._size)
            await asyncio.shield(self._busy)
        self._size += view.nbytes

    def _write_all(self, view: memoryview, offset: int) -> None:
        if self._direct_fd is not None:
            try:
                done = directio.write_direct(self._direct_fd, view, offset)
            except NotImplementedError:
                self._close_direct()
                done = 0
            self.direct_bytes += done
            view, offset = view[done:], offset + done
        directio.pwrite_all(self._fd, view, offset, PAGE_CACHE_PIECE)

    def _close_direct(self) -> None:
        fd, self._direct_fd = self._direct_fd, None
        if fd is not None:
            os.close(fd)

    @_faulting
    async def close(self, *, sync: bool = False) -> None:
        if self._busy is not None and not self._busy.done():
            await asyncio.wait([self._busy])
        self._close_direct()
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if sync:
            await asyncio.to_thread(os.fsync, fd)
        os.close(fd)


def _in_dir(directory: str | Path, create: Callable[[], T]) -> T:
    """Run `create` in `directory`, making the directory when it is missing.

    `delete` prunes directories it leaves empty; one may vanish between our `mkdir` and
    the file operation inside it, or between the `mkdir`s of its parents. Bounded by time,
    not by a count of tries: twelve writers and deleters racing in one two-core process
    lost a hundred tries in a row (the GIL handed over between two `mkdir`s).
    """
    there = False
    deadline = time.monotonic() + KEEP_TRYING
    while time.monotonic() < deadline:
        try:
            return create()
        except FileNotFoundError:
            # the directory was there and the create still failed: something else is
            # missing. Seen missing, then there: another writer just made it; try again
            if there:
                raise
            there = os.path.isdir(directory)
            if there:
                continue
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, FileNotFoundError):
            continue  # a parent was pruned while mkdir walked down: walk again
    raise FileNotFoundError(f"{directory} keeps disappearing")


class FilesystemDriver(Driver):
    """Bytes as plain files under `root`."""

    def __init__(self, root: Path, *, direct_writes: bool = False) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        #: write aligned upload bytes with O_DIRECT where the filesystem supports it
        self.direct_writes = direct_writes

    @staticmethod
    def _path_check(key: str) -> None:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")

    def _path(self, key: str) -> Path:
        self._path_check(key)
        return self.root / key

    def _file(self, key: str) -> str:
        """`_path` as a string: what the push path hands to `os` (no pathlib parsing)."""
        self._path_check(key)
        return os.path.join(self._root, key)

    @_faulting
    async def stat(self, key: str) -> int | None:
        self._path_check(key)
        try:  # a string path: pathlib's parsing cost more than the stat (fsck, import)
            st = os.stat(os.path.join(self._root, key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        with _faults():
            fd = await asyncio.to_thread(self._open_file, key)
        try:
            remaining = length
            while remaining is None or remaining > 0:
                want = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
                with _faults():
                    data = await asyncio.to_thread(os.pread, fd, want, offset)
                if not data:
                    break
                offset += len(data)
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            os.close(fd)

    def _open_file(self, key: str, flags: int = os.O_RDONLY) -> int:
        """Open the regular file of `key`; FileNotFoundError for anything else."""
        try:
            fd = os.open(self._path(key), flags)
        except (NotADirectoryError, IsADirectoryError):
            raise FileNotFoundError(key) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(key)
        return fd

    @_faulting
    async def writer(self, key: str, offset: int = 0, *, resume: bool = False,
                     expect: int | None = None) -> Writer:
        path = self._file(key)
        create = offset == 0 and not resume

        def _open() -> tuple[int, int | None]:
            flags = os.O_WRONLY | (os.O_CREAT if create else 0)
            if create:
                fd = _in_dir(os.path.dirname(path), lambda: os.open(path, flags, 0o644))
            else:
                fd = os.open(path, flags, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size < offset:
                    raise ValueError(f"{key} holds fewer than {offset} bytes")
                if size > offset:  # bytes past the offset: a write cut short by a crash
                    os.ftruncate(fd, offset)
                direct = directio.open_direct(path) if self.direct_writes else None
            except BaseException:
                os.close(fd)
                raise
            return fd, direct

        fd, direct = _open()
        return FilesystemWriter(fd, offset, direct)

    @_faulting
    async def move(self, src: str, dst: str) -> None:
        source, target = self._file(src), self._file(dst)
        folder = os.path.dirname(target)

        def _move() -> None:
            if os.path.exists(target):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(source)
                return
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _in_dir(folder, lambda: os.replace(source, target))
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        await asyncio.to_thread(_move)

    @_faulting
    async def link_from(self, source: Driver, src: str, dst: str) -> bool:
        if not isinstance(source, FilesystemDriver):
            return False
        origin, target = source._path(src), self._path(dst)

        def _link() -> bool:
            if target.exists():
                return True
            if origin.stat().st_dev != self.root.stat().st_dev:
                return False
            with contextlib.suppress(FileExistsError):
                _in_dir(target.parent, lambda: os.link(origin, target))
            return True

        return await asyncio.to_thread(_link)

    @_faulting
    async def delete(self, key: str) -> None:
        path = self._path(key)

        def _delete() -> None:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                # below a file (NotADirectoryError): nothing there either
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    path.unlink()
            # prune now-empty parents so deleted trees leave no husk behind
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        await asyncio.to_thread(_delete)

    def space(self) -> tuple[int, int] | None:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    @_faulting
    async def allocate(self, key: str, size: int) -> bool:
        path = self._path(key)

        def _allocate() -> bool:
            try:
                fd = _in_dir(path.parent, lambda: os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                return False
            try:
                # blocks, not a sparse hole: glibc writes zeros where fallocate is missing
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            except OSError as exc:
                path.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    return False
                raise
            finally:
                os.close(fd)
            return True

        return await asyncio.to_thread(_allocate)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        base = self._path(prefix)

        def _walk() -> list[str]:
            # os.walk skips what vanishes under it (concurrent deletes) instead of failing;
            # keys are cut from the paths it yields (os.path.relpath normalised both paths
            # again for every file: most of a walk's cost over a tree of 100k files)
            skip = len(self._root) + 1
            return [f"{top[skip:]}/{name}"
                    for top, _dirs, files in os.walk(base) for name in files]

        for key in await asyncio.to_thread(_walk):
            yield key
