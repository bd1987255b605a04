"""The disk guard: free space kept on the data filesystem so a full disk is recoverable.

Two parts (`storage.guard`):

- uploads are refused (`StorageFull`, 507) when less than `min_free` would stay free
  after the body announced, checked when an upload starts or a body begins to arrive —
  never per buffer. One `statvfs` reading (less what this process wrote since) serves
  for a second while free space is above twice `min_free`; nearer the line, and before
  any refusal, each check reads afresh, so the database's own growth is seen in time
  and freed space is usable at once;
- a ballast file (`layout.RESERVE`, `reserve` bytes, allocated for real) holds space for
  metadata. When a metadata write finds the disk full, `release` deletes it and the
  write is tried again (`metadata/engine.py`), so deletes and the collector still commit
  on a full disk. It is made again once `min_free` plus its size is free; until then its
  size counts as taken, so uploads cannot eat the space it gave back.

A body announced larger than the filesystem could hold above `min_free` even empty is
no storage condition but the client's: `BeyondCapacity` (413 SIZE_INVALID), neither
counted nor logged. Any refusal comes before a byte of the body is written.

A refusal for space is one `UploadsRefused` (a quiet `StorageFull`: the dispatcher does
not log it) and one count in `refused`; the guard logs one warning a minute while it refuses,
with the number refused since the last one, so a full disk under a CI storm writes one
line a minute, not one per request.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable

from dockyard.drivers.base import Driver
from dockyard.oci.errors import PayloadTooLarge, StorageFull
from dockyard.storage import layout
from dockyard.units import human_bytes

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds a free-space reading is trusted (while it shows room)."""
FRESH = 0.05
"""A reading this recent is not taken again before a refusal."""

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

LOG_INTERVAL = 60.0
"""Seconds between two warnings about refused uploads."""


class UploadsRefused(StorageFull):
    """insufficient storage: uploads are refused below `storage.guard.min_free`"""

    log_each = False  # the guard logs these once a minute


class BeyondCapacity(PayloadTooLarge):
    """the body announced is larger than the registry's storage could ever hold"""


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write refused for want of space (ENOSPC, quota)."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


class DiskGuard:
    """Refuses uploads below a free-space threshold and keeps the metadata ballast."""

    def __init__(self, driver: Driver, *, min_free: Callable[[int], int], reserve: int,
                 interval: float = CHECK_INTERVAL) -> None:
        self.driver = driver
        self.min_free = min_free
        self.reserve = reserve
        self.interval = interval
        self._checked = -interval  # monotonic time of the last reading
        self._free = 0
        self._total = 0
        self._threshold = 0  # `min_free` in bytes of the last reading's filesystem size
        self._missing = 0  # the ballast's size while it is gone, at the last reading
        #: uploads refused by this process (metrics read it), and since the last warning
        self.refused = 0
        self._unlogged = 0
        self._logged_at = -LOG_INTERVAL
        #: called with each refusal (the metrics counter)
        self.on_refusal: Callable[[], object] | None = None

    async def check(self, incoming: int = 0) -> None:
        """Raise `StorageFull` unless `min_free` stays free after `incoming` more bytes
        (`BeyondCapacity` when no free space ever could take them).

        Makes the ballast again when there is room for it.
        """
        age = time.monotonic() - self._checked
        if age >= self.interval:
            if not await self._read():
                return
            age = 0.0
        threshold = self._threshold
        if threshold <= 0:
            return
        if incoming > self._total - threshold:
            raise BeyondCapacity(
                f"the body announced ({human_bytes(incoming)}) is larger than the "
                f"registry's storage could ever hold ({human_bytes(self._total - threshold)})")
        free = self._free - self._missing - incoming
        if free < 2 * threshold and age >= FRESH:  # near the line: a fresh reading
            await self._read()
            free = self._free - self._missing - incoming
        if free < threshold:
            exc = UploadsRefused(
                f"insufficient storage: {human_bytes(max(free + incoming, 0))} free on the "
                f"registry's data filesystem, {human_bytes(threshold)} must stay free "
                "(storage.guard.min_free); delete images and collect garbage")
            self._refused(exc)
            raise exc

    def _refused(self, exc: UploadsRefused) -> None:
        """Count a refusal; warn at most once a minute, with the count since."""
        self.refused += 1
        self._unlogged += 1
        if self.on_refusal is not None:
            self.on_refusal()
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            log.warning("refused %d upload(s) since the last warning: %s",
                        self._unlogged, exc)
            self._unlogged = 0
            self._logged_at = now

    async def headroom(self) -> tuple[int, int, int] | None:
        """(free bytes uploads may use, `min_free` in bytes, filesystem size) from a
        reading at most a second old; None when the driver cannot tell."""
        if time.monotonic() - self._checked >= self.interval and not await self._read():
            return None
        return self._free - self._missing, self._threshold, self._total

    def wrote(self, size: int) -> None:
        """Count `size` bytes this process stored since the last reading."""
        self._free -= size

    async def _read(self) -> bool:
        """Take a free-space reading (and make the ballast if there is room for it)."""
        space = self.driver.space()
        if space is None:
            return False
        self._free, self._total = space
        self._threshold = self.min_free(self._total)
        self._checked = time.monotonic()
        self._missing = self._missing_reserve()
        await self._restore()
        return True

    def _missing_reserve(self) -> int:
        """The ballast's size when it is gone (that space is not the uploads' to use)."""
        if self.reserve <= 0:
            return 0
        path = self.driver.local_path(layout.RESERVE)
        return 0 if path is None or path.exists() else self.reserve

    async def _restore(self) -> None:
        """Make the ballast when it is missing and `min_free` would stay free after."""
        if not self._missing or self._free < self._threshold + self.reserve:
            return
        if await self.driver.allocate(layout.RESERVE, self.reserve):
            self._free -= self.reserve
            self._missing = 0
            log.info("storage reserve of %s in place again", human_bytes(self.reserve))
        else:  # another process made it, or no room after all
            self._missing = self._missing_reserve()

    async def ensure(self) -> None:
        """At startup: make the ballast when there is room (never refuses, not even a
        `min_free` past the filesystem's size: `serve` says so before it starts)."""
        self._checked = -self.interval
        with contextlib.suppress(StorageFull, BeyondCapacity):
            await self.check()

    def release(self) -> bool:
        """Delete the ballast (any thread); True if there was one to give back."""
        path = self.driver.local_path(layout.RESERVE)
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        self._checked = -self.interval  # read the space again at the next check
        log.warning("the disk is full: released the %s storage reserve for metadata "
                    "writes; uploads are refused until space is freed", human_bytes(self.reserve))
        return True
