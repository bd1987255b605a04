"""Metadata queries of the image lifecycle: repository deletion and garbage collection.

Every delete decision is re-checked inside the transaction that makes it, with the row
locked (`FOR UPDATE` on PostgreSQL; SQLite transactions are serial), and every write
that could make the item live again (manifest PUT, tag, mount, blob claim) takes a
shared lock on the same rows — so a collection running beside pushes never removes
something a push has just started to use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.engine import Connection

from dockyard.metadata import events as feed
from dockyard.metadata.events import Change
from dockyard.metadata.schema import (
    blob_deletions,
    blobs,
    collections,
    deleted_links,
    manifest_blobs,
    manifest_children,
    manifests,
    mirror_tags,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from dockyard.metadata.store import TOMBSTONE_TIMEOUT, MetadataStore

_IN_LIMIT = 500
"""Digests one `IN (...)` statement names (SQLite allows 999 bound values by default
before 3.32)."""


@dataclass(frozen=True, slots=True)
class ManifestNode:
    """One manifest of a repository as the collector sees it."""

    id: int
    digest: str
    #: last pushed
    touched_at: float
    tagged: bool
    subject: str | None
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RepositoryDeletion:
    name: str
    tags: int
    manifests: int
    blobs: int
    uploads: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage use of one repository, from metadata."""

    name: str
    manifests: int
    tags: int
    blobs: int
    bytes: int
    unique_bytes: int

    @property
    def shared_bytes(self) -> int:
        return self.bytes - self.unique_bytes


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    """A finished collection: what it removed, and what stayed stored after it."""

    started_at: float
    duration: float
    manifests_deleted: int
    blobs_deleted: int
    bytes_freed: int
    stored_blobs: int
    stored_bytes: int
    failed: int


#: how long finished collections are remembered
COLLECTIONS_KEPT = 90 * 86400.0


