"""A small OCI Distribution client on aiohttp: just the calls the scenarios time."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from bench.content import BlobSource, sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
"""The Accept header sent on every manifest GET and HEAD (OCI and Docker schema 2)."""

_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_READ_CHUNK = 1 << 20


class RegistryError(RuntimeError):
    """The registry answered with a status the protocol does not allow here."""


def client_session(connections: int = 64) -> aiohttp.ClientSession:
    """A session sized for the benchmark: keep-alive, no total timeout, large read buffer."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        read_bufsize=4 * _READ_CHUNK,
        auto_decompress=False,
    )


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def image_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """An OCI image manifest for `config` and `layers`, as the exact bytes to push."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def image_config(layer_digests: list[str], label: str) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"dockyard.bench": label}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Registry:
    """Calls against one registry at `base_url` through a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")

    def _url(self, path_or_url: str) -> URL:
        return URL(urljoin(self.base_url + "/", path_or_url), encoded=True)

    @staticmethod
    async def _fail(resp: aiohttp.ClientResponse, what: str) -> RegistryError:
        body = (await resp.read())[:300].decode(errors="replace")
        return RegistryError(f"{what}: HTTP {resp.status} {body}")

    # uploads

    async def start_upload(self, repo: str) -> str:
        async with self.session.post(self._url(f"/v2/{repo}/blobs/uploads/")) as resp:
            if resp.status != 202:
                raise await self._fail(resp, f"POST upload {repo}")
            return resp.headers["Location"]

    async def _finish_upload(
        self, location: str, digest: str, body: bytes | AsyncIterator[bytes] | None, size: int
    ) -> None:
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self.session.put(
            self._url(f"{location}{sep}digest={digest}"), data=body, headers=headers
        ) as resp:
            if resp.status != 201:
                raise await self._fail(resp, f"PUT upload {digest}")
            await resp.read()

    async def push_bytes(self, repo: str, data: bytes, digest: str | None = None) -> Descriptor:
        """POST then PUT ?digest with the whole (small) body."""
        digest = digest or sha256_digest(data)
        location = await self.start_upload(repo)
        await self._finish_upload(location, digest, data, len(data))
        return Descriptor(OCI_LAYER, digest, len(data))

    async def push_monolithic(self, repo: str, blob: BlobSource) -> None:
        """POST, then PUT ?digest streaming the whole blob as the body."""
        location = await self.start_upload(repo)
        await self._finish_upload(location, blob.digest, blob.stream(), blob.size)

    async def push_chunked(self, repo: str, blob: BlobSource, chunk: int) -> None:
        """POST, PATCH each `chunk` bytes with Content-Range, then an empty PUT ?digest."""
        location = await self.start_upload(repo)
        offset = 0
        while offset < blob.size:
            length = min(chunk, blob.size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{offset + length - 1}",
            }
            async with self.session.patch(
                self._url(location), data=blob.stream(offset, length), headers=headers
            ) as resp:
                if resp.status != 202:
                    raise await self._fail(resp, f"PATCH {offset}-{offset + length - 1}")
                await resp.read()
                location = resp.headers["Location"]
            offset += length
        await self._finish_upload(location, blob.digest, None, 0)

    async def push_streamed(self, repo: str, blob: BlobSource) -> None:
        """POST, one PATCH streaming the whole blob (chunked transfer encoding, no
        Content-Range), then an empty PUT ?digest: how skopeo and podman push a layer."""
        location = await self.start_upload(repo)
        headers = {"Content-Type": "application/octet-stream"}
        async with self.session.patch(self._url(location), data=blob.stream(),
                                      headers=headers) as resp:
            if resp.status != 202:
                raise await self._fail(resp, "PATCH (streamed)")
            await resp.read()
            location = resp.headers["Location"]
        await self._finish_upload(location, blob.digest, None, 0)

    async def mount(self, repo: str, digest: str, source: str) -> bool:
        """Cross-repository mount; False when the registry opened an upload instead."""
        url = self._url(f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}")
        async with self.session.post(url) as resp:
            await resp.read()
            if resp.status == 201:
                return True
            if resp.status == 202:
                return False
            raise await self._fail(resp, f"mount {digest} into {repo}")

    # manifests and tags

    async def put_manifest(self, repo: str, reference: str, body: bytes,
                           media_type: str = OCI_MANIFEST) -> str:
        headers = {"Content-Type": media_type}
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        async with self.session.put(url, data=body, headers=headers) as resp:
            if resp.status != 201:
                raise await self._fail(resp, f"PUT manifest {repo}:{reference}")
            await resp.read()
            return resp.headers.get("Docker-Content-Digest", sha256_digest(body))

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        async with self.session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status != 200:
                raise await self._fail(resp, f"GET manifest {repo}:{reference}")
            return await resp.read(), resp.headers.get("Content-Type", "")

    async def head_manifest(self, repo: str, reference: str) -> dict[str, str]:
        url = self._url(f"/v2/{repo}/manifests/{reference}")
        async with self.session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status != 200:
                raise await self._fail(resp, f"HEAD manifest {repo}:{reference}")
            return dict(resp.headers)

    # blobs

    async def pull_blob(self, repo: str, digest: str, size: int, verify: bool = False) -> int:
        """GET a blob, discarding (or hashing) the bytes; returns the bytes received."""
        hasher = hashlib.sha256() if verify else None
        received = 0
        async with self.session.get(self._url(f"/v2/{repo}/blobs/{digest}")) as resp:
            if resp.status != 200:
                raise await self._fail(resp, f"GET blob {digest}")
            async for chunk in resp.content.iter_any():
                received += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
        if received != size:
            raise RegistryError(f"GET blob {digest}: got {received} bytes, expected {size}")
        if hasher is not None and "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(f"GET blob {digest}: content does not match its digest")
        return received

    # listings

    async def list_all(self, path: str, key: str, page_size: int | None) -> tuple[list[str], int]:
        """Follow `Link: <...>; rel="next"` from `path?n=page_size` (or `path` without `n`
        when `page_size` is None); returns (entries, pages fetched)."""
        url: str | None = path if page_size is None else f"{path}?n={page_size}"
        entries: list[str] = []
        pages = 0
        while url is not None:
            async with self.session.get(self._url(url)) as resp:
                if resp.status != 200:
                    raise await self._fail(resp, f"GET {url}")
                doc = await resp.json(content_type=None)
                link = resp.headers.get("Link", "")
            pages += 1
            entries.extend(doc.get(key) or [])
            match = _NEXT_LINK.search(link)
            url = match.group(1) if match else None
            if pages > 100_000:
                raise RegistryError(f"{path}: pagination does not end")
        return entries, pages
