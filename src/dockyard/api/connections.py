"""The worker's HTTP connections: aiohttp's handler plus the limits it lacks.

- `http.header_timeout`: a connection must deliver a whole request header this soon after
  it opens, or after the first byte of its next request, else it is closed. Over TLS the
  handshake must end within it too (`tls.listener_timeouts`): a connection is counted
  and timed only once its handshake is done.
- `http.unauthenticated_connections`: how many connections one client address may hold
  open before any of them presented valid credentials; one more is answered 429 and
  closed. Counted for the whole node, every worker in one shared table (`admission`);
  connections from `http.trusted_proxies` are not counted. The refusal is written when
  the connection opens, then only the sending side is shut (a lingering close, as
  nginx's): the request the client sends meanwhile is read and dropped. Closed at once,
  the socket answered that request with a reset, which can discard the 429 still queued
  (the client sees `Connection reset by peer`, not the answer and its `Retry-After`).
  Over TLS the close itself lingers (close_notify, then the request read and dropped
  until the client's close_notify); a silent client is cut off after the same linger.
  At most `REFUSED_LINGERING_MAX` refusals linger at once per worker; past it a refusal
  is written and closed at once.
- a malformed or oversized request head gets a clean 400/431 and one log line that never
  quotes it (a 9 KiB `Authorization` header is a credential, not something to log).
- the requests in flight, so that SIGTERM can let them finish (`drain`);
- each request's metrics (route id, method, status, duration, bytes), gathered in
  plain counters (`core.metrics.RequestStats`) at the end of the request;
- each request's id (`logs.request_id`), for its log lines and its `X-Request-Id`
  response header; an incoming `X-Request-Id` is kept only from `http.trusted_proxies`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from dockyard import logs
from dockyard.api.access import IDENTITY
from dockyard.api.admission import AddressCounts, SharedCounts
from dockyard.api.errors import error_body
from dockyard.api.proxy import TrustedProxies
from dockyard.api.routes import TARGET
from dockyard.auth.identity import Identity
from dockyard.config.settings import HttpSettings
from dockyard.core.metrics import metrics
from dockyard.logs import REQUEST_ID, request_id

log = logging.getLogger(__name__)

#: the `Server` header of every response: no library or language versions
SERVER = "Dockyard"
#: routes (by name) the access log leaves out
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})


#: seconds a refused connection stays open (reading and dropping what comes) after its
#: 429, unless the client closes first: long enough for its request to arrive and the
#: answer to be read, short enough that a flood holds few sockets
REFUSED_LINGER = 2.0
#: refused connections a worker lets linger at once; past it a refusal is written and
#: closed at once (the client may then see a reset instead of the 429), so a flood from
#: many addresses holds at most this many sockets, not its rate times the linger
REFUSED_LINGERING_MAX = 256

#: seconds between two log lines about refused connections (a flood is one line)
REFUSAL_LOG_INTERVAL = 10.0
#: addresses a refusal line names at most (the rest are counted together)
REFUSAL_LOG_ADDRESSES = 5


class Refusals:
    """The log of connections refused at the cap, bounded: the first refusal after a
    quiet spell is said at once, the rest of the spell in one line per
    `REFUSAL_LOG_INTERVAL` (a client opening thousands of connections a second wrote a
    line for each, until the disk filled)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._counts: collections.Counter[str] = collections.Counter()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, address: str) -> None:
        if self._timer is None:
            log.warning("refused a connection from %s: %d unauthenticated connections "
                        "open already", address, self.cap)
            self._timer = asyncio.get_running_loop().call_later(REFUSAL_LOG_INTERVAL,
                                                                self._flush)
            return
        if address in self._counts or len(self._counts) < 1000:
            self._counts[address] += 1
        else:
            self._counts[""] += 1  # one of too many addresses to keep apart

    def _flush(self) -> None:
        """Say what was refused since the last line; stay quiet (and end the spell)
        when nothing was."""
        if not self._counts:
            self._timer = None
            return
        total = sum(self._counts.values())
        named = [(a, n) for a, n in self._counts.most_common() if a][:REFUSAL_LOG_ADDRESSES]
        others = total - sum(n for _, n in named)
        text = ", ".join(f"{a} {n}" for a, n in named)
        if others:
            text += f", others {others}"
        log.warning("refused %d more connection(s) in %gs at %d unauthenticated "
                    "connections per address: %s", total, REFUSAL_LOG_INTERVAL, self.cap,
                    text)
        self._counts.clear()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LOG_INTERVAL,
                                                            self._flush)


