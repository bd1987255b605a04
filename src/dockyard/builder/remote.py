"""The builder's registry calls, all here so another client can replace them.

One question is asked of a registry: what manifest does this reference name now (its
digest and annotations)? It goes through `dockyard.client.RegistryClient`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from dockyard.client import MANIFEST_ACCEPT, RegistryClient, RegistryClientError


@dataclass(frozen=True, slots=True)
class RemoteImage:
    """A manifest a registry holds under a reference."""

    digest: str
    annotations: dict[str, str] = field(default_factory=dict)


def split_reference(ref: str) -> tuple[str, str, str]:
    """`host[:port]/repo[:tag|@digest]` as (host, repository, reference)."""
    host, _, rest = ref.partition("/")
    if not rest or ("." not in host and ":" not in host and host != "localhost"):
        host, rest = "docker.io", ref if "/" in ref else f"library/{ref}"
    if "@" in rest:
        repo, _, reference = rest.partition("@")
    else:
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            repo, _, reference = rest.rpartition(":")
        else:
            repo, reference = rest, "latest"
    return host, repo, reference


class _Client(RegistryClient):
    async def manifest(self, name: str, reference: str
                       ) -> tuple[str, dict[str, Any], int] | None:
        """Digest, parsed document and size in bytes of a manifest; None if unknown."""
        url = f"{self.base}/v2/{name}/manifests/{reference}"
        async with self._session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status == 404:
                return None
            if resp.status >= 400:
                raise RegistryClientError(resp.status, (await resp.text())[:200])
            body = await resp.read()
            return resp.headers.get("Docker-Content-Digest", ""), json.loads(body), len(body)

    async def put_manifest(self, name: str, reference: str, body: bytes,
                           media_type: str) -> str:
        url = f"{self.base}/v2/{name}/manifests/{reference}"
        async with self._session.put(url, data=body,
                                     headers={"Content-Type": media_type}) as resp:
            if resp.status >= 400:
                raise RegistryClientError(resp.status, (await resp.text())[:200])
            return resp.headers.get("Docker-Content-Digest", "")


    async def blob(self, name: str, digest: str) -> bytes:
        async with self._session.get(f"{self.base}/v2/{name}/blobs/{digest}") as resp:
            if resp.status >= 400:
                raise RegistryClientError(resp.status, (await resp.text())[:200])
            return await resp.read()

    async def put_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with self._session.head(f"{self.base}/v2/{name}/blobs/{digest}") as resp:
            if resp.status == 200:
                return digest
        async with self._session.post(f"{self.base}/v2/{name}/blobs/uploads/") as resp:
            if resp.status >= 400:
                raise RegistryClientError(resp.status, (await resp.text())[:200])
            location = urljoin(self.base + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        async with self._session.put(f"{location}{sep}digest={digest}", data=data,
                                     headers={"Content-Type": "application/octet-stream"}
                                     ) as resp:
            if resp.status >= 400:
                raise RegistryClientError(resp.status, (await resp.text())[:200])
        return digest


class Registries:
    """Manifest look-ups by full reference, over HTTPS unless the host is insecure."""

    def __init__(self, insecure: list[str], timeout: float = 30.0) -> None:
        self.insecure = set(insecure)
        self.timeout = timeout

    def _base(self, host: str) -> str:
        if host == "docker.io":
            host = "registry-1.docker.io"
        return f"{'http' if host in self.insecure else 'https'}://{host}"

    async def lookup(self, ref: str) -> RemoteImage | None:
        """The manifest `ref` names, or None when the registry has no such tag."""
        host, repo, reference = split_reference(ref)
        client = _Client(self._base(host))
        async with client:
            found = await asyncio.wait_for(client.manifest(repo, reference), self.timeout)
        if found is None:
            return None
        digest, doc, _ = found
        annotations = doc.get("annotations") or {}
        return RemoteImage(digest, {str(k): str(v) for k, v in annotations.items()})

    async def amend(self, ref: str, annotations: dict[str, str], tags: list[str]) -> str:
        """Set `annotations` on the manifest `ref` names (a new manifest when they change
        it: same config and layers) and put it under `ref`'s tag and `tags` too; the
        final digest."""
        host, repo, reference = split_reference(ref)
        client = _Client(self._base(host))
        async with client:
            found = await asyncio.wait_for(client.manifest(repo, reference), self.timeout)
            if found is None:
                raise RegistryClientError(404, f"{ref}: not in the registry")
            digest, doc, _ = found
            current = doc.get("annotations") or {}
            changed = any(current.get(k) != v for k, v in annotations.items())
            if not changed and not tags:
                return digest
            doc["annotations"] = {**current, **annotations}
            body = json.dumps(doc, separators=(",", ":")).encode()
            media_type = str(doc.get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
            for tag in ([reference] if changed else []) + tags:
                digest = await client.put_manifest(repo, tag, body, media_type)
            return digest

    async def attach(self, ref: str, digest: str, artifact_type: str, data: bytes) -> str:
        """Push `data` as an artifact whose subject is the manifest `digest` of `ref`'s
        repository (found through the referrers API); the artifact's digest."""
        host, repo, _ = split_reference(ref)
        client = _Client(self._base(host))
        async with client:
            found = await asyncio.wait_for(client.manifest(repo, digest), self.timeout)
            if found is None:
                raise RegistryClientError(404, f"{ref}@{digest}: not in the registry")
            empty = b"{}"
            await client.put_blob(repo, empty)
            layer = await client.put_blob(repo, data)
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": artifact_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": "sha256:" + hashlib.sha256(empty).hexdigest(),
                           "size": len(empty)},
                "layers": [{"mediaType": artifact_type, "digest": layer, "size": len(data)}],
                "subject": {"mediaType": str(found[1].get("mediaType")), "digest": digest,
                            "size": found[2]},
            }
            body = json.dumps(manifest, separators=(",", ":")).encode()
            own = "sha256:" + hashlib.sha256(body).hexdigest()
            return await client.put_manifest(repo, own, body,
                                             "application/vnd.oci.image.manifest.v1+json")

    async def diff_ids(self, ref: str) -> list[str] | None:
        """The layer diff IDs of the image `ref` names (from its config), None if absent."""
        host, repo, reference = split_reference(ref)
        client = _Client(self._base(host))
        async with client:
            found = await asyncio.wait_for(client.manifest(repo, reference), self.timeout)
            if found is None or "config" not in found[1]:
                return None
            config = await asyncio.wait_for(
                client.blob(repo, str(found[1]["config"]["digest"])), self.timeout)
        rootfs = json.loads(config).get("rootfs") or {}
        return [str(d) for d in rootfs.get("diff_ids") or []]

    async def lookup_many(self, refs: list[str]) -> dict[str, RemoteImage | Exception | None]:
        """Look-ups of several references at once; a failure is returned, not raised."""
        async def one(ref: str) -> RemoteImage | Exception | None:
            try:
                return await self.lookup(ref)
            except (aiohttp.ClientError, RegistryClientError, TimeoutError, ValueError) as exc:
                return exc

        results = await asyncio.gather(*(one(r) for r in refs))
        return dict(zip(refs, results, strict=True))
