"""Mirror runs and tag provenance in the metadata store (`mirror_runs`, `mirror_tags`).

`MirrorStore` is the `core.mirrors.MirrorRecords` that syncs write and the admin API
reads (by shape; this layer does not import core). A run is one insert that also drops
the source's runs past the last `keep`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import manifests, mirror_runs, mirror_tags, repositories, tags
from dockyard.metadata.store import MetadataStore


@dataclass(frozen=True, slots=True)
class MirrorRun:
    """One finished sync of one source; `report` is its JSON report."""

    source: str
    started_at: float
    finished_at: float
    status: str
    report: str


@dataclass(frozen=True, slots=True)
class TagOrigin:
    """Where a local tag was mirrored from (`upstream` is host/repository:tag), when."""

    repository: str
    tag: str
    source: str
    upstream: str
    digest: str
    mirrored_at: float


class MirrorStore:
    """Mirror runs and tag origins over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def add_run(self, run: MirrorRun, keep: int) -> None:
        def body(conn: Connection) -> None:
            conn.execute(insert(mirror_runs).values(
                source=run.source, started_at=run.started_at, finished_at=run.finished_at,
                status=run.status, report=run.report))
            old = [r[0] for r in conn.execute(
                select(mirror_runs.c.id).where(mirror_runs.c.source == run.source)
                .order_by(mirror_runs.c.started_at.desc(), mirror_runs.c.id.desc())
                .offset(keep))]
            if old:
                conn.execute(delete(mirror_runs).where(mirror_runs.c.id.in_(old)))

        await self.store.engines.transaction(body)

    async def runs(self, source: str | None, limit: int) -> list[MirrorRun]:
        """The last `limit` runs of `source` (of every source: None), newest first."""
        stmt = select(mirror_runs.c.source, mirror_runs.c.started_at,
                      mirror_runs.c.finished_at, mirror_runs.c.status, mirror_runs.c.report)
        if source is not None:
            stmt = stmt.where(mirror_runs.c.source == source)
        stmt = stmt.order_by(mirror_runs.c.started_at.desc(), mirror_runs.c.id.desc()
                             ).limit(limit)
        return [MirrorRun(r[0], float(r[1]), float(r[2]), r[3], r[4])
                for r in await self.store._read(stmt)]

    async def set_origin(self, origin: TagOrigin) -> None:
        def body(conn: Connection) -> None:
            conn.execute(delete(mirror_tags).where(
                mirror_tags.c.repository == origin.repository,
                mirror_tags.c.tag == origin.tag))
            conn.execute(insert(mirror_tags).values(
                repository=origin.repository, tag=origin.tag, source=origin.source,
                upstream=origin.upstream, digest=origin.digest,
                mirrored_at=origin.mirrored_at))

        await self.store.engines.transaction(body)

    async def drop_origin(self, repository: str, tag: str) -> None:
        def body(conn: Connection) -> None:
            conn.execute(delete(mirror_tags).where(mirror_tags.c.repository == repository,
                                                   mirror_tags.c.tag == tag))

        await self.store.engines.transaction(body)

    async def origins(self, *, repository: str | None = None, source: str | None = None,
                      current: bool = False, after: str | None = None,
                      limit: int | None = None) -> list[TagOrigin]:
        """Tag origins of one repository or one source, by repository and tag; with
        `current`, only those whose tag still names the digest the sync set (a tag pushed
        over since, or a repository deleted and pushed again, is no longer mirrored);
        with `repository`, a page of its tags: those after `after`, at most `limit`."""
        stmt = select(mirror_tags.c.repository, mirror_tags.c.tag, mirror_tags.c.source,
                      mirror_tags.c.upstream, mirror_tags.c.digest, mirror_tags.c.mirrored_at)
        if current:
            stmt = stmt.join(repositories, repositories.c.name == mirror_tags.c.repository
                             ).join(tags, (tags.c.repository_id == repositories.c.id)
                                    & (tags.c.name == mirror_tags.c.tag)
                                    ).join(manifests, (manifests.c.id == tags.c.manifest_id)
                                           & (manifests.c.digest == mirror_tags.c.digest))
        if repository is not None:
            stmt = stmt.where(mirror_tags.c.repository == repository)
        if source is not None:
            stmt = stmt.where(mirror_tags.c.source == source)
        if after is not None:  # a page of one repository's tags
            stmt = stmt.where(self.store._sorted(mirror_tags.c.tag) > after)
        stmt = stmt.order_by(mirror_tags.c.repository, self.store._sorted(mirror_tags.c.tag))
        if limit is not None:
            stmt = stmt.limit(limit)
        return [TagOrigin(r[0], r[1], r[2], r[3], r[4], float(r[5]))
                for r in await self.store._read(stmt)]
