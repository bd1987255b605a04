"""An async client for the distribution API of any registry (ours or upstream).

One `RegistryClient` per registry: manifests, blobs (streamed both ways), uploads, mounts,
tags, catalog and referrers with `Link` pagination, and Dockyard's admin extension
(repository deletion, the change feed a replica follows). It answers challenges itself
(`remote/auth.py`) and reports registry errors as `RegistryClientError` carrying the OCI
error codes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from dockyard.oci.digest import well_formed
from dockyard.oci.errors import RegistryError
from dockyard.oci.reference import MAX_NAME_LENGTH, is_valid_tag, validate_name
from dockyard.received import (
    DOCUMENT_LIMIT,
    MANIFEST_LIMIT,
    SMALL_LIMIT,
    BodyTooLarge,
    discard,
    parse_json,
    pieces,
    read_at_most,
)
from dockyard.remote.auth import Authenticator
from dockyard.remote.certs import host_of, tls_for
from dockyard.remote.credentials import Credentials

log = logging.getLogger("dockyard.remote")

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES)
#: Bytes read from a blob response at a time.
CHUNK = 1 << 20


class RegistryClientError(Exception):
    """The registry answered with an error; the message carries its OCI error."""

    def __init__(self, status: int, message: str, codes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.codes = codes


class ResponseTooLarge(RegistryClientError):
    """A response body held in memory (a manifest, a listing page, an error) was longer
    than its limit (`received.read_at_most`): refused, not read to its end."""


class FeedExpired(RegistryClientError):
    """The change feed no longer holds the events after the cursor (410 `CURSOR_EXPIRED`):
    compare in full, then follow from `head`."""

    def __init__(self, status: int, message: str, head: int) -> None:
        super().__init__(status, message, ("CURSOR_EXPIRED",))
        self.head = head


#: the scope of Dockyard's admin endpoints (the change feed, replica status)
ADMIN = ("registry:admin:*",)
#: a long poll may take this much longer than the wait it asked for before it fails
FEED_GRACE = 60.0
#: how long a request without a streamed body (a manifest, a HEAD, a listing page, an
#: upload's start) may take in all: a server trickling an answer is cut off
SMALL_REQUEST_SECONDS = 120.0
#: pages of one listing followed at most (a million tags at the registry's smallest
#: pages of 100); a listing that goes on, or comes back to a page, is an error
MAX_PAGES = 10_000
#: names a listing may hold in all (its pages may be of any size): past it, an error
MAX_ITEMS = 1_000_000
#: bytes a listing's pages may hold in all: each page is bounded (`DOCUMENT_LIMIT`), and
#: what a caller keeps of them (descriptors with their annotations, tag entries) with this
MAX_LISTING_BYTES = 256 * 1024 * 1024
#: how long ending an upload session after a failed blob PUT may take
CANCEL_SECONDS = 10.0
#: how long a streamed blob may move no byte, either way: the registry sends none of a
#: blob we GET (the socket's read timeout), or reads none of one we PUT (aiohttp times
#: no write: a registry that stops reading would hold the copy for ever)
STALL_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """A manifest's digest, media type and size as the registry reports them."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class TagTime:
    """A tag of a Dockyard, the manifest it names, and when and by whom (an account, or
    None) it was pushed there."""

    tag: str
    digest: str
    pushed_at: float
    pushed_by: str | None = None


