"""Adopting a CNCF Distribution registry: its storage tree becomes Dockyard's content.

For each repository of the tree: the blobs its `_layers` links name are made this
store's (already in place, hard-linked, or copied and verified: `BlobStore.adopt`),
then every revision is read, checked against its digest and parsed by the code a push
uses (`prepare_manifest`), and manifests whose references the repository holds are
recorded, children before the indexes naming them, with the tags pointing at them, in
one transaction (`metadata/adoption.py`). Bytes are adopted before the rows that make
them visible, and every write is an upsert: an interrupted import run again completes
without duplicating anything.

What Distribution's tree holds but cannot serve is reported, not imported: tags whose
revision is gone, revisions whose data is gone or does not parse, manifests whose blobs
are gone (a garbage collection that removed data but not links), layer links without
data, and blob data no repository references (a collection that never ran).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from dockyard.core.manifests import prepare_manifest
from dockyard.metadata.adoption import AdoptionStore
from dockyard.metadata.records import NewManifest
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError
from dockyard.storage import layout
from dockyard.storage.blobstore import AdoptionRefused, BlobStore, DigestMismatch
from dockyard.storage.distribution import DistributionRepository, DistributionTree

__all__ = ["DISTRIBUTION_ROOT", "KINDS", "AdoptionRefused", "DistributionTree",
           "ImportReport", "Importer"]

#: where Distribution keeps its tree under its `rootdirectory` (what an import reads)
DISTRIBUTION_ROOT = layout.DISTRIBUTION_ROOT

#: repositories read and adopted at once (their metadata writes are serial anyway)
CONCURRENCY = 8
MANIFESTS_KEPT = 4096
"""Parsed manifests kept for the repositories that share them (their bytes included):
a bound, not the whole tree's manifests, which a large registry holds by the million."""

#: the kinds of inconsistency an import reports, and what each means
KINDS = {
    "tag_unreadable": "tag link that names no digest",
    "tag_without_revision": "tag pointing at a manifest the repository does not hold",
    "tag_of_skipped_manifest": "tag pointing at a manifest not imported (see its entry)",
    "revision_without_data": "manifest revision whose data is gone",
    "revision_digest_mismatch": "manifest data that does not hash to its digest",
    "manifest_invalid": "manifest a push would refuse (schema 1, malformed)",
    "manifest_missing_blobs": "manifest referencing blobs the repository lacks",
    "manifest_missing_children": "index referencing manifests not imported",
    "layer_without_data": "layer link whose blob data is gone (left by a garbage collection)",
    "blob_corrupt": "blob data that does not hash to its digest (--copy)",
    "unreferenced_blob": "blob data no repository links (a collection never ran)",
}


@dataclass
class Inconsistency:
    kind: str
    repository: str
    subject: str
    detail: str = ""


@dataclass
class ImportReport:
    copy: bool
    started_at: float
    duration: float = 0.0
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    #: manifests no tag reaches: Dockyard's collector removes them after `gc.grace`
    untagged: int = 0
    blobs: int = 0
    bytes: int = 0
    #: how blobs came: already in place, hard-linked, copied
    present: int = 0
    linked: int = 0
    copied: int = 0
    #: bytes in the data directory nothing uses (in place: manifests' own data, blobs
    #: Distribution's collection left), given rows for the collector to remove
    handed_to_collector: int = 0
    inconsistencies: list[Inconsistency] = field(default_factory=list)

    def add(self, kind: str, repository: str, subject: str, detail: str = "") -> None:
        self.inconsistencies.append(Inconsistency(kind, repository, subject, detail))

    def to_json(self) -> dict[str, object]:
        return asdict(self)


Progress = Callable[[int, int, ImportReport], None]
"""Called with (repositories done, repositories in the tree, the report so far)."""


