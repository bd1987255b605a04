"""The lifecycle seam: what the collector, retention and usage read and delete.

`LifecycleBackend` is the part of the metadata store the long-running use cases above
`core` (`gc/`, `cli/`) may use, as a Protocol, so they never import `metadata`; the
metadata layer's `LifecycleStore` implements it and `backends.py` hands it over through
`Registry.lifecycle`. Every delete re-checks, in its own transaction with the rows
locked, that the item is still unused (see `metadata/lifecycle.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dockyard.metadata.lifecycle import (
    CollectionRecord,
    ManifestNode,
    RepositoryDeletion,
    Usage,
)
from dockyard.metadata.store import TOMBSTONE_TIMEOUT

GC_LEASE = "gc"
"""The lease held by whoever collects now (the scheduled job or `dockyard gc`): a push
waiting on a deletion of its digest asks it whether a collector still runs."""

__all__ = ["GC_LEASE", "TOMBSTONE_TIMEOUT", "CollectionRecord", "LifecycleBackend",
           "ManifestNode", "RepositoryDeletion", "Usage"]


class LifecycleBackend(Protocol):
    """Reads and re-checking deletes of the image lifecycle (one transaction each)."""

    async def repositories(self) -> list[tuple[int, str]]:
        """(id, name) of every repository."""
        ...

    async def delete_repository(self, name: str) -> RepositoryDeletion | None:
        """Remove a repository, its tags, manifests, links and upload sessions at once.
        Bytes are left to the collector. Returns what went, or None if unknown."""
        ...

    async def tags(self, repo_id: int) -> list[tuple[str, float, float | None]]:
        """(tag, pushed at, last pulled at) of every tag of the repository."""
        ...

    async def delete_tag_if_unchanged(
        self, repo_id: int, tag: str, pushed_at: float
    ) -> bool:
        """Delete the tag unless it was pushed again since the plan was made."""
        ...

    async def manifest_graph(self, repo_id: int) -> list[ManifestNode]:
        """Every manifest of the repository with what keeps it alive."""
        ...

    async def delete_dead_manifest(
        self, repo_id: int, manifest_id: int, cutoff: float, *, keep_referrers: bool = False
    ) -> bool:
        """Delete the manifest if, checked again now, nothing keeps it alive. Alive:
        tagged, created after `cutoff`, a child of an index in the repository, or
        (unless its subject is gone) a referrer of a manifest in the repository."""
        ...

    async def manifest_blob_refs(self, repo_id: int) -> list[tuple[int, str]]:
        """(manifest id, blob digest) for every blob reference in the repository."""
        ...

    async def links(self, repo_id: int) -> list[tuple[str, int, float, float]]:
        """(digest, size, linked_at, touched_at) of every blob linked into the repository."""
        ...

    async def link_counts(self, digests: Sequence[str]) -> dict[str, int]:
        """How many repositories link each digest."""
        ...

    async def deleted_owner(self, digest: str) -> str | None:
        """A deleted repository that linked `digest`, to credit its freed bytes to."""
        ...

    async def forget_deleted_links(self, before: float) -> None:
        """Drop records of links deleted before `before`: their collection has run."""
        ...

    async def stale_tombstones(self, older_than: float) -> list[str]:
        """Digests whose deletion began before `older_than` and never ended: a collector
        died between removing the blob's row and its bytes."""
        ...

    async def resume_blob_deletion(self, digest: str, older_than: float) -> bool:
        """Take over a dead collector's deletion of `digest`: renew its tombstone, so an
        upload of that digest waits again, and tell the caller to delete the bytes.
        False when there is nothing to take over: the tombstone is gone or fresh
        (another collector has it), or an upload already claimed the digest anew (its
        row is back, and its bytes are the upload's)."""
        ...

    async def dangling_links(self, repo_id: int, cutoff: float) -> list[tuple[str, int]]:
        """Blobs linked into the repository that no manifest of it references."""
        ...

    async def delete_dangling_link(self, repo_id: int, digest: str, cutoff: float) -> bool:
        """Unlink `digest` from the repository if, checked again now, nothing references
        it."""
        ...

    async def unlinked_blobs(self, cutoff: float, *, after: str | None = None,
                             limit: int | None = None) -> list[tuple[str, int]]:
        """Blobs no repository links to, untouched since `cutoff`, in digest order:
        those past digest `after`, at most `limit`."""
        ...

    async def begin_blob_deletion(self, digest: str, cutoff: float) -> int | None:
        """Remove the blob's row and leave a tombstone; its size, or None if it lives. The
        caller then deletes the bytes and calls `end_blob_deletion`. An upload that
        finishes the same digest meanwhile waits on the tombstone (`claim_blob`)."""
        ...

    async def end_blob_deletion(self, digest: str) -> None:
        """Drop `digest`'s tombstone: its bytes are gone."""
        ...

    async def defer_blob_deletion(self, digest: str) -> None:
        """Its bytes could not be deleted: age `digest`'s tombstone past
        `TOMBSTONE_TIMEOUT`, so uploads of it stop waiting and the next collection
        takes the deletion over (as a dead collector's)."""
        ...

    async def defer_blob_deletions(self, digests: Sequence[str]) -> None:
        """`defer_blob_deletion` for each of `digests`, in a few statements (a stopped
        collection's batch whose bytes were never asked to go)."""
        ...

    async def delete_empty_repository(self, repo_id: int) -> bool:
        """Drop a repository row that holds nothing any more (no manifest, link, upload)."""
        ...

    async def usage(self) -> list[Usage]:
        """Bytes per repository (all, and unique to it), counts; one pass of SQL."""
        ...

    async def total_bytes(self) -> tuple[int, int]:
        """(blob count, bytes) over every stored blob."""
        ...

    async def record_collection(self, record: CollectionRecord) -> None:
        """Remember a finished collection (the operations page's history)."""
        ...
