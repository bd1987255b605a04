"""A hostile registry for tests: a real aiohttp server on 127.0.0.1 in a thread whose
answers never end (or announce a gigantic length), to prove that what Dockyard reads
into memory from someone else's server is bounded.

- `GET /v2/` answers 200, or with `token=True` 401 with a Bearer challenge whose realm
  (`/token`) answers an endless body;
- `/v2/endless/<repo>/manifests/<ref>` and `/v2/endless/<repo>/tags/list`: 200 with a
  chunked body of `size` bytes that starts as JSON and never closes; `/metrics` the
  same, as Prometheus text (what `dockyard status --url` reads);
- `/v2/declared/<repo>/manifests/<ref>`: 200 announcing `Content-Length: size`, then
  sending slowly, as long as the client reads;
- `/v2/lying/<repo>/manifests/<ref>`: a real small manifest (`LYING_MANIFEST`; another
  one for any other reference), with `Docker-Content-Digest: sha256:NOTHEX`.

- `/v2/forged/<repo>/manifests/<ref>`: an OCI index (`top`) whose one child's "digest"
  is the tag `latest`, and for `latest` an empty index: the content a copy would write
  under that tag if it fetched what the source lists without checking it.

- `/v2/nested/<repo>/manifests/top`: an index within an index, 12 levels deep, every
  level served by its digest; `/v2/wide/<repo>/manifests/<ref>`: an index of 1,001
  children (copies stop at 8 levels and 1,000 children).

- `/v2/referring/<repo>/manifests/<ref>`: an empty index whose referrers API answers
  pages of 20,000 descriptors, each naming the next, without end.

- `/v2/wrong/<repo>/manifests/<ref>`: an image whose one layer (`WRONG_LAYER`, 1 MiB)
  the blob route answers with other bytes of the same size, over about a second;
  `/v2/stalling/...`: the
  same image, whose layer's body stops after 5,000 bytes, then ends short `STALL` s
  later. `/v2/overlong/...`: the same image, whose layer's body is its right bytes and
  then more, chunked, up to `size`. `/v2/wrong/<repo>/tags/list` lists `ODD_TAGS`: two
  versions (every tag names that image) and two names no tag may have.

`sent` counts the body bytes written to clients, so a test can tell that its client
stopped reading long before the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.apphost import AppHost
from tests.support.servers import free_port

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_PIECE = b"A" * (256 * 1024)
_TOKEN = b'{"token": "'
_METRICS = b'# HELP dockyard_build_info '


def _manifest(label: str) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": "sha256:" + hashlib.sha256(label.encode()).hexdigest(), "size": 2}
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": "sha256:" + hashlib.sha256(label.encode() * 2).hexdigest(), "size": 4}
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": config,
                       "layers": [layer]}).encode()


LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WRONG_LAYER = bytes(range(256)) * 4096  # 1 MiB: what the manifest's digest names
WRONG_BYTES = bytes(reversed(range(256))) * 4096  # what `wrong` sends for it instead
WRONG_CONFIG = b"{}"
#: seconds `stalling` sends nothing before it ends the body short
STALL = 10.0


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


WRONG_MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": _digest(WRONG_CONFIG), "size": len(WRONG_CONFIG)},
    "layers": [{"mediaType": LAYER, "digest": _digest(WRONG_LAYER),
                "size": len(WRONG_LAYER)}]}).encode()

#: what `wrong` lists as its tags: a 5,000-digit "version" (past what Python turns into
#: an int) and a name with a space are no valid tags
ODD_TAGS = ["1.0", "2.0", "9" * 5000, "not a tag"]

INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_INDEX = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).encode()
FORGED_INDEX = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
    {"mediaType": INDEX, "digest": "latest", "size": len(EMPTY_INDEX)}]}).encode()
def _nested(levels: int) -> dict[str, bytes]:
    """Indexes within indexes, `levels` deep, by digest (and `top`): each one verifies."""
    bodies: dict[str, bytes] = {}
    body = EMPTY_INDEX
    for _ in range(levels):
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        bodies[digest] = body
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {"mediaType": INDEX, "digest": digest, "size": len(body)}]}).encode()
    bodies["top"] = body
    return bodies


NESTED = _nested(12)
WIDE_INDEX = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
    {"mediaType": MANIFEST, "size": 2,
     "digest": "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()}
    for n in range(1001)]}).encode()
LYING_MANIFEST = _manifest("lying")
#: one page of the endless referrers listing: 20,000 descriptors (2 MiB)
REFERRERS_PAGE = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
    {"mediaType": MANIFEST, "size": 2,
     "digest": "sha256:" + hashlib.sha256(b"r%d" % n).hexdigest()}
    for n in range(20_000)]}).encode()
OTHER_MANIFEST = _manifest("other")


@dataclass
class HostileRegistry:
    size: int = 512 * 1024 * 1024
    token: bool = False
    port: int = field(default_factory=free_port)
    sent: int = 0

    def __post_init__(self) -> None:
        self._host = AppHost(self.port, "hostile registry")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _challenge(self, request: web.Request) -> web.Response | None:
        """With `token`, a request without credentials gets the Bearer challenge."""
        if self.token and "Authorization" not in request.headers:
            realm = f"http://{self.host}/token"
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
        return None

    async def _base(self, request: web.Request) -> web.StreamResponse:
        return self._challenge(request) or web.json_response({})

    async def _endless(self, request: web.Request, head: bytes, content_type: str,
                       declared: bool) -> web.StreamResponse:
        challenge = self._challenge(request) if head not in (_TOKEN, _METRICS) else None
        if challenge is not None:
            return challenge
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        if declared:
            resp.content_length = self.size
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        await resp.write(head)
        left = self.size - len(head)
        try:
            while left > 0:
                piece = _PIECE[:left]
                await resp.write(piece)
                self.sent += len(piece)
                left -= len(piece)
                if declared:
                    await asyncio.sleep(0.01)  # slow: the client must not wait for it all
        except (ConnectionError, asyncio.CancelledError):  # the client stopped reading
            return resp
        await resp.write_eof()
        return resp

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        declared = request.match_info["kind"] == "declared"
        return await self._endless(request, b'{"schemaVersion": 2, "x": "', MANIFEST,
                                   declared)

    async def _lying(self, request: web.Request) -> web.StreamResponse:
        body = LYING_MANIFEST if request.match_info["ref"] == "v1" else OTHER_MANIFEST
        return web.Response(body=None if request.method == "HEAD" else body, headers={
            "Content-Type": MANIFEST, "Docker-Content-Digest": "sha256:NOTHEX",
            "Content-Length": str(len(body))})

    async def _wrong_manifest(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=None if request.method == "HEAD" else WRONG_MANIFEST,
                            headers={"Content-Type": MANIFEST,
                                     "Content-Length": str(len(WRONG_MANIFEST))})

    async def _wrong_blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if digest == _digest(WRONG_CONFIG):
            body = WRONG_CONFIG
        elif digest == _digest(WRONG_LAYER):
            body = WRONG_BYTES
        else:
            return web.Response(status=404)
        if (request.match_info["kind"] == "overlong" and body is WRONG_BYTES
                and request.method != "HEAD"):
            # the right bytes, then more without end (no Content-Length: chunked)
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            for _ in range(0, self.size, len(WRONG_LAYER)):
                await resp.write(WRONG_LAYER)
                self.sent += len(WRONG_LAYER)
            return resp
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(body)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        if request.match_info["kind"] == "stalling" and body is WRONG_BYTES:
            await resp.write(WRONG_LAYER[:5000])
            # then nothing for longer than a test's `fetch_wait`, and the body ends
            # short; not for good, so that the server's shutdown need not wait for it
            await asyncio.sleep(STALL)
            return resp
        for start in range(0, len(body), 64 * 1024):  # over about a second
            await resp.write(body[start:start + 64 * 1024])
            await asyncio.sleep(0.06)
        return resp

    async def _forged(self, request: web.Request) -> web.StreamResponse:
        body = FORGED_INDEX if request.match_info["ref"] == "top" else EMPTY_INDEX
        return web.Response(body=None if request.method == "HEAD" else body, headers={
            "Content-Type": INDEX, "Content-Length": str(len(body))})

    async def _nested(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        body = WIDE_INDEX if request.match_info["kind"] == "wide" else NESTED.get(ref)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=None if request.method == "HEAD" else body, headers={
            "Content-Type": INDEX, "Content-Length": str(len(body))})

    async def _referring(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=None if request.method == "HEAD" else EMPTY_INDEX,
                            headers={"Content-Type": INDEX,
                                     "Content-Length": str(len(EMPTY_INDEX))})

    async def _referrers(self, request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "0")) + 1
        link = f'<{request.path}?page={page}>; rel="next"'
        return web.Response(body=REFERRERS_PAGE, headers={"Content-Type": INDEX,
                                                          "Link": link})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        return await self._endless(request, b'{"name": "x", "tags": ["', "application/json",
                                   False)

    async def _odd_tags(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": request.match_info["repo"], "tags": ODD_TAGS})

    async def _token(self, request: web.Request) -> web.StreamResponse:
        return await self._endless(request, _TOKEN, "application/json", False)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return await self._endless(request, _METRICS, "text/plain", False)

    def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/token", self._token)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/v2/referring/{repo}/manifests/{ref}", self._referring)
        app.router.add_get("/v2/referring/{repo}/referrers/{digest}", self._referrers)
        app.router.add_route("*", "/v2/{kind:endless|declared}/{repo}/manifests/{ref}",
                             self._manifest)
        app.router.add_get("/v2/endless/{repo}/tags/list", self._tags)
        app.router.add_get("/v2/wrong/{repo}/tags/list", self._odd_tags)
        app.router.add_route("*", "/v2/lying/{repo}/manifests/{ref}", self._lying)
        app.router.add_route("*", "/v2/forged/{repo}/manifests/{ref}", self._forged)
        app.router.add_route("*", "/v2/{kind:wrong|stalling|overlong}/{repo}/manifests/{ref}",
                             self._wrong_manifest)
        app.router.add_route("*", "/v2/{kind:wrong|stalling|overlong}/{repo}/blobs/{digest}",
                             self._wrong_blob)
        app.router.add_route("*", "/v2/{kind:nested|wide}/{repo}/manifests/{ref}",
                             self._nested)
        self._host.start(app)

    def stop(self) -> None:
        self._host.stop()
