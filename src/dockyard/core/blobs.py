"""Blob use cases: look up, open for download, mount across repositories, delete.

A download is answered in two steps: `stat` (metadata only: a HEAD never touches the
blob store) and `open`, which says what to send for a byte range: a local file the HTTP
layer can hand to the kernel (`LocalFile`), or a stream of bytes (`Stream`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.core.notify import BLOB_TYPE, Notifier
from dockyard.metadata.store import MetadataStore
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, StorageFull, StorageUnavailable, Unsupported
from dockyard.storage.blobstore import BlobStore

if TYPE_CHECKING:
    from dockyard.core.proxy import ProxyRoutes, PullThrough

#: A HEAD renews a blob's grace period at most this often (seconds): a burst of HEADs
#: costs one write, and any grace period of a second or more still protects the blob.
TOUCH_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob as one repository holds it."""

    digest: Digest
    size: int
    #: not stored yet: a pull-through cache fetches it from upstream when opened
    remote: bool = False
    #: the repository it is read from (a `remote` blob's: fetched for)
    repository: str = ""


@dataclass(frozen=True, slots=True)
class LocalFile:
    """Send `length` bytes of the local file `path` from `offset` (zero-copy)."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Stream:
    """Send the bytes `chunks` yields (`length` of them, from `offset`)."""

    chunks: AsyncIterator[bytes]
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the client to `url`, which serves the whole blob (Range works there too)."""

    url: str


BlobBody = LocalFile | Stream | Redirect


class BlobService:
    """Blobs as repositories see them: present only where pushed or mounted."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, *, delete_enabled: bool,
                 touch_interval: float = TOUCH_INTERVAL,
                 redirect_expiry: float | None = None, routes: ProxyRoutes | None = None,
                 proxy: PullThrough | None = None, notifier: Notifier | None = None) -> None:
        self.store = store
        self.routes = routes
        self.proxy = proxy
        self.notifier = notifier
        self.blobs = blobs
        self.delete_enabled = delete_enabled
        self.touch_interval = touch_interval
        #: seconds a redirect URL lives; None: never redirect
        self.redirect_expiry = redirect_expiry

    async def stat(self, name: str, digest: Digest, *, touch: bool = False) -> BlobInfo:
        record = await self.store.blob_in_repository(name, str(digest))
        if record is None and self.proxy is not None:
            route = self.proxy.route(name)
            if route is not None:  # a pull-through cache: upstream may have it
                return await self.proxy.blob_info(route, name, digest)
        if record is None:
            raise BlobUnknown(f"blob {digest} is not in {name}", {"digest": str(digest)})
        if touch and record.touched_at < time.time() - self.touch_interval:
            # a check, not a write the client asked for: on a full disk it still answers
            with contextlib.suppress(StorageFull):
                await self.store.touch_blob(str(digest))
        return BlobInfo(digest, record.size, repository=name)

    async def open(self, info: BlobInfo, offset: int, length: int, *, local: bool = True,
                   redirect: bool = True) -> BlobBody:
        """What to send for `length` bytes of the blob from `offset` (after `stat`):
        a redirect when redirects are on, `redirect` allows one and the store signs
        URLs, else a local file when `local` (the caller can send one: no TLS in the
        way), else a stream.
        A client reads the blob: a pull event. A `remote` blob is fetched first (streamed
        as it arrives to the request that fetches it whole)."""
        if self.notifier is not None and self.notifier.wants("pull"):
            await self.notifier.emit("pull", info.repository, digest=str(info.digest),
                                     media_type=BLOB_TYPE, size=info.size, kind="blobs")
        if info.remote and self.proxy is not None:
            route = self.proxy.route(info.repository)
            if route is not None:
                fetching = await self.proxy.open_blob(route, info.repository, info,
                                                      whole=offset == 0 and length == info.size)
                if fetching is not None:
                    return fetching
        if redirect and self.redirect_expiry is not None:
            url = await self.blobs.url_for(info.digest, int(self.redirect_expiry))
            if url is not None:
                return Redirect(url)
        path = self.blobs.local_path(info.digest) if local else None
        if path is not None:
            return LocalFile(path, offset, length)
        return Stream(self.blobs.read(info.digest, offset, length), offset, length)

    async def mount(self, name: str, digest: Digest, source: str) -> int | None:
        """Link `digest` from `source` into `name`; its size, or None if `source` lacks it."""
        if self.routes is not None:
            self.routes.refuse_writes(name)
        if await self.blobs.size(digest) is None:
            return None
        found = await self.store.mount_blob(name, str(digest), source)
        if found is None:
            return None
        if self.notifier is not None:
            await self.notifier.emit("mount", name, digest=str(digest), media_type=BLOB_TYPE,
                                     size=found.size, kind="blobs", from_repository=source)
        return found.size

    async def stored(self) -> AsyncIterator[Digest]:
        """Every digest whose bytes the blob store holds (one listing; for fsck)."""
        async for digest in self.blobs.stored_blobs():
            yield digest

    async def stored_size(self, digest: Digest) -> int | None:
        """Size of the stored bytes of `digest` (None: there are none)."""
        return await self.blobs.size(digest)

    def read_stored(self, digest: Digest) -> AsyncIterator[bytes]:
        """The stored bytes of `digest`, whatever the metadata says (for fsck)."""
        return self.blobs.read(digest)

    async def delete_bytes(self, digests: Sequence[Digest]) -> dict[Digest, StorageUnavailable]:
        """Remove blobs' bytes, in batches where the store deletes many keys a call (the
        collector, once their rows are gone under tombstones). The blobs whose bytes may
        still be stored, each with why; the others are gone."""
        return dict(await self.blobs.delete_blobs(digests))

    async def delete(self, name: str, digest: Digest) -> None:
        if self.routes is not None:
            self.routes.refuse_writes(name)
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled (storage.delete.enabled)")
        if not await self.store.unlink_blob(name, str(digest)):
            raise BlobUnknown(f"blob {digest} is not in {name}", {"digest": str(digest)})
        if self.notifier is not None:
            await self.notifier.emit("delete", name, digest=str(digest), kind="blobs")
