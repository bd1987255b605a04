"""The builder's registry calls, all here: look-ups, the publish-time annotations, SBOMs.

Registries are reached as `dockyard copy` reaches them (`copying.connect.open_end` over
`dockyard.remote`): Basic or the Docker token flow, credentials given for the target
registry or found in docker/podman auth files, HTTPS unless the host is insecure. Use a
`Registries` inside `async with` (its connections belong to one event loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from dockyard.copying.connect import Access, open_end
from dockyard.copying.ends import Fetched
from dockyard.copying.refs import RegistryRef, parse
from dockyard.copying.registry_end import RegistryRepository
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError
from dockyard.received import parse_json
from dockyard.remote.auth import AuthError
from dockyard.remote.client import RegistryClientError
from dockyard.remote.credentials import Credentials

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = b"{}"

#: What a registry call of the builder may raise (a ValueError: a bad reference, an auth
#: file or a certs.d directory that cannot be used).
REGISTRY_ERRORS = (RegistryClientError, AuthError, aiohttp.ClientError, TimeoutError,
                   ValueError)

CONFIG_LIMIT = 8 * 1024 * 1024
"""The largest image config `diff_ids` reads."""


@dataclass(frozen=True, slots=True)
class RemoteImage:
    """A manifest a registry holds under a reference."""

    digest: str
    annotations: dict[str, str] = field(default_factory=dict)


def registry_ref(ref: str) -> RegistryRef:
    """`host[:port]/repo[:tag|@digest]` (Docker Hub when there is no host), `latest` when
    it names no tag; ValueError when it does not parse."""
    parsed = parse(ref)
    if not isinstance(parsed, RegistryRef):
        raise ValueError(f"{ref!r}: not a registry reference")
    return parsed if parsed.reference else parsed.with_reference(tag="latest")


def _annotated(ref: str, found: Fetched) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest `found` as a JSON object, and its annotations (an object too); a
    `RegistryClientError` for anything else, which a build reports like an unreachable
    registry instead of stopping on a traceback."""
    try:
        doc = parse_json(found.data)
    except ValueError:
        doc = None
    annotations = (doc.get("annotations") or {}) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(annotations, dict):
        raise RegistryClientError(200, f"{ref}: the manifest is not a JSON object with "
                                       "an object of annotations")
    return doc, annotations


