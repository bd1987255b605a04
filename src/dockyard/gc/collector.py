"""Online garbage collection: frees manifests and blobs nothing uses, while pushes go on.

A collection plans from a snapshot of the metadata, then executes every deletion as its
own transaction that re-checks, under a row lock, that the item is still unused and
older than the grace period (`metadata/lifecycle.py`). What a push touches — a blob it
uploads, mounts or checks with HEAD, a manifest it pushes — is newer than the grace
period and so survives, even if the push started before the collection and ends after.

Order: dead manifests (indexes before their children, subjects before referrers), then
blob links no remaining manifest of the repository references, then blobs no
repository links, whose bytes are deleted under a tombstone that makes a concurrent
upload of the same digest wait. Each blob's row goes in its own re-checking
transaction; their bytes go in batches (`Driver.delete_many`: one DeleteObjects call
per 1000 blobs on S3), each tombstone ended after its batch.

A step that fails (a full disk, a database error) is logged and counted in the report,
and the collection goes on with the next one: whatever it can free, it frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from dockyard.core.lifecycle import TOMBSTONE_TIMEOUT, CollectionRecord, ManifestNode
from dockyard.core.registry import Registry
from dockyard.globs import glob_matches
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError
from dockyard.settle import to_the_end

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ERRORS = 20
"""Failed steps whose message a report keeps (all are counted)."""
BATCH = 1000
"""Blobs whose bytes one batch deletes (one DeleteObjects call on S3)."""
BATCH_AGE = 10.0
"""Seconds a batch may gather before its bytes are deleted (see `_Batch`)."""
PAGE = 10_000
"""Unlinked blobs read from the metadata store at once (`_unlinked`)."""


@dataclass
class RepositoryReport:
    """What one collection removed (or would remove) from one repository."""

    name: str
    manifests: int = 0
    blobs: int = 0
    bytes_freed: int = 0


@dataclass
class Report:
    dry_run: bool
    grace_seconds: float
    started_at: float
    duration: float = 0.0
    repositories: dict[str, RepositoryReport] = field(default_factory=dict)
    blobs_deleted: int = 0
    bytes_freed: int = 0
    uploads_purged: int = 0
    #: steps that failed and were skipped; the first messages
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def repo(self, name: str) -> RepositoryReport:
        return self.repositories.setdefault(name, RepositoryReport(name))

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["repositories"] = [asdict(r) for r in self.repositories.values()
                                if r.manifests or r.blobs or r.bytes_freed]
        return data


def live_manifests(nodes: list[ManifestNode], cutoff: float, *, keep_referrers: bool
                   ) -> set[int]:
    """Ids kept alive: tagged or young, children of live indexes, referrers of live ones.

    With `keep_referrers`, a referrer is kept even when its subject is gone.
    """
    by_digest = {n.digest: n for n in nodes}
    referrers: dict[str, list[ManifestNode]] = {}
    for n in nodes:
        if n.subject is not None:
            referrers.setdefault(n.subject, []).append(n)
    stack = [n for n in nodes if n.tagged or n.touched_at >= cutoff
             or (keep_referrers and n.subject is not None)]
    live = {n.id for n in stack}
    while stack:
        node = stack.pop()
        followers = [by_digest[c] for c in node.children if c in by_digest]
        followers += referrers.get(node.digest, [])
        for f in followers:
            if f.id not in live:
                live.add(f.id)
                stack.append(f)
    return live


def deletion_order(dead: list[ManifestNode]) -> list[ManifestNode]:
    """`dead` with every index before its children and every subject before its
    referrers: a manifest is deleted only once nothing keeps it, so in the graph's own
    order a chain of N signatures took N passes over what was left (N² transactions)."""
    by_digest = {n.digest: n for n in dead}
    keepers: dict[int, int] = {n.id: 0 for n in dead}  # dead manifests keeping each one
    follows: dict[int, list[ManifestNode]] = {}
    for n in dead:
        kept = [by_digest[c] for c in set(n.children) if c in by_digest]
        for child in kept:
            keepers[child.id] += 1
            follows.setdefault(n.id, []).append(child)
    for n in dead:
        subject = by_digest.get(n.subject) if n.subject is not None else None
        if subject is not None:
            keepers[n.id] += 1
            follows.setdefault(subject.id, []).append(n)
    ready = [n for n in reversed(dead) if keepers[n.id] == 0]
    order: list[ManifestNode] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for f in follows.get(node.id, ()):
            keepers[f.id] -= 1
            if keepers[f.id] == 0:
                ready.append(f)
    placed = {n.id for n in order}
    return order + [n for n in dead if n.id not in placed]  # a cycle: the retries decide


class Collector:
    """Runs collections over a registry's stores."""

    def __init__(self, registry: Registry, *, grace: float, keep_referrers: bool = False,
                 upload_expiry: float | None = None,
                 keep_untagged: Callable[[str], bool] = lambda _name: False) -> None:
        self.registry = registry
        self.lifecycle = registry.lifecycle
        self.grace = grace
        self.keep_referrers = keep_referrers
        self.upload_expiry = upload_expiry
        self.keep_untagged = keep_untagged
        self._report = Report(False, grace, 0.0)  # the running collection's

    @property
    def errors(self) -> list[str]:
        """The failed steps of the last collection or `remove_unlinked` (the first
        `MAX_ERRORS`), each naming what it was about."""
        return list(self._report.errors)

    async def run(self, *, dry_run: bool = False, repository: str | None = None,
                  failed_before: Sequence[str] = ()) -> Report:
        """One collection; with `repository`, only repositories matching that glob.
        `failed_before`: steps of the same run that failed before it (the pull-time
        flush, retention), counted in its report and its recorded row."""
        started = time.time()
        cutoff = started - self.grace
        report = Report(dry_run, self.grace, started)
        report.failed = len(failed_before)
        report.errors.extend(list(failed_before)[:MAX_ERRORS])
        # digest -> (repository that dropped a link to it, size): bytes are credited there
        last_links: dict[str, tuple[str, int]] = {}
        dropping: Counter[str] = Counter()  # dry run: links planned to go, per digest
        self._report = report
        for repo_id, name in await self.lifecycle.repositories():
            if repository is not None and not glob_matches(name, repository):
                continue
            await self._step(f"collecting {name}", self._repository(
                repo_id, name, cutoff, dry_run, report, last_links, dropping))
        if dry_run:
            counts = await self.lifecycle.link_counts(list(last_links))
            going = [(d, n, size) for d, (n, size) in last_links.items()
                     if counts.get(d, 0) <= dropping[d]]
            for _digest, name, size in going:
                report.blobs_deleted += 1
                report.bytes_freed += size
                report.repo(name).bytes_freed += size
            async for digest, size in self._unlinked(cutoff):
                report.blobs_deleted += 1
                report.bytes_freed += size
                if (deleted := await self.lifecycle.deleted_owner(digest)) is not None:
                    entry = report.repo(deleted)
                    entry.blobs += 1
                    entry.bytes_freed += size
        else:
            await self._step("finishing stopped deletions", self._unfinished_deletions())
            await self._step("collecting blobs", self._blobs(cutoff, report, last_links))
            if self.upload_expiry is not None:
                purged = await self._step("purging idle uploads",
                                          self.registry.uploads.purge(self.upload_expiry))
                report.uploads_purged = purged or 0
        report.duration = time.time() - started
        if not dry_run:
            await self._step("recording the collection", self._record(report))
        return report

    async def _record(self, report: Report) -> None:
        """Remember what this collection freed and what stays stored (the operations
        page's last collections and storage trend)."""
        stored_blobs, stored_bytes = await self.lifecycle.total_bytes()
        await self.lifecycle.record_collection(CollectionRecord(
            report.started_at, report.duration,
            sum(r.manifests for r in report.repositories.values()),
            report.blobs_deleted, report.bytes_freed, stored_blobs, stored_bytes,
            report.failed))

    async def _step(self, what: str, action: Awaitable[T]) -> T | None:
        """Run one step; if it fails, log and count it and return None (go on)."""
        try:
            return await action
        except Exception as exc:
            report = self._report
            report.failed += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(f"{what}: {exc}")
            if isinstance(exc, RegistryError):
                log.warning("gc: %s failed: %s", what, exc)
            else:
                log.exception("gc: %s failed", what)
            return None

    async def _repository(self, repo_id: int, name: str, cutoff: float, dry_run: bool,
                          report: Report, last_links: dict[str, tuple[str, int]],
                          dropping: Counter[str]) -> None:
        nodes = await self.lifecycle.manifest_graph(repo_id)
        if self.keep_untagged(name):  # a retention rule keeps untagged manifests here
            live = {n.id for n in nodes}
        else:
            live = live_manifests(nodes, cutoff, keep_referrers=self.keep_referrers)
        dead = [n for n in nodes if n.id not in live]
        entry = report.repo(name)
        if dry_run:
            entry.manifests = len(dead)
            refs = await self.lifecycle.manifest_blob_refs(repo_id)
            used = {d for m, d in refs if m in live}
            for digest, size, linked_at, touched_at in await self.lifecycle.links(repo_id):
                if digest not in used and linked_at < cutoff and touched_at < cutoff:
                    entry.blobs += 1
                    last_links[digest] = (name, size)
                    dropping[digest] += 1
            return
        remaining = deletion_order(dead)
        while remaining:  # in one pass but for races; retry what something kept alive
            kept = []
            for node in remaining:
                if await self._step(f"deleting manifest {node.digest} of {name}",
                                    self.lifecycle.delete_dead_manifest(
                                        repo_id, node.id, cutoff,
                                        keep_referrers=self.keep_referrers)):
                    entry.manifests += 1
                else:
                    kept.append(node)
            if len(kept) == len(remaining):
                break
            remaining = kept
        for digest, size in await self.lifecycle.dangling_links(repo_id, cutoff):
            if await self._step(f"unlinking {digest} from {name}",
                                self.lifecycle.delete_dangling_link(repo_id, digest, cutoff)):
                entry.blobs += 1
                last_links[digest] = (name, size)
        await self._step(f"dropping the empty repository {name}",
                         self.lifecycle.delete_empty_repository(repo_id))

    async def _unlinked(self, cutoff: float) -> AsyncIterator[tuple[str, int]]:
        """The blobs nothing links, older than `cutoff`, read `PAGE` at a time: after a
        large deletion there may be millions (digest order; a page is read after the
        one before was dealt with)."""
        after: str | None = None
        while True:
            page = await self.lifecycle.unlinked_blobs(cutoff, after=after, limit=PAGE)
            for found in page:
                yield found
            if len(page) < PAGE:
                return
            after = page[-1][0]

    async def _unfinished_deletions(self) -> None:
        """Finish what a collector that died mid-deletion left: the row is gone, the
        bytes may not be; without this they would stay on disk with nothing to find them."""
        older_than = time.time() - TOMBSTONE_TIMEOUT
        async with self._batch() as batch:
            for digest in await self.lifecycle.stale_tombstones(older_than):
                if await self._step(f"taking over the deletion of {digest}",
                                    self.lifecycle.resume_blob_deletion(digest, older_than)):
                    batch.add(digest, 0)
                if batch.due():
                    self._finished(await self._delete_bytes(batch.take()))
            self._finished(await self._delete_bytes(batch.take()))

    @staticmethod
    def _finished(done: list[tuple[str, int]]) -> None:
        for digest, _ in done:
            log.info("finished the deletion of %s that a stopped collector began", digest)

    async def _delete_bytes(self, batch: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Delete tombstoned blobs' bytes as one batch, then each one's tombstone; the
        tombstone of bytes that could not go is aged instead (uploads of the digest stop
        waiting, the next collection takes the deletion over: its row is gone, so
        nothing else would ever find those bytes); each failure is a failed step.
        Returns the (digest, size) whose bytes and tombstone are gone. A tombstone that
        cannot be ended stays for a later collection to take over.

        Stopped meanwhile (the server stopping, ^C, SIGTERM, the lease lost), it lets
        the deletion run to its end, ages the tombstones and stops: the deletion goes
        on anyway (a thread unlinking, a request already sent), so a tombstone ended
        before it is over let an upload of that digest publish bytes the deletion then
        removed; aged, they let uploads through, and the next collection ends them.
        """
        if not batch:
            return []
        digests = [Digest.parse(digest) for digest, _ in batch]
        refused: dict[str, Exception] = {}
        try:
            failed = await to_the_end(self.registry.blobs.delete_bytes(digests))
            refused = {str(digest): exc for digest, exc in failed.items()}
        except asyncio.CancelledError:
            await self._age(batch)
            raise
        except Exception as exc:  # no outcome per blob: take it that none went
            refused = dict.fromkeys((digest for digest, _ in batch), exc)
        done: list[tuple[str, int]] = []
        for digest, size in batch:
            if await self._step(f"deleting {digest}",
                                self._end_deletion(digest, refused.get(digest))):
                done.append((digest, size))
        return done

    @contextlib.asynccontextmanager
    async def _batch(self) -> AsyncIterator[_Batch]:
        """A batch of tombstoned blobs whose bytes are to go. Stopped or failed before
        they went, their tombstones are aged, as after a refused deletion: an upload of
        one of those digests goes on at once instead of waiting out `TOMBSTONE_TIMEOUT`,
        and the next collection takes the deletions over. No deletion of theirs is in
        flight: `take` empties the batch before its bytes are asked to go."""
        batch = _Batch()
        try:
            yield batch
        except BaseException:
            await self._age(batch.take())
            raise

    async def _age(self, batch: list[tuple[str, int]]) -> None:
        """Age the tombstones of `batch` past `TOMBSTONE_TIMEOUT` (uploads of those
        digests go on, the next collection takes the deletions over), to its end even if
        stopped again; a store that fails here leaves them to time out as a dead
        collector's."""
        if batch:
            with contextlib.suppress(Exception):
                await to_the_end(self.lifecycle.defer_blob_deletions(
                    [digest for digest, _ in batch]))

    async def _end_deletion(self, digest: str, error: Exception | None) -> bool:
        """Drop `digest`'s tombstone; when its bytes did not go, age it and raise
        `error` (why)."""
        if error is not None:
            await self.lifecycle.defer_blob_deletion(digest)
            raise error
        await self.lifecycle.end_blob_deletion(digest)
        return True

    async def remove_unlinked(self, digests: list[str]) -> list[tuple[str, int]]:
        """Remove these blobs the way a collection does, where still unlinked and older
        than the grace: row first under a tombstone, then bytes. (digest, size) of
        those removed (fsck hands it the orphan bytes it gave rows)."""
        cutoff = time.time() - self.grace
        removed: list[tuple[str, int]] = []
        async with self._batch() as batch:
            for digest in digests:
                size = await self._step(f"deleting the row of {digest}",
                                        self.lifecycle.begin_blob_deletion(digest, cutoff))
                if size is not None:
                    batch.add(digest, size)
                if batch.due():
                    removed += await self._delete_bytes(batch.take())
            return removed + await self._delete_bytes(batch.take())

    async def _blobs(self, cutoff: float, report: Report,
                     last_links: dict[str, tuple[str, int]]) -> None:
        """Delete unlinked blobs: each row under a tombstone, re-checked in its own
        transaction; then their bytes, `BATCH` at a time (`_Batch`)."""
        async with self._batch() as batch:
            async for digest, _size in self._unlinked(cutoff):
                size = await self._step(f"deleting the row of {digest}",
                                        self.lifecycle.begin_blob_deletion(digest, cutoff))
                if size is not None:
                    batch.add(digest, size)
                if batch.due():
                    await self._credit(await self._delete_bytes(batch.take()), report,
                                       last_links)
            await self._credit(await self._delete_bytes(batch.take()), report, last_links)
        await self._step("forgetting deleted links",
                         self.lifecycle.forget_deleted_links(cutoff))

    async def _credit(self, freed: list[tuple[str, int]], report: Report,
                      last_links: dict[str, tuple[str, int]]) -> None:
        """Count freed blobs in the report, each for the repository that last held it."""
        for digest, size in freed:
            report.blobs_deleted += 1
            report.bytes_freed += size
            owner = last_links.get(digest)
            if owner is not None:
                report.repo(owner[0]).bytes_freed += size
            elif (deleted := await self.lifecycle.deleted_owner(digest)) is not None:
                entry = report.repo(deleted)  # a deleted repository's blobs
                entry.blobs += 1
                entry.bytes_freed += size


class _Batch:
    """Tombstoned blobs whose bytes are deleted together.

    A tombstone makes an upload of its digest wait, and one older than
    `TOMBSTONE_TIMEOUT` is taken for a dead collector's and let through: so a batch is
    deleted once it holds `BATCH` blobs or its first tombstone is `BATCH_AGE` old,
    whichever comes first, far within that timeout.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, int]] = []
        self.since = 0.0

    def add(self, digest: str, size: int) -> None:
        if not self.items:
            self.since = time.monotonic()
        self.items.append((digest, size))

    def due(self) -> bool:
        return len(self.items) >= BATCH or (
            bool(self.items) and time.monotonic() - self.since >= BATCH_AGE)

    def take(self) -> list[tuple[str, int]]:
        items, self.items = self.items, []
        return items
