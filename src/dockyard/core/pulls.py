"""Last-pull times of tags, recorded cheaply: in memory per process, written in batches.

A manifest GET by tag costs one dictionary assignment; every `retention.
pull_flush_interval` the process writes what it gathered in one transaction. Retention
rules such as "keep tags pulled within 30 days" need only that precision.
"""

from __future__ import annotations

import time

from dockyard.metadata.store import MetadataStore


class PullRecorder:
    """Collects (repository, tag) -> last pull time until `flush`."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._pending: dict[tuple[str, str], float] = {}

    def record(self, name: str, tag: str) -> None:
        self._pending[name, tag] = time.time()

    async def flush(self) -> int:
        """Write the gathered times; how many tags were updated."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            return await self.store.record_pulls([(n, t, at) for (n, t), at in batch.items()])
        except BaseException:  # kept for the next flush (newer pulls meanwhile win)
            for key, at in batch.items():
                if self._pending.get(key, 0.0) < at:
                    self._pending[key] = at
            raise
