"""The metadata store: every query Dockyard makes, over SQLAlchemy Core.

Portable SQL only (SQLite and PostgreSQL): dialect differences are confined to
`_upsert` and `_sorted`. Each public write is one transaction, written as a synchronous
body that `Engines.transaction` runs (see `engine.py` for why).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dockyard.metadata import events as feed
from dockyard.metadata.dialects import postgresql, sqlite
from dockyard.metadata.engine import Conn, Engines, foreign_key_violated, reachable
from dockyard.metadata.events import Change, EventRecord, EventWriter
from dockyard.metadata.fastread import FastReader, Prepared
from dockyard.metadata.records import (
    BlobRecord,
    CachedTag,
    Claim,
    ManifestRecord,
    NewManifest,
    ReferrerRecord,
    TagRecord,
    UploadRecord,
)
from dockyard.metadata.schema import (
    blob_deletions,
    blobs,
    events,
    manifest_blobs,
    manifest_children,
    manifests,
    proxy_misses,
    proxy_tags,
    registry_state,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from dockyard.metadata.statements import Statements, run, run_many


def _manifest_query(by_tag: bool, payload: bool) -> Prepared:
    cols = [manifests.c.digest, manifests.c.media_type, manifests.c.size,
            manifests.c.payload if payload else manifests.c.id, manifests.c.subject_digest]
    if by_tag:
        stmt = select(*cols).select_from(
            repositories.join(tags).join(manifests, manifests.c.id == tags.c.manifest_id)
        ).where(repositories.c.name == bindparam("name"), tags.c.name == bindparam("ref"))
    else:
        stmt = select(*cols).select_from(repositories.join(manifests)).where(
            repositories.c.name == bindparam("name"), manifests.c.digest == bindparam("ref")
        )
    return Prepared(stmt, cacheable=True)


#: The hot reads, compiled once: (by tag?, with payload?) -> query.
_MANIFEST = {(t, p): _manifest_query(t, p) for t in (True, False) for p in (True, False)}
_BLOB_IN_REPO = Prepared(
    select(blobs.c.digest, blobs.c.size, blobs.c.touched_at)
    .select_from(repositories.join(repository_blobs).join(blobs))
    .where(repositories.c.name == bindparam("name"),
           repository_blobs.c.digest == bindparam("digest"), blobs.c.corrupt_at.is_(None))
)
_UPLOAD = Prepared(
    select(uploads.c.id, uploads.c.repository, uploads.c.offset, uploads.c.started_at,
           uploads.c.updated_at).where(uploads.c.id == bindparam("id"))
)
_UPLOAD_HOLD = Prepared(
    select(uploads.c.id, uploads.c.repository, uploads.c.offset, uploads.c.started_at,
           uploads.c.updated_at, uploads.c.holder, uploads.c.held_until)
    .where(uploads.c.id == bindparam("id"))
)

#: until when a pull-through cache answers "not found" for a reference without asking
#: upstream: read by a pull of what the cache does not hold
_PROXY_MISS = Prepared(
    select(proxy_misses.c.until)
    .where(proxy_misses.c.repository == bindparam("name"),
           proxy_misses.c.reference == bindparam("reference"))
)

#: a pull-through cache's tag: read by every pull of one (its TTL counts from checked_at)
_CACHED_TAG = Prepared(
    select(proxy_tags.c.tag, proxy_tags.c.upstream, proxy_tags.c.digest,
           proxy_tags.c.fetched_at, proxy_tags.c.checked_at)
    .select_from(repositories.join(proxy_tags, proxy_tags.c.repository_id == repositories.c.id))
    .where(repositories.c.name == bindparam("name"), proxy_tags.c.tag == bindparam("tag"))
)


#: The longest pusher name kept (`tags.pushed_by`, `events.actor`); a longer account name
#: (an external issuer's `sub`) is kept cut to it, where PostgreSQL refused the push.
PUSHER_MAX = 255

#: Seconds after which a collector's unfinished blob deletion is considered abandoned.
TOMBSTONE_TIMEOUT = 300.0


class _Tombstoned(Exception):
    """A claim met a fresh tombstone after its upsert: the transaction is rolled back."""


class SessionLimit(Exception):
    """Opening one more upload session would pass a cap (`which`: "owner" or "total")."""

    def __init__(self, which: str, limit: int) -> None:
        super().__init__(f"{which} limit of {limit} open upload sessions reached")
        self.which = which
        self.limit = limit


class MissingReferences(Exception):
    """A manifest references blobs or manifests its repository does not hold."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(", ".join(missing))
        self.missing = list(missing)


def _repo_id(conn: Connection, name: str) -> int | None:
    return conn.scalar(select(repositories.c.id).where(repositories.c.name == name))


