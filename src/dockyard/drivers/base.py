"""The storage driver contract: bytes under '/'-separated keys, nothing else.

A driver knows nothing of digests, repositories or manifests; `storage` owns the key
layout and the meaning of every key. Every driver passes `tests/unit/drivers/suite.py`.

A driver needs no locking and no coordination between processes or hosts: the metadata
store serialises the writers of an upload session (a request holds the session's row
while it writes the session's key), and the collector's exclusivity is a lease there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

from dockyard.oci.errors import StorageUnavailable


class DriverError(StorageUnavailable):
    """A storage backend failed (I/O error, backend unreachable); a server-side fault.

    Clients get 503 `UNAVAILABLE` with `Retry-After` (it is a `RegistryError`), never a
    500 or a hang: the store may well answer again in a moment. They see only the
    generic message; `reason` (what the backend said) goes to the log.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(StorageUnavailable.__doc__ or "")  # what clients see: generic
        self.reason = reason

    def __str__(self) -> str:
        return self.reason or self.message


class Writer(ABC):
    """A resumable write to one key, opened by `Driver.writer`.

    Bytes written are not visible under any final key until `Driver.move` publishes them.
    """

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes in the key so far (the offset the next `write` appends at)."""

    @abstractmethod
    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`. Buffers of a few hundred KiB are the efficient unit; a driver
        may write page-aligned writable buffers without copying them (O_DIRECT)."""

    @abstractmethod
    async def close(self, *, sync: bool = False) -> None:
        """Flush what was written; with `sync`, make it durable (fsync) first."""


class Staged(Writer):
    """A new object written from its first byte, visible at its key only once
    `commit` returns (opened by `Driver.stage`). Exactly one of `commit` and `cancel`
    ends it; `close` only flushes."""

    @abstractmethod
    async def commit(self) -> None:
        """Publish what was written at the key, durably and atomically (readers see
        nothing or the whole object); an existing key holds the same bytes (keys are
        content-addressed) and is kept or rewritten."""

    @abstractmethod
    async def cancel(self) -> None:
        """End the write: nothing becomes visible, and what the store held for it goes
        (or is left where the upload sweep finds it)."""


class _ScratchStaged(Staged):
    """`Driver.stage`'s default: the bytes go to a scratch session, published by `move`."""

    def __init__(self, driver: Driver, writer: Writer, scratch: str, key: str) -> None:
        self._driver, self._writer = driver, writer
        self._scratch, self._key = scratch, key

    @property
    def size(self) -> int:
        return self._writer.size

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._writer.write(data)

    async def close(self, *, sync: bool = False) -> None:
        await self._writer.close(sync=sync)

    async def commit(self) -> None:
        await self._writer.close()
        await self._driver.move(self._scratch, self._key)  # `move` syncs what it publishes

    async def cancel(self) -> None:
        await self._writer.close()  # the session's next writer drops these bytes


