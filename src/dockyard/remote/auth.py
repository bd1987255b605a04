"""Answering a registry's `WWW-Authenticate` challenge: Basic, or the Docker token flow.

A Bearer challenge names a realm, a service and a scope; a token is asked for at the
realm (anonymously, or with Basic credentials when there are some) and kept per scope
until it expires or the registry challenges again. Credentials for a registry reached
over https are never sent to a plain-http realm.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from dataclasses import dataclass, field
from ssl import SSLContext

import aiohttp

from dockyard.received import SMALL_LIMIT, BodyTooLarge, parse_json, read_at_most
from dockyard.remote.credentials import Credentials

#: tokens kept per registry (one per scope set; the oldest goes first)
MAX_TOKENS = 1024

#: a token service answers within this, or the request fails (`AuthError`)
TOKEN_TIMEOUTS = aiohttp.ClientTimeout(total=60, sock_connect=30)

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed `WWW-Authenticate` header."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
                  .replace('\\"', '"') for m in _PARAM.finditer(rest)}
        return cls(scheme.lower(), params)


def basic_header(credentials: Credentials) -> str:
    """`Basic base64(user:password)` (RFC 7617, UTF-8)."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class AuthError(Exception):
    """The registry refused our credentials, or its token service failed."""


@dataclass
class Authenticator:
    """The Authorization header for each scope of one registry, learnt from challenges."""

    credentials: Credentials | None = None
    #: the registry is reached over https: its credentials go to no plain-http realm
    https: bool = False
    _basic: bool = False
    _tokens: dict[tuple[str, ...], tuple[str, float]] = field(default_factory=dict)
    #: token fetches in flight, one per scope set (concurrent 401s share it)
    _fetching: dict[tuple[str, ...], asyncio.Future[None]] = field(default_factory=dict)

    def header(self, scopes: tuple[str, ...]) -> str | None:
        """What to send before any challenge for these scopes (None: send nothing)."""
        if self._basic and self.credentials is not None:
            return basic_header(self.credentials)
        token = self._tokens.get(scopes)
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    async def answer(self, session: aiohttp.ClientSession, challenge_header: str,
                     scopes: tuple[str, ...], sent: str | None, *,
                     ssl: SSLContext | bool) -> bool:
        """Learn from a 401's challenge to a request that carried `sent`; True when a
        retry may now succeed. Concurrent 401s for one scope fetch one token."""
        challenge = Challenge.parse(challenge_header)
        if challenge.scheme == "basic":
            if self.credentials is None or sent is not None:
                return False
            self._basic = True
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return False
        running = self._fetching.get(scopes)
        if running is None:
            if self.header(scopes) not in (None, sent):
                return True  # another request got a fresh token meanwhile
            running = asyncio.ensure_future(self._learn(session, challenge, scopes, ssl=ssl))
            self._fetching[scopes] = running
            running.add_done_callback(lambda _f: self._fetching.pop(scopes, None))
            running.add_done_callback(_retrieve)
        await asyncio.shield(running)
        return True

    async def _learn(self, session: aiohttp.ClientSession, challenge: Challenge,
                     scopes: tuple[str, ...], *, ssl: SSLContext | bool) -> None:
        """Fetch and keep a token for `scopes`. Expired tokens are dropped and at most
        `MAX_TOKENS` kept (a pull-through cache asks for one per repository name a
        client makes up)."""
        wanted = list(scopes)
        if challenge.params.get("scope"):
            wanted += [s for s in challenge.params["scope"].split(" ") if s not in wanted]
        token, ttl = await self._fetch(session, challenge, wanted, ssl=ssl)
        now = time.monotonic()
        for key in [k for k, (_, until) in self._tokens.items() if until <= now]:
            del self._tokens[key]
        self._tokens.pop(scopes, None)
        while len(self._tokens) >= MAX_TOKENS:  # the oldest first
            del self._tokens[next(iter(self._tokens))]
        self._tokens[scopes] = (token, now + max(ttl - 10, 1))

    async def _fetch(self, session: aiohttp.ClientSession, challenge: Challenge,
                     scopes: list[str], *, ssl: SSLContext | bool) -> tuple[str, float]:
        params = [("scope", s) for s in scopes]
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        headers = {} if self.credentials is None else \
            {"Authorization": basic_header(self.credentials)}
        realm = challenge.params["realm"]
        scheme = realm.partition(":")[0].lower()
        if scheme not in ("http", "https"):
            raise AuthError(f"the token realm {realm[:200]!r} is not an http(s) URL")
        if headers and self.https and scheme != "https":
            raise AuthError(f"the registry is https but its token realm {realm[:200]} is "
                            "plain http: the credentials are not sent there in the clear")
        async with session.get(realm, params=params, headers=headers, ssl=ssl,
                               timeout=TOKEN_TIMEOUTS) as resp:
            try:
                body = await read_at_most(resp, SMALL_LIMIT)
            except BodyTooLarge as exc:
                raise AuthError(f"token service {realm} answered {resp.status}: {exc}"
                                ) from None
            if resp.status >= 400:
                raise AuthError(f"token service {realm} answered {resp.status}: "
                                f"{body.decode(errors='replace').strip()[:200]}")
        try:
            doc = parse_json(body)
        except ValueError:
            raise AuthError(f"token service {realm} answered with something else than "
                            "JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str):
            raise AuthError(f"token service {realm} returned no token")
        expires = doc.get("expires_in")
        # JSON may say NaN or -1: a token that never seems valid would be fetched anew
        # for every request (the token spec's default lifetime is 60 s)
        valid = (isinstance(expires, int | float) and not isinstance(expires, bool)
                 and math.isfinite(expires) and expires > 0)
        return token, float(expires) if valid else 60.0


def _retrieve(fetch: asyncio.Future[None]) -> None:
    """Mark a fetch's failure as seen (its waiters got it, if any were left)."""
    if not fetch.cancelled():
        fetch.exception()
