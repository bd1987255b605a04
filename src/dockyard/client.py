"""A small async client for the distribution API of any registry (ours or upstream).

Used by the operator's commands (`dockyard rm`) and the replica follower; follows `Link`
pagination, speaks Dockyard's admin extension where it exists (repository deletion, the
change feed) and falls back to plain API calls elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import aiohttp

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class RegistryClientError(Exception):
    """The registry answered with an error; the message carries its OCI error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class FeedExpired(RegistryClientError):
    """The change feed no longer holds the events after the cursor (410): compare in
    full, then follow from `head`."""

    def __init__(self, status: int, message: str, head: int) -> None:
        super().__init__(status, message)
        self.head = head


#: blob downloads: no overall limit (layers are large), but a stalled read fails
BLOB_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def _scope_of(path: str) -> str | None:
    """The scope a request on `path` will need (to send a cached token at once)."""
    if path.startswith("/admin/v1/"):
        return "registry:admin:*"
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    m = re.match(r"/v2/(.+)/(?:manifests|blobs|tags|referrers)/", path)
    return f"repository:{m.group(1)}:pull" if m else None


class ChallengeAuth:
    """A client middleware answering the registry's challenge with `login`: Basic when
    it asks for Basic, else the Docker token flow (a token from the challenge's realm
    for its service and scope, fetched with Basic credentials, cached per scope). Only
    for requests without a body (they are sent again after the challenge)."""

    def __init__(self, user: str, password: str, *, verify_tls: bool = True) -> None:
        self.basic = aiohttp.BasicAuth(user, password)
        self.verify_tls = verify_tls
        self.tokens: dict[str, str] = {}
        self.use_basic = False

    async def __call__(self, request: aiohttp.ClientRequest,
                       handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        scope = _scope_of(request.url.path)
        if self.use_basic:
            request.headers["Authorization"] = self.basic.encode()
        elif scope in self.tokens:
            request.headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        response = await handler(request)
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status != 401 or not challenge:
            return response
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic" and not self.use_basic:
            self.use_basic = True
        elif kind == "bearer":
            params = dict(_CHALLENGE.findall(challenge))
            token = await self._token(params)
            if token is None:
                return response
            self.tokens[params.get("scope") or scope or ""] = token
            if scope is not None:
                self.tokens[scope] = token
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            return response
        if self.use_basic:
            request.headers["Authorization"] = self.basic.encode()
        response.release()
        return await handler(request)

    async def _token(self, params: dict[str, str]) -> str | None:
        realm = params.get("realm")
        if not realm:
            return None
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.verify_tls)) as session, session.get(
                realm, params=query, auth=self.basic) as resp:
            if resp.status != 200:
                return None
            doc = json.loads(await resp.read())
        token = doc.get("token") or doc.get("access_token")
        return str(token) if token else None


