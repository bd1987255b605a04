"""Blob use cases: look up, open for download, mount across repositories, delete."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, StorageFull, Unsupported
from dockyard.storage.blobstore import BlobStore

#: A HEAD renews a blob's grace period at most this often (seconds): a burst of HEADs
#: costs one write, and any grace period of a second or more still protects the blob.
TOUCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int
    path: Path | None


class BlobService:
    """Blobs as repositories see them: present only where pushed or mounted."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, *, delete_enabled: bool,
                 touch_interval: float = TOUCH_INTERVAL) -> None:
        self.store = store
        self.blobs = blobs
        self.delete_enabled = delete_enabled
        self.touch_interval = touch_interval

    async def stat(self, name: str, digest: Digest, *, touch: bool = False) -> BlobInfo:
        record = await self.store.blob_in_repository(name, str(digest))
        if record is None:
            raise BlobUnknown(f"blob {digest} is not in {name}", {"digest": str(digest)})
        if touch and record.touched_at < time.time() - self.touch_interval:
            # a check, not a write the client asked for: on a full disk it still answers
            with contextlib.suppress(StorageFull):
                await self.store.touch_blob(str(digest))
        return BlobInfo(digest, record.size, self.blobs.local_path(digest))

    async def mount(self, name: str, digest: Digest, source: str) -> int | None:
        """Link `digest` from `source` into `name`; its size, or None if `source` lacks it."""
        if await self.blobs.size(digest) is None:
            return None
        found = await self.store.mount_blob(name, str(digest), source)
        return None if found is None else found.size

    async def delete(self, name: str, digest: Digest) -> None:
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled (storage.delete.enabled)")
        if not await self.store.unlink_blob(name, str(digest)):
            raise BlobUnknown(f"blob {digest} is not in {name}", {"digest": str(digest)})
