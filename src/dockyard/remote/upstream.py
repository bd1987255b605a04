"""`core.proxy.Upstream` over a `RegistryClient`: what a pull-through cache asks upstream.

Failures are sorted the way the cache needs them: "upstream does not have it" (None, or
`BlobUnknown`; a 401/403 counts as that too, since Docker Hub answers so for a missing
repository) and "upstream cannot answer now" (`UpstreamUnavailable`: unreachable, a
timeout, 5xx, 429, a failing token service), after which the cache serves stale tags.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, DigestInvalid, UpstreamUnavailable
from dockyard.received import pieces, read_at_most
from dockyard.remote.auth import AuthError
from dockyard.remote.client import (
    MANIFEST_ACCEPT,
    RegistryClient,
    RegistryClientError,
    blob_path,
    manifest_path,
    pull,
)

#: Seconds a manifest or HEAD request upstream may take, so that a blackholed upstream
#: answers stale tags in time instead of after the connect timeout.
METADATA_TIMEOUT = 15.0
_MISSING = (401, 403, 404)


class RemoteUpstream:
    """One upstream registry for a pull-through cache (`core.proxy.Upstream`)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.url = client.base

    async def close(self) -> None:
        await self.client.close()

    def _unavailable(self, exc: BaseException) -> UpstreamUnavailable:
        reason = str(exc) or type(exc).__name__
        return UpstreamUnavailable(f"upstream {self.url} is unavailable: {reason}")

    async def manifest_digest(self, name: str, tag: str) -> str | None:
        try:
            async with asyncio.timeout(METADATA_TIMEOUT), self.client.request(
                    "HEAD", manifest_path(name, tag), scopes=pull(name),
                    headers={"Accept": MANIFEST_ACCEPT}, ok=_MISSING) as resp:
                if resp.status in _MISSING:
                    return None
                digest = resp.headers.get("Docker-Content-Digest")
        except (aiohttp.ClientError, OSError, TimeoutError, RegistryClientError,
                AuthError) as exc:
            raise self._unavailable(exc) from None
        if digest is not None and _is_digest(digest):
            return digest
        fetched = await self.manifest(name, tag)  # no usable digest header: compute it
        return None if fetched is None else "sha256:" + hashlib.sha256(fetched[0]).hexdigest()

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str] | None:
        try:
            async with asyncio.timeout(METADATA_TIMEOUT), self.client.request(
                    "GET", manifest_path(name, reference), scopes=pull(name),
                    headers={"Accept": MANIFEST_ACCEPT}, ok=_MISSING) as resp:
                if resp.status in _MISSING:
                    return None
                body = await read_at_most(resp, self.client.max_manifest)
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except (aiohttp.ClientError, OSError, TimeoutError, RegistryClientError,
                AuthError) as exc:
            raise self._unavailable(exc) from None
        return body, media_type

    async def blob_size(self, name: str, digest: str) -> int | None:
        try:  # a HEAD without a size is a RegistryClientError: unavailable too
            async with asyncio.timeout(METADATA_TIMEOUT):
                return await self.client.blob_size(name, digest, missing=_MISSING)
        except (aiohttp.ClientError, OSError, TimeoutError, RegistryClientError,
                AuthError) as exc:
            raise self._unavailable(exc) from None

    @asynccontextmanager
    async def blob(self, name: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            async with self.client.request("GET", blob_path(name, digest),
                                           scopes=pull(name), ok=_MISSING,
                                           streaming=True) as resp:
                if resp.status in _MISSING:
                    raise BlobUnknown(f"blob {digest} is not in {self.url}/{name}",
                                      {"digest": digest})
                yield _chunks(resp, self)
        except (aiohttp.ClientError, OSError, TimeoutError, RegistryClientError,
                AuthError) as exc:
            raise self._unavailable(exc) from None


def _is_digest(text: str) -> bool:
    """Whether an upstream's `Docker-Content-Digest` is a digest this registry can use
    (anything else is as good as no header: the manifest is fetched and hashed)."""
    try:
        Digest.parse(text)
    except DigestInvalid:
        return False
    return True


async def _chunks(resp: aiohttp.ClientResponse, upstream: RemoteUpstream
                  ) -> AsyncIterator[bytes]:
    """The body as it arrives; a connection lost midway is the upstream's failure."""
    try:
        async for data in pieces(resp.content):
            yield data
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise upstream._unavailable(exc) from None