class RegistryClient:
    """Distribution API calls against one registry base URL.

    `auth` is sent with every request; `login` instead answers each challenge (Basic,
    or the token flow of a registry with token auth).
    """

    def __init__(self, base_url: str, *, auth: aiohttp.BasicAuth | None = None,
                 verify_tls: bool = True, login: tuple[str, str] | None = None) -> None:
        self.base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            auth=auth, connector=aiohttp.TCPConnector(ssl=verify_tls),
            middlewares=(ChallengeAuth(*login, verify_tls=verify_tls),) if login is not None
            else ())

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        await self._session.close()

    async def _json(self, path: str) -> tuple[Any, str | None]:
        async with self._session.get(urljoin(self.base + "/", path.lstrip("/"))) as resp:
            await _check(resp)
            return json.loads(await resp.read()), _next(resp.headers.get("Link"))

    async def _pages(self, path: str, key: str) -> AsyncIterator[str]:
        next_path: str | None = path
        while next_path:
            doc, next_path = await self._json(next_path)
            for item in doc.get(key) or []:
                yield item

    def repositories(self) -> AsyncIterator[str]:
        return self._pages("/v2/_catalog?n=1000", "repositories")

    def tags(self, name: str) -> AsyncIterator[str]:
        return self._pages(f"/v2/{name}/tags/list?n=1000", "tags")

    async def manifest_digest(self, name: str, reference: str) -> str:
        async with self._session.head(f"{self.base}/v2/{name}/manifests/{reference}",
                                      headers={"Accept": MANIFEST_ACCEPT}) as resp:
            await _check(resp)
            return resp.headers["Docker-Content-Digest"]

    async def delete_manifest(self, name: str, reference: str) -> None:
        """DELETE by digest (the manifest and its tags) or by tag (the tag only)."""
        async with self._session.delete(f"{self.base}/v2/{name}/manifests/{reference}") as resp:
            await _check(resp)

    async def delete_repository(self, name: str) -> dict[str, Any]:
        """Dockyard's admin delete; elsewhere, every manifest of every tag by digest."""
        async with self._session.delete(f"{self.base}/admin/v1/repositories/{name}") as resp:
            if resp.status != 404 or "NAME_UNKNOWN" in (await resp.text()):
                await _check(resp)
                return dict(json.loads(await resp.read()))
        digests = {await self.manifest_digest(name, t) async for t in self.tags(name)}
        for digest in digests:
            await self.delete_manifest(name, digest)
        return {"name": name, "manifests": len(digests)}

    # --- what a replica follows ------------------------------------------------

    async def events(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        """Dockyard's change feed after `after` (`next`, `head`, `events`), waiting up
        to `wait` seconds for new ones; `FeedExpired` when the cursor is too old."""
        timeout = aiohttp.ClientTimeout(total=wait + 60)
        async with self._session.get(f"{self.base}/admin/v1/events", timeout=timeout,
                                     params={"after": str(after), "limit": str(limit),
                                             "wait": str(wait)}) as resp:
            if resp.status == 410:
                doc = json.loads(await resp.read())
                error = doc["errors"][0]
                raise FeedExpired(410, f"{error['code']}: {error.get('message', '')}",
                                  int(error["detail"]["head"]))
            await _check(resp)
            return dict(json.loads(await resp.read()))

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """The manifest's bytes as stored and its media type."""
        async with self._session.get(f"{self.base}/v2/{name}/manifests/{reference}",
                                     headers={"Accept": MANIFEST_ACCEPT}) as resp:
            await _check(resp)
            return await resp.read(), resp.headers.get("Content-Type", "")

    async def has_manifest(self, name: str, reference: str) -> bool:
        async with self._session.head(f"{self.base}/v2/{name}/manifests/{reference}",
                                      headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status == 404:
                return False
            await _check(resp)
            return True

    async def has_blob(self, name: str, digest: str) -> bool:
        async with self._session.head(f"{self.base}/v2/{name}/blobs/{digest}") as resp:
            if resp.status == 404:
                return False
            await _check(resp)
            return True

    @contextlib.asynccontextmanager
    async def blob(self, name: str, digest: str, chunk: int = 1024 * 1024
                   ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as a stream of chunks (never the whole blob in memory)."""
        async with self._session.get(f"{self.base}/v2/{name}/blobs/{digest}",
                                     timeout=BLOB_TIMEOUT) as resp:
            await _check(resp)
            yield resp.content.iter_chunked(chunk)

    async def referrers(self, name: str, digest: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is `digest` (empty where the
        registry has no referrers API)."""
        async with self._session.get(f"{self.base}/v2/{name}/referrers/{digest}") as resp:
            if resp.status == 404:
                return []
            await _check(resp)
            return list(json.loads(await resp.read()).get("manifests") or [])


async def _check(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    text = await resp.text()
    try:
        errors = json.loads(text)["errors"]
        message = "; ".join(f"{e['code']}: {e.get('message', '')}" for e in errors)
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:200] or resp.reason or "error"
    raise RegistryClientError(resp.status, message)


def _next(link: str | None) -> str | None:
    """The target of a `Link: <...>; rel="next"` header."""
    if not link or 'rel="next"' not in link:
        return None
    return link[link.index("<") + 1:link.index(">")]
