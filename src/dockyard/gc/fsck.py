"""The integrity check (`dockyard fsck`) and its repairs, beside a live server.

What it compares: the blob store's listing against the metadata's blob rows (bytes
missing, of the wrong size, or with `verify`, not hashing to their digest; bytes no
row knows), the upload area against the session rows (bytes no session owns, sessions
whose bytes are gone), and manifests against what their repository can serve.

Why it is safe while pushes go on: bytes are listed before rows are read, and a push
writes a row before its bytes (a blob is claimed before it is published, a session row
is written before its file), so live content is never taken for an orphan. Repairs go
through the collector's own re-checking steps:

- a recorded size that differs from bytes that hash to the digest: the size is fixed;
- damaged or missing bytes: the row is marked corrupt and the bytes removed under a
  tombstone (an upload of that digest waits meanwhile); clients get BLOB_UNKNOWN and
  push the blob again, which clears the mark. Missing bytes are marked only when the
  row is older than the grace (a claimed blob is published just after its row);
- bytes no row knows: given an unlinked row, then removed by the collector's own step
  once older than the grace (at once with `--grace 0s`, else by a later fsck or
  collection);
- a link whose blob row is gone: the row is restored from the bytes, or without bytes
  the links are removed;
- upload bytes no session owns: removed (a session's row never comes back once gone);
- session rows whose bytes are gone: removed when idle for the grace and unheld.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from dockyard.core.integrity import BlobRow
from dockyard.core.leases import LeaseBusy
from dockyard.core.lifecycle import GC_LEASE
from dockyard.core.registry import Registry
from dockyard.gc.collector import Collector
from dockyard.oci.digest import Digest
from dockyard.settle import to_the_end

#: stats in flight at once (a HEAD each on S3)
STAT_CONCURRENCY = 32

#: what each kind of finding means (the kinds of `--json`)
KINDS = {
    "missing": "blob recorded, bytes missing",
    "size": "blob bytes of the wrong size",
    "corrupt": "blob bytes do not hash to their digest",
    "orphan_blob": "blob bytes no row records",
    "dangling_link": "blob linked into a repository without a blob row",
    "orphan_upload": "upload bytes no session owns",
    "dead_upload": "upload session whose bytes are gone",
    "broken_manifest": "manifest referencing blobs or manifests its repository cannot serve",
}

def slice_bounds(part: int, parts: int) -> tuple[str, str | None]:
    """The hex range of scrub slice `part` of `parts`: digests whose hex starts at or
    past the first and before the second (None: to the end). Contiguous, so the store
    filters one slice by a range on the digest instead of handing over every row
    (digests are uniform, so the slices are even)."""
    def at(i: int) -> str:
        return format(i * (1 << 32) // parts, "08x")
    return at(part), at(part + 1) if part + 1 < parts else None


def slice_of(digest: str, parts: int) -> int:
    """Which of `parts` scrub slices a blob is in (`slice_bounds`): the last slice whose
    start, `i * 2**32 // parts`, is at most the digest's head `v`: the largest `i`
    below `(v + 1) * parts / 2**32`."""
    head = int(digest.partition(":")[2][:8].ljust(8, "0"), 16)
    return ((head + 1) * parts - 1) >> 32


Progress = Callable[[int, int], None]
"""Called with (bytes hashed so far, bytes to hash) while digests are verified."""


@dataclass
class Finding:
    kind: str
    subject: str
    detail: str = ""
    #: what --repair did about it (None: nothing, or not repairing)
    repair: str | None = None


@dataclass
class FsckReport:
    repair: bool
    verify: bool
    grace_seconds: float
    started_at: float
    duration: float = 0.0
    blobs: int = 0
    bytes: int = 0
    bytes_verified: int = 0
    uploads: int = 0
    #: blobs marked corrupt earlier, waiting for a push of their bytes
    marked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.findings)

    def add(self, kind: str, subject: str, detail: str = "") -> Finding:
        finding = Finding(kind, subject, detail)
        self.findings.append(finding)
        return finding

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["problems"] = self.problems
        return data


class Fsck:
    """One integrity check of a registry's stores (and, with `repair`, its repairs)."""

    def __init__(self, registry: Registry, *, grace: float, verify: bool = False,
                 repair: bool = False, progress: Progress | None = None) -> None:
        self.registry = registry
        self.grace = grace
        self.verify = verify
        self.repair = repair
        self.progress = progress

    async def run(self) -> FsckReport:
        started = time.time()
        report = FsckReport(self.repair, self.verify, self.grace, started)
        await self._blobs(report)
        await self._uploads(report)
        report.duration = time.time() - started
        return report

    async def scrub(self, part: int, parts: int) -> FsckReport:
        """Verify the digests of one slice of the blobs (`part` of `parts`, by digest,
        so every blob is in exactly one slice), marking damaged ones when repairing."""
        started = time.time()
        report = FsckReport(self.repair, True, self.grace, started)
        integrity = self.registry.integrity
        tombstones = await integrity.tombstones()
        rows = [r for r in await integrity.blob_rows(hex_range=slice_bounds(part, parts))
                if r.corrupt_at is None and r.digest not in tombstones]
        report.blobs = len(rows)
        report.bytes = sum(r.size for r in rows)
        for row in await self._verify(rows, report):
            finding = report.add("corrupt", row.digest, "digest mismatch")
            if self.repair:
                finding.repair = await self._mark(row, "corrupt", started)
        report.duration = time.time() - started
        return report

    # --- blobs ---------------------------------------------------------------------

    async def _blobs(self, report: FsckReport) -> None:
        registry, integrity = self.registry, self.registry.integrity
        stored = {str(d) async for d in registry.blobs.stored()}  # bytes before rows
        tombstones = await integrity.tombstones()
        rows = [r for r in await integrity.blob_rows() if r.digest not in tombstones]
        report.blobs = len(rows)
        report.marked = sum(1 for r in rows if r.corrupt_at is not None)
        live = [r for r in rows if r.corrupt_at is None]
        report.bytes = sum(r.size for r in live)
        sizes = await self._sizes([r.digest for r in live])
        cutoff = time.time() - self.grace
        bad: list[tuple[BlobRow, Finding]] = []
        for row in live:
            size = sizes[row.digest]
            if size is None:
                bad.append((row, report.add("missing", row.digest, f"{row.size} bytes")))
            elif size != row.size:
                bad.append((row, report.add("size", row.digest,
                                            f"recorded {row.size} bytes, stored {size}")))
        if self.verify:
            sound = [r for r in live if sizes[r.digest] == r.size]
            for row in await self._verify(sound, report):
                bad.append((row, report.add("corrupt", row.digest, "digest mismatch")))
        if self.repair:
            for row, finding in bad:
                if finding.kind == "size" and await self._sound(row.digest):
                    # the bytes are the blob's: the row's size was what was wrong
                    size = sizes[row.digest]
                    assert size is not None
                    if await integrity.fix_size(row.digest, row.size, size):
                        finding.repair = f"recorded size set to {size} (bytes verified)"
                    continue
                finding.repair = await self._mark(row, finding.kind, cutoff)
        known = {r.digest for r in rows} | tombstones
        dangling = await integrity.dangling_links()
        orphans = sorted((stored - known) | set(dangling))
        orphan_sizes = await self._sizes(orphans)
        adopted = []
        for digest in orphans:
            size = orphan_sizes[digest]
            linked = dangling.get(digest)
            if linked is not None:
                finding = report.add("dangling_link", digest, "linked in " + ", ".join(
                    sorted(linked)) + ("; bytes gone" if size is None else ""))
                if not self.repair:
                    continue
                if size is None and await integrity.drop_dangling_links(digest):
                    finding.repair = "links removed (push the blob again)"
                elif size is not None and await integrity.adopt_orphan(digest, size):
                    finding.repair = "blob row restored from its bytes"
                continue
            if size is None:  # the collector deleted it since the listing
                continue
            finding = report.add("orphan_blob", digest, f"{size} bytes")
            if self.repair and await integrity.adopt_orphan(digest, size):
                finding.repair = "given to the collector (removed after gc.grace)"
                adopted.append(digest)
        if adopted:
            collector = Collector(registry, grace=self.grace)
            try:
                # under the collector's lease: a push of a digest being deleted waits
                # only while someone holds it (`core.uploads`), and took fsck's
                # deletion, done without it, for one a dead collector left
                async with registry.leases.hold(GC_LEASE):
                    gone = dict(await collector.remove_unlinked(adopted))
            except LeaseBusy:  # a collection runs: the adopted orphans are its
                gone = {}
            for finding in report.findings:
                if finding.kind != "orphan_blob" or finding.repair is None:
                    continue
                if finding.subject in gone:
                    finding.repair = "removed"
                elif failed := next((e for e in collector.errors if finding.subject in e),
                                    None):
                    finding.repair = ("given to the collector; removing it now failed ("
                                      f"{failed})")
        unusable = [f.subject for f in report.findings if f.kind in ("missing", "size",
                                                                     "corrupt")]
        unusable += [r.digest for r in rows if r.corrupt_at is not None]
        cache = self.registry.cache  # a cache's blobs arrive when pulled
        for broken in await integrity.broken_manifests(
                unusable, lambda name: cache.route(name) is not None):
            report.add("broken_manifest", f"{broken.repository}@{broken.digest}",
                       "missing: " + ", ".join(broken.missing))

    async def _sizes(self, digests: Iterable[str]) -> dict[str, int | None]:
        """Stored size of each digest, `STAT_CONCURRENCY` stats in flight (a few
        workers, not a task per blob: on a filesystem a stat does not even wait)."""
        blobs = self.registry.blobs
        pending = iter(digests)
        sizes: dict[str, int | None] = {}

        async def worker() -> None:
            for digest in pending:
                sizes[digest] = await blobs.stored_size(Digest.parse(digest))

        await asyncio.gather(*(worker() for _ in range(STAT_CONCURRENCY)))
        return sizes

    async def _verify(self, rows: list[BlobRow], report: FsckReport) -> list[BlobRow]:
        """Hash each blob's bytes; the rows whose bytes do not match their digest, read
        twice: one read the store (or the network to it) damaged or cut short had the
        scrub delete a sound blob's bytes for good."""
        total = sum(r.size for r in rows)
        done = 0
        bad = []
        for row in rows:
            digest = Digest.parse(row.digest)
            hasher = digest.hasher()
            try:
                async for chunk in self.registry.blobs.read_stored(digest):
                    await asyncio.to_thread(hasher.update, chunk)
                    done += len(chunk)
                    if self.progress is not None:
                        self.progress(done, total)
            except FileNotFoundError:  # collected since it was listed
                continue
            if hasher.hexdigest() != digest.hex and not await self._sound(row.digest):
                bad.append(row)
        report.bytes_verified = done
        return bad

    async def _sound(self, digest: str) -> bool:
        """Whether the stored bytes hash to `digest`."""
        d = Digest.parse(digest)
        hasher = d.hasher()
        try:
            async for chunk in self.registry.blobs.read_stored(d):
                await asyncio.to_thread(hasher.update, chunk)
        except FileNotFoundError:
            return False
        return hasher.hexdigest() == d.hex

    async def _mark(self, row: BlobRow, kind: str, cutoff: float) -> str | None:
        """Mark a blob whose bytes are missing or damaged; say what was done."""
        if kind == "missing" and row.touched_at >= cutoff:
            return None  # claimed just now: its bytes may be on their way
        integrity = self.registry.integrity
        if not await integrity.begin_mark(row.digest):
            return None
        try:  # stopped meanwhile, the deletion still runs to its end before the mark
            # ends: it goes on anyway, and would remove bytes a push published after
            failed = await to_the_end(
                self.registry.blobs.delete_bytes([Digest.parse(row.digest)]))
            if failed:
                raise next(iter(failed.values()))
        finally:
            await integrity.end_mark(row.digest)
        return "marked corrupt (clients get BLOB_UNKNOWN until it is pushed again)"

    # --- uploads -------------------------------------------------------------------

    async def _uploads(self, report: FsckReport) -> None:
        uploads, integrity = self.registry.uploads, self.registry.integrity
        stored = await uploads.stored_sessions()  # bytes before rows
        rows = await integrity.upload_rows()
        report.uploads = len(rows)
        owned = {r.id for r in rows}
        for session_id in sorted(stored - owned):
            finding = report.add("orphan_upload", session_id)
            if self.repair:
                await uploads.delete_bytes(session_id)
                finding.repair = "removed"
        cutoff = time.time() - self.grace
        # rows written after the listing have no bytes in it yet: look again
        for row in rows:
            if row.id in stored or not await uploads.bytes_lost(row.id, row.offset):
                continue
            finding = report.add("dead_upload", row.id, f"in {row.repository}")
            if (self.repair and row.updated_at < cutoff and not row.held
                    and await integrity.delete_dead_upload(row.id, cutoff)):
                finding.repair = "session removed (its client gets BLOB_UPLOAD_UNKNOWN)"
