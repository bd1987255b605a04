"""What operators read: the schema revision, storage usage samples, past collections.

`usage_samples` holds one row per sample of the data filesystem (the `usage.sample`
job), kept for `KEEP` seconds, from which `dockyard status` computes the growth trend;
`collections` one row per finished collection, written by the collector itself
(`metadata/lifecycle.py`).
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import Connection

from dockyard.metadata.lifecycle import CollectionRecord
from dockyard.metadata.records import UsageSample
from dockyard.metadata.schema import (
    blobs,
    collections,
    manifests,
    repositories,
    tags,
    uploads,
    usage_samples,
)
from dockyard.metadata.store import MetadataStore

KEEP = 30 * 86400
"""Seconds usage samples are kept."""


class OperationsStore:
    """Operators' reads and the few rows they need, over the engines of `store`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def schema_revision(self) -> str | None:
        """The database's schema revision (also proves the store answers)."""
        rows = await self.store._read(select(text("version_num"))
                                      .select_from(text("alembic_version")))
        return str(rows[0][0]) if rows else None

    async def counts(self) -> dict[str, int]:
        """Rows of repositories, tags, manifests, blobs, uploads (one query)."""
        tables = {"repositories": repositories, "tags": tags, "manifests": manifests,
                  "blobs": blobs, "uploads": uploads}
        row = (await self.store._read(select(*(
            select(func.count()).select_from(t).scalar_subquery().label(n)
            for n, t in tables.items()))))[0]
        return {name: int(row[i]) for i, name in enumerate(tables)}

    async def blob_bytes(self) -> int:
        rows = await self.store._read(select(func.coalesce(func.sum(blobs.c.size), 0)))
        return int(rows[0][0])

    async def add_usage(self, sample: UsageSample) -> None:
        def body(conn: Connection) -> None:
            conn.execute(delete(usage_samples)
                         .where(usage_samples.c.taken_at < sample.taken_at - KEEP))
            conn.execute(insert(usage_samples).values(
                taken_at=sample.taken_at, used_bytes=sample.used_bytes,
                free_bytes=sample.free_bytes, total_bytes=sample.total_bytes,
                blob_bytes=sample.blob_bytes))

        await self.store.engines.transaction(body)

    async def usage_since(self, since: float) -> list[UsageSample]:
        rows = await self.store._read(
            select(usage_samples.c.taken_at, usage_samples.c.used_bytes,
                   usage_samples.c.free_bytes, usage_samples.c.total_bytes,
                   usage_samples.c.blob_bytes)
            .where(usage_samples.c.taken_at >= since).order_by(usage_samples.c.taken_at))
        return [UsageSample(float(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in rows]

    async def last_collection(self) -> CollectionRecord | None:
        c = collections.c
        rows = await self.store._read(
            select(c.started_at, c.duration, c.manifests_deleted, c.blobs_deleted,
                   c.bytes_freed, c.stored_blobs, c.stored_bytes, c.failed)
            .order_by(c.started_at.desc()).limit(1))
        if not rows:
            return None
        r = rows[0]
        return CollectionRecord(float(r[0]), float(r[1]), *(int(v) for v in r[2:]))