class Importer:
    """One import of a Distribution tree into a registry's stores."""

    def __init__(self, store: AdoptionStore, blobstore: BlobStore, tree: DistributionTree,
                 *, copy: bool, max_manifest_size: int,
                 progress: Progress | None = None) -> None:
        self.store = store
        self.blobstore = blobstore
        self.tree = tree
        self.copy = copy
        self.max_manifest_size = max_manifest_size
        self.progress = progress
        # shared by every repository: each blob is looked at and adopted once
        self._sizes: dict[str, int | None] = {}
        self._adopted: dict[str, str | None] = {}
        self._blob_locks: dict[str, asyncio.Lock] = {}
        self._manifests: OrderedDict[str, NewManifest | tuple[str, str]] = OrderedDict()
        self._seen: set[str] = set()  # every revision read, for the unreferenced blobs

    async def run(self) -> ImportReport:
        report = ImportReport(self.copy, time.time())
        repos = await self.tree.repositories()
        limit = asyncio.Semaphore(CONCURRENCY)
        done = 0

        async def one(repo: DistributionRepository) -> None:
            nonlocal done
            async with limit:
                await self._repository(repo, report)
            done += 1
            if self.progress is not None:
                self.progress(done, len(repos), report)

        await asyncio.gather(*(one(r) for r in repos))
        referenced = set(self._sizes) | self._seen
        unused: list[tuple[str, int]] = []
        async for digest in self.tree.blobs():
            if self._adopted.get(digest) is not None:
                continue
            if digest not in referenced:
                size = await self.tree.blob_size(digest)
                report.add("unreferenced_blob", "", digest, f"{size} bytes")
            # in place, a manifest's own data and leftovers are in the data directory
            here = await self.blobstore.size(Digest.parse(digest))
            if here is not None:
                unused.append((digest, here))
        if unused:
            report.handed_to_collector = await self.store.hand_to_collector(unused)
        report.blobs = sum(1 for how in self._adopted.values() if how is not None)
        report.bytes = sum(self._sizes[d] or 0 for d, how in self._adopted.items()
                           if how is not None)
        report.inconsistencies.sort(key=lambda i: (i.kind, i.repository, i.subject))
        report.duration = time.time() - report.started_at
        return report

    async def _size(self, digest: str) -> int | None:
        if digest not in self._sizes:
            self._sizes[digest] = await self.tree.blob_size(digest)
        return self._sizes[digest]

    async def _adopt(self, digest: str, report: ImportReport, repo: str) -> bool:
        """Make the blob this store's (once for the whole import); whether it is."""
        lock = self._blob_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if digest not in self._adopted:
                try:
                    how: str | None = await self.blobstore.adopt(
                        self.tree.driver, Digest.parse(digest), copy=self.copy)
                except FileNotFoundError:
                    how = None  # gone since it was looked at
                except DigestMismatch as exc:
                    report.add("blob_corrupt", repo, digest, str(exc))
                    how = None
                self._adopted[digest] = how
                if how is not None:
                    setattr(report, how, getattr(report, how) + 1)
            return self._adopted[digest] is not None

    async def _manifest(self, digest: str) -> NewManifest | tuple[str, str]:
        """The revision parsed as a push would, or (inconsistency kind, detail)."""
        found = self._manifests.get(digest)
        if found is not None:
            self._manifests.move_to_end(digest)
            return found
        found = self._manifests[digest] = await self._read_manifest(digest)
        self._seen.add(digest)
        if len(self._manifests) > MANIFESTS_KEPT:
            self._manifests.popitem(last=False)
        return found

    async def _read_manifest(self, digest: str) -> NewManifest | tuple[str, str]:
        payload = await self.tree.read_blob(digest, self.max_manifest_size)
        if payload is None:
            return "revision_without_data", ""
        if len(payload) > self.max_manifest_size:
            return "manifest_invalid", (f"{len(payload)} bytes: over "
                                        "limits.manifest_max_size")
        wanted = Digest.parse(digest)
        actual = Digest.of(payload, wanted.algorithm)
        if actual != wanted:
            return "revision_digest_mismatch", f"its data hashes to {actual}"
        try:
            return prepare_manifest(payload, None, wanted)
        except RegistryError as exc:
            return "manifest_invalid", exc.message

    async def _repository(self, repo: DistributionRepository, report: ImportReport) -> None:
        name = repo.name
        layers: list[tuple[str, int]] = []
        adoptable = []
        for digest in sorted(repo.layers):
            size = await self._size(digest)
            if size is None:
                report.add("layer_without_data", name, digest)
            else:
                adoptable.append((digest, size))
        adopted = await asyncio.gather(*(self._adopt(d, report, name) for d, _ in adoptable))
        layers = [entry for entry, ok in zip(adoptable, adopted, strict=True) if ok]
        usable = {d for d, _ in layers}
        parsed: dict[str, NewManifest] = {}
        for digest in sorted(repo.revisions):
            found = await self._manifest(digest)
            if isinstance(found, NewManifest):
                parsed[digest] = found
            else:
                report.add(found[0], name, digest, found[1])
        ordered: list[NewManifest] = []
        state: dict[str, bool] = {}

        def enter(digest: str) -> NewManifest | None:
            """Start on `digest` (undecided meanwhile: a cycle imports nothing); None
            when it is decided at once, not importable."""
            state[digest] = False
            new = parsed.get(digest)
            if new is None:
                return None
            missing = [d for d in new.blob_digests if d not in usable]
            if missing:
                report.add("manifest_missing_blobs", name, digest, ", ".join(missing))
                return None
            return new

        def visit(root: str) -> None:
            """Decide whether `root` and each manifest below it can be imported, children
            ordered first: with a stack of its own, not recursion, for a chain of
            thousands of nested indexes (which a recursion could not import at all)."""
            if root in state or (top := enter(root)) is None:
                return
            frames: list[tuple[str, NewManifest, Iterator[str], list[str]]] = [
                (root, top, iter(top.child_digests), [])]
            while frames:
                digest, new, children, lacking = frames[-1]
                child = next(children, None)
                if child is not None:
                    if child not in state and (below := enter(child)) is not None:
                        frames.append((child, below, iter(below.child_digests), []))
                    elif not state[child]:
                        lacking.append(child)
                    continue
                frames.pop()
                if lacking:
                    report.add("manifest_missing_children", name, digest, ", ".join(lacking))
                else:
                    state[digest] = True
                    ordered.append(new)
                if frames and not state[digest]:
                    frames[-1][3].append(digest)

        for digest in sorted(parsed):
            visit(digest)
        tags = []
        for tag, target in sorted(repo.tags.items()):
            if target is None:
                report.add("tag_unreadable", name, tag)
            elif target not in repo.revisions:
                report.add("tag_without_revision", name, tag, target)
            elif not state.get(target):
                report.add("tag_of_skipped_manifest", name, tag, target)
            else:
                tags.append((tag, target))
        if not (layers or ordered):
            return
        await self.store.import_repository(name, layers, ordered, tags)
        report.repositories += 1
        report.tags += len(tags)
        report.manifests += len(ordered)
        reached = set()
        stack = [t for _, t in tags]
        children = {m.digest: m.child_digests for m in ordered}
        while stack:
            d = stack.pop()
            if d not in reached:
                reached.add(d)
                stack.extend(children.get(d, ()))
        report.untagged += len(ordered) - len(reached)
