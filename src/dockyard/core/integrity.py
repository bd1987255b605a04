"""The integrity seam: what `dockyard fsck` and the scrub job read and repair.

`IntegrityBackend` is the part of the metadata store the integrity check (`gc/fsck.py`)
may use, as a Protocol, so it never imports `metadata`; `metadata/integrity.py`'s
`IntegrityStore` implements it and `Registry.integrity` hands it over. Bytes are read
through `Registry.blobs` and `Registry.uploads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from dockyard.metadata.integrity import BlobRow, BrokenManifest, UploadRow

__all__ = ["BlobRow", "BrokenManifest", "IntegrityBackend", "UploadRow"]


class IntegrityBackend(Protocol):
    """Bulk snapshots of the metadata, and repairs that re-check them."""

    async def blob_rows(self, hex_range: tuple[str, str | None] | None = None
                        ) -> list[BlobRow]:
        """Every blob row (digest, size, corrupt mark); with `hex_range` (from, before:
        None to the end), only those whose digest's hex lies in it, filtered by the store."""
        ...

    async def tombstones(self) -> set[str]:
        """Digests whose bytes the collector is deleting now."""
        ...

    async def broken_manifests(self, unusable: Sequence[str] = (),
                               lazy: Callable[[str], bool] = ...,
                               ) -> list[BrokenManifest]:
        """Manifests whose blobs (or child manifests) their repository cannot serve;
        `unusable` names blobs whose bytes are missing or damaged; in a repository
        `lazy` names (a pull-through cache's), what is not there yet is not missing."""
        ...

    async def dangling_links(self) -> dict[str, list[str]]:
        """Digest -> repositories, for links whose blob row is gone."""
        ...

    async def drop_dangling_links(self, digest: str) -> int:
        """Remove the links to `digest` if it still has no row; how many."""
        ...

    async def upload_rows(self) -> list[UploadRow]:
        """Every upload session row."""
        ...

    async def fix_size(self, digest: str, recorded: int, size: int) -> bool:
        """Set the blob's recorded size to `size` if it is still `recorded`."""
        ...

    async def begin_mark(self, digest: str) -> bool:
        """Mark a blob corrupt under a tombstone (its bytes are removed next)."""
        ...

    async def end_mark(self, digest: str) -> None:
        """End the tombstone `begin_mark` left: the bytes are gone."""
        ...

    async def adopt_orphan(self, digest: str, size: int) -> bool:
        """Give bytes nothing records an unlinked row, for the collector."""
        ...

    async def delete_dead_upload(self, session_id: str, idle_since: float) -> bool:
        """Delete a session row (bytes gone) if idle since then and unheld."""
        ...
