"""The change feed's use cases: read events after a cursor (long-polled), prune old ones.

A cursor is the id of the last event a reader has; the feed answers the events after it
in order, and its `next` cursor. Ids grow in commit order on every node
(`metadata/events.py`), so a reader never skips an event by advancing. A wait for new
events polls the store every `POLL` seconds, so events written by any node end it early;
it is bounded by the caller's `wait` and by `max_wait`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.metadata.events import (
    BLOB_DELETED,
    MANIFEST_DELETED,
    MANIFEST_PUT,
    REPOSITORY_DELETED,
    TAG_DELETED,
    TAG_SET,
    EventRecord,
)
from dockyard.metadata.store import MetadataStore
from dockyard.oci.errors import CursorExpired

#: the kinds of event, for readers of the feed above `core` (the replica's follower)
__all__ = [
    "BLOB_DELETED",
    "MANIFEST_DELETED",
    "MANIFEST_PUT",
    "REPOSITORY_DELETED",
    "TAG_DELETED",
    "TAG_SET",
    "FeedPage",
    "FeedService",
]

POLL = 0.25
"""Seconds between two looks at the store while a reader waits for events."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Events after a cursor, the cursor to ask with next, and the newest event id."""

    events: list[EventRecord]
    next: int
    head: int


class FeedService:
    """Reads and prunes the change feed."""

    def __init__(self, store: MetadataStore, *, max_wait: float = 60.0,
                 poll: float = POLL) -> None:
        self.store = store
        self.max_wait = max_wait
        self.poll = poll

    async def changes(self, after: int, limit: int, wait: float = 0.0,
                      stop: Callable[[], bool] | None = None) -> FeedPage:
        """Up to `limit` events after `after`; with none yet, wait up to `wait` seconds
        (at most `max_wait`) for some, or until `stop()` says to (the server drains).
        `CursorExpired` when events after `after` were pruned, or when `after` is past
        every event this feed ever had (it belongs to another registry, or to this one
        before a restore)."""
        deadline = time.monotonic() + max(0.0, min(wait, self.max_wait))
        while True:
            events, floor, head = await self.store.events_after(after, limit)
            if after < floor or after > head:
                raise CursorExpired(
                    f"the change feed holds events {floor + 1} to {head}; cursor {after} "
                    "is outside it: compare in full, then follow from the head",
                    {"floor": floor, "head": head})
            left = deadline - time.monotonic()
            if events or left <= 0 or limit == 0 or (stop is not None and stop()):
                return FeedPage(events, events[-1].id if events else after, head)
            await asyncio.sleep(min(self.poll, left))

    async def prune(self, keep: float) -> int:
        """Drop events older than `keep` seconds; how many went."""
        return await self.store.prune_events(time.time() - keep)
