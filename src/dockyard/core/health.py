"""Readiness: may this process take traffic? Four checks, each timed, the result cached.

- `metadata`: the metadata store answers a read (its schema revision);
- `migrations`: that revision is the newest this build knows;
- `storage`: blob storage takes a real write: a few bytes written and deleted through
  the driver (under `uploads/`, so a probe a crash left behind is swept like any
  orphaned upload);
- `disk`: free space is above the disk guard's `storage.guard.min_free`.

A result is reused for `CACHE_SECONDS`, so a load balancer probing every worker often
costs one round of checks per worker per interval; each check gives up after
`TIMEOUT` seconds (a stopped database may not answer at all).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dockyard.metadata.engine import HEAD_REVISION
from dockyard.metadata.operations import OperationsStore
from dockyard.storage.blobstore import BlobStore

CACHE_SECONDS = 1.5
TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    """One readiness check's outcome; `detail` says why it failed (or what it saw)."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "status": "ok" if self.ok else "failing",
                "latency_ms": round(self.seconds * 1000, 3), "detail": self.detail}


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]
    checked_at: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ok else "not ready",
                "checked_at": self.checked_at,
                "checks": [c.to_json() for c in self.checks]}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class HealthService:
    """Runs the readiness checks (at most once per `CACHE_SECONDS` per process)."""

    def __init__(self, operations: OperationsStore, blobstore: BlobStore, *,
                 observe: Callable[[str, float], object] | None = None) -> None:
        self.operations = operations
        self.blobstore = blobstore
        self.observe = observe
        self._last: Readiness | None = None
        self._running: asyncio.Task[Readiness] | None = None
        self.started_at = time.time()

    async def readiness(self) -> Readiness:
        """The current result: cached, or one round of checks shared by every caller."""
        last = self._last
        if last is not None and time.monotonic() - last.checked_at < CACHE_SECONDS:
            return last
        if self._running is None:
            self._running = asyncio.ensure_future(self._check_all())
        task = self._running
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._running is task:
                self._running = None

    async def _check_all(self) -> Readiness:
        metadata, storage, disk = await asyncio.gather(
            self._timed("metadata", self._metadata), self._timed("storage", self._storage),
            self._timed("disk", self._disk))
        revision = metadata.detail if metadata.ok else ""
        head = HEAD_REVISION
        migrations = Check("migrations", metadata.ok and revision == head, 0.0,
                           f"schema {revision}, this build {head}" if metadata.ok
                           else "unknown: the metadata store does not answer")
        if metadata.ok:
            metadata = Check("metadata", True, metadata.seconds, "answers")
        result = Readiness((metadata, migrations, storage, disk), time.monotonic())
        self._last = result
        return result

    async def _timed(self, name: str, check: Callable[[], Awaitable[str]]) -> Check:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(TIMEOUT):
                detail = await check()
            ok = True
        except TimeoutError:
            ok, detail = False, f"no answer within {TIMEOUT:g}s"
        except Exception as exc:  # any failure is the check's answer, not a 500
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        seconds = time.perf_counter() - start
        if self.observe is not None and name == "metadata":
            self.observe("ping", seconds)
        return Check(name, ok, seconds, detail)

    async def _metadata(self) -> str:
        revision = await self.operations.schema_revision()
        return revision or "none"

    async def _storage(self) -> str:
        await self.blobstore.probe(f"health-{os.getpid()}")
        return "write and delete ok"

    async def _disk(self) -> str:
        guard = self.blobstore.guard
        room = await guard.headroom() if guard is not None else None
        if room is None:
            return "not measured (the driver reports no free space)"
        free, threshold, _total = room
        text = f"{_human(max(free, 0))} free, {_human(threshold)} must stay free"
        if free < threshold:
            raise RuntimeError(text)
        return text
