"""`RegistryClient`'s time bounds against a real aiohttp server on loopback that trickles
its answers: a request that streams no blob (a manifest, a token) is cut off after its
total limit, a blob that keeps coming is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.remote import auth
from dockyard.remote.auth import AuthError
from dockyard.remote.client import RegistryClient, RegistryClientError
from dockyard.remote.credentials import Credentials

TRICKLE = 0.1  # seconds between two bytes (or pieces) of an answer
LIMIT = 1.0  # the client's total limit in these tests


async def _trickle(request: web.Request, body: bytes, content_type: str
                   ) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    resp.content_length = len(body)
    await resp.prepare(request)
    try:
        for i in range(len(body)):
            await resp.write(body[i:i + 1])
            await asyncio.sleep(TRICKLE)
    except ConnectionError:
        return resp
    await resp.write_eof()
    return resp


async def _manifest(request: web.Request) -> web.StreamResponse:
    return await _trickle(request, b'{"schemaVersion": 2, "layers": []}',
                          "application/vnd.oci.image.manifest.v1+json")


async def _blob(request: web.Request) -> web.StreamResponse:
    """30 pieces of 1 KiB, one every TRICKLE: 3 s in all, never a silence of 1 s."""
    resp = web.StreamResponse()
    resp.content_length = 30 * 1024
    await resp.prepare(request)
    for _ in range(30):
        await resp.write(b"b" * 1024)
        await asyncio.sleep(TRICKLE)
    await resp.write_eof()
    return resp


async def _challenge(request: web.Request) -> web.StreamResponse:
    realm = f"http://{request.host}/token"
    return web.Response(status=401, headers={
        "WWW-Authenticate": f'Bearer realm="{realm}",service="slow"'})


async def _token(request: web.Request) -> web.StreamResponse:
    return await _trickle(request, b'{"token": "' + b"t" * 64 + b'"}', "application/json")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/v2/slow/app/manifests/v1", _manifest)
    app.router.add_get("/v2/slow/app/blobs/{digest}", _blob)
    app.router.add_get("/v2/locked/app/manifests/v1", _challenge)
    app.router.add_get("/token", _token)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


def client(server: TestServer) -> RegistryClient:
    made = RegistryClient(str(server.make_url("")))
    made.small_timeouts = aiohttp.ClientTimeout(total=LIMIT, sock_connect=5)
    return made


async def test_a_trickled_manifest_is_cut_off_at_the_total_limit(server: TestServer) -> None:
    async with client(server) as c:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.get_manifest("slow/app", "v1")
        assert time.monotonic() - began < LIMIT + 1.0  # the whole answer needs 3.5 s


async def test_a_blob_that_keeps_coming_is_not_cut_off(server: TestServer) -> None:
    async with client(server) as c, c.open_blob("slow/app", "sha256:" + "0" * 64) as chunks:
        got = sum([len(piece) async for piece in chunks])
    assert got == 30 * 1024  # 3 s, three times the small requests' limit


async def test_a_trickled_token_is_cut_off(server: TestServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "TOKEN_TIMEOUTS", aiohttp.ClientTimeout(total=LIMIT))
    async with client(server) as c:
        began = time.monotonic()
        with pytest.raises((TimeoutError, AuthError)):
            await c.get_manifest("locked/app", "v1")
        assert time.monotonic() - began < LIMIT + 1.0


# --- listings that page, and where credentials go -------------------------------------


def _page(tags: list[str], link: str | None) -> web.Response:
    return web.json_response({"name": "x", "tags": tags},
                             headers={"Link": link} if link else None)


async def _paged(request: web.Request) -> web.Response:
    """Two pages; the first names its `prev` before its `next`, the relation unquoted
    (RFC 8288 allows both)."""
    if request.query.get("last") == "b":
        return _page(["c"], None)
    return _page(["a", "b"], '</v2/paged/app/tags/list?n=2&last=0>; rel="prev", '
                             "</v2/paged/app/tags/list?n=2&last=b>; rel=next")


async def _looping(request: web.Request) -> web.Response:
    return _page(["x"], '</v2/loop/app/tags/list?n=1000>; rel="next"')  # itself


async def _away(request: web.Request) -> web.Response:
    return _page(["y"], '<http://127.0.0.2:9/v2/away/app/tags/list?last=y>; rel="next"')


async def _basic(request: web.Request) -> web.Response:
    if "Authorization" not in request.headers:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    return web.json_response({})


@pytest.fixture
async def lister() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/v2/", _basic)
    app.router.add_get("/v2/paged/app/tags/list", _paged)
    app.router.add_get("/v2/loop/app/tags/list", _looping)
    app.router.add_get("/v2/away/app/tags/list", _away)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def test_every_page_is_followed_whatever_the_link_order(lister: TestServer) -> None:
    async with client(lister) as c:
        assert [t async for t in c.tags("paged/app")] == ["a", "b", "c"]


async def test_pages_that_loop_are_an_error_not_a_hang(lister: TestServer) -> None:
    async with client(lister) as c:
        with pytest.raises(RegistryClientError, match="loop"):
            await asyncio.wait_for(_drain(c.tags("loop/app")), 10)


async def test_a_next_page_on_another_server_is_refused(lister: TestServer) -> None:
    async with client(lister) as c:
        with pytest.raises(RegistryClientError, match="another server"):
            await _drain(c.tags("away/app"))


async def test_credentials_go_to_the_registry_only(lister: TestServer) -> None:
    """An absolute URL the registry hands out (an upload's Location) on another server
    gets no Authorization header, though the registry itself asked for Basic."""
    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({})

    other = web.Application()
    other.router.add_get("/upload", echo)
    async with TestServer(other, host="127.0.0.1") as elsewhere:
        made = RegistryClient(str(lister.make_url("")),
                              credentials=Credentials("user", "secret"))
        async with made as c:
            await c.authenticate(())  # the registry's Basic challenge, answered
            async with c.request("GET", str(elsewhere.make_url("/upload"))):
                pass
            async with c.request("GET", str(lister.make_url("/v2/"))):
                pass  # its own absolute URL still carries them
    assert seen == [None]


async def _drain(items: AsyncIterator[str]) -> list[str]:
    return [item async for item in items]


async def test_a_token_said_to_expire_in_nan_seconds_is_kept_for_60(
        lister: TestServer) -> None:
    """`expires_in: NaN` (JSON as Python writes it) made every token look expired, so
    each request fetched a new one; such a lifetime counts as the spec's default."""
    fetched: list[int] = []

    async def token(request: web.Request) -> web.Response:
        fetched.append(1)
        return web.Response(text='{"token": "t", "expires_in": NaN}',
                            content_type="application/json")

    async def guarded(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t":
            realm = f"http://{request.host}/token"
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="s"'})
        return web.json_response({"name": "g/app", "tags": ["v1"]})

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/g/app/tags/list", guarded)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        for _ in range(3):
            assert await _drain(c.tags("g/app")) == ["v1"]
    assert len(fetched) == 1


MALFORMED_FEEDS = [
    b"[]",
    b'{"events": []}',
    b'{"head": true, "events": []}',
    b'{"head": 3, "events": {}}',
    b'{"head": 3, "events": [1]}',
    b'{"head": 3, "events": [{"id": "1", "at": 0, "kind": "tag_set", "repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 1, "at": null, "kind": "tag_set", "repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 1, "at": 0, "kind": "tag_set", "repository": ["a"]}]}',
    b'{"head": 3, "events": [{"id": 1, "at": 0, "kind": "tag_set", "repository": "a", '
    b'"tag": 7}]}',
    # a head past a bigint (the replica's metrics made a float of it and failed)
    b'{"head": 1' + b"0" * 400 + b', "events": []}',
    b'{"head": -1, "events": []}',
    # times past what a date can show (the UI failed on them), or none at all
    b'{"head": 3, "events": [{"id": 1, "at": 1' + b"0" * 400 + b', "kind": "tag_set", '
    b'"repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 1, "at": 1e300, "kind": "tag_set", "repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 1, "at": -5, "kind": "tag_set", "repository": "a"}]}',
    # ids at or before the cursor asked after (0), or not rising: the follower applied
    # the same events again and again, without pause
    b'{"head": 3, "events": [{"id": 0, "at": 0, "kind": "tag_set", "repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 2, "at": 0, "kind": "tag_set", "repository": "a"}, '
    b'{"id": 2, "at": 0, "kind": "tag_set", "repository": "a"}]}',
    b'{"head": 3, "events": [{"id": 2, "at": 0, "kind": "tag_set", "repository": "a"}, '
    b'{"id": 1, "at": 0, "kind": "tag_set", "repository": "a"}]}',
]


@pytest.mark.parametrize("body", MALFORMED_FEEDS)
async def test_a_malformed_feed_page_is_a_client_error(body: bytes) -> None:
    # what a follower retries with backoff (and shows in its status), not a TypeError
    # out of the job
    async def feed(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/admin/v1/events", feed)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        with pytest.raises(RegistryClientError, match="malformed page"):
            await c.events(0, 10, 0)


async def test_a_well_formed_feed_page_is_read() -> None:
    page = (b'{"head": 3, "next": 1, "events": [{"id": 1, "at": 1.5, "kind": "tag_set", '
            b'"repository": "a", "tag": "v1", "digest": null, "mediaType": null}]}')

    async def feed(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=page, content_type="application/json")

    app = web.Application()
    app.router.add_get("/admin/v1/events", feed)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        got = await c.events(0, 10, 0)
    assert got["head"] == 3
    assert got["events"][0]["tag"] == "v1"


@pytest.mark.parametrize("https", [True, False])
async def test_credentials_of_an_https_registry_go_to_no_plain_http_realm(
        https: bool) -> None:
    # a registry reached over https whose challenge names an http:// realm (a
    # misconfiguration, or a man in the middle of the challenge) would get the user's
    # password in the clear; a plain-http registry's own realm may be http
    seen: list[str | None] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"token": "t", "expires_in": 300})

    app = web.Application()
    app.router.add_get("/token", token)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as session:
        authenticator = auth.Authenticator(Credentials("u", "secret-pw"), https=https)
        challenge = f'Bearer realm="{srv.make_url("/token")}",service="s"'
        if https:
            with pytest.raises(AuthError, match="in the clear"):
                await authenticator.answer(session, challenge, ("repository:a:pull",),
                                           None, ssl=True)
            assert seen == []
        else:
            assert await authenticator.answer(session, challenge, ("repository:a:pull",),
                                              None, ssl=True)
            assert seen == [auth.basic_header(Credentials("u", "secret-pw"))]
        # anonymous tokens may come from an http realm either way
        anonymous = auth.Authenticator(None, https=https)
        assert await anonymous.answer(session, challenge, ("repository:a:pull",), None,
                                      ssl=True)
        assert seen[-1] is None


async def test_ending_an_upload_session_is_best_effort_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a refused mount's session is ended on the way to the upload: a DELETE that fails
    # or hangs must neither fail the copy nor hold it
    from dockyard.remote import client as client_module

    monkeypatch.setattr(client_module, "CANCEL_SECONDS", 0.5)
    deletes: list[str] = []

    async def failing(request: web.Request) -> web.Response:
        deletes.append("failing")
        return web.Response(status=500, text="no")

    async def hanging(request: web.Request) -> web.Response:
        deletes.append("hanging")
        await asyncio.sleep(30)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_delete("/v2/a/blobs/uploads/failing", failing)
    app.router.add_delete("/v2/a/blobs/uploads/hanging", hanging)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        began = time.monotonic()
        await c.cancel_upload(str(srv.make_url("/v2/a/blobs/uploads/failing")), "a")
        await c.cancel_upload(str(srv.make_url("/v2/a/blobs/uploads/hanging")), "a")
        assert time.monotonic() - began < 3
    assert deletes == ["failing", "hanging"]


async def test_token_fetches_are_per_scope_shared_and_the_cache_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a pull-through cache asks a token per repository name its clients make up: one
    # slow token service answer must not hold the others (one lock did), concurrent
    # 401s for one scope share a fetch, and the tokens kept are bounded
    monkeypatch.setattr(auth, "MAX_TOKENS", 3)
    asked: list[str] = []

    async def token(request: web.Request) -> web.Response:
        scope = request.query["scope"]
        asked.append(scope)
        if scope == "repository:slow:pull":
            await asyncio.sleep(2)
        return web.json_response({"token": scope, "expires_in": 300})

    app = web.Application()
    app.router.add_get("/token", token)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as session:
        challenge = f'Bearer realm="{srv.make_url("/token")}",service="s"'
        a = auth.Authenticator(None)

        async def answer(name: str) -> float:
            began = time.monotonic()
            assert await a.answer(session, challenge, (f"repository:{name}:pull",), None,
                                  ssl=True)
            return time.monotonic() - began

        slow = asyncio.ensure_future(answer("slow"))
        await asyncio.sleep(0.1)
        quick = await asyncio.gather(*(answer("quick") for _ in range(5)))
        assert max(quick) < 1.5, quick
        assert asked.count("repository:quick:pull") == 1
        assert await slow >= 1.5
        for n in range(5):
            await answer(f"made-up-{n}")
        assert len(a._tokens) == 3
        assert a.header(("repository:made-up-4:pull",)) == "Bearer repository:made-up-4:pull"


async def test_a_listing_of_more_names_than_the_bound_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # pages may be of any size: the bound is on the names of the whole listing
    from dockyard.remote import client as client_module

    monkeypatch.setattr(client_module, "MAX_ITEMS", 2500)

    async def big(request: web.Request) -> web.Response:
        start = int(request.query.get("last", "0"))
        return _page([f"{n:06}" for n in range(start, start + 1000)],
                     f'</v2/big/app/tags/list?last={start + 1000}>; rel="next"')

    app = web.Application()
    app.router.add_get("/v2/big/app/tags/list", big)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        got: list[str] = []

        async def collect() -> None:
            async for tag in c.tags("big/app"):
                got.append(tag)

        with pytest.raises(RegistryClientError, match="more than 2,500 names"):
            await collect()
        assert len(got) == 2000  # two whole pages, then the third passes the bound


@pytest.mark.parametrize(("answer", "listed"), [
    ({"name": "x", "tags": None}, []),  # some registries say null for none
    ({"name": "x", "tags": []}, []),
    ({"errors": [{"code": "UNKNOWN"}]}, None),  # a 200 that is no listing
    ({"name": "x"}, None),
    ({"name": "x", "tags": "v1"}, None),
])
async def test_a_page_without_its_list_is_an_error_not_an_empty_listing(
        answer: dict[str, Any], listed: list[str] | None) -> None:
    # a mirror's prune took an error page for "no tags upstream" and deleted them all
    async def tags(request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/v2/odd/app/tags/list", tags)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        if listed is not None:
            assert [t async for t in c.tags("odd/app")] == listed
        else:
            with pytest.raises(RegistryClientError, match="no list of tags"):
                await _drain(c.tags("odd/app"))


async def test_a_challenge_from_the_server_a_redirect_led_to_gets_no_credentials() -> None:
    # a blob or manifest GET answered 307 to another host (a CDN, or a host the registry
    # was made to name) whose 401 names its own token realm: answering it sent the
    # registry's password there; it is refused with a clear error instead
    received: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.json_response({"token": "foreign", "expires_in": 300})

    async def guarded(request: web.Request) -> web.Response:
        realm = request.url.with_path("/token").with_query(None)
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="{realm}",service="elsewhere"'})

    foreign = web.Application()
    foreign.router.add_get("/token", token)
    foreign.router.add_get("/content", guarded)
    async with TestServer(foreign, host="127.0.0.1") as elsewhere:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(str(elsewhere.make_url("/content")))

        registry = web.Application()
        registry.router.add_get("/v2/r/app/manifests/v1", redirect)
        registry.router.add_get("/v2/r/app/blobs/{digest}", redirect)
        async with TestServer(registry, host="127.0.0.1") as srv:
            made = RegistryClient(str(srv.make_url("")),
                                  credentials=Credentials("user", "secret"))
            async with made as c:
                with pytest.raises(RegistryClientError) as manifest:
                    await c.get_manifest("r/app", "v1")
                with pytest.raises(RegistryClientError) as blob:
                    async with c.open_blob("r/app", "sha256:" + "0" * 64) as chunks:
                        await _drain_bytes(chunks)
    assert received == []  # not even anonymously: the realm is not the registry's
    for raised in (manifest, blob):
        assert "another server" in str(raised.value), raised.value


async def _drain_bytes(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(piece) async for piece in chunks])


# --- streamed blobs that stop moving ---------------------------------------------------

MiB = 1 << 20


async def _chunks(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * MiB


def _upload_app(put: Any) -> web.Application:
    async def start(request: web.Request) -> web.Response:
        return web.Response(status=202, headers={"Location": "/v2/a/blobs/uploads/1"})

    app = web.Application()
    app.router.add_post("/v2/a/blobs/uploads/", start)
    app.router.add_put("/v2/a/blobs/uploads/1", put)
    return app


async def test_a_blob_put_the_registry_stops_reading_is_cut_off() -> None:
    # aiohttp's read timeout starts only once the request body is sent: a registry that
    # took the PUT's headers and then read nothing held `dockyard copy` for ever
    over = asyncio.Event()

    async def deaf(request: web.Request) -> web.Response:
        await over.wait()  # reads no byte of the body
        return web.Response(status=201)

    async with TestServer(_upload_app(deaf), host="127.0.0.1") as srv, client(srv) as c:
        c.stall = LIMIT
        began = time.monotonic()
        try:
            with pytest.raises(TimeoutError) as caught:
                await asyncio.wait_for(c.push_blob("a", "sha256:" + "0" * 64, 64 * MiB,
                                                   _chunks(64)), 15)
        finally:
            over.set()
        assert "no byte of it went out for 1 s" in str(caught.value)
        assert time.monotonic() - began < LIMIT + 2.0


async def test_a_blob_put_the_registry_reads_slowly_but_steadily_is_not_cut_off() -> None:
    read: list[int] = []

    async def slow(request: web.Request) -> web.Response:
        while piece := await request.content.read(MiB):
            read.append(len(piece))
            await asyncio.sleep(0.05)
        return web.Response(status=201)

    async with TestServer(_upload_app(slow), host="127.0.0.1") as srv, client(srv) as c:
        c.stall = LIMIT
        began = time.monotonic()
        await c.push_blob("a", "sha256:" + "0" * 64, 48 * MiB, _chunks(48))
        assert time.monotonic() - began > 2 * LIMIT  # longer than the stall, all moving
    assert sum(read) == 48 * MiB


async def test_trickled_headers_of_a_streamed_blob_are_cut_off() -> None:
    # each byte resets the socket's read timeout: a blob GET whose answer's headers come
    # a byte at a time (128 headers of 8 KiB, aiohttp's limits) would hold a copy, a
    # pull-through fetch or a replica for days
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        try:
            for _ in range(8000):
                writer.write(b"s")
                await writer.drain()
                await asyncio.sleep(TRICKLE)
        except ConnectionError:
            pass
        writer.close()

    trickler = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = trickler.sockets[0].getsockname()[1]
    try:
        async with RegistryClient(f"http://127.0.0.1:{port}") as c:
            c.stall = c.headers_within = LIMIT
            began = time.monotonic()
            with pytest.raises(TimeoutError) as caught:
                await asyncio.wait_for(c.open_blob("a", "sha256:" + "0" * 64).__aenter__(),
                                       10)
            assert "did not answer within 1 s" in str(caught.value)
            assert time.monotonic() - began < LIMIT + 1.0
    finally:
        trickler.close()
        await trickler.wait_closed()


async def test_a_manifest_head_without_a_digest_header() -> None:
    # by digest, a 200 says it is there (a replica took None for "gone" and deleted
    # its copy); by tag, the digest is unknown: None, for the caller to GET
    async def head(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    app = web.Application()
    app.router.add_route("HEAD", "/v2/app/manifests/{ref}", head)
    digest = "sha256:" + "a" * 64
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        info = await c.head_manifest("app", digest)
        assert info is not None
        assert info.digest == digest
        assert await c.head_manifest("app", "v1") is None


@pytest.mark.parametrize(("name", "reference"), [
    ("app", "../../victim/manifests/latest"),  # a tag a registry listed
    ("app", "v1/../../x"),
    ("app/../victim", "latest"),
    ("App", "latest"),
    ("app", "sha256:../../x"),
])
async def test_no_request_goes_to_a_path_a_listed_name_makes(name: str, reference: str
                                                             ) -> None:
    # yarl resolves dot segments: `dockyard copy --all-tags` of a registry listing the
    # tag `../../victim/manifests/latest` read and wrote `victim`'s manifest
    seen: list[str] = []

    async def anything(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        for call in (c.get_manifest(name, reference), c.head_manifest(name, reference),
                     c.put_manifest(name, reference, b"{}", "application/json"),
                     c.delete_manifest(name, reference)):
            with pytest.raises(RegistryClientError, match=r"no valid repository name|neither"):
                await call
        with pytest.raises(RegistryClientError, match=r"no digest|no valid repository"):
            await c.has_blob(name, reference)
    assert seen == []


async def test_listings_keep_only_what_can_be_a_name_and_a_bounded_total(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # pages each holding one "name" of 1 MiB, each linking the next: every page is under
    # its limit, and the names were kept until memory ran out
    big = "a" * (1 << 20)

    async def tags(request: web.Request) -> web.StreamResponse:
        page = int(request.query.get("page", "0"))
        return web.json_response({"name": "app", "tags": [big, "v1", 5]}, headers={
            "Link": f'</v2/app/tags/list?page={page + 1}>; rel="next"'})

    async def referrers(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"schemaVersion": 2, "manifests": [
            5, {"digest": 7}, {"digest": "../x"}, {"digest": "sha256:" + "b" * 64}]})

    app = web.Application()
    app.router.add_get("/v2/app/tags/list", tags)
    app.router.add_get("/v2/app/referrers/{digest}", referrers)
    monkeypatch.setattr("dockyard.remote.client.MAX_LISTING_BYTES", 8 << 20)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        got: list[str] = []

        async def listing() -> None:
            async for tag in c.tags("app"):
                got.append(tag)

        with pytest.raises(RegistryClientError, match="pages pass 8 MiB"):
            await listing()
        assert set(got) == {"v1"}  # the long one dropped as it was read
        found = await c.referrers("app", "sha256:" + "a" * 64)
        assert found == [{"digest": "sha256:" + "b" * 64}]


async def test_json_nested_past_the_decoder_is_a_client_error() -> None:
    # a tags page, an error body or a token of 100,000 `[` ended the command on a
    # RecursionError traceback (and a sync's whole source)
    deep = b"[" * 100_000 + b"]" * 100_000

    async def tags(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=deep, content_type="application/json")

    async def missing(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, body=b'{"errors": ' + deep + b"}",
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/app/tags/list", tags)
    app.router.add_route("*", "/v2/app/manifests/{ref}", missing)
    async with TestServer(app, host="127.0.0.1") as srv, client(srv) as c:
        with pytest.raises(RegistryClientError, match="answered with something"):
            await _drain(c.tags("app"))
        with pytest.raises(RegistryClientError) as caught:
            await c.get_manifest("app", "v1")
        assert caught.value.status == 404
