"""A repository on a registry as a copy's `Source` or `Destination`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dockyard.copying.ends import Fetched, Source, declared_media_type
from dockyard.oci.digest import Digest
from dockyard.oci.reference import fallback_tag
from dockyard.received import parse_json
from dockyard.remote.client import RegistryClient, RegistryClientError, push

#: referrers of one subject a copy lists at most: it copies no more manifests per image
#: (`engine.MAX_MANIFESTS`), and a source listing a million (what the client takes)
#: held half a GiB of parsed descriptors before the copy said so
MAX_REFERRERS = 10_000

INDEX = "application/vnd.oci.image.index.v1+json"


class RegistryRepository:
    """One repository of one registry, reached through a `RegistryClient`."""

    def __init__(self, client: RegistryClient, host: str, repository: str) -> None:
        self.client = client
        self.host = host
        self.repository = repository

    def describe(self) -> str:
        return f"{self.host}/{self.repository}"

    # ------------------------------------------------------------ as a source

    async def manifest(self, reference: str) -> Fetched:
        data, media_type = await self.client.get_manifest(self.repository, reference)
        if ":" in reference:  # by digest (the engine checked it parses): these bytes?
            wanted = Digest.parse(reference)
            digest = str(Digest.of(data, wanted.algorithm))
            if digest != reference:
                raise RegistryClientError(200, f"DIGEST_INVALID: {reference} has other "
                                               f"bytes ({digest})", ("DIGEST_INVALID",))
        else:
            digest = str(Digest.of(data))
        if not media_type or media_type in ("application/json", "text/plain"):
            declared = declared_media_type(data)
            media_type = declared if declared is not None else media_type
        return Fetched(data, media_type, digest)

    async def tags(self) -> list[str]:
        return [t async for t in self.client.tags(self.repository)]

    @asynccontextmanager
    async def blob(self, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.client.open_blob(self.repository, digest) as chunks:
            yield chunks

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The referrers API, else the `sha256-<hex>` fallback tag's index."""
        found = await self.client.referrers(self.repository, digest, MAX_REFERRERS)
        if found is not None:
            return found
        if await self.client.head_manifest(self.repository, fallback_tag(digest)) is None:
            return []
        data, _ = await self.client.get_manifest(self.repository, fallback_tag(digest))
        return self._fallback_entries(digest, data)

    def _fallback_entries(self, subject: str, data: bytes) -> list[dict[str, Any]]:
        """The descriptors of the `sha256-<hex>` index of `subject`, each an object with
        a string digest; `RegistryClientError` (one line) for anything else."""
        try:
            doc = parse_json(data)
        except ValueError:
            doc = None
        listed = doc.get("manifests") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and listed is None:
            return []
        if not isinstance(listed, list) or not all(
                isinstance(m, dict) and isinstance(m.get("digest"), str) for m in listed):
            raise RegistryClientError(200, f"{self.describe()}:{fallback_tag(subject)}: the "
                                           "referrers tag is not an index of descriptors")
        return list(listed)

    # ------------------------------------------------------------ as a destination

    async def prepare(self) -> None:
        """Get push credentials before the first streamed upload (which cannot be resent)."""
        await self.client.authenticate(push(self.repository))

    whole_on_lookup = False

    async def manifest_digest(self, reference: str) -> str | None:
        info = await self.client.head_manifest(self.repository, reference)
        return info.digest if info else None

    async def stored_manifest(self, digest: str) -> Fetched | None:
        try:
            return await self.manifest(digest)
        except RegistryClientError as exc:
            if exc.status == 404:
                return None
            raise

    async def has_blob(self, digest: str, size: int | None = None) -> bool:
        """The registry's HEAD (a registry checks its blobs' digests itself)."""
        return await self.client.has_blob(self.repository, digest)

    def place(self) -> tuple[str, str] | None:
        return self.client.base, self.repository

    async def mount(self, digest: str, source: Source, known: list[str]) -> bool:
        origins = list(known)
        if (isinstance(source, RegistryRepository) and source.client.base == self.client.base
                and source.repository != self.repository):
            origins.insert(0, source.repository)
        for origin in dict.fromkeys(origins):
            location = await self.client.mount_blob(self.repository, digest, origin)
            if location is None:
                return True
            await self.client.cancel_upload(location, self.repository)
        return False

    async def put_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        await self.client.push_blob(self.repository, digest, size, chunks)

    async def put_manifest(self, reference: str, fetched: Fetched) -> bool:
        headers = await self.client.put_manifest(self.repository, reference, fetched.data,
                                                 fetched.media_type)
        return "OCI-Subject" in headers

    async def lists_referrer(self, subject: str, digest: str) -> bool:
        return any(d.get("digest") == digest for d in await self.referrers(subject))

    async def add_referrer_fallback(self, subject: str, descriptor: dict[str, Any]) -> None:
        """Add `descriptor` to the `sha256-<hex>` index (creating it), as the spec's
        fallback for registries without the referrers API."""
        tag = fallback_tag(subject)
        manifests: list[dict[str, Any]] = []
        if await self.client.head_manifest(self.repository, tag) is not None:
            data, _ = await self.client.get_manifest(self.repository, tag)
            manifests = self._fallback_entries(subject, data)
        if any(m.get("digest") == descriptor["digest"] for m in manifests):
            return
        manifests.append(descriptor)
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                           "manifests": manifests}).encode()
        await self.client.put_manifest(self.repository, tag, body, INDEX)