class Driver(ABC):
    """Async byte storage. Keys are relative, '/'-separated, never start with '/'."""

    #: whether `create` stores an empty session. A store that does not (S3: an object
    #: costs a call) shows a session only once bytes are written to it; until then
    #: `stat` is None and `writer(key, 0, resume=True)` starts it.
    stores_empty_sessions: ClassVar[bool] = True

    @abstractmethod
    async def stat(self, key: str) -> int | None:
        """Size of the object at `key`, or None when there is none."""

    def local_path(self, key: str) -> Path | None:
        """A local file holding `key`'s bytes, for zero-copy `sendfile`; None if remote."""
        return None

    @abstractmethod
    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes (all when None) of `key` from `offset`.

        Raises FileNotFoundError when the key does not exist.
        """

    @abstractmethod
    async def writer(self, key: str, offset: int = 0, *, resume: bool = False,
                     expect: int | None = None) -> Writer:
        """Open `key` for appending at `offset`, discarding anything stored past it.

        `expect`, when known, is how many bytes this write brings (a PATCH's
        Content-Length): a store that cuts a session into parts may size them to it.

        Creates the key when `offset` is 0, unless `resume`: then the key must exist
        (FileNotFoundError otherwise), so a write to an upload session deleted meanwhile
        cannot bring its bytes back (without `stores_empty_sessions`, a missing key at
        offset 0 is a session not written yet: it starts). Used for upload sessions,
        which can be resumed at the offset the metadata store recorded after a crash.
        """

    async def create(self, key: str) -> None:
        """Start an empty upload session at `key`, a new key (a fresh session id).

        As `writer(key, 0)` closed at once, but nothing can be stored there yet, so a
        store need not look first; without `stores_empty_sessions` it stores nothing.
        """
        await (await self.writer(key, 0)).close()

    @abstractmethod
    async def move(self, src: str, dst: str) -> None:
        """Durably and atomically publish `src` under `dst` and remove `src`.

        If `dst` already exists, it is kept (content-addressed keys hold the same
        bytes) and `src` is removed. Readers see either nothing or the whole object.
        """

    async def put(self, key: str, data: bytes, *, scratch: str) -> None:
        """Publish `data` (small: it is in memory) as `key`, durably and atomically
        (readers see nothing or the whole object), then remove `scratch`. An existing
        `key` holds the same bytes (keys are content-addressed): kept or rewritten.

        `scratch` is a key the caller owns and no longer needs: an upload session with
        nothing recorded in it. The default stages `data` there and moves it; a store
        with an atomic whole-object write (S3's PutObject) writes `key` in one call
        instead, and may leave bytes an earlier write left in `scratch` (a crash, an
        empty PATCH) where `list` shows them: the upload sweep deletes a session's
        bytes once no session row owns them.
        """
        writer = await self.writer(scratch, 0)
        try:
            await writer.write(data)
        finally:
            await writer.close()
        await self.move(scratch, key)  # durable: `move` syncs what it publishes

    async def stage(self, key: str, *, scratch: str) -> Staged:
        """Start writing a whole new object for `key`, published by `Staged.commit`
        (a blob whose digest is known before its first byte: a monolithic push).

        `scratch` is an upload session the caller owns with nothing recorded in it
        (`writer(scratch, 0, resume=True)` must hold). The default writes the bytes
        there and `move`s them; a store where `move` copies the bytes again (S3) writes
        them where they end up instead, so they are stored once.
        """
        return _ScratchStaged(self, await self.writer(scratch, 0, resume=True), scratch, key)

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object at `key`, or every object under the prefix `key/`.

        Deleting what does not exist is not an error.
        """

    async def delete_many(self, keys: Sequence[str]) -> dict[str, DriverError]:
        """Remove the published objects at `keys` (what `move` made; an upload session
        goes with `delete`), in as few calls as the store allows.

        Each key is an object, not a prefix. A key that does not exist is not an error,
        and a key that cannot be deleted does not stop the others: the result holds the
        keys that may still exist, each with why (a backend fault reaches the keys it
        hit, it is not raised); every other key is gone. The default deletes one key
        at a time with `delete`.
        """
        failed: dict[str, DriverError] = {}
        for key in dict.fromkeys(keys):
            try:
                await self.delete(key)
            except DriverError as exc:
                failed[key] = exc
            except OSError as exc:
                failed[key] = DriverError(f"cannot delete {key}: {exc}")
        return failed

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[str]:
        """Every key under `prefix` (recursively), in no particular order."""

    async def abort_incomplete(self, prefix: str, older_than: float) -> int:
        """Abort the store's own unfinished writes under `prefix` begun before
        `older_than` (a Unix time); how many. These are what a `move` leaves when its
        process dies midway (S3: a multipart upload, kept and billed until aborted);
        they are never visible as keys. A driver whose writes leave nothing behind has
        nothing to do (the default)."""
        return 0

    def space(self) -> tuple[int, int] | None:
        """(free, total) bytes of the storage holding the keys; None when unknown.

        Cheap enough to call inline (one `statvfs` on a filesystem).
        """
        return None

    async def allocate(self, key: str, size: int) -> bool:
        """Create `key` with `size` bytes really allocated on the storage (a ballast).

        False when it exists already or there is no room (nothing is left behind then).
        Drivers without a notion of free space keep no ballast: the default does nothing.
        """
        return False

    async def link_from(self, source: Driver, src: str, dst: str) -> bool:
        """Make `dst` hold the bytes of `source`'s `src` without copying them (a hard
        link on one filesystem), keeping `src`; False when this driver cannot (the
        caller copies then). An existing `dst` is kept, as by `move`."""
        return False

    async def url_for(self, key: str, expires: int = 900) -> str | None:
        """A URL that serves `key` to anyone for `expires` seconds (a presigned GET),
        or None when the driver has none (clients are then served by Dockyard)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""
