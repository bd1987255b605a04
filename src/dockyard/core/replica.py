"""A standby replica's state and its own writes: read-only flag, cursor, lag, deletions.

The state lives in the metadata store (`registry_state`), so every node of a replica
sees it: `replica.primary` (the URL followed; while it is set and the registry is not
promoted, pushes and deletes from clients are refused), `replica.promoted_at`,
`replica.cursor` (the last event of the primary's feed applied), `replica.status` (lag,
as JSON) and `replica.alive_at` (the follower's heartbeat). The follower
(`dockyard.replica`) applies the primary's deletions here, mirroring them whatever
`storage.delete` says: a replica's content is its primary's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dockyard.core.lifecycle import LifecycleBackend
from dockyard.metadata.records import TagRecord as TagRecord  # the follower's type too
from dockyard.metadata.store import PUSHER_MAX as PUSHER_MAX  # the follower compares
from dockyard.metadata.store import MetadataStore
from dockyard.oci.errors import ReadOnlyReplica

PRIMARY = "replica.primary"
PROMOTED = "replica.promoted_at"
CURSOR = "replica.cursor"
STATUS = "replica.status"
ALIVE = "replica.alive_at"

READ_ONLY_CACHE = 1.0
"""Seconds a process trusts its last look at the read-only flag (a promotion by another
node or by `dockyard promote` is seen within this)."""


class ReplicaService:
    """The replica's shared state and the writes that mirror the primary's deletions."""

    def __init__(self, store: MetadataStore, lifecycle: LifecycleBackend) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self._seen: tuple[float, str | None] = (0.0, None)

    # --- state -----------------------------------------------------------------

    async def read_only(self) -> str | None:
        """The primary's URL while this registry is an unpromoted replica; else None."""
        at, primary = self._seen
        now = time.monotonic()
        if now - at < READ_ONLY_CACHE:
            return primary
        values = await self.store.states("replica.")
        primary = values.get(PRIMARY) if PROMOTED not in values else None
        self._seen = (now, primary)
        return primary

    async def check_writable(self) -> None:
        """Raise `ReadOnlyReplica` while this registry is an unpromoted replica."""
        primary = await self.read_only()
        if primary is not None:
            raise ReadOnlyReplica(
                f"this registry is a read-only replica of {primary}: pushes and deletes "
                "are refused until `dockyard promote`", {"primary": primary})

    async def follow(self, primary: str) -> bool:
        """Become (or stay) a replica of `primary`; False when promoted already (then
        nothing changes). A new primary starts over from a full comparison."""
        values = await self.store.states("replica.")
        if PROMOTED in values:
            return False
        if values.get(PRIMARY) != primary:
            await self.store.set_states({PRIMARY: primary, CURSOR: None, STATUS: None,
                                         ALIVE: None})
        self._seen = (0.0, None)
        return True

    async def promote(self) -> str | None:
        """Stop being a replica: writes are accepted from now on (on every node within
        `READ_ONLY_CACHE`) and the follower stops. The former primary, or None when this
        registry was no replica."""
        values = await self.store.states("replica.")
        if PRIMARY not in values or PROMOTED in values:
            return None
        await self.store.set_states({PROMOTED: repr(time.time())})
        self._seen = (0.0, None)
        return values[PRIMARY]

    async def promoted(self) -> bool:
        return await self.store.state(PROMOTED) is not None

    async def cursor(self) -> int | None:
        """The last applied event id of the primary's feed; None: compare in full."""
        value = await self.store.state(CURSOR)
        return int(value) if value is not None else None

    async def save(self, cursor: int | None, status: dict[str, Any]) -> None:
        """Store the cursor and the follower's status (lag) together."""
        await self.store.set_states({
            CURSOR: None if cursor is None else str(cursor),
            STATUS: json.dumps({**status, "updated_at": time.time()})})

    async def alive(self) -> None:
        """The follower runs (its heartbeat, apart from its status: it never touches
        the cursor, and a step may take long between two saves of its status)."""
        await self.store.set_states({ALIVE: repr(time.time())})

    async def save_error(self, message: str) -> None:
        """The follower cannot run or failed: its status says so (the lag unknown while
        it fails); the cursor stays where it is."""
        await self.store.set_states({STATUS: json.dumps({
            "state": "error", "head": None, "events_behind": None, "seconds_behind": None,
            "last_error": message[:500], "updated_at": time.time()})})

    async def status(self) -> dict[str, Any]:
        """What the admin API shows: primary, promotion, cursor and lag, and when the
        follower was last seen running (`alive_at`: its heartbeat, which a running
        follower writes at its start and every `HEARTBEAT` seconds; not the status's
        time, which the server also writes when the follower cannot start)."""
        values = await self.store.states("replica.")
        status: dict[str, Any] = json.loads(values[STATUS]) if STATUS in values else {}
        return {"primary": values.get(PRIMARY), "promoted": PROMOTED in values,
                "cursor": int(values[CURSOR]) if CURSOR in values else None, **status,
                "alive_at": float(values[ALIVE]) if ALIVE in values else None}

    async def standby(self) -> dict[str, Any] | None:
        """`status`, or None when this registry follows no primary (and never did): what
        `dockyard status`, the operations page and the metrics show of a replica."""
        status = await self.status()
        return status if status["primary"] is not None else None

    # --- the primary's deletions, mirrored ---------------------------------------

    async def delete_tag(self, name: str, tag: str) -> bool:
        return await self.store.delete_tag(name, tag)

    async def delete_manifest(self, name: str, digest: str) -> bool:
        """Delete one manifest (the feed names each one the primary deleted); its blob
        links stay until the primary's collector unlinks them (`blob.deleted`)."""
        return bool(await self.store.delete_manifest(name, digest, referrers=False))

    async def delete_repository(self, name: str) -> bool:
        return await self.lifecycle.delete_repository(name) is not None

    async def unlink_blob(self, name: str, digest: str) -> bool:
        return await self.store.unlink_blob(name, digest)

    async def unreferenced_links(self, name: str) -> list[str]:
        return await self.store.unreferenced_links(name)

    async def manifest_digests(self, name: str) -> list[str]:
        return await self.store.manifest_digests(name)

    async def tags(self, name: str) -> dict[str, str]:
        """Every tag of `name` and the digest it names (empty for an unknown name)."""
        return {tag: r.digest for tag, r in (await self.timed_tags(name)).items()}

    async def timed_tags(self, name: str) -> dict[str, TagRecord]:
        """Every tag of `name` with the digest it names, its push time and its pusher
        (empty for an unknown name): one read."""
        return {r.tag: r for r in await self.store.tag_records(name, None, None) or []}

    async def tag(self, name: str, tag: str) -> TagRecord | None:
        """The tag `name:tag` with its digest, push time and pusher, or None."""
        found = await self.store.tag_records(name, None, None, tag=tag)
        return found[0] if found else None

    async def adopt_blob(self, name: str, digest: str) -> bool:
        """Link a blob this registry already holds in another repository into `name`
        (no transfer); False when it holds none."""
        source = await self.store.blob_source(digest)
        return source is not None and await self.store.mount_blob(
            name, digest, source) is not None