class Connections:
    """Every connection of this worker: admission, header timeout, requests in flight."""

    def __init__(self, settings: HttpSettings, *, log_context: bool = False) -> None:
        #: whether each request's id goes into the log context (`log.format: json`)
        self.log_context = log_context
        self.header_timeout = settings.header_timeout.total_seconds()
        self.cap = settings.unauthenticated_connections
        self.proxies = TrustedProxies(settings.trusted_proxies)
        #: this process's own count until the worker joins the node's (`share`)
        self.unauthenticated = AddressCounts()
        self.refusals = Refusals(self.cap)
        #: refused connections lingering now (bounded by `REFUSED_LINGERING_MAX`)
        self.lingering = 0
        self.in_flight = 0
        self.draining = False
        self.stats = metrics().requests_stats
        self._open: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def factory(self, manager: web.Server, **options: Any) -> Callable[[], Connection]:
        """The protocol factory for `loop.create_server` (`options` go to RequestHandler)."""
        return lambda: Connection(self, manager, loop=asyncio.get_running_loop(), **options)

    def share(self, shared: SharedCounts) -> None:
        """Count in the node's table from now on (before the first connection)."""
        self.unauthenticated = AddressCounts(shared)

    def admit(self, conn: Connection) -> bool:
        """Count a new connection against its address; False when the address is full."""
        if not self.cap or self.proxies.trusts(conn.address):
            return True
        if self.unauthenticated.count(conn.address) >= self.cap:
            return False
        self.unauthenticated.add(conn.address, 1)
        conn.counted = True
        return True

    def release(self, conn: Connection) -> None:
        """The connection authenticated or closed: it no longer counts."""
        if conn.counted:
            conn.counted = False
            self.unauthenticated.add(conn.address, -1)

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, seconds: float) -> bool:
        """Close idle connections, let requests in flight finish; False if cut off."""
        self.draining = True
        for conn in list(self._open):
            if not conn.busy:
                conn.force_close()
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def track(self, conn: Connection, is_open: bool) -> None:
        if is_open:
            self._open.add(conn)
        else:
            self._open.discard(conn)


