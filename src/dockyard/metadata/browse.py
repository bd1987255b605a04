"""Read-only queries of the web UI: repository summaries, tag details, search, uploads.

One statement per call, over the same engines as `MetadataStore`; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_, select

from dockyard.metadata.lifecycle import CollectionRecord
from dockyard.metadata.schema import (
    blobs,
    collections,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from dockyard.metadata.store import MetadataStore

_AMONG = 500
"""Repository names per query of a search restricted to some (one bound parameter each)."""


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    """One repository as the list shows it (bytes: all it links; unique: only it)."""

    name: str
    tags: int
    manifests: int
    last_push: float | None
    bytes: int
    unique_bytes: int


@dataclass(frozen=True, slots=True)
class TagDetail:
    """A tag with its manifest: what the repository page shows (payload to size it)."""

    tag: str
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    payload: bytes
    pushed_at: float
    pulled_at: float | None
    pushed_by: str | None = None


@dataclass(frozen=True, slots=True)
class UploadInFlight:
    id: str
    repository: str
    offset: int
    started_at: float
    updated_at: float


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class BrowseStore:
    """The UI's reads (see `core.browse.BrowseBackend`)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def summaries(self) -> list[RepositorySummary]:
        """Every repository holding something, with counts, last push and bytes."""
        link_count = (select(repository_blobs.c.digest, func.count().label("n"))
                      .group_by(repository_blobs.c.digest).subquery())
        repo = repositories.c.id
        holds = or_(exists().where(manifests.c.repository_id == repo),
                    exists().where(repository_blobs.c.repository_id == repo))
        rows: Sequence[Any] = await self.store._read(
            select(
                repositories.c.name,
                select(func.count()).where(tags.c.repository_id == repo).scalar_subquery(),
                select(func.count()).where(manifests.c.repository_id == repo)
                .scalar_subquery(),
                select(func.max(tags.c.updated_at)).where(tags.c.repository_id == repo)
                .scalar_subquery(),
                select(func.coalesce(func.sum(blobs.c.size), 0))
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .where(repository_blobs.c.repository_id == repo).scalar_subquery(),
                select(func.coalesce(func.sum(blobs.c.size), 0))
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .join(link_count, link_count.c.digest == blobs.c.digest)
                .where(repository_blobs.c.repository_id == repo, link_count.c.n == 1)
                .scalar_subquery(),
            ).where(holds).order_by(self.store._sorted(repositories.c.name)))
        return [RepositorySummary(r[0], int(r[1]), int(r[2]),
                                  None if r[3] is None else float(r[3]), int(r[4]), int(r[5]))
                for r in rows]

    async def tag_details(self, name: str, *, offset: int = 0, limit: int | None = None,
                          digest: str | None = None) -> tuple[list[TagDetail], int] | None:
        """The tags of `name` (those at manifest `digest`, if given) with their manifests,
        by name, `limit` of them from `offset`, and how many there are in all; None: no
        such repository."""
        repo = await self.store._read(
            select(repositories.c.id).where(repositories.c.name == name))
        if not repo:
            return None
        joined = tags.join(manifests, manifests.c.id == tags.c.manifest_id)
        where = [tags.c.repository_id == repo[0][0]]
        if digest is not None:
            where.append(manifests.c.digest == digest)
        total = await self.store._read(
            select(func.count()).select_from(joined).where(*where))
        query = (select(tags.c.name, manifests.c.digest, manifests.c.media_type,
                        manifests.c.artifact_type, manifests.c.size, manifests.c.payload,
                        tags.c.updated_at, tags.c.pulled_at, tags.c.pushed_by)
                 .select_from(joined).where(*where)
                 .order_by(self.store._sorted(tags.c.name)).offset(offset))
        rows = await self.store._read(query if limit is None else query.limit(limit))
        return ([TagDetail(r[0], r[1], r[2], r[3], int(r[4]), bytes(r[5]), float(r[6]),
                           None if r[7] is None else float(r[7]), r[8]) for r in rows],
                int(total[0][0]))

    async def search_tags(self, text: str, limit: int,
                          among: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """(repository, tag) pairs whose tag contains `text`, at most `limit`, by
        repository then tag; only in the repositories `among` when given."""
        query = (select(repositories.c.name, tags.c.name)
                 .select_from(repositories.join(tags))
                 .where(tags.c.name.like(_like(text), escape="\\"))
                 .order_by(self.store._sorted(repositories.c.name),
                           self.store._sorted(tags.c.name)))
        if among is None:
            rows = await self.store._read(query.limit(limit))
            return [(r[0], r[1]) for r in rows]
        found: list[tuple[str, str]] = []
        names = sorted(among)  # code point order is `_sorted`'s byte order of UTF-8
        for start in range(0, len(names), _AMONG):  # in order: the pairs stay sorted
            if len(found) >= limit:
                break
            rows = await self.store._read(
                query.where(repositories.c.name.in_(names[start:start + _AMONG]))
                .limit(limit - len(found)))
            found += [(r[0], r[1]) for r in rows]
        return found

    async def uploads(self, limit: int) -> list[UploadInFlight]:
        """Open upload sessions, the most recently written first."""
        rows = await self.store._read(
            select(uploads.c.id, uploads.c.repository, uploads.c.offset,
                   uploads.c.started_at, uploads.c.updated_at)
            .order_by(uploads.c.updated_at.desc()).limit(limit))
        return [UploadInFlight(r[0], r[1], int(r[2]), float(r[3]), float(r[4])) for r in rows]

    async def collections(self, limit: int) -> list[CollectionRecord]:
        """The latest finished collections, newest first."""
        c = collections.c
        rows = await self.store._read(
            select(c.started_at, c.duration, c.manifests_deleted, c.blobs_deleted,
                   c.bytes_freed, c.stored_blobs, c.stored_bytes, c.failed)
            .order_by(c.started_at.desc()).limit(limit))
        return [CollectionRecord(float(r[0]), float(r[1]), int(r[2]), int(r[3]), int(r[4]),
                                 int(r[5]), int(r[6]), int(r[7])) for r in rows]

    async def counts(self) -> dict[str, int]:
        return await self.store.counts()
