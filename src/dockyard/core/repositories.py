"""Repository use cases: delete a whole repository, usage per repository."""

from __future__ import annotations

from dockyard.metadata.lifecycle import LifecycleStore, RepositoryDeletion, Usage
from dockyard.metadata.store import MetadataStore
from dockyard.oci.errors import NameUnknown, Unsupported
from dockyard.storage.blobstore import BlobStore


class RepositoryService:
    """Whole-repository operations (a Dockyard extension of the distribution API)."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, *, delete_enabled: bool) -> None:
        self.lifecycle = LifecycleStore(store)
        self.blobs = blobs
        self.delete_enabled = delete_enabled

    async def delete(self, name: str) -> RepositoryDeletion:
        """Remove the repository from metadata at once; the collector frees the bytes."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled (storage.delete.enabled)")
        deleted = await self.lifecycle.delete_repository(name)
        if deleted is None:
            raise NameUnknown(f"repository {name!r} is not known", {"name": name})
        for session_id in deleted.uploads:
            await self.blobs.delete_upload(session_id)
        return deleted

    async def usage(self) -> list[Usage]:
        return await self.lifecycle.usage()