class RegistryClient:
    """Distribution API calls against one registry base URL (`http[s]://host[:port]`)."""

    def __init__(self, base_url: str, *, credentials: Credentials | None = None,
                 verify_tls: bool = True, connections: int = 16,
                 max_manifest: int = MANIFEST_LIMIT,
                 tls: ssl.SSLContext | bool | None = None) -> None:
        """`tls`: what its requests verify and offer (`remote.certs.tls_for`); None: the
        system's CAs and the registry's `certs.d` directory, if any. Raises
        `CertDirError` (a ValueError) when that directory cannot be used."""
        self.base = base_url.rstrip("/")
        base = URL(self.base)
        #: where this registry's credentials may go (`_ours`)
        self._origin = (base.scheme, base.host, base.port)
        #: the largest manifest read from this registry (larger: `ResponseTooLarge`)
        self.max_manifest = max_manifest
        #: the time limits of a request that streams no blob
        self.small_timeouts = aiohttp.ClientTimeout(total=SMALL_REQUEST_SECONDS,
                                                    sock_connect=30)
        #: seconds a streamed blob may move no byte (`STALL_SECONDS`)
        self.stall = STALL_SECONDS
        #: seconds a streamed GET may take to answer its status and headers (a registry
        #: trickling them a byte at a time never lets the read timeout fire)
        self.headers_within = SMALL_REQUEST_SECONDS
        self._auth = Authenticator(credentials, https=base.scheme == "https")
        if tls is None:
            tls = (tls_for(host_of(self.base), verify=verify_tls) if base.scheme == "https"
                   else verify_tls)
        self._ssl = tls
        # bytes pass through as the registry sent them (digests are of those bytes, so
        # no compression is asked for: aiohttp would offer gzip); 1 MiB reads (aiohttp's
        # 64 KiB default pauses and resumes the socket several times per MiB of a blob)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30,
                                          sock_read=STALL_SECONDS),
            read_bufsize=CHUNK, auto_decompress=False,
            headers={"Accept-Encoding": "identity"})

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    # ------------------------------------------------------------------ plumbing

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/"))

    def _ours(self, url: str | URL) -> bool:
        """Whether `url` is on this registry (same scheme, host and port): the only place
        its credentials go, as a Docker client sends them only where it was challenged."""
        theirs = URL(url)
        return (theirs.scheme, theirs.host, theirs.port) == self._origin

    @asynccontextmanager
    async def request(self, method: str, path: str, *, scopes: tuple[str, ...] = (),
                      headers: dict[str, str] | None = None, data: Any = None,
                      replayable: bool = True, ok: tuple[int, ...] = (),
                      timeouts: aiohttp.ClientTimeout | None = None, streaming: bool = False
                      ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, authenticated for `scopes`; a 401 is answered and retried once
        (only when the body can be sent again). Statuses >= 400 not in `ok` raise.
        `timeouts` replace the session's (which has no overall limit); without them a
        request that does not stream a blob (`streaming`) gets `small_timeouts`, and one
        that does gets `stall` between two reads, and `headers_within` for its answer's
        headers when it sends no body. A body read with `read_at_most` past its limit
        raises `ResponseTooLarge`."""
        absolute = path.startswith(("http://", "https://"))
        url = path if absolute else self.url(path)
        if timeouts is None:
            timeouts = self.small_timeouts if not streaming else aiohttp.ClientTimeout(
                total=None, sock_connect=30, sock_read=self.stall)
        answer_within = self.headers_within if streaming and data is None else None
        for attempt in (0, 1):
            sent = dict(headers or {})
            # an absolute URL the registry handed out (an upload's Location) may be on
            # another server: the registry's credentials are not for it
            authorization = (self._auth.header(scopes)
                             if not absolute or self._ours(url) else None)
            if authorization:
                sent["Authorization"] = authorization
            answering = asyncio.timeout(answer_within)
            try:
                async with answering:
                    resp = await self._session.request(method, url, headers=sent, data=data,
                                                       ssl=self._ssl, allow_redirects=True,
                                                       timeout=timeouts)
            except TimeoutError:
                if not answering.expired():
                    raise
                raise TimeoutError(f"{method} {URL(url).path}: the registry did not answer "
                                   f"within {answer_within:g} s") from None
            try:
                if resp.status == 401 and not self._ours(resp.url):
                    # a redirect led elsewhere (a CDN, a host the registry names): its
                    # challenge is not the registry's, and the registry's credentials
                    # (nor a token it issued) do not go to its realm
                    await discard(resp)
                    raise RegistryClientError(
                        401, f"{method} {URL(url).path}: redirected to another server "
                             f"({resp.url.scheme}://{resp.url.host}:{resp.url.port}) that "
                             "asks for credentials; the registry's are not sent there")
                if (resp.status == 401 and attempt == 0 and replayable
                        and "WWW-Authenticate" in resp.headers):
                    try:  # read now, so the connection serves the retry
                        body = await read_at_most(resp, SMALL_LIMIT)
                    except BodyTooLarge:
                        body = b""
                    if await self._auth.answer(self._session, resp.headers["WWW-Authenticate"],
                                               scopes, authorization, ssl=self._ssl):
                        continue
                    if 401 not in ok:
                        await _raise_body(resp.status, body, resp.reason)
                if resp.status >= 400 and resp.status not in ok:
                    await _raise(resp)
                try:
                    yield resp
                except BodyTooLarge as exc:
                    raise ResponseTooLarge(resp.status, f"{method} {url}: {exc}") from None
                return
            finally:
                resp.release()

    async def authenticate(self, scopes: tuple[str, ...]) -> None:
        """Get credentials for `scopes` now (before a streamed body that cannot be resent)."""
        async with self.request("GET", "/v2/", scopes=scopes, ok=(401, 404)):
            pass

    def _next_page(self, resp: aiohttp.ClientResponse) -> str | None:
        """The path of the next page: the `rel="next"` target of the `Link` headers
        (all of them, any order, the relation quoted or not), resolved against the page's
        URL; `RegistryClientError` when it is on another server."""
        try:
            found = resp.links.get("next")
            target = found.get("url") if found is not None else None
        except ValueError:  # a target that is no URL
            raise RegistryClientError(resp.status, f"{resp.url.path}: a Link header that "
                                                   "cannot be read") from None
        if target is None:
            return None
        if not self._ours(target):
            raise RegistryClientError(resp.status, f"{resp.url.path}: the next page is on "
                                                   f"another server ({str(target)[:200]})")
        return URL(target).raw_path_qs

    async def _page_bodies(self, path: str, scopes: tuple[str, ...], *,
                           headers: dict[str, str] | None = None,
                           absent: tuple[int, ...] = ()) -> AsyncIterator[bytes | None]:
        """The body of each page of a listing (tags, catalog, referrers), from `path` on
        along the `rel="next"` links (`_next_page`: never to another server). When the
        first page answers a status of `absent` (the registry has no such listing), one
        None and nothing more; on a later page any error status raises. Pages that loop
        or pass `MAX_PAGES` or `MAX_LISTING_BYTES` are an error, not a hang."""
        next_path: str | None = path
        seen: set[str] = set()
        total = 0
        while next_path:
            if next_path in seen or len(seen) >= MAX_PAGES:
                raise RegistryClientError(200, f"{path}: the registry's pages loop (or "
                                               f"pass {MAX_PAGES}) at {next_path[:200]}")
            first = not seen
            seen.add(next_path)
            body: bytes | None = None
            async with self.request("GET", next_path, scopes=scopes, headers=headers,
                                    ok=absent if first else ()) as resp:
                if resp.status >= 400:  # one of `absent`, on the first page
                    await discard(resp)
                    next_path = None
                else:
                    body = await read_at_most(resp, DOCUMENT_LIMIT)
                    next_path = self._next_page(resp)
                    total += len(body)
                    if total > MAX_LISTING_BYTES:  # what the caller keeps of the pages
                        raise RegistryClientError(200, f"{path}: the registry's pages "
                                                       f"pass {MAX_LISTING_BYTES >> 20} MiB")
            yield body

    async def _pages(self, path: str, key: str, scopes: tuple[str, ...]
                     ) -> AsyncIterator[str]:
        count = 0
        async for body in self._page_bodies(path, scopes):
            doc = _document(200, path, body or b"")
            items = doc.get(key) if isinstance(doc, dict) else None
            if not isinstance(items, list) and not (isinstance(doc, dict) and key in doc
                                                    and items is None):
                # an error page or another document is no empty listing (a mirror's
                # prune would take it for "no tags upstream")
                raise RegistryClientError(200, f"{path}: the answer holds no list of {key}")
            listed = items or []
            count += len(listed)
            if count > MAX_ITEMS:
                raise RegistryClientError(200, f"{path}: the registry lists more than "
                                               f"{MAX_ITEMS:,} names")
            for item in listed:
                # a name longer than any repository name or tag may be is no name: a
                # listing of pages each holding one 30 MiB "name" grew by the page
                if isinstance(item, str) and len(item) <= MAX_NAME_LENGTH:
                    yield item

    # ------------------------------------------------------------------ listings

    def repositories(self) -> AsyncIterator[str]:
        return self._pages("/v2/_catalog?n=1000", "repositories", ("registry:catalog:*",))

    def tags(self, name: str) -> AsyncIterator[str]:
        return self._pages(f"/v2/{_repo(name)}/tags/list?n=1000", "tags", pull(name))

    async def tag_times(self, name: str) -> list[TagTime] | None:
        """A Dockyard's tags of `name` with their digests, push times and pushers (None
        from a Dockyard that lists none, or for an anonymous push), every page of
        `/admin/v1/tags/<name>`; None when it answers 404 (no such repository, or a
        Dockyard older than that listing: ask `tags` and `head_manifest` then)."""
        path = f"/admin/v1/tags/{_repo(name)}?n=1000"
        found: list[TagTime] = []
        async for body in self._page_bodies(path, pull(name), absent=(404,)):
            if body is None:
                return None
            doc = _document(200, path, body)
            items = doc.get("tags") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise RegistryClientError(200, f"{path}: the answer holds no list of tags")
            for item in items:
                found.append(_tag_time(path, item))
            if len(found) > MAX_ITEMS:
                raise RegistryClientError(200, f"{path}: the registry lists more than "
                                               f"{MAX_ITEMS:,} tags")
        return found

    async def referrers(self, name: str, digest: str, limit: int = MAX_ITEMS
                        ) -> list[dict[str, Any]] | None:
        """The referrers API's descriptors, every page of them (a registry may split the
        list, naming the next page in a `Link` header, as tag listings do); None when the
        registry has no such API (404, 405, or a first answer that is no image index).
        More than `limit` descriptors (held parsed: ~0.5 KiB each) are an error."""
        path = f"/v2/{_repo(name)}/referrers/{_digest(digest)}"
        found: list[dict[str, Any]] = []
        pages = 0
        async for body in self._page_bodies(path, pull(name), absent=(404, 405), headers={
                "Accept": "application/vnd.oci.image.index.v1+json"}):
            listed = _referrers_page(body)
            if listed is None:
                if pages == 0:
                    return None
                # a page past the first that is no index: the list would be cut short
                raise RegistryClientError(200, f"{path}: page {pages + 1} of the referrers "
                                               "is no image index")
            pages += 1
            found.extend(listed)
            if len(found) > limit:
                raise RegistryClientError(200, f"{path}: the registry lists more than "
                                               f"{limit:,} referrers")
        return found

    # ------------------------------------------------------------------ manifests

    async def head_manifest(self, name: str, reference: str) -> ManifestInfo | None:
        """What `reference` names, or None when the registry does not have it. A tag
        answered without `Docker-Content-Digest` (a SHOULD of the spec) is None too (its
        digest unknown: the caller may GET it); a digest answered 200 is there, header
        or not (a replica took such an answer for "gone" and deleted its manifest)."""
        async with self.request("HEAD", manifest_path(name, reference), scopes=pull(name),
                                headers={"Accept": MANIFEST_ACCEPT}, ok=(404,)) as resp:
            if resp.status == 404:
                return None
            digest = resp.headers.get("Docker-Content-Digest")
            if digest is None and ":" in reference:
                digest = reference
            if digest is None:
                return None
            return ManifestInfo(digest, resp.headers.get("Content-Type", ""),
                                int(resp.headers.get("Content-Length", "0")))

    async def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        """The manifest's exact bytes and its media type."""
        async with self.request("GET", manifest_path(name, reference), scopes=pull(name),
                                headers={"Accept": MANIFEST_ACCEPT}) as resp:
            body = await read_at_most(resp, self.max_manifest)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return body, ctype

    async def put_manifest(self, name: str, reference: str, data: bytes, media_type: str
                           ) -> CIMultiDictProxy[str]:
        """PUT the bytes as they are; the response headers (digest, `OCI-Subject`), case
        insensitive as HTTP's are (Go registries say `Oci-Subject`)."""
        async with self.request("PUT", manifest_path(name, reference), scopes=push(name),
                                headers={"Content-Type": media_type}, data=data) as resp:
            return resp.headers

    async def manifest_digest(self, name: str, reference: str) -> str:
        info = await self.head_manifest(name, reference)
        if info is None:
            raise RegistryClientError(404, f"MANIFEST_UNKNOWN: {name}:{reference}",
                                      ("MANIFEST_UNKNOWN",))
        return info.digest

    async def delete_manifest(self, name: str, reference: str) -> None:
        """DELETE by digest (the manifest and its tags) or by tag (the tag only)."""
        async with self.request("DELETE", manifest_path(name, reference),
                                scopes=(f"repository:{name}:delete", *push(name))):
            pass

    async def delete_repository(self, name: str) -> dict[str, Any]:
        """Dockyard's admin delete; elsewhere, every manifest of every tag by digest."""
        async with self.request("DELETE", f"/admin/v1/repositories/{_repo(name)}",
                                scopes=(f"repository:{name}:*",), ok=(404, 405)) as resp:
            body = await read_at_most(resp, SMALL_LIMIT)
            if resp.status == 404 and b"NAME_UNKNOWN" in body:
                await _raise_body(resp.status, body, resp.reason)
            if resp.status < 400:
                return dict(_document(resp.status, "repository delete", body))
        digests = {await self.manifest_digest(name, t) async for t in self.tags(name)}
        for digest in digests:
            await self.delete_manifest(name, digest)
        return {"name": name, "manifests": len(digests)}

    # ------------------------------------------------------------------ the change feed

    async def events(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        """Dockyard's change feed after cursor `after` (`events`, `next`, `head`), waiting
        up to `wait` seconds for new ones; `FeedExpired` when the cursor is too old."""
        query = f"after={after}&limit={limit}&wait={wait}"
        async with self.request("GET", f"/admin/v1/events?{query}", scopes=ADMIN, ok=(410,),
                                timeouts=aiohttp.ClientTimeout(total=wait + FEED_GRACE)
                                ) as resp:
            body = await read_at_most(resp, DOCUMENT_LIMIT)
            if resp.status == 410:
                raise _expired(body)
        return _feed_page(_document(200, "the change feed", body), after)

    # ------------------------------------------------------------------ blobs

    async def has_blob(self, name: str, digest: str) -> bool:
        async with self.request("HEAD", blob_path(name, digest), scopes=pull(name),
                                ok=(404,)) as resp:
            return resp.status == 200

    async def blob_size(self, name: str, digest: str, missing: tuple[int, ...] = (404,)
                        ) -> int | None:
        """The blob's size as the registry answers a HEAD; None when it answers one of
        `missing` (it has no such blob, or none for us)."""
        async with self.request("HEAD", blob_path(name, digest), scopes=pull(name),
                                ok=missing) as resp:
            if resp.status in missing:
                return None
            length = resp.headers.get("Content-Length", "")
        if not length.isdigit():
            raise RegistryClientError(resp.status, f"HEAD of {digest} in {name}: no size")
        return int(length)

    @asynccontextmanager
    async def open_blob(self, name: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as they arrive (`received.pieces`: none copied)."""
        async with self.request("GET", blob_path(name, digest), scopes=pull(name),
                                streaming=True) as resp:
            yield pieces(resp.content)

    async def mount_blob(self, name: str, digest: str, source: str) -> str | None:
        """Mount `digest` from repository `source`; None when mounted, else the Location of
        the upload session the registry opened instead."""
        scopes = (*push(name), f"repository:{source}:pull")
        path = (f"/v2/{_repo(name)}/blobs/uploads/?mount={quote(_digest(digest))}"
                f"&from={quote(_repo(source))}")
        async with self.request("POST", path, scopes=scopes) as resp:
            if resp.status == 201:
                return None
            return self.url(resp.headers["Location"]) if "Location" in resp.headers else \
                await self.start_upload(name)

    async def start_upload(self, name: str) -> str:
        path = f"/v2/{_repo(name)}/blobs/uploads/"
        async with self.request("POST", path, scopes=push(name)) as resp:
            location = resp.headers.get("Location")
            if not location:
                raise RegistryClientError(resp.status, f"POST /v2/{name}/blobs/uploads/: the "
                                                       "registry gave no Location")
            return urljoin(self.base + "/", location)

    async def cancel_upload(self, location: str, name: str) -> None:
        """Drop an upload session we will not use (a refused mount's, a failed push's).
        Best effort and bounded: it runs to its end (at most `CANCEL_SECONDS`) even when
        the caller is cancelled meanwhile, and a failure is only logged, so nobody's
        session is left counting against the registry's caps until it expires."""
        async def delete() -> None:
            async with self.request("DELETE", location, scopes=push(name), ok=(404, 405)):
                pass

        try:
            await asyncio.shield(asyncio.wait_for(delete(), CANCEL_SECONDS))
        except Exception as exc:  # the caller's own failure (or none) is what matters
            log.info("could not end the upload session %s: %s", location[:200],
                     exc or type(exc).__name__)

    async def push_blob(self, name: str, digest: str, size: int,
                        chunks: AsyncIterable[bytes], location: str | None = None) -> None:
        """Stream `size` bytes into a new upload (or the session at `location`) and close
        it with `?digest=`; the registry checks the digest."""
        if location is None:
            location = await self.start_upload(name)
        sep = "&" if "?" in location else "?"
        try:
            async with _moving(self.stall, f"PUT of {digest}") as fed, self.request(
                    "PUT", f"{location}{sep}digest={quote(digest)}", scopes=push(name),
                    replayable=False, data=fed(chunks), streaming=True,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(size)}):
                pass
        except BaseException:
            await self.cancel_upload(location, name)  # nobody will resume it
            raise


Feed = Callable[[AsyncIterable[bytes]], AsyncIterator[bytes]]


@asynccontextmanager
async def _moving(stall: float, what: str) -> AsyncIterator[Feed]:
    """A bound on a request body that stops moving: within it, the body passed through
    the `Feed` must hand the connection a chunk every `stall` seconds (the registry
    reads it, the source sends it), else the request is cancelled and `TimeoutError`
    names `what`. Once the body is sent, the answer is the read timeout's."""
    loop = asyncio.get_running_loop()
    live: list[asyncio.Timeout] = []

    def push(when: float | None) -> None:
        if live:  # not after the bound ended (the writer may outlive a refused PUT)
            live[0].reschedule(when)

    async def fed(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk  # back here once the connection took it
            push(loop.time() + stall)
        push(None)

    bound = asyncio.timeout(stall)
    try:
        async with bound:
            live.append(bound)
            try:
                yield fed
            finally:
                live.clear()
    except TimeoutError:
        if not bound.expired():
            raise
        raise TimeoutError(f"{what}: no byte of it went out for {stall:g} s (the "
                           "registry stopped reading it, or its source sending it)"
                           ) from None


def _repo(name: str) -> str:
    """`name` for a URL path, if it is a repository name the spec allows: one a registry
    listed, or a user typed, never makes the URL of another resource."""
    try:
        return validate_name(name)
    except RegistryError:
        raise RegistryClientError(400, f"{name[:100]!r} is no valid repository name",
                                  ("NAME_INVALID",)) from None


def _ref(reference: str) -> str:
    """A tag or a digest for a URL path: a tag a registry listed as
    `../../other/manifests/latest` made the URL of another repository's manifest (yarl
    resolves dot segments), and a copy wrote there."""
    if is_valid_tag(reference) or well_formed(reference):
        return reference
    raise RegistryClientError(400, f"{reference[:100]!r} is neither a tag nor a digest",
                              ("TAG_INVALID",))


def manifest_path(name: str, reference: str) -> str:
    """`/v2/<name>/manifests/<reference>`, both checked (`_repo`, `_ref`)."""
    return f"/v2/{_repo(name)}/manifests/{_ref(reference)}"


def blob_path(name: str, digest: str) -> str:
    """`/v2/<name>/blobs/<digest>`, both checked (`_repo`, `_digest`)."""
    return f"/v2/{_repo(name)}/blobs/{_digest(digest)}"


def _digest(digest: str) -> str:
    if well_formed(digest):
        return digest
    raise RegistryClientError(400, f"{digest[:100]!r} is no digest", ("DIGEST_INVALID",))


def pull(name: str) -> tuple[str, ...]:
    return (f"repository:{name}:pull",)


def push(name: str) -> tuple[str, ...]:
    return (f"repository:{name}:pull,push",)


async def _raise(resp: aiohttp.ClientResponse) -> None:
    try:
        body = await read_at_most(resp, SMALL_LIMIT)
    except BodyTooLarge as exc:
        raise RegistryClientError(resp.status, f"{resp.reason or 'error'} ({exc})") from None
    await _raise_body(resp.status, body, resp.reason)


def _referrers_page(body: bytes | None) -> list[dict[str, Any]] | None:
    """The descriptors of one page of the referrers API; None for no page (the registry
    has no such API) or a page that is no image index."""
    if body is None:
        return None
    try:
        doc = parse_json(body)
    except ValueError:
        return None
    found = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        return None
    # what callers read of each: an object with a digest (a listing of `[5]` failed a
    # replica's comparison on a TypeError, every time)
    return [d for d in found if isinstance(d, dict) and isinstance(d.get("digest"), str)
            and well_formed(d["digest"])]


def _tag_time(path: str, item: Any) -> TagTime:
    """One entry of `/admin/v1/tags/<name>`; `RegistryClientError` unless well formed."""
    if isinstance(item, dict):
        tag, digest, at = item.get("tag"), item.get("digest"), item.get("pushed_at")
        by = item.get("pushed_by")  # absent from an older Dockyard's listing
        if (isinstance(tag, str) and isinstance(digest, str)
                and isinstance(at, int | float) and not isinstance(at, bool)
                and math.isfinite(at) and (by is None or isinstance(by, str))):
            return TagTime(tag, digest, float(at), by)
    raise RegistryClientError(200, f"{path}: a tag entry that is no tag, digest and "
                                   f"push time (and pusher, if any): {str(item)[:200]}")


def _document(status: int, what: str, body: bytes) -> Any:
    """A JSON answer, or `RegistryClientError` naming what did not parse."""
    try:
        return parse_json(body)
    except ValueError:
        raise RegistryClientError(status, f"{what}: the registry answered with something "
                                          "else than JSON") from None


#: the largest event id and head a feed may name (a database's bigint)
MAX_EVENT_ID = 2**63 - 1
#: the latest event time a feed may name: the end of year 9999 (what dates can show)
MAX_EVENT_TIME = 253_402_300_799


def _feed_page(doc: Any, after: int) -> dict[str, Any]:
    """A change-feed page whose fields have the types and ranges a follower reads (ids
    past the cursor `after`, rising; a head and times a database and a date can hold),
    or `RegistryClientError` naming the first that does not: a primary whose cursor
    ran back had the follower apply the same events again without pause."""
    def number(value: Any, floats: bool = False, top: int = MAX_EVENT_ID) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float) if floats else int):
            return False
        return bool(0 <= value <= top)  # NaN is not, an int past a float's range is

    def text(value: Any, optional: bool = False) -> bool:
        return isinstance(value, str) or (optional and value is None)

    problem = ""
    if not isinstance(doc, dict):
        problem = "the page is not a JSON object"
    elif not number(doc.get("head")):
        problem = f"its head is not an integer from 0 to {MAX_EVENT_ID}"
    elif not isinstance(doc.get("events"), list):
        problem = "its events are not a list"
    last = after
    for n, event in enumerate(doc.get("events", []) if not problem else []):
        if not (isinstance(event, dict) and number(event.get("id"))
                and number(event.get("at"), True, MAX_EVENT_TIME)
                and text(event.get("kind"))
                and text(event.get("repository")) and text(event.get("tag"), True)
                and text(event.get("digest"), True) and text(event.get("actor"), True)):
            problem = (f"event {n} lacks an integer id, a time (UNIX seconds up to year "
                       "9999), a kind or a repository, or names its tag, digest or actor "
                       "with something else than text")
            break
        if event["id"] <= last:
            problem = (f"event {n} has the id {event['id']}, not past {last} (the cursor "
                       "asked after, or the event before it)")
            break
        last = event["id"]
    if problem:
        raise RegistryClientError(200, f"the change feed answered a malformed page: {problem}")
    return doc  # type: ignore[no-any-return]


async def _raise_body(status: int, body: bytes, reason: str | None) -> None:
    text = body.decode(errors="replace")
    codes: tuple[str, ...] = ()
    try:
        errors = parse_json(text)["errors"]
        message = "; ".join(f"{e['code']}: {e.get('message', '')}" for e in errors)
        codes = tuple(str(e["code"]) for e in errors)
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:200] or reason or "error"
    raise RegistryClientError(status, message, codes)


def _expired(body: bytes) -> RegistryClientError:
    """The 410 of the feed as `FeedExpired` (its `detail.head`); any other 410 as is."""
    try:
        error = parse_json(body)["errors"][0]
        return FeedExpired(410, f"{error['code']}: {error.get('message', '')}",
                           int(error["detail"]["head"]))
    except (ValueError, KeyError, TypeError, IndexError):
        return RegistryClientError(410, body.decode(errors="replace").strip()[:200] or "Gone")


