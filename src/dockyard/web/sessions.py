"""Browser sessions: a signed cookie naming the user, and the CSRF token bound to it.

The cookie holds `{user, cred, auth_time, sid}` and an HMAC-SHA256 of it under a key
kept in the metadata store (`secrets`: every worker and node reads the same one), so no
table of open sessions is needed. `cred` is the digest of the user's stored password
hash (as refresh tokens carry): changing the password or removing the user ends every
session. Logging out records the session's id until its cookie would expire
(`revoked_sessions`), so a copy of the cookie is refused too. Anonymous visitors get a
session too (no user), so the login form has a CSRF token. The CSRF token of a form is
an HMAC of the session id; a POST whose token does not match its cookie's session is
refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from dockyard.api.proxy import client_address, public_base
from dockyard.auth.identity import Identity
from dockyard.auth.service import AccessControl
from dockyard.core.sessions import SessionRevocations

COOKIE = "dockyard_session"
Refusal = Callable[[web.Request, int], web.StreamResponse]


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    user: str | None = None
    cred: str = ""
    auth_time: int = 0
    #: True when the response must set the cookie (new, or changed by login/logout)
    fresh: bool = False


#: the session a request arrived with (or the new one its response sets)
SESSION = web.RequestKey("ui_session", Session)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Encode, verify and issue session cookies; CSRF tokens; the UI's refusals.

    Implements `api.access.BrowserSessions` for the authorization middleware.
    """

    def __init__(self, key: bytes, lifetime: float, refused: Refusal) -> None:
        #: the signing key: the registry's shared `ui.session-key` once the app started
        self.key = key
        #: logged-out sessions: the registry's record once the app started
        self.revocations: SessionRevocations | None = None
        self.lifetime = lifetime
        self._refused = refused

    def _sign(self, body: str) -> str:
        if len(self.key) < 32:
            raise RuntimeError("the session key is not loaded (the app has not started)")
        return _b64(hmac.new(self.key, b"session\0" + body.encode(), hashlib.sha256).digest())

    def encode(self, session: Session) -> str:
        body = _b64(json.dumps({"s": session.sid, "u": session.user, "c": session.cred,
                                "t": session.auth_time}, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def decode(self, value: str) -> Session | None:
        if not value.isascii():  # not one of ours (and hmac.compare_digest refuses it)
            return None
        body, _, signature = value.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            doc = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("s"), str):
            return None
        user, cred, auth_time = doc.get("u"), doc.get("c"), doc.get("t")
        if user is not None and (not isinstance(user, str) or not isinstance(cred, str)
                                 or not isinstance(auth_time, int)
                                 or time.time() > auth_time + self.lifetime):
            return Session(doc["s"])  # expired or malformed: still a visitor's session
        return Session(doc["s"], user, cred or "", auth_time or 0)

    def session(self, request: web.Request) -> Session:
        """The request's session: from its cookie, else a new anonymous one."""
        found = request.get(SESSION)
        if isinstance(found, Session):
            return found
        value = request.cookies.get(COOKIE)
        session = self.decode(value) if value else None
        if session is None:
            session = Session(secrets.token_urlsafe(18), fresh=True)
        request[SESSION] = session
        return session

    async def identity(self, request: web.Request, control: AccessControl
                       ) -> Identity | None:
        session = self.session(request)
        if session.user is None:
            return None
        if self.revocations is None or await self.revocations.revoked(session.sid):
            # logged out (elsewhere, or this is a copy of the cookie): a visitor now; a
            # UI page answered to it replaces the cookie (a refusal's redirect does not)
            request[SESSION] = Session(secrets.token_urlsafe(18), fresh=True)
            return None
        return control.session_identity(session.user, session.cred, session.auth_time,
                                        client_address(request))

    def refused(self, request: web.Request, status: int) -> web.StreamResponse:
        return self._refused(request, status)

    def csrf(self, request: web.Request) -> str:
        sid = self.session(request).sid
        if len(self.key) < 32:
            raise RuntimeError("the session key is not loaded (the app has not started)")
        return _b64(hmac.new(self.key, b"csrf\0" + sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, request: web.Request, token: str) -> bool:
        """A form's token matches the session its cookie carries (never a new one)."""
        if COOKIE not in request.cookies or self.session(request).fresh:
            return False
        return hmac.compare_digest(token.encode(), self.csrf(request).encode())

    def log_in(self, request: web.Request, user: str, cred: str) -> Session:
        """A new session for `user` (a new id, so a planted cookie is worth nothing)."""
        session = Session(secrets.token_urlsafe(18), user, cred, int(time.time()), fresh=True)
        request[SESSION] = session
        return session

    async def log_out(self, request: web.Request) -> Session:
        """A new anonymous session; the old one, if logged in, is refused from now on
        wherever its cookie is shown (until it would have expired)."""
        old = self.session(request)
        if old.user is not None:
            if self.revocations is None:
                raise RuntimeError("the session record is not loaded (the app has not "
                                   "started)")
            await self.revocations.revoke(old.sid, old.auth_time + self.lifetime)
        session = Session(secrets.token_urlsafe(18), fresh=True)
        request[SESSION] = session
        return session

    def set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        """Set the cookie when the session is new or changed: HttpOnly, SameSite=Strict,
        Secure when the public URL is https."""
        session = request.get(SESSION)
        if not isinstance(session, Session) or not session.fresh:
            return
        response.set_cookie(COOKIE, self.encode(session), path="/", httponly=True,
                            samesite="Strict",
                            secure=public_base(request).startswith("https:") or None,
                            max_age=int(self.lifetime))