class Connection(RequestHandler):
    """One client connection: aiohttp's request handler with Dockyard's limits."""

    def __init__(self, connections: Connections, manager: web.Server, **options: Any) -> None:
        super().__init__(manager, **options)
        self.connections = connections
        self.address = ""
        self.counted = False
        self.refused = False
        self.busy = 0
        self.trusted = False  # a trusted proxy: its X-Request-Id is kept
        #: the id of the request running now (its response's X-Request-Id)
        self.request_id = ""
        self._header_timer: asyncio.TimerHandle | None = None
        #: when the header now awaited began (its first byte, or the connection)
        self._header_since: float | None = None
        #: closes a refused connection that the client did not close (`REFUSED_LINGER`)
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.trusted = self.connections.proxies.trusts(self.address)
        if not self.connections.admit(self):
            self.refused = True
            self.connections.refusals.add(self.address)
            metrics().rate_limited.labels("connections").inc()
            writer = cast(asyncio.Transport, transport)  # uvloop's is no WriteTransport
            writer.write(_raw_response(429, "TOOMANYREQUESTS", "too many connections from "
                                       "this address before authentication",
                                       ("Retry-After", "5")))
            if self.connections.lingering >= REFUSED_LINGERING_MAX:  # a flood
                if writer.can_write_eof():
                    writer.close()  # the 429 is flushed, then the socket closed
                else:  # TLS: a close would wait for the client's close_notify
                    writer.abort()
                return
            self.connections.lingering += 1
            if writer.can_write_eof():
                writer.write_eof()  # aiohttp's eof_received closes it when the client does
                self._linger = self._loop.call_later(REFUSED_LINGER, writer.close)
            else:  # TLS: close() sends close_notify, then reads and drops until the
                # client's own, for up to `tls.SHUTDOWN_TIMEOUT`; a refusal lingers no
                # longer than a plain one
                writer.close()
                self._linger = self._loop.call_later(REFUSED_LINGER, writer.abort)
            return
        self.connections.track(self, True)
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.refused:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
                self.connections.lingering -= 1
            return
        self._disarm()
        self.connections.release(self)
        self.connections.track(self, False)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # the request of a refused connection: dropped
            return
        if not self.busy and self._header_since is None:
            self._arm()  # the first byte of a new request: its header must follow soon
        super().data_received(data)

    async def _handle_request(
        self, request: BaseRequest, start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        """Count the request in flight (for `drain`) from its head to its response's last
        byte; after it, the connection no longer counts as unauthenticated if it logged in.

        aiohttp's own hook, not a middleware: this runs for every request of every
        (sub-)application and costs one call instead of a middleware's two."""
        connections = self.connections
        self.busy += 1
        self._header_since = None  # the header is complete
        connections.request_started()
        start = time.monotonic()
        self.request_id = rid = (request_id(request.headers.get("X-Request-Id"))
                                 if self.trusted else logs.PREFIX + str(next(logs.COUNTER)))
        if connections.log_context:  # JSON logs name it on every line
            REQUEST_ID.set(rid)
        try:
            resp, reset = await super()._handle_request(request, start_time, request_handler)
            # inline, not helpers: this runs for every request (the manifest GET bench)
            try:
                route = request[TARGET].route.id
            except KeyError:
                route = _route_name(request)
            method = request.method
            if method == "HEAD":
                out = 0
            elif type(resp) is web.Response and type(body := resp.body) is bytes:
                out = len(body)
            else:
                out = _bytes_out(method, resp)
            connections.stats.record(route, method, resp.status, time.monotonic() - start,
                                     request.content.total_bytes, out)
            return resp, reset
        finally:
            self.busy -= 1
            connections.request_finished()
            if self.counted:
                who = request.get(IDENTITY)
                if isinstance(who, Identity) and who.authenticated:
                    connections.release(self)

    def log_access(self, request: BaseRequest, response: web.StreamResponse,
                   time: float | None) -> None:
        """The access log, without the probes and scrapes that arrive every few seconds
        (`/healthz`, `/readyz`, `/metrics`: they are counted in the metrics instead)."""
        if self.access_logger is None:
            return
        if TARGET not in request and _route_name(request) in QUIET_ROUTES:
            return
        super().log_access(request, response, time)

    def _arm(self) -> None:
        """Start the header clock. One timer per connection is re-armed lazily when it
        fires, rather than scheduled and cancelled for every request of a keep-alive
        connection (that cost showed in the manifest GET benchmark). The connection's
        own loop, not `get_running_loop()`, which on Python 3.11 makes a `getpid`
        system call each time (its check for a fork)."""
        loop = self._loop
        self._header_since = loop.time()
        if self._header_timer is None:
            self._header_timer = loop.call_later(self.connections.header_timeout,
                                                 self._header_check)

    def _disarm(self) -> None:
        self._header_since = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_check(self) -> None:
        self._header_timer = None
        since = self._header_since
        if since is None or self.busy:
            return  # no header is awaited now; the next request's first byte re-arms
        loop = self._loop
        left = since + self.connections.header_timeout - loop.time()
        if left > 0:  # a later request started the clock again: wait for its deadline
            self._header_timer = loop.call_later(left, self._header_check)
            return
        self._header_since = None
        log.info("closing a connection from %s: no complete request header within %gs",
                 self.address, self.connections.header_timeout)
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request head the parser refused: a clean OCI error, logged without its text."""
        if not isinstance(exc, HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
            response.headers["Server"] = SERVER
            return response
        status = 431 if isinstance(exc, LineTooLong) else 400
        text = ("a request line or header field is too long" if status == 431
                else "malformed HTTP request")
        log.info("refused a request from %s: %d %s (%s)", self.address, status, text,
                 type(exc).__name__)
        response = web.Response(status=status, body=error_body("UNSUPPORTED", text),
                                content_type="application/json", headers={"Server": SERVER})
        response.force_close()
        return response


class AccessLog(AbstractAccessLogger):
    """The access log as fields (`log.format: json`): request id, user, repository,
    method, route, status, bytes, duration."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        target = request.get(TARGET)
        who = request.get(IDENTITY)
        out = _bytes_out(request.method, response)
        self.logger.info(
            "%s %s %d", request.method, request.rel_url.raw_path, response.status, extra={
                "client": request.remote, "method": request.method,
                "path": request.rel_url.raw_path,
                "route": target.route.id if target is not None else _route_name(request),
                "repository": target.match.name if target is not None else _match_name(request),
                "user": who.user if isinstance(who, Identity) else None,
                "status": response.status, "bytes_in": request.content.total_bytes,
                "bytes_out": out, "duration_ms": round(time * 1000, 3)})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _bytes_out(method: str, response: web.StreamResponse) -> int:
    """The response body's bytes: its Content-Length (also when sent with os.sendfile),
    else what was written (a chunked body, its head included)."""
    if method == "HEAD":
        return 0
    return response.content_length or response.body_length


def _matched(request: BaseRequest) -> Any:
    """What aiohttp's router matched (None before routing, or on a bare request)."""
    return getattr(request, "_match_info", None)


def _route_name(request: BaseRequest) -> str:
    """A request outside the route table: its aiohttp route's name, or `other`."""
    name = getattr(getattr(_matched(request), "route", None), "name", None)
    return name if isinstance(name, str) else "other"


def _match_name(request: BaseRequest) -> str | None:
    """A request outside the route table: the repository its aiohttp route matched
    (the UI's `/ui/r/{name}...` pages), else None."""
    match_info = _matched(request)
    name = match_info.get("name") if isinstance(match_info, dict) else None
    return name if isinstance(name, str) else None


def _raw_response(status: int, code: str, message: str, *extra: tuple[str, str]) -> bytes:
    """A whole HTTP/1.1 error response, for a connection refused before any request."""
    body = error_body(code, message)
    reason = {429: "Too Many Requests"}.get(status, "Error")
    head = [f"HTTP/1.1 {status} {reason}", f"Server: {SERVER}",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close",
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}",
            *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
