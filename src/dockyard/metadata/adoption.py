"""Metadata writes of `dockyard import`: one repository's content in one transaction.

The statements are the ones a push runs (`statements.py`), so imported rows are exactly
what pushes would have written. Every write is an upsert: importing a repository again
(after an interruption, or to pick up what Distribution received since) adds what is
missing and duplicates nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from dockyard.metadata import events as feed
from dockyard.metadata.engine import Conn
from dockyard.metadata.events import Change
from dockyard.metadata.records import NewManifest
from dockyard.metadata.schema import blob_deletions, blobs
from dockyard.metadata.statements import run
from dockyard.metadata.store import MetadataStore


@dataclass(frozen=True, slots=True)
class ImportedRepository:
    """What one repository's import wrote (rows new or already there)."""

    blobs: int
    manifests: int
    tags: int


class AdoptionStore:
    """Bulk writes of a whole repository, over `MetadataStore`'s engines."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def import_repository(
        self, name: str, blobs: Sequence[tuple[str, int]], manifests: Sequence[NewManifest],
        tags: Sequence[tuple[str, str]],
    ) -> ImportedRepository:
        """Record `blobs` (digest, size) linked into `name`, then `manifests` (children
        before the indexes naming them; every reference already among them or among
        `blobs`), then `tags` (tag, manifest digest)."""
        store, q, now = self.store, self.store._q, time.time()

        def body(conn: Conn) -> ImportedRepository:
            repo_id = store._ensure_repo(conn, name, now)
            for digest, size in sorted(blobs):  # digest order, as a push takes rows
                # bytes adopted just now: a mark fsck left (bytes removed) goes
                mark = run(conn, q.claim_blob, digest=digest, size=size, now=now).fetchone()[0]
                if mark is not None:
                    run(conn, q.clear_mark, digest=digest, mark=mark)
                run(conn, q.link, repo=repo_id, digest=digest, now=now)
            ids: dict[str, int] = {}
            changes: list[Change] = []
            types = {new.digest: new.media_type for new in manifests}
            for new in manifests:
                added = run(conn, q.add_manifest, repo=repo_id, digest=new.digest,
                            media_type=new.media_type, artifact_type=new.artifact_type,
                            size=len(new.payload), payload=new.payload,
                            subject=new.subject_digest, config=new.config_digest,
                            annotations=new.annotations, now=now).fetchone()
                if added is None:  # imported before
                    found = run(conn, q.manifest_id, repo=repo_id, digest=new.digest)
                    ids[new.digest] = found.fetchone()[0]
                    continue
                ids[new.digest] = manifest_id = added[0]
                changes.append(Change(feed.MANIFEST_PUT, name, None, new.digest,
                                      new.media_type))
                for d in sorted(set(new.blob_digests)):
                    run(conn, q.add_manifest_blob, manifest=manifest_id, digest=d)
                for d in new.child_digests:
                    run(conn, q.add_child, manifest=manifest_id, digest=d)
            for tag, digest in tags:
                if not run(conn, q.retag, repo=repo_id, tag=tag, manifest=ids[digest], by=None,
                           now=now).rowcount:
                    run(conn, q.add_tag, repo=repo_id, tag=tag, manifest=ids[digest], now=now,
                        by=None)
                changes.append(Change(feed.TAG_SET, name, tag, digest, types[digest]))
            # the change feed: a replica follows an import as it follows pushes
            store.events.record(conn, changes, now)
            return ImportedRepository(len(blobs), len(manifests), len(tags))

        return await store.engines.compiled(body)

    async def hand_to_collector(self, found: Sequence[tuple[str, int]]) -> int:
        """Give stored bytes nothing uses (a manifest's own data, blobs Distribution's
        collection left) an unlinked row, touched now, so the collector removes them
        after `gc.grace`; bytes with a row (or being deleted) are left alone. How many
        rows were added."""
        now = time.time()
        stmt = self.store._upsert(blobs).on_conflict_do_nothing()

        def body(conn: Connection) -> int:
            deleting = set(conn.execute(select(blob_deletions.c.digest)).scalars())
            rows = [{"digest": d, "size": size, "created_at": now, "touched_at": now}
                    for d, size in found if d not in deleting]
            if not rows:
                return 0
            return int(conn.execute(stmt, rows).rowcount or 0)

        return await self.store.engines.transaction(body)
