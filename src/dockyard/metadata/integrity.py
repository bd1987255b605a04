"""Metadata reads and writes of the integrity check (`dockyard fsck`, the scrub job).

The reads are bulk snapshots (one query each), so a check of a large registry costs a
few queries, not one per blob. The writes re-check in their own transaction what the
snapshot said, as the collector's do: fsck runs beside a live server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import (
    blob_deletions,
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_blobs,
    uploads,
)
from dockyard.metadata.store import TOMBSTONE_TIMEOUT, MetadataStore
from dockyard.oci.digest import ALGORITHMS


@dataclass(frozen=True, slots=True)
class BlobRow:
    """A blob as the metadata records it."""

    digest: str
    size: int
    touched_at: float
    #: when fsck marked it corrupt (its bytes were removed), or None
    corrupt_at: float | None


@dataclass(frozen=True, slots=True)
class BrokenManifest:
    """A manifest some of whose references its repository cannot serve."""

    repository: str
    digest: str
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str
    repository: str
    updated_at: float
    held: bool
    offset: int = 0


class IntegrityStore:
    """Snapshots for fsck and its re-checking repairs, over `MetadataStore`'s engines."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.engines = store.engines

    async def blob_rows(self, hex_range: tuple[str, str | None] | None = None
                        ) -> list[BlobRow]:
        """Every blob row; with `hex_range` (from, before), only those whose digest's hex
        lies in it, for each algorithm (a byte-wise range on the digest, in the database)."""
        stmt = select(blobs.c.digest, blobs.c.size, blobs.c.touched_at, blobs.c.corrupt_at)
        if hex_range is not None:
            lo, hi = hex_range
            digest = self.store._sorted(blobs.c.digest)
            ranges = []
            for algorithm in ALGORITHMS:  # ";" follows ":": past every hex
                bound = digest >= f"{algorithm}:{lo}"
                ranges.append(and_(bound, digest < (f"{algorithm}:{hi}" if hi is not None
                                                    else f"{algorithm};")))
            stmt = stmt.where(or_(*ranges))
        rows = await self.store._read(stmt)
        return [BlobRow(r[0], int(r[1]), r[2], r[3]) for r in rows]

    async def tombstones(self) -> set[str]:
        """Digests the collector is deleting now (their bytes may still be there)."""
        return {r[0] for r in await self.store._read(select(blob_deletions.c.digest))}

    async def broken_manifests(self, unusable: Sequence[str] = (),
                               lazy: Callable[[str], bool] = lambda _name: False,
                               ) -> list[BrokenManifest]:
        """Manifests referencing a blob their repository does not link (or whose row is
        gone), one of `unusable` (bytes missing or corrupt), or a child manifest absent
        from their repository. In a repository `lazy` names (a pull-through cache's),
        blobs and children arrive when first pulled: only `unusable` ones count."""
        bad = set(unusable)
        missing: dict[tuple[str, str], set[str]] = {}
        link = exists().where(and_(repository_blobs.c.repository_id == manifests.c.repository_id,
                                   repository_blobs.c.digest == manifest_blobs.c.digest))
        row = exists().where(blobs.c.digest == manifest_blobs.c.digest)
        refs: Sequence[Any] = await self.store._read(
            select(repositories.c.name, manifests.c.digest, manifest_blobs.c.digest,
                   link, row)
            .select_from(manifest_blobs.join(manifests).join(repositories)))
        for name, digest, blob, linked, has_row in refs:
            if blob in bad or (not (linked and has_row) and not lazy(name)):
                missing.setdefault((name, digest), set()).add(blob)
        child = manifests.alias("child")
        present = exists().where(and_(child.c.repository_id == manifests.c.repository_id,
                                      child.c.digest == manifest_children.c.child_digest))
        for name, digest, child_digest in await self.store._read(
                select(repositories.c.name, manifests.c.digest, manifest_children.c.child_digest)
                .select_from(manifest_children.join(manifests).join(repositories))
                .where(~present)):
            if not lazy(name):
                missing.setdefault((name, digest), set()).add(child_digest)
        return [BrokenManifest(n, d, tuple(sorted(m))) for (n, d), m in sorted(missing.items())]

    async def dangling_links(self) -> dict[str, list[str]]:
        """Digest -> repositories linking it, for links whose blob row is gone (a
        database restored from an older backup, foreign keys off)."""
        rows = await self.store._read(
            select(repository_blobs.c.digest, repositories.c.name)
            .select_from(repository_blobs.join(repositories))
            .where(~exists().where(blobs.c.digest == repository_blobs.c.digest)))
        out: dict[str, list[str]] = {}
        for digest, name in rows:
            out.setdefault(digest, []).append(name)
        return out

    async def drop_dangling_links(self, digest: str) -> int:
        """Remove every link to `digest` if it still has no blob row; links removed."""

        def body(conn: Connection) -> int:
            if conn.scalar(select(exists().where(blobs.c.digest == digest))):
                return 0
            return int(conn.execute(delete(repository_blobs)
                                    .where(repository_blobs.c.digest == digest)).rowcount)

        return await self.engines.transaction(body)

    async def upload_rows(self) -> list[UploadRow]:
        now = time.time()
        rows = await self.store._read(select(uploads.c.id, uploads.c.repository,
                                             uploads.c.updated_at, uploads.c.holder,
                                             uploads.c.held_until, uploads.c.offset))
        return [UploadRow(r[0], r[1], r[2], r[3] is not None and (r[4] or 0) >= now, r[5])
                for r in rows]

    # --- repairs -------------------------------------------------------------------

    async def fix_size(self, digest: str, recorded: int, size: int) -> bool:
        """Set the blob's recorded size to `size` (its bytes were verified) if it is
        still `recorded`."""
        stmt = (update(blobs).where(blobs.c.digest == digest, blobs.c.size == recorded)
                .values(size=size))
        return await self.engines.transaction(lambda conn: bool(conn.execute(stmt).rowcount))

    async def begin_mark(self, digest: str) -> bool:
        """Mark the blob corrupt and tombstone it, so its bytes can be removed while an
        upload of the same digest waits (`claim_blob`); False when there is no row or
        the collector is deleting it now. The caller removes the bytes, then calls
        `end_mark`. A push that publishes the digest afterwards clears the mark."""

        def body(conn: Connection) -> bool:
            now = time.time()
            started = conn.scalar(select(blob_deletions.c.started_at)
                                  .where(blob_deletions.c.digest == digest))
            if started is not None and started > now - TOMBSTONE_TIMEOUT:
                return False
            found = conn.execute(update(blobs).where(blobs.c.digest == digest)
                                 .values(corrupt_at=now)).rowcount
            if not found:
                return False
            conn.execute(delete(blob_deletions).where(blob_deletions.c.digest == digest))
            conn.execute(insert(blob_deletions).values(digest=digest, started_at=now))
            return True

        return await self.engines.transaction(body)

    async def end_mark(self, digest: str) -> None:
        stmt = delete(blob_deletions).where(blob_deletions.c.digest == digest)
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def adopt_orphan(self, digest: str, size: int) -> bool:
        """Give stored bytes no row knows a row of their own, touched now: unlinked
        bytes then go to the collector, which removes them once `gc.grace` has passed
        (with its usual re-checks); linked ones (a dangling link) are served again.
        False when a row appeared meanwhile or the collector is deleting the digest
        (its bytes go anyway)."""

        def body(conn: Connection) -> bool:
            if conn.scalar(select(exists().where(blobs.c.digest == digest))):
                return False
            if conn.scalar(select(exists().where(blob_deletions.c.digest == digest))):
                return False
            now = time.time()
            conn.execute(insert(blobs).values(digest=digest, size=size, created_at=now,
                                              touched_at=now))
            return True

        return await self.engines.transaction(body)

    async def delete_dead_upload(self, session_id: str, idle_since: float) -> bool:
        """Delete a session row whose bytes are gone, if idle since `idle_since` and held
        by no request (the purge's own re-check)."""
        return await self.store.delete_stale_upload(session_id, idle_since)
