"""Repository use cases: the catalog, delete a whole repository, usage per repository."""

from __future__ import annotations

from collections.abc import Callable

from dockyard.core.lifecycle import LifecycleBackend, RepositoryDeletion, Usage
from dockyard.core.notify import Notifier
from dockyard.metadata.store import MetadataStore
from dockyard.oci.errors import NameUnknown, Unsupported
from dockyard.storage.blobstore import BlobStore

#: names read from the store at a time when the catalog is filtered
CATALOG_BATCH = 500


class RepositoryService:
    """Whole-repository operations (a Dockyard extension of the distribution API)."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, lifecycle: LifecycleBackend,
                 *, delete_enabled: bool, notifier: Notifier | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self.lifecycle = lifecycle
        self.blobs = blobs
        self.delete_enabled = delete_enabled

    async def catalog(self, limit: int | None, last: str | None,
                      visible: Callable[[str], bool] | None = None,
                      batch: int = CATALOG_BATCH) -> list[str]:
        """Up to `limit` repository names after `last`, in lexical order, keeping only
        those `visible` accepts: the store is read page by page until `limit` names are
        found, so a caller who sees little does not make anyone load every name, and
        with no filter it is one query of `limit` names."""
        if visible is None:
            return await self.store.catalog(limit, last)
        size = batch if limit is None else max(limit, batch)
        out: list[str] = []
        while limit is None or len(out) < limit:
            page = await self.store.catalog(size, last)
            for name in page:
                if visible(name):
                    out.append(name)
                    if limit is not None and len(out) == limit:
                        break
            if len(page) < size:
                break
            last = page[-1]
        return out

    async def delete(self, name: str) -> RepositoryDeletion:
        """Remove the repository from metadata at once; the collector frees the bytes."""
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled (storage.delete.enabled)")
        deleted = await self.lifecycle.delete_repository(name)
        if deleted is None:
            raise NameUnknown(f"repository {name!r} is not known", {"name": name})
        if self.notifier is not None:
            await self.notifier.emit("delete", name)
        for session_id in deleted.uploads:
            await self.blobs.delete_upload(session_id)
        return deleted

    async def usage(self) -> list[Usage]:
        return await self.lifecycle.usage()

    async def total_bytes(self) -> tuple[int, int]:
        """(blob count, bytes) over every stored blob."""
        return await self.lifecycle.total_bytes()
