"""The local registry as a copy `Destination`, through `core`'s services only.

What a sync writes goes the way a push does (an upload session verified and published,
a manifest checked for its references), without HTTP, so the result is the same as
through the API. Reads by tag record no pull: a sync looking is nobody pulling.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from dockyard.copying.ends import Fetched, Source
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, ManifestUnknown, NameUnknown

#: the owner of a sync's upload sessions (the per-owner cap counts them apart)
OWNER = "job:sync"
#: the registry part of `place()`: mount hints of the local registry
LOCAL = "local"


class LocalRepository:
    """One repository of this registry, written through `core`."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = name

    def describe(self) -> str:
        return f"local/{self.name}"

    async def prepare(self) -> None:
        pass

    whole_on_lookup = False

    async def stored_manifest(self, digest: str) -> Fetched | None:
        try:
            record = await self.registry.manifests.get(self.name, digest, pull=False)
        except (ManifestUnknown, NameUnknown):
            return None
        assert record.payload is not None
        return Fetched(record.payload, record.media_type, record.digest)

    async def manifest_digest(self, reference: str) -> str | None:
        try:
            record = await self.registry.manifests.get(self.name, reference, payload=False,
                                                       pull=False)
        except (ManifestUnknown, NameUnknown):
            return None
        return record.digest

    async def has_blob(self, digest: str, size: int | None = None) -> bool:
        """Whether this registry's stores have the blob (checked when it was stored)."""
        try:
            await self.registry.blobs.stat(self.name, Digest.parse(digest))
        except BlobUnknown:
            return False
        return True

    def place(self) -> tuple[str, str] | None:
        return LOCAL, self.name

    async def mount(self, digest: str, source: Source, known: list[str]) -> bool:
        for origin in known:
            if await self.registry.blobs.mount(self.name, Digest.parse(digest), origin) \
                    is not None:
                return True
        return False

    async def put_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        await self.registry.uploads.upload(self.name, OWNER, Digest.parse(digest), chunks,
                                           Chunk(length=size), discard=True)

    async def put_manifest(self, reference: str, fetched: Fetched) -> bool:
        await self.registry.manifests.put(self.name, reference, fetched.data,
                                          fetched.media_type)
        return True  # the referrers API indexes every subject

    async def add_referrer_fallback(self, subject: str, descriptor: dict[str, Any]) -> None:
        pass  # never needed: `put_manifest` says the subject is indexed

    async def lists_referrer(self, subject: str, digest: str) -> bool:
        return True  # the referrers API lists every stored manifest by its subject

    async def tags(self) -> list[str]:
        """The repository's tags now (none when it does not exist yet)."""
        try:
            return await self.registry.manifests.tags(self.name, None, None)
        except NameUnknown:
            return []

    async def delete_tag(self, tag: str, digest: str) -> bool:
        """Delete the tag while it names `digest`; False: gone, or pushed over since."""
        try:
            await self.registry.manifests.delete(self.name, tag, only_at=digest)
        except ManifestUnknown:
            return False
        return True