class MetadataStore:
    """Queries and transactions over the metadata database."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self._dialect = engines.dialect
        self._fast = FastReader(engines.sqlite_path) if engines.sqlite_path else None
        self._q = Statements(self._dialect)
        #: records the change feed's events in the transactions above
        self.events = EventWriter(self._dialect)

    async def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        await self.engines.dispose()

    # --- helpers -----------------------------------------------------------------

    def _upsert(self, table: Any) -> Any:
        """The dialect's INSERT with `on_conflict_do_*` (both dialects share the API)."""
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    def _sorted(self, column: Any) -> ColumnElement[Any]:
        """Byte-wise (lexical) ordering whatever the database's default collation."""
        return column.collate("C") if self._dialect == "postgresql" else column  # type: ignore[no-any-return]

    async def _fetch(self, query: Prepared, **params: Any) -> Sequence[Any]:
        """A prepared read: inline on SQLite, on asyncpg itself on PostgreSQL."""
        if self._fast is not None:
            return self._fast.fetch(query, params)
        if self.engines.direct is not None:
            with reachable():
                return await self.engines.direct.fetch(query, params)
        return await self._read(query.stmt, params)

    async def _read(self, stmt: Select[Any], params: dict[str, Any] | None = None
                    ) -> Sequence[Any]:
        """Any read: inline on SQLite (compiled per call), async reader elsewhere."""
        if self._fast is not None:
            return self._fast.fetch(Prepared(stmt), params or {})
        assert self.engines.reader is not None
        with reachable():
            try:
                return await self._read_once(stmt, params)
            except DBAPIError as exc:
                # a connection the database ended while it sat in the pool (restart,
                # failover): the pool replaces every older one; a read is safe to repeat
                if not exc.connection_invalidated:
                    raise
            return await self._read_once(stmt, params)

    async def _read_once(self, stmt: Select[Any], params: dict[str, Any] | None
                         ) -> Sequence[Any]:
        assert self.engines.reader is not None
        async with self.engines.reader.connect() as conn:
            rows: Sequence[Any] = (await conn.execute(stmt, params or {})).all()
            return rows

    def _ensure_repo(self, conn: Conn, name: str, now: float) -> int:
        q = self._q
        row = run(conn, q.repo_id, name=name).fetchone()
        if row is None:
            run(conn, q.add_repo, name=name, now=now)
            row = run(conn, q.repo_id, name=name).fetchone()
        assert row is not None
        return int(row[0])

    # --- repositories ------------------------------------------------------------

    async def repository_exists(self, name: str) -> bool:
        rows = await self._read(select(repositories.c.id).where(repositories.c.name == name))
        return bool(rows)

    async def catalog(self, n: int | None, last: str | None) -> list[str]:
        """Repositories holding at least one manifest or blob, in lexical order."""
        holds = or_(
            exists().where(manifests.c.repository_id == repositories.c.id),
            exists().where(repository_blobs.c.repository_id == repositories.c.id),
        )
        stmt = (select(repositories.c.name).where(holds)
                .order_by(self._sorted(repositories.c.name)))
        if last:
            stmt = stmt.where(self._sorted(repositories.c.name) > last)
        if n is not None:
            stmt = stmt.limit(n)
        return [r[0] for r in await self._read(stmt)]

    # --- blobs -------------------------------------------------------------------

    async def blob_in_repository(self, name: str, digest: str) -> BlobRecord | None:
        rows = await self._fetch(_BLOB_IN_REPO, name=name, digest=digest)
        return BlobRecord(*rows[0]) if rows else None

    async def blob(self, digest: str) -> BlobRecord | None:
        rows = await self._read(
            select(blobs.c.digest, blobs.c.size, blobs.c.touched_at)
            .where(blobs.c.digest == digest, blobs.c.corrupt_at.is_(None))
        )
        return BlobRecord(*rows[0]) if rows else None

    async def link_blob(
        self, name: str, digest: str, size: int, *, upload: str | None = None,
        claim: Claim | None = None,
    ) -> bool:
        """Record blob `digest` (stored, verified) and make it visible in `name`.

        With `upload`, that finished session is removed in the same transaction.
        `claim`: the caller's `claim_blob` made the row moments ago (and keeps the
        collector off it), so it is not written again; the caller published verified
        bytes since, so the corrupt mark the claim found goes (not one fsck set after).
        False, with nothing written, when the claimed row is gone: the collector took
        the blob after the claim, which a grace (`gc.grace`) shorter than the time from
        claim to link allows; its bytes may be gone too.
        """
        now, q = time.time(), self._q
        if (claim is not None and claim.mark is None and upload is not None
                and q.link_ending_upload is not None):
            # PostgreSQL, the common case: link and end the session in one round trip;
            # when it linked nothing (no such repository yet, or the session already
            # gone) the transaction below does it all
            try:
                done = await self.engines.statement(
                    q.link_ending_upload,
                    {"p_name": name, "p_digest": digest, "p_now": now, "p_id": upload})
            except self.engines.errors as exc:
                if not foreign_key_violated(exc):
                    raise
                return False
            if done is not None and done.rowcount:
                return True

        def body(conn: Conn) -> None:
            # a claimed blob's row is there: one statement finds the repository and
            # links (none when the repository is new). Not when the claim found a mark:
            # the blob's row is written then, and rows are locked in one order, the
            # repository's, the blob's, the link's (a manifest write touches the blob
            # before it reads the link: the other order could deadlock with it)
            linked = claim is not None and claim.mark is None and bool(
                run(conn, q.link_named, name=name, digest=digest, now=now).rowcount)
            repo_id = None if linked else self._ensure_repo(conn, name, now)
            if claim is None:
                run(conn, q.upsert_blob, digest=digest, size=size, now=now)
            elif claim.mark is not None:
                run(conn, q.clear_mark, digest=digest, mark=claim.mark)
            if repo_id is not None:
                run(conn, q.link, repo=repo_id, digest=digest, now=now)
            if upload is not None:
                run(conn, q.delete_upload, id=upload)

        try:
            await self.engines.compiled(body)
        except self.engines.errors as exc:
            if claim is None or not foreign_key_violated(exc):
                raise
            return False
        return True

    async def claim_blob(self, digest: str, size: int, *, abandoned: float | None = None
                         ) -> Claim | None:
        """Before publishing bytes: renew the blob's grace period, creating its row.

        None while the collector is deleting this digest's bytes (a fresh tombstone):
        the caller waits and tries again, so it never keeps bytes that are about to go.
        A tombstone older than `TOMBSTONE_TIMEOUT` belongs to a collector that died and
        is cleared, and so is the one begun at `abandoned` (`collector_deletion`, of a
        collector known to run no more). A corrupt mark stays until `link_blob` is given
        the claim, after the publish.
        """
        now = time.time()
        try:
            return await self.engines.compiled(
                lambda conn: self._claim(conn, digest, size, now, abandoned))
        except _Tombstoned:
            return None

    async def collector_deletion(self, digest: str) -> float | None:
        """When the collector's deletion of `digest` began: its tombstone while the blob
        has no row (the collector removes the row first; fsck's mark of a damaged blob
        keeps it, and its own deletion is not the collector's); None otherwise."""
        stmt = (select(blob_deletions.c.started_at)
                .where(blob_deletions.c.digest == digest,
                       ~exists().where(blobs.c.digest == digest)))
        rows = await self._read(stmt)
        return float(rows[0][0]) if rows else None

    def _claim(self, conn: Conn, digest: str, size: int, now: float,
               abandoned: float | None = None) -> Claim:
        """The row first, then the tombstone: on PostgreSQL a deletion or fsck mark
        that holds the row's lock makes the upsert wait until it commits, and only a
        read after that wait sees its tombstone (read before, it was missed: the claim
        succeeded into a deletion and the pushed blob lost its bytes). A fresh
        tombstone rolls the claim back (`_Tombstoned`)."""
        q = self._q
        mark = run(conn, q.claim_blob, digest=digest, size=size, now=now).fetchone()[0]
        started = run(conn, q.tombstone, digest=digest).fetchone()
        if started is not None:
            if started[0] > now - TOMBSTONE_TIMEOUT and started[0] != abandoned:
                raise _Tombstoned
            run(conn, q.drop_tombstone, digest=digest)
        return Claim(mark)

    async def take_mark(self, digest: str, mark: float) -> Claim | None:
        """Take the repair of a blob whose claim found it marked corrupt: the mark `mark`
        is replaced by one of the caller's in one conditional write, so of the pushes
        racing to repair it exactly one removes what is stored, before its own publish
        (the others leave the bytes alone: removing them after its publish would leave
        the blob linked without bytes). The new mark stays until that push's link clears
        it. None when the mark is `mark` no more: another push took the repair (or made
        it), or fsck marked the blob again."""
        new = max(time.time(), math.nextafter(mark, math.inf))
        stmt = (update(blobs).where(blobs.c.digest == digest, blobs.c.corrupt_at == mark)
                .values(corrupt_at=new))
        taken = await self.engines.transaction(lambda conn: conn.execute(stmt).rowcount)
        return Claim(new) if taken == 1 else None

    async def mount_blob(self, name: str, digest: str, source: str) -> BlobRecord | None:
        """Link `digest` into `name` if repository `source` holds it; None otherwise.

        The check and the link are one transaction, so the collector cannot remove the
        blob in between.
        """
        now, q = time.time(), self._q

        def body(conn: Connection) -> BlobRecord | None:
            row = conn.execute(
                select(blobs.c.digest, blobs.c.size, blobs.c.touched_at)
                .select_from(repositories.join(repository_blobs).join(blobs))
                .where(repositories.c.name == source, repository_blobs.c.digest == digest,
                       blobs.c.corrupt_at.is_(None))
                # the link and the blob (the collector waits, then sees the new link);
                # not the source repository's row, which every push into it reads
                .with_for_update(of=[repository_blobs, blobs])
            ).first()
            if row is None:
                return None
            repo_id = self._ensure_repo(conn, name, now)
            run(conn, q.touch_blob, digest=digest, now=now)
            run(conn, q.link, repo=repo_id, digest=digest, now=now)
            return BlobRecord(*row)

        return await self.engines.transaction(body)

    async def touch_blob(self, digest: str) -> None:
        """Note that the blob was just checked (HEAD): the collector's grace restarts."""
        stmt = update(blobs).where(blobs.c.digest == digest).values(touched_at=time.time())
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def unlink_blob(self, name: str, digest: str) -> bool:
        """Remove `digest` from repository `name`; the bytes stay for the collector."""

        def body(conn: Connection) -> bool:
            repo_id = _repo_id(conn, name)
            if repo_id is None:
                return False
            result = conn.execute(delete(repository_blobs).where(
                repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest))
            if not result.rowcount:
                return False
            self.events.record(conn, [Change(feed.BLOB_DELETED, name, digest=digest)],
                               time.time())
            return True

        return await self.engines.transaction(body)

    # --- uploads -----------------------------------------------------------------

    async def create_upload(
        self, session_id: str, name: str, owner: str | None = None, *,
        max_total: int = 0, max_per_owner: int = 0, holder: str | None = None,
        ttl: float = 0.0,
    ) -> UploadRecord:
        """Record a new session opened by `owner`; raise `SessionLimit` when `owner`
        already holds `max_per_owner` open sessions or all owners `max_total` (0: no cap).
        With `holder`, the session is born held by it for `ttl` seconds (`hold_upload`).

        Count and insert are one transaction; on PostgreSQL an advisory lock serialises
        the openings (SQLite's write transactions are serial already), so two workers
        racing for the last slot cannot both get it.
        """
        now, q = time.time(), self._q
        until = now + ttl if holder is not None else None

        def body(conn: Conn) -> None:
            row = {"id": session_id, "name": name, "now": now, "owner": owner,
                   "holder": holder, "until": until}
            if not (max_total or max_per_owner):
                run(conn, q.create_upload, **row)
                return
            if q.upload_lock is not None:
                run(conn, q.upload_lock)
            if run(conn, q.create_upload_capped, max_total=max_total,
                   max_owner=max_per_owner, **row).rowcount:
                return
            _, owned = run(conn, q.open_uploads, owner=owner).fetchone()
            if max_per_owner and owner is not None and owned >= max_per_owner:
                raise SessionLimit("owner", max_per_owner)
            raise SessionLimit("total", max_total)

        await self.engines.compiled(body)
        return UploadRecord(session_id, name, 0, now, now)

    async def upload(self, session_id: str) -> UploadRecord | None:
        rows = await self._fetch(_UPLOAD, id=session_id)
        return UploadRecord(*rows[0]) if rows else None

    async def upload_holder(self, session_id: str) -> tuple[UploadRecord, str | None] | None:
        """The session and who validly holds it now (None: nobody, or a hold expired)."""
        rows = await self._fetch(_UPLOAD_HOLD, id=session_id)
        if not rows:
            return None
        *record, holder, until = rows[0]
        valid = holder is not None and until is not None and until >= time.time()
        return UploadRecord(*record), holder if valid else None

    async def hold_upload(self, session_id: str, name: str, holder: str, ttl: float, *,
                          gone: str | None = None) -> UploadRecord | None:
        """Hold session `session_id` of repository `name` for `holder` during `ttl`
        seconds, and read it, in one write. None when it is unknown there or held by
        another holder whose hold has not expired (unless that holder is `gone`: known
        dead, so its hold is taken now).

        The statement is its own guard: SQLite runs one writer at a time, and PostgreSQL
        re-checks the WHERE clause on the row a concurrent hold just changed, so two
        requests cannot both get a row back.
        """
        now, q = time.time(), self._q

        def body(conn: Conn) -> UploadRecord | None:
            row = run(conn, q.hold_upload, id=session_id, name=name, holder=holder,
                      until=now + ttl, now=now, gone=gone).fetchone()
            return UploadRecord(*row) if row is not None else None

        return await self.engines.compiled(body)

    async def hold_upload_claiming(
        self, session_id: str, name: str, holder: str, ttl: float, digest: str, size: int,
        *, gone: str | None = None,
    ) -> tuple[UploadRecord | None, Claim | None]:
        """`hold_upload`, and in the same write, when the session holds no byte yet,
        `claim_blob(digest, size)`: the caller already verified that the `size` bytes it
        will write hash to `digest`. The second value is the claim, if the blob was
        claimed (not when the session has bytes, nor while the collector deletes the
        digest)."""
        now, q = time.time(), self._q

        def body(conn: Conn) -> tuple[UploadRecord | None, Claim | None]:
            row = run(conn, q.hold_upload, id=session_id, name=name, holder=holder,
                      until=now + ttl, now=now, gone=gone).fetchone()
            if row is None:
                return None, None
            record = UploadRecord(*row)
            return record, (self._claim(conn, digest, size, now) if record.offset == 0
                            else None)

        try:
            return await self.engines.compiled(body)
        except _Tombstoned:  # rolled back, the hold with it: the hold alone
            return await self.hold_upload(session_id, name, holder, ttl, gone=gone), None

    async def renew_upload(self, session_id: str, holder: str, ttl: float) -> bool:
        """Extend `holder`'s hold by `ttl` seconds from now; False when it is not theirs
        any more (taken over after it expired, or the session is gone)."""
        until, q = time.time() + ttl, self._q
        return await self.engines.compiled(lambda conn: bool(run(
            conn, q.renew_upload, id=session_id, holder=holder, until=until).rowcount))

    async def release_upload(self, session_id: str, holder: str) -> None:
        """Give up `holder`'s hold of the session (nothing if it is not theirs)."""
        q = self._q
        await self.engines.compiled(
            lambda conn: run(conn, q.release_upload, id=session_id, holder=holder))

    async def advance_upload(self, session_id: str, old: int, new: int, *,
                             holder: str | None = None) -> bool:
        """Move the session's offset from `old` to `new`; False if another write won.

        With `holder`, only while `holder` holds the session, whose hold this write
        also releases (a PATCH's one write after its bytes).
        """
        now, q = time.time(), self._q
        if holder is None:
            return await self.engines.compiled(lambda conn: bool(run(
                conn, q.advance_upload, id=session_id, old=old, new=new, now=now).rowcount))
        return await self.engines.compiled(lambda conn: bool(run(
            conn, q.advance_held, id=session_id, old=old, new=new, now=now,
            holder=holder).rowcount))

    async def delete_upload(self, session_id: str) -> bool:
        q = self._q
        return await self.engines.compiled(
            lambda conn: bool(run(conn, q.delete_upload, id=session_id).rowcount))

    async def stale_uploads(self, idle_since: float) -> list[str]:
        """Sessions untouched since `idle_since` that no request holds now."""
        rows = await self._read(select(uploads.c.id).where(
            uploads.c.updated_at < idle_since, _unheld(time.time())))
        return [r[0] for r in rows]

    async def delete_stale_upload(self, session_id: str, idle_since: float) -> bool:
        """Delete the session only if it is still idle (a PATCH may have just arrived)
        and no request holds it (a long body may be streaming into it)."""
        stmt = delete(uploads).where(uploads.c.id == session_id,
                                     uploads.c.updated_at < idle_since, _unheld(time.time()))
        return await self.engines.transaction(lambda conn: bool(conn.execute(stmt).rowcount))

    async def upload_ids(self) -> set[str]:
        return {r[0] for r in await self._read(select(uploads.c.id))}

    # --- manifests ---------------------------------------------------------------

    async def put_manifest(self, name: str, new: NewManifest, tag: str | None, *,
                           by: str | None = None, pushed_at: float | None = None) -> None:
        """Record a verified manifest with its references, and point `tag` at it (pushed
        by the account `by`, when one did; at `pushed_at` rather than now, when given:
        a replica keeps its primary's times).

        Raises `MissingReferences` when a referenced blob or child manifest is not in
        the repository; nothing is written then.
        """
        by = None if by is None else by[:PUSHER_MAX]
        await self.engines.compiled(self._put_manifest(name, new, tag, time.time(),
                                                       by=by, pushed_at=pushed_at))

    async def cache_manifest(self, name: str, new: NewManifest, tag: str | None,
                             upstream: str) -> None:
        """Record a manifest fetched from `upstream` for a pull-through cache, and point
        `tag` at it, with the tag's provenance.

        Unlike a push, its references need not be here yet: a cache fetches blobs and
        index children when a client first asks for them. The references are recorded
        all the same, so the collector keeps what arrives later.
        """
        now = time.time()
        put = self._put_manifest(name, new, tag, now, check=False)

        def body(conn: Connection) -> None:
            put(conn)
            if tag is not None:
                repo_id = _repo_id(conn, name)
                values = {"upstream": upstream[:1000], "digest": new.digest,
                          "fetched_at": now, "checked_at": now}
                stmt = self._upsert(proxy_tags).values(repository_id=repo_id, tag=tag,
                                                       **values)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[proxy_tags.c.repository_id, proxy_tags.c.tag],
                    set_=values))

        await self.engines.transaction(body)

    async def cached_tag(self, name: str, tag: str) -> CachedTag | None:
        """The provenance of cached tag `name:tag`, or None."""
        rows = await self._fetch(_CACHED_TAG, name=name, tag=tag)
        return CachedTag(*rows[0]) if rows else None

    async def cached_tags(self, name: str, *, after: str | None = None,
                          limit: int | None = None) -> list[CachedTag]:
        """The provenance of the cached tags of `name` by tag: those after `after`, at
        most `limit`."""
        stmt = (select(proxy_tags.c.tag, proxy_tags.c.upstream, proxy_tags.c.digest,
                       proxy_tags.c.fetched_at, proxy_tags.c.checked_at)
                .select_from(repositories.join(
                    proxy_tags, proxy_tags.c.repository_id == repositories.c.id))
                .where(repositories.c.name == name).order_by(self._sorted(proxy_tags.c.tag)))
        if after is not None:
            stmt = stmt.where(self._sorted(proxy_tags.c.tag) > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [CachedTag(*r) for r in await self._read(stmt)]

    async def confirm_cached_tag(self, name: str, tag: str, digest: str) -> None:
        """Upstream still has `tag` at `digest`: its TTL starts over."""
        repo_id = (select(repositories.c.id).where(repositories.c.name == name)
                   .scalar_subquery())
        stmt = (update(proxy_tags)
                .where(proxy_tags.c.repository_id == repo_id, proxy_tags.c.tag == tag,
                       proxy_tags.c.digest == digest)
                .values(checked_at=time.time()))
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def proxy_miss(self, name: str, reference: str) -> float | None:
        """Until when upstream's "not found" for `name`'s `reference` stands (a time
        past or to come), or None when none is recorded."""
        rows = await self._fetch(_PROXY_MISS, name=name, reference=reference)
        return float(rows[0][0]) if rows else None

    async def record_proxy_miss(self, name: str, reference: str, until: float) -> None:
        """Upstream has no `reference` for `name`: say so without asking until `until`."""
        stmt = self._upsert(proxy_misses).values(repository=name, reference=reference,
                                                 until=until)
        stmt = stmt.on_conflict_do_update(
            index_elements=[proxy_misses.c.repository, proxy_misses.c.reference],
            set_={"until": until})
        await self.engines.transaction(lambda conn: conn.execute(stmt))

    async def forget_proxy_misses(self, before: float) -> int:
        """Drop the "not found" answers that ran out before `before`; how many."""
        stmt = delete(proxy_misses).where(proxy_misses.c.until < before)
        return int(await self.engines.transaction(lambda conn: conn.execute(stmt).rowcount))

    def _put_manifest(self, name: str, new: NewManifest, tag: str | None, now: float, *,
                      check: bool = True, by: str | None = None,
                      pushed_at: float | None = None) -> Callable[[Conn], None]:
        """The body of a manifest write; with `check`, refused (`MissingReferences`)
        unless every reference is in the repository."""
        q = self._q

        def body(conn: Conn) -> None:
            repo_id = self._ensure_repo(conn, name, now)
            # the blobs' rows first and in digest order (as `link_blob` takes a blob's row
            # before its link): concurrent pushes of images sharing layers, in any layer
            # order, then lock rows in one order and never deadlock on PostgreSQL
            blob_digests = sorted(set(new.blob_digests))
            run_many(conn, q.touch_blob, [{"digest": d, "now": now} for d in blob_digests])
            if q.has_links is not None and blob_digests:  # PostgreSQL: one for all
                linked = {r[0] for r in run(conn, q.has_links, repo=repo_id,
                                            digests=blob_digests).fetchall()}
                missing = [d for d in blob_digests if d not in linked]
            else:
                missing = [d for d in blob_digests
                           if run(conn, q.has_link, repo=repo_id, digest=d).fetchone() is None]
            # an index's children, then the manifest itself, are touched (their grace
            # starts over) and so locked, children in digest order: a shared lock to see
            # them, then this write, deadlocked two pushes of one index on PostgreSQL
            children = sorted(set(new.child_digests))
            missing += [d for d in children if run(
                conn, q.touch_manifest, repo=repo_id, digest=d, now=now).fetchone() is None]
            if missing and check:
                raise MissingReferences(sorted(missing))
            found = run(conn, q.touch_manifest, repo=repo_id, digest=new.digest,
                        now=now).fetchone()
            added = None if found is not None else run(
                conn, q.add_manifest, repo=repo_id, digest=new.digest,
                media_type=new.media_type, artifact_type=new.artifact_type,
                size=len(new.payload), payload=new.payload, subject=new.subject_digest,
                config=new.config_digest, annotations=new.annotations, now=now,
            ).fetchone()
            if added is not None:
                manifest_id = added[0]
                run_many(conn, q.add_manifest_blob,
                         [{"manifest": manifest_id, "digest": d} for d in blob_digests])
                run_many(conn, q.add_child,
                         [{"manifest": manifest_id, "digest": d} for d in new.child_digests])
            else:  # pushed again (or just now by another request): touched above
                if found is None:
                    found = run(conn, q.touch_manifest, repo=repo_id, digest=new.digest,
                                now=now).fetchone()
                manifest_id = found[0]
            if tag is not None:  # one upsert, new tag or moved
                run(conn, q.add_tag, repo=repo_id, tag=tag, manifest=manifest_id,
                    now=now if pushed_at is None else pushed_at, by=by)
            if added is not None or tag is not None:
                kind = feed.MANIFEST_PUT if added is not None else feed.TAG_SET
                self.events.record(conn, [Change(kind, name, tag, new.digest,
                                                 new.media_type, by)], now)

        return body

    async def manifest(
        self, name: str, *, tag: str | None = None, digest: str | None = None,
        payload: bool = True,
    ) -> ManifestRecord | None:
        """The manifest `name:tag` or `name@digest`, with its payload unless told not to."""
        query = _MANIFEST[tag is not None, payload]
        rows = await self._fetch(query, name=name, ref=tag if tag is not None else digest)
        if not rows:
            return None
        d, media_type, size, body, subject = rows[0]
        return ManifestRecord(d, media_type, size, body if payload else None, subject)

    async def delete_manifest(self, name: str, digest: str, *, referrers: bool = True
                              ) -> list[str]:
        """Delete the manifest with its tags and references; the digests deleted.

        An index takes its child manifests along when nothing else keeps them (no tag,
        no other index of the repository); with `referrers`, manifests whose subject it
        is (signatures, SBOMs) go too. Empty when the manifest is not there.
        """

        def body(conn: Connection) -> list[str]:
            repo_id = _repo_id(conn, name)
            if repo_id is None:
                return []
            manifest_id = conn.scalar(select(manifests.c.id).where(
                manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                .with_for_update())
            if manifest_id is None:
                return []
            deleted: list[str] = []
            _delete_tree(conn, repo_id, manifest_id, digest, referrers, deleted)
            self.events.record(conn, [Change(feed.MANIFEST_DELETED, name, digest=d)
                                      for d in deleted], time.time())
            return deleted

        return await self.engines.transaction(body)

    async def delete_tag(self, name: str, tag: str, digest: str | None = None) -> bool:
        """Delete the tag (only while it names `digest`, when given); False: no such tag."""
        def body(conn: Connection) -> bool:
            repo_id = _repo_id(conn, name)
            if repo_id is None:
                return False
            stmt = delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag)
            if digest is not None:
                stmt = stmt.where(tags.c.manifest_id.in_(
                    select(manifests.c.id).where(manifests.c.repository_id == repo_id,
                                                 manifests.c.digest == digest)))
            result = conn.execute(stmt)
            if not result.rowcount:
                return False
            self.events.record(conn, [Change(feed.TAG_DELETED, name, tag)], time.time())
            return True

        return await self.engines.transaction(body)

    async def record_pulls(self, pulls: Sequence[tuple[str, str, float]]) -> int:
        """Set `tags.pulled_at` for (repository, tag, time) triples; rows updated."""
        repo_id = (select(repositories.c.id).where(repositories.c.name == bindparam("repo"))
                   .scalar_subquery())
        stmt = (update(tags)
                .where(tags.c.repository_id == repo_id, tags.c.name == bindparam("tag"),
                       or_(tags.c.pulled_at.is_(None), tags.c.pulled_at < bindparam("at")))
                .values(pulled_at=bindparam("at")))
        params = [{"repo": n, "tag": t, "at": at} for n, t, at in pulls]

        def body(conn: Connection) -> int:
            return sum(int(conn.execute(stmt, p).rowcount) for p in params)

        return await self.engines.transaction(body)

    async def list_tags(self, name: str, n: int | None, last: str | None) -> list[str] | None:
        """Tags of `name` in lexical order after `last`; None when the repository is unknown."""
        rows = await self._tag_page(select(tags.c.name), name, n, last)
        return None if rows is None else [r[0] for r in rows]

    async def tag_records(self, name: str, n: int | None, last: str | None, *,
                          tag: str | None = None) -> list[TagRecord] | None:
        """Tags of `name` in lexical order after `last` (only `tag`, when given), each
        with its manifest's digest and when and by whom it was pushed; None when the
        repository is unknown."""
        stmt = (select(tags.c.name, manifests.c.digest, tags.c.updated_at, tags.c.pushed_by)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id)))
        if tag is not None:
            stmt = stmt.where(tags.c.name == tag)
        rows = await self._tag_page(stmt, name, n, last)
        return None if rows is None else [TagRecord(*r) for r in rows]

    async def _tag_page(self, stmt: Select[Any], name: str, n: int | None,
                        last: str | None) -> Sequence[Any] | None:
        """The rows of `stmt` (a select over `tags`) for the tags of `name` after `last`,
        at most `n`, in lexical order of the tag; None for an unknown repository."""
        repo = await self._read(select(repositories.c.id).where(repositories.c.name == name))
        if not repo:
            return None
        stmt = stmt.where(tags.c.repository_id == repo[0][0])
        if last:
            stmt = stmt.where(self._sorted(tags.c.name) > last)
        stmt = stmt.order_by(self._sorted(tags.c.name))
        if n is not None:
            stmt = stmt.limit(n)
        return await self._read(stmt)

    async def referrers(
        self, name: str, subject: str, artifact_type: str | None, *,
        limit: int | None = None, after: tuple[float, int] | None = None,
    ) -> list[ReferrerRecord]:
        """Manifests of `name` whose subject is `subject` (of `artifact_type`, if given),
        oldest first (created_at, then id): at most `limit`, those past position `after`.

        A page is one range of an index (`ix_manifests_referrers`, or `..._by_type` for
        one artifact type; migration 0019), however many referrers the subject has.
        """
        # the repository's id as a scalar subquery, not a join: PostgreSQL then reads the
        # index range in its order (a nested loop's output has the outer side's order
        # only, so the join sorted every referrer of the subject for each page)
        repo_id = select(repositories.c.id).where(repositories.c.name == name)
        stmt = (
            select(manifests.c.digest, manifests.c.media_type, manifests.c.size,
                   manifests.c.artifact_type, manifests.c.annotations,
                   manifests.c.created_at, manifests.c.id)
            .where(manifests.c.repository_id == repo_id.scalar_subquery(),
                   manifests.c.subject_digest == subject)
            .order_by(manifests.c.created_at, manifests.c.id)
        )
        if artifact_type is not None:
            stmt = stmt.where(manifests.c.artifact_type == artifact_type)
        if after is not None:
            stmt = stmt.where(tuple_(manifests.c.created_at, manifests.c.id) > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [
            ReferrerRecord(d, m, s, a, json.loads(ann) if ann else None, (created, id_))
            for d, m, s, a, ann, created, id_ in await self._read(stmt)
        ]

    # --- a replica's own upkeep -------------------------------------------------

    async def manifest_digests(self, name: str) -> list[str]:
        """Digests of every manifest of repository `name`."""
        rows = await self._read(select(manifests.c.digest).select_from(
            repositories.join(manifests)).where(repositories.c.name == name))
        return [r[0] for r in rows]

    async def blob_source(self, digest: str) -> str | None:
        """A repository that holds blob `digest`, or None."""
        rows = await self._read(select(repositories.c.name).select_from(
            repositories.join(repository_blobs)).where(repository_blobs.c.digest == digest)
            .limit(1))
        return str(rows[0][0]) if rows else None

    async def unreferenced_links(self, name: str) -> list[str]:
        """Blobs linked into `name` that none of its manifests references."""
        referenced = select(manifest_blobs.c.digest).join(
            manifests, manifests.c.id == manifest_blobs.c.manifest_id
        ).where(manifests.c.repository_id == repository_blobs.c.repository_id,
                manifest_blobs.c.digest == repository_blobs.c.digest)
        rows = await self._read(select(repository_blobs.c.digest).select_from(
            repositories.join(repository_blobs)).where(
            repositories.c.name == name, ~exists(referenced)))
        return [r[0] for r in rows]

    # --- the change feed and shared state ----------------------------------------

    async def events_after(self, after: int, limit: int
                           ) -> tuple[list[EventRecord], int, int]:
        """(up to `limit` events after id `after`, the feed's floor, its head).

        The floor is read before and after the events, and all three again if a prune
        moved it meanwhile, so events never start past a floor the caller was not told.
        """
        floor_q = select(registry_state.c.value).where(
            registry_state.c.key == feed.PRUNED_THROUGH)
        while True:
            floor = int((await self._read(floor_q) or [(0,)])[0][0])
            head = int((await self._read(select(func.max(events.c.id))))[0][0] or 0)
            rows = await self._read(
                select(*feed.COLUMNS).where(events.c.id > after)
                .order_by(events.c.id).limit(limit)) if limit else []
            if int((await self._read(floor_q) or [(0,)])[0][0]) == floor:
                return [EventRecord(*r) for r in rows], floor, max(floor, head)

    async def prune_events(self, before: float) -> int:
        """Drop events recorded before `before` (the feed's floor moves up)."""
        return await self.engines.transaction(
            lambda conn: feed.prune(conn, self._dialect, before))

    async def state(self, key: str) -> str | None:
        """A named value of `registry_state`, None when unset."""
        rows = await self._read(select(registry_state.c.value)
                                .where(registry_state.c.key == key))
        return str(rows[0][0]) if rows else None

    async def states(self, prefix: str) -> dict[str, str]:
        """Every named value whose key starts with `prefix`."""
        rows = await self._read(select(registry_state.c.key, registry_state.c.value)
                                .where(registry_state.c.key.startswith(prefix)))
        return {str(k): str(v) for k, v in rows}

    async def set_states(self, values: dict[str, str | None]) -> None:
        """Set (or, for None, remove) named values in one transaction."""

        def body(conn: Connection) -> None:
            for key, value in values.items():
                if value is None:
                    conn.execute(delete(registry_state).where(registry_state.c.key == key))
                else:
                    feed.set_state(conn, self._dialect, key, value)

        await self.engines.transaction(body)

    async def counts(self) -> dict[str, int]:
        """Row counts for status pages and tests."""
        out = {}
        for table in (repositories, blobs, manifests, tags, uploads):
            rows = await self._read(select(func.count()).select_from(table))
            out[table.name] = int(rows[0][0])
        return out


def _unheld(now: float) -> ColumnElement[bool]:
    """An upload session no request holds at `now` (never held, released, or expired)."""
    return or_(uploads.c.holder.is_(None), uploads.c.held_until < now)


def _delete_tree(conn: Connection, repo_id: int, manifest_id: int, digest: str,
                 referrers: bool, deleted: list[str]) -> None:
    """Delete one manifest, then the children and referrers it leaves unreferenced, and
    theirs, depth first. An explicit stack: a chain of a thousand signatures (each the
    subject of the next) passed Python's recursion limit, and the delete failed for good."""
    stack = [_delete_one(conn, repo_id, manifest_id, digest, referrers, deleted)]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
        else:
            stack.append(_delete_one(conn, repo_id, *found, referrers, deleted))


def _delete_one(conn: Connection, repo_id: int, manifest_id: int, digest: str,
                referrers: bool, deleted: list[str]) -> Iterator[tuple[int, str]]:
    """Delete one manifest, then yield each child and referrer it leaves unreferenced,
    the next one only once the last one's own tree is deleted (what the check sees)."""
    children = list(conn.execute(select(manifest_children.c.child_digest)
                                 .where(manifest_children.c.manifest_id == manifest_id)).scalars())
    for table in (tags, manifest_blobs, manifest_children):
        conn.execute(delete(table).where(table.c.manifest_id == manifest_id))
    if conn.execute(delete(manifests).where(manifests.c.id == manifest_id)).rowcount == 0:
        return  # deleted already, in the tree of one before it
    deleted.append(digest)
    for child in children:
        row = conn.execute(select(manifests.c.id).where(
            manifests.c.repository_id == repo_id, manifests.c.digest == child)
            .with_for_update()).first()
        if row is not None and _unreferenced(conn, repo_id, row.id, child):
            yield row.id, child
    if referrers:
        # a referrer goes with its subject unless something else keeps it: a tag of its
        # own (`sbom-v1`), or an index listing it (as children are kept)
        for ref_id, ref_digest in conn.execute(select(manifests.c.id, manifests.c.digest).where(
                manifests.c.repository_id == repo_id, manifests.c.subject_digest == digest)
                .with_for_update()).all():
            if _unreferenced(conn, repo_id, ref_id, ref_digest):
                yield ref_id, ref_digest


def _unreferenced(conn: Connection, repo_id: int, manifest_id: int, digest: str) -> bool:
    """Whether no tag names the manifest and no index of the repository lists it."""
    if conn.scalar(select(exists().where(tags.c.manifest_id == manifest_id))):
        return False
    parent = select(manifest_children.c.manifest_id).join(
        manifests, manifests.c.id == manifest_children.c.manifest_id
    ).where(manifests.c.repository_id == repo_id, manifest_children.c.child_digest == digest)
    return not conn.scalar(select(exists(parent)))