class LifecycleStore:
    """Deletion and collection queries over the same engines as `MetadataStore`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.engines = store.engines

    async def repositories(self) -> list[tuple[int, str]]:
        rows = await self.store._read(
            select(repositories.c.id, repositories.c.name).order_by(repositories.c.name))
        return [(r[0], r[1]) for r in rows]

    # --- deletes -----------------------------------------------------------------

    async def delete_repository(self, name: str) -> RepositoryDeletion | None:
        """Remove a repository, its tags, manifests, links, upload sessions and mirror
        origins at once.

        Bytes are left to the collector. Returns what went, or None if unknown.
        """

        def body(conn: Connection) -> RepositoryDeletion | None:
            repo_id = conn.scalar(select(repositories.c.id).where(repositories.c.name == name)
                                  .with_for_update())
            if repo_id is None:
                return None
            manifest_ids = select(manifests.c.id).where(manifests.c.repository_id == repo_id)
            n_tags = conn.execute(delete(tags).where(tags.c.repository_id == repo_id)).rowcount
            conn.execute(delete(manifest_blobs).where(manifest_blobs.c.manifest_id.in_(
                manifest_ids)))
            conn.execute(delete(manifest_children).where(manifest_children.c.manifest_id.in_(
                manifest_ids)))
            n_manifests = conn.execute(
                delete(manifests).where(manifests.c.repository_id == repo_id)).rowcount
            record = self.store._upsert(deleted_links).from_select(
                ["repository", "digest", "deleted_at"],
                select(literal(name), repository_blobs.c.digest, literal(time.time()))
                .where(repository_blobs.c.repository_id == repo_id))
            conn.execute(record.on_conflict_do_update(
                index_elements=[deleted_links.c.repository, deleted_links.c.digest],
                set_={"deleted_at": record.excluded.deleted_at}))
            n_blobs = conn.execute(delete(repository_blobs).where(
                repository_blobs.c.repository_id == repo_id)).rowcount
            sessions = tuple(conn.execute(select(uploads.c.id).where(
                uploads.c.repository == name)).scalars())
            conn.execute(delete(uploads).where(uploads.c.repository == name))
            conn.execute(delete(mirror_tags).where(mirror_tags.c.repository == name))
            conn.execute(delete(repositories).where(repositories.c.id == repo_id))
            self.store.events.record(conn, [Change(feed.REPOSITORY_DELETED, name)],
                                     time.time())
            return RepositoryDeletion(name, n_tags, n_manifests, n_blobs, sessions)

        return await self.engines.transaction(body)

    # --- retention ---------------------------------------------------------------

    async def tags(self, repo_id: int) -> list[tuple[str, float, float | None]]:
        """(tag, pushed at, last pulled at) of every tag of the repository."""
        rows = await self.store._read(
            select(tags.c.name, tags.c.updated_at, tags.c.pulled_at)
            .where(tags.c.repository_id == repo_id))
        return [(r[0], r[1], r[2]) for r in rows]

    async def delete_tag_if_unchanged(self, repo_id: int, tag: str, pushed_at: float) -> bool:
        """Delete the tag unless it was pushed again since the plan was made."""
        stmt = delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag,
                                  tags.c.updated_at == pushed_at)

        def body(conn: Connection) -> bool:
            if not conn.execute(stmt).rowcount:
                return False
            self._record(conn, repo_id, Change(feed.TAG_DELETED, "", tag))
            return True

        return await self.engines.transaction(body)

    def _record(self, conn: Connection, repo_id: int, change: Change) -> None:
        """Record `change` for repository `repo_id` (its name read here)."""
        name = conn.scalar(select(repositories.c.name).where(repositories.c.id == repo_id))
        self.store.events.record(conn, [Change(change.kind, str(name), change.tag,
                                               change.digest)], time.time())

    # --- collection: manifests ---------------------------------------------------

    async def manifest_graph(self, repo_id: int) -> list[ManifestNode]:
        """Every manifest of the repository with what keeps it alive."""
        rows = await self.store._read(
            select(manifests.c.id, manifests.c.digest,
                   func.coalesce(manifests.c.touched_at, manifests.c.created_at),
                   exists().where(tags.c.manifest_id == manifests.c.id).label("tagged"),
                   manifests.c.subject_digest)
            .where(manifests.c.repository_id == repo_id))
        edges = await self.store._read(
            select(manifest_children.c.manifest_id, manifest_children.c.child_digest)
            .join(manifests, manifests.c.id == manifest_children.c.manifest_id)
            .where(manifests.c.repository_id == repo_id))
        children: dict[int, list[str]] = {}
        for parent, child in edges:
            children.setdefault(parent, []).append(child)
        return [ManifestNode(i, d, c, bool(t), s, tuple(children.get(i, ())))
                for i, d, c, t, s in rows]

    async def delete_dead_manifest(self, repo_id: int, manifest_id: int, cutoff: float,
                                   *, keep_referrers: bool = False) -> bool:
        """Delete the manifest if, checked again now, nothing keeps it alive.

        Alive: tagged, created after `cutoff`, a child of an index in the repository,
        or (unless its subject is gone) a referrer of a manifest in the repository.
        """

        def body(conn: Connection) -> bool:
            row = conn.execute(select(manifests.c.digest, manifests.c.created_at,
                                      manifests.c.touched_at, manifests.c.subject_digest)
                               .where(manifests.c.id == manifest_id).with_for_update()).first()
            if row is None or max(row.created_at, row.touched_at or 0.0) >= cutoff:
                return False
            if conn.scalar(select(exists().where(tags.c.manifest_id == manifest_id))):
                return False
            parent = select(manifest_children.c.manifest_id).join(
                manifests, manifests.c.id == manifest_children.c.manifest_id
            ).where(manifests.c.repository_id == repo_id,
                    manifest_children.c.child_digest == row.digest)
            if conn.scalar(select(exists(parent))):
                return False
            if row.subject_digest is not None:
                subject_alive = conn.scalar(select(exists().where(
                    manifests.c.repository_id == repo_id,
                    manifests.c.digest == row.subject_digest)))
                if subject_alive or keep_referrers:
                    return False
            for table in (manifest_blobs, manifest_children):
                conn.execute(delete(table).where(table.c.manifest_id == manifest_id))
            conn.execute(delete(manifests).where(manifests.c.id == manifest_id))
            self._record(conn, repo_id, Change(feed.MANIFEST_DELETED, "", digest=row.digest))
            return True

        return await self.engines.transaction(body)

    async def manifest_blob_refs(self, repo_id: int) -> list[tuple[int, str]]:
        """(manifest id, blob digest) for every blob reference in the repository."""
        rows = await self.store._read(
            select(manifest_blobs.c.manifest_id, manifest_blobs.c.digest)
            .join(manifests, manifests.c.id == manifest_blobs.c.manifest_id)
            .where(manifests.c.repository_id == repo_id))
        return [(r[0], r[1]) for r in rows]

    async def links(self, repo_id: int) -> list[tuple[str, int, float, float]]:
        """(digest, size, linked_at, touched_at) of every blob linked into the repository."""
        rows = await self.store._read(
            select(repository_blobs.c.digest, blobs.c.size, repository_blobs.c.linked_at,
                   blobs.c.touched_at)
            .join(blobs, blobs.c.digest == repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def link_counts(self, digests: Sequence[str]) -> dict[str, int]:
        """How many repositories link each digest."""
        out: dict[str, int] = {}
        for start in range(0, len(digests), _IN_LIMIT):
            rows = await self.store._read(
                select(repository_blobs.c.digest, func.count())
                .where(repository_blobs.c.digest.in_(digests[start:start + _IN_LIMIT]))
                .group_by(repository_blobs.c.digest))
            out.update({r[0]: int(r[1]) for r in rows})
        return out

    async def deleted_owner(self, digest: str) -> str | None:
        """A deleted repository that linked `digest`, to credit its freed bytes to."""
        rows = await self.store._read(select(deleted_links.c.repository)
                                      .where(deleted_links.c.digest == digest).limit(1))
        return rows[0][0] if rows else None

    async def forget_deleted_links(self, before: float) -> None:
        """Drop records of links deleted before `before`: their collection has run."""
        stmt = delete(deleted_links).where(deleted_links.c.deleted_at < before)
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def stale_tombstones(self, older_than: float) -> list[str]:
        """Digests whose deletion began before `older_than` and never ended: a
        collector died between removing the blob's row and its bytes."""
        rows = await self.store._read(select(blob_deletions.c.digest)
                                      .where(blob_deletions.c.started_at < older_than))
        return [r[0] for r in rows]

    async def resume_blob_deletion(self, digest: str, older_than: float) -> bool:
        """Take over a dead collector's deletion of `digest`: renew its tombstone, so an
        upload of that digest waits again, and tell the caller to delete the bytes.

        False when there is nothing to take over: the tombstone is gone or fresh (another
        collector has it), or an upload already claimed the digest anew (its row is
        back, and its bytes are the upload's).
        """

        def body(conn: Connection) -> bool:
            started = conn.scalar(select(blob_deletions.c.started_at)
                                  .where(blob_deletions.c.digest == digest).with_for_update())
            if started is None or started >= older_than:
                return False
            if conn.scalar(select(exists().where(blobs.c.digest == digest))):
                conn.execute(delete(blob_deletions).where(blob_deletions.c.digest == digest))
                return False
            conn.execute(update(blob_deletions).where(blob_deletions.c.digest == digest)
                         .values(started_at=time.time()))
            return True

        return await self.engines.transaction(body)

    # --- collection: links and blobs ---------------------------------------------

    async def dangling_links(self, repo_id: int, cutoff: float) -> list[tuple[str, int]]:
        """Blobs linked into the repository that no manifest of it references."""
        referenced = select(manifest_blobs.c.digest).join(
            manifests, manifests.c.id == manifest_blobs.c.manifest_id
        ).where(manifests.c.repository_id == repo_id,
                manifest_blobs.c.digest == repository_blobs.c.digest)
        rows = await self.store._read(
            select(repository_blobs.c.digest, blobs.c.size)
            .join(blobs, blobs.c.digest == repository_blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id,
                   repository_blobs.c.linked_at < cutoff, blobs.c.touched_at < cutoff,
                   ~exists(referenced)))
        return [(r[0], r[1]) for r in rows]

    async def delete_dangling_link(self, repo_id: int, digest: str, cutoff: float) -> bool:
        def body(conn: Connection) -> bool:
            link = conn.execute(
                select(repository_blobs.c.linked_at, blobs.c.touched_at)
                .join(blobs, blobs.c.digest == repository_blobs.c.digest)
                .where(repository_blobs.c.repository_id == repo_id,
                       repository_blobs.c.digest == digest)
                .with_for_update()).first()
            if link is None or link.linked_at >= cutoff or link.touched_at >= cutoff:
                return False
            used = select(manifest_blobs.c.digest).join(
                manifests, manifests.c.id == manifest_blobs.c.manifest_id
            ).where(manifests.c.repository_id == repo_id, manifest_blobs.c.digest == digest)
            if conn.scalar(select(exists(used))):
                return False
            conn.execute(delete(repository_blobs).where(
                repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest))
            self._record(conn, repo_id, Change(feed.BLOB_DELETED, "", digest=digest))
            return True

        return await self.engines.transaction(body)

    async def unlinked_blobs(self, cutoff: float, *, after: str | None = None,
                             limit: int | None = None) -> list[tuple[str, int]]:
        stmt = select(blobs.c.digest, blobs.c.size).where(
            blobs.c.touched_at < cutoff,
            ~exists().where(repository_blobs.c.digest == blobs.c.digest))
        if after is not None:
            stmt = stmt.where(self.store._sorted(blobs.c.digest) > after)
        if limit is not None:
            stmt = stmt.order_by(self.store._sorted(blobs.c.digest)).limit(limit)
        rows = await self.store._read(stmt)
        return [(r[0], r[1]) for r in rows]

    async def begin_blob_deletion(self, digest: str, cutoff: float) -> int | None:
        """Remove the blob's row and leave a tombstone; its size, or None if it lives.

        The caller then deletes the bytes and calls `end_blob_deletion`. An upload that
        finishes the same digest meanwhile waits on the tombstone (`claim_blob`).
        """

        def body(conn: Connection) -> int | None:
            row = conn.execute(select(blobs.c.size, blobs.c.touched_at)
                               .where(blobs.c.digest == digest).with_for_update()).first()
            if row is None or row.touched_at >= cutoff:
                return None
            if conn.scalar(select(exists().where(repository_blobs.c.digest == digest))):
                return None
            conn.execute(delete(blobs).where(blobs.c.digest == digest))
            conn.execute(delete(blob_deletions).where(blob_deletions.c.digest == digest))
            conn.execute(insert(blob_deletions).values(digest=digest, started_at=time.time()))
            return int(row.size)

        return await self.engines.transaction(body)

    async def end_blob_deletion(self, digest: str) -> None:
        stmt = delete(blob_deletions).where(blob_deletions.c.digest == digest)
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def defer_blob_deletion(self, digest: str) -> None:
        await self.defer_blob_deletions([digest])

    async def defer_blob_deletions(self, digests: Sequence[str]) -> None:
        aged = time.time() - TOMBSTONE_TIMEOUT - 1.0

        def body(conn: Connection) -> None:
            for start in range(0, len(digests), _IN_LIMIT):
                conn.execute(update(blob_deletions)
                             .where(blob_deletions.c.digest.in_(
                                 digests[start:start + _IN_LIMIT]))
                             .values(started_at=aged))

        await self.engines.transaction(body)

    async def delete_empty_repository(self, repo_id: int) -> bool:
        """Drop a repository row that holds nothing any more (no manifest, link, upload)."""

        def body(conn: Connection) -> bool:
            name = conn.scalar(select(repositories.c.name).where(repositories.c.id == repo_id)
                               .with_for_update())
            if name is None:
                return False
            for holds in (exists().where(manifests.c.repository_id == repo_id),
                          exists().where(repository_blobs.c.repository_id == repo_id),
                          exists().where(uploads.c.repository == name)):
                if conn.scalar(select(holds)):
                    return False
            conn.execute(delete(repositories).where(repositories.c.id == repo_id))
            return True

        return await self.engines.transaction(body)

    # --- usage -------------------------------------------------------------------

    async def usage(self) -> list[Usage]:
        """Bytes per repository (all, and unique to it), counts; one pass of SQL."""
        link_count = (select(repository_blobs.c.digest,
                             func.count().label("n"))
                      .group_by(repository_blobs.c.digest).subquery())
        rows: Sequence[Any] = await self.store._read(
            select(
                repositories.c.name,
                select(func.count()).where(manifests.c.repository_id == repositories.c.id)
                .scalar_subquery(),
                select(func.count()).where(tags.c.repository_id == repositories.c.id)
                .scalar_subquery(),
                select(func.count()).where(repository_blobs.c.repository_id == repositories.c.id)
                .scalar_subquery(),
                select(func.coalesce(func.sum(blobs.c.size), 0))
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .where(repository_blobs.c.repository_id == repositories.c.id)
                .scalar_subquery(),
                select(func.coalesce(func.sum(blobs.c.size), 0))
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .join(link_count, link_count.c.digest == blobs.c.digest)
                .where(repository_blobs.c.repository_id == repositories.c.id,
                       link_count.c.n == 1)
                .scalar_subquery(),
            ).order_by(repositories.c.name))
        return [Usage(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]))
                for r in rows]

    async def record_collection(self, record: CollectionRecord) -> None:
        """Remember a finished collection; forget those older than `COLLECTIONS_KEPT`."""

        def body(conn: Connection) -> None:
            conn.execute(insert(collections).values(
                started_at=record.started_at, duration=record.duration,
                manifests_deleted=record.manifests_deleted,
                blobs_deleted=record.blobs_deleted, bytes_freed=record.bytes_freed,
                stored_blobs=record.stored_blobs, stored_bytes=record.stored_bytes,
                failed=record.failed))
            conn.execute(delete(collections).where(
                collections.c.started_at < record.started_at - COLLECTIONS_KEPT))

        await self.engines.transaction(body)

    async def total_bytes(self) -> tuple[int, int]:
        """(blob count, bytes) over every stored blob."""
        rows = await self.store._read(
            select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).select_from(blobs))
        return int(rows[0][0]), int(rows[0][1])