class Registries:
    """Registry calls by full reference; one client per repository, kept until exit."""

    def __init__(self, insecure: list[str], *, credentials: dict[str, Credentials] | None = None,
                 auth_file: Path | None = None, timeout: float = 30.0) -> None:
        self.insecure = set(insecure)
        self.credentials = dict(credentials or {})
        self.auth_file = auth_file
        self.timeout = timeout
        self._stack = AsyncExitStack()
        self._ends: dict[tuple[str, str], asyncio.Future[RegistryRepository]] = {}

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        ends, self._ends = self._ends, {}
        for end in ends.values():
            if not end.done():
                end.cancel()
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    def _access(self, host: str) -> Access:
        return Access(self.credentials.get(host), host not in self.insecure, self.auth_file,
                      connections=4)

    async def _repository(self, ref: RegistryRef) -> RegistryRepository:
        """The (shared) end of `ref`'s repository, opened on first use."""
        key = (ref.host, ref.repository)
        if key not in self._ends:
            opened = self._stack.enter_async_context(open_end(ref, self._access(ref.host)))
            self._ends[key] = asyncio.ensure_future(opened)  # type: ignore[arg-type]
        end = await asyncio.shield(self._ends[key])
        assert isinstance(end, RegistryRepository)
        return end

    async def _manifest(self, ref: RegistryRef, reference: str
                        ) -> tuple[RegistryRepository, Fetched | None]:
        """The repository's end, and the manifest `reference` names (None: no such one)."""
        end = await asyncio.wait_for(self._repository(ref), self.timeout)
        try:
            found = await asyncio.wait_for(end.manifest(reference), self.timeout)
        except RegistryClientError as exc:
            if exc.status == 404:
                return end, None
            raise
        return end, found

    async def lookup(self, ref: str) -> RemoteImage | None:
        """The manifest `ref` names, or None when the registry has no such tag."""
        target = registry_ref(ref)
        _, found = await self._manifest(target, str(target.reference))
        if found is None:
            return None
        _, annotations = _annotated(ref, found)
        return RemoteImage(found.digest, {str(k): str(v) for k, v in annotations.items()})

    async def amend(self, ref: str, annotations: dict[str, str], tags: list[str]) -> str:
        """Set `annotations` on the manifest `ref` names (a new manifest when they change
        it: same config and layers) and put it under `ref`'s tag and `tags` too; the
        final digest."""
        target = registry_ref(ref)
        reference = str(target.reference)
        end, found = await self._manifest(target, reference)
        if found is None:
            raise RegistryClientError(404, f"{ref}: not in the registry", ("MANIFEST_UNKNOWN",))
        doc, current = _annotated(ref, found)
        changed = any(current.get(k) != v for k, v in annotations.items())
        if not changed and not tags:
            return found.digest
        if changed:
            doc["annotations"] = {**current, **annotations}
            body = json.dumps(doc, separators=(",", ":")).encode()
            found = Fetched(body, str(doc.get("mediaType") or found.media_type or OCI_MANIFEST),
                            str(Digest.of(body)))
        for tag in ([reference] if changed else []) + tags:
            await asyncio.wait_for(end.put_manifest(tag, found), self.timeout)
        return found.digest

    async def attach(self, ref: str, digest: str, artifact_type: str, data: bytes) -> str:
        """Push `data` as an artifact whose subject is the manifest `digest` of `ref`'s
        repository (found through the referrers API, or the tag fallback on a registry
        without it); the artifact's digest."""
        target = registry_ref(ref)
        end, subject = await self._manifest(target, digest)
        if subject is None:
            raise RegistryClientError(404, f"{ref}@{digest}: not in the registry",
                                      ("MANIFEST_UNKNOWN",))
        await asyncio.wait_for(end.prepare(), self.timeout)
        blobs = []
        for blob in (EMPTY, data):
            blob_digest = str(Digest.of(blob))
            if not await asyncio.wait_for(end.has_blob(blob_digest), self.timeout):
                await asyncio.wait_for(end.put_blob(blob_digest, len(blob), _once(blob)),
                                       self.timeout)
            blobs.append(blob_digest)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": blobs[0], "size": len(EMPTY)},
            "layers": [{"mediaType": artifact_type, "digest": blobs[1], "size": len(data)}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                        "size": len(subject.data)},
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        artifact = Fetched(body, OCI_MANIFEST, str(Digest.of(body)))
        indexed = await asyncio.wait_for(end.put_manifest(artifact.digest, artifact),
                                         self.timeout)
        if not indexed:
            await asyncio.wait_for(end.add_referrer_fallback(subject.digest, {
                "mediaType": OCI_MANIFEST, "digest": artifact.digest, "size": len(body),
                "artifactType": artifact_type}), self.timeout)
        return artifact.digest

    async def diff_ids(self, ref: str) -> list[str] | None:
        """The layer diff IDs of the image `ref` names (from its config), None if absent."""
        target = registry_ref(ref)
        end, found = await self._manifest(target, str(target.reference))
        if found is None:
            return None
        try:
            doc = parse_json(found.data)
            described = doc.get("config") if isinstance(doc, dict) else None
            if not isinstance(described, dict):
                return None  # an index, or no image
            digest = Digest.parse(str(described.get("digest")))
            size = described.get("size")
        except (ValueError, RegistryError):
            raise RegistryClientError(200, f"{ref}: the manifest names no config we can "
                                           "read") from None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= CONFIG_LIMIT:
            raise RegistryClientError(200, f"{ref}: its config's size is not a number up to "
                                           f"{CONFIG_LIMIT >> 20} MiB")

        async def read_config() -> bytes:
            got = bytearray()
            async with end.blob(str(digest)) as chunks:
                async for chunk in chunks:
                    got += chunk
                    if len(got) > size:
                        break
            return bytes(got)

        config = await asyncio.wait_for(read_config(), self.timeout)
        if len(config) != size or Digest.of(config, digest.algorithm) != digest:
            raise RegistryClientError(200, f"{ref}: its config is not the {size} bytes of "
                                           f"{digest}")
        try:
            rootfs = parse_json(config).get("rootfs") or {}
            return [str(d) for d in rootfs.get("diff_ids") or []]
        except (ValueError, AttributeError, TypeError, RecursionError):
            raise RegistryClientError(200, f"{ref}: its config is not a JSON object with "
                                           "rootfs.diff_ids") from None

    async def lookup_many(self, refs: list[str]) -> dict[str, RemoteImage | Exception | None]:
        """Look-ups of several references at once; a failure is returned, not raised."""
        async def one(ref: str) -> RemoteImage | Exception | None:
            try:
                return await self.lookup(ref)
            except REGISTRY_ERRORS as exc:
                return exc

        results = await asyncio.gather(*(one(r) for r in refs))
        return dict(zip(refs, results, strict=True))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
