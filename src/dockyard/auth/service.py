"""Access control assembled from the `auth:` settings: authenticate, decide, issue tokens.

`AccessControl` is what the HTTP layer holds. It knows nothing about HTTP: it takes the
`Authorization` header's value and a client address, and answers with an `Identity`, or
raises `Unauthenticated` / `RateLimited`; `decide` then says whether an identity may act on
a scope. The built-in token service grants the intersection of the scopes asked for and
what the policy allows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.auth.htpasswd import Entry, HtpasswdError, HtpasswdFile
from dockyard.auth.identity import ANONYMOUS_IDENTITY, Identity, Scope, credential_id
from dockyard.auth.policy import Policy
from dockyard.auth.ratelimit import FailureLimiter, Throttled, limit_key
from dockyard.config.auth import AuthSettings
from dockyard.config.stamps import file_stamps

if TYPE_CHECKING:
    # tokens and their keys (PyJWT, cryptography) are imported by the code of the token
    # method (`prepare`, `_load_token_keys` and what runs once it has): a registry
    # without token auth never loads them
    from dockyard.auth.keys import VerifyKey
    from dockyard.auth.tokens import TokenIssuer, TokenVerifier

log = logging.getLogger("dockyard.auth")

#: the scope of the catalog and of listings (`registry:catalog:*`)
CATALOG_SCOPE = Scope("registry", "catalog", frozenset({"*"}))


class Unauthenticated(Exception):
    """Credentials were sent but are not valid (or not of the kind this registry takes)."""

    def __init__(self, reason: str, *, invalid_token: bool = False) -> None:
        super().__init__(reason)
        self.invalid_token = invalid_token


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after}s")
        self.retry_after = retry_after


class Decision(enum.Enum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"  # 401 with a challenge: log in (or get a token)
    DENIED = "denied"  # 403: logged in, and still not allowed
    INSUFFICIENT_SCOPE = "insufficient_scope"  # 401: the token lacks it; a new one would not


KEY_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the token key files."""


def default_signing_key_path(data_dir: Path) -> Path:
    return data_dir / "auth" / "token-signing-key.pem"


def prepare(settings: AuthSettings, data_dir: Path) -> None:
    """Create what must exist before workers start (the generated signing key)."""
    token = settings.token
    if settings.method == "token" and token.builtin and token.signing_key is None:
        from dockyard.auth.keys import ensure_signing_key

        ensure_signing_key(default_signing_key_path(data_dir), token.algorithm)


@dataclass(frozen=True)
class Grant:
    identity: Identity
    access: list[Scope]


class AccessControl:
    """Authentication and authorization for one registry process."""

    def __init__(self, settings: AuthSettings, data_dir: Path) -> None:
        if settings.method == "none":
            raise ValueError("AccessControl is only built when auth.method is not none")
        self.settings = settings
        self.method = settings.method
        self.realm = settings.realm
        self.policy = Policy([(r.repository, r.allow) for r in settings.access],
                             settings.catalog, settings.admin)
        self.limiter = FailureLimiter(settings.ratelimit.failures,
                                      settings.ratelimit.window.total_seconds())
        #: password checks in flight, by (client, user, password): identical attempts
        #: share one (see `_check_once`)
        self._checking: dict[tuple[str, str, str], asyncio.Task[Entry]] = {}
        #: how long an attempt found wrong is known so (`HtpasswdFile.known_wrong`)
        self._window = settings.ratelimit.window.total_seconds()
        # a password method without the file is refused when the config is read
        # (`AuthSettings`), so `config check` says it too
        self.htpasswd: HtpasswdFile | None = None
        if settings.htpasswd.path is not None:
            try:
                self.htpasswd = HtpasswdFile(settings.htpasswd.path)
            except (HtpasswdError, OSError) as exc:
                raise ValueError(f"auth.htpasswd.path: {exc}") from None
        self.issuer: TokenIssuer | None = None
        self.verifier: TokenVerifier | None = None
        if settings.method == "token":
            self._load_token_keys(settings, data_dir)

    def reload(self, settings: AuthSettings) -> list[str]:
        """SIGHUP: the access policy and the htpasswd file from `settings` (the method and
        token settings need a restart); what was reloaded, for the log."""
        done: list[str] = []
        policy = Policy([(r.repository, r.allow) for r in settings.access], settings.catalog,
                        settings.admin)
        self.policy = policy
        done.append(f"access policy ({len(settings.access)} rules)")
        path = settings.htpasswd.path
        try:
            if path is not None and self.htpasswd is not None and path == self.htpasswd.path:
                self.htpasswd.reload(force=True)
                done.append(f"htpasswd {path}")
            elif path is not None:
                self.htpasswd = HtpasswdFile(path)
                done.append(f"htpasswd {path}")
        except (HtpasswdError, OSError) as exc:
            log.error("SIGHUP: keeping the previous users of %s: %s", path, exc)
        self.settings = self.settings.model_copy(update={"access": settings.access,
                                                         "catalog": settings.catalog,
                                                         "htpasswd": settings.htpasswd})
        return done

    def _load_token_keys(self, settings: AuthSettings, data_dir: Path) -> None:
        from dockyard.auth.keys import ensure_signing_key, load_signing_key
        from dockyard.auth.tokens import TokenIssuer, TokenVerifier

        token = settings.token
        keys: list[VerifyKey] = []
        if token.builtin:
            path = token.signing_key or default_signing_key_path(data_dir)
            if token.signing_key is None:
                ensure_signing_key(path, token.algorithm)
            signing = load_signing_key(path, token.algorithm)
            keys.append(signing.verify_key())
            self.issuer = TokenIssuer(signing, issuer=token.issuer, service=token.service,
                                      expiration=token.expiration.total_seconds(),
                                      refresh_expiration=token.refresh_expiration
                                      .total_seconds(),
                                      refresh_max_lifetime=token.refresh_max_lifetime
                                      .total_seconds())
        self._own_keys = keys
        self._key_files = [*token.public_keys, *([token.jwks] if token.jwks else [])]
        self._key_stamps = file_stamps(*self._key_files)
        self._keys_checked = time.monotonic()
        # at start a file that is missing or does not parse stops the server
        self._file_keys = [self._load_key_file(i) for i in range(len(self._key_files))]
        keys = self._verify_keys()
        if not keys:
            raise ValueError("auth.token: no key to verify tokens with (set builtin: true, "
                             "public_keys or jwks)")
        if not token.builtin and not token.realm:
            raise ValueError("auth.token.realm is required when tokens come from an "
                             "external issuer")
        self.verifier = TokenVerifier(keys, issuer=token.issuer, service=token.service)

    def _load_key_file(self, index: int) -> list[VerifyKey]:
        """The keys of the `index`th key file (the `public_keys`, then `jwks`)."""
        from dockyard.auth.jwks import load_jwks
        from dockyard.auth.keys import load_public_keys

        path = self._key_files[index]
        if index >= len(self.settings.token.public_keys):
            return load_jwks(path)
        return load_public_keys(path)

    def _verify_keys(self) -> list[VerifyKey]:
        return self._own_keys + [k for keys in self._file_keys for k in keys]

    def _reload_token_keys(self) -> None:
        """Re-read the issuer's key files when one changed (checked once a second), so
        an external issuer can rotate its keys without a restart. A file that is gone
        gives no keys any more (deleting it revokes them); one that does not parse keeps
        its previous keys, and is tried (and logged) again at every check until fixed."""
        now = time.monotonic()
        if now - self._keys_checked < KEY_CHECK_INTERVAL:
            return
        from dockyard.auth.keys import KeyError_
        from dockyard.auth.tokens import TokenVerifier

        self._keys_checked = now
        try:
            stamps = list(file_stamps(*self._key_files))
        except OSError as exc:  # a directory made unreadable mid-rotation: not a 500
            log.error("keeping the token keys in force: cannot look at their files: %s",
                      exc)
            return
        if tuple(stamps) == self._key_stamps:
            return
        changed = False
        for i, (path, stamp) in enumerate(zip(self._key_files, stamps, strict=True)):
            if stamp == self._key_stamps[i]:
                continue
            keys: list[VerifyKey] = []
            if stamp is not None:
                try:
                    keys = self._load_key_file(i)
                except (KeyError_, OSError) as exc:
                    try:
                        gone = file_stamps(path) == (None,)
                    except OSError:
                        gone = False
                    if not gone:
                        log.error("keeping the previous token keys of %s: %s", path, exc)
                        stamps[i] = self._key_stamps[i]  # so it is tried again
                        continue
                    stamps[i] = None  # removed while it was read
            if stamps[i] is None:
                log.warning("token key file %s is gone: its %d key(s) no longer verify "
                            "tokens", path, len(self._file_keys[i]))
            self._file_keys[i] = keys
            changed = True
        self._key_stamps = tuple(stamps)
        if not changed:
            return
        keys = self._verify_keys()
        token = self.settings.token
        self.verifier = TokenVerifier(keys, issuer=token.issuer, service=token.service)
        log.info("reloaded the token verification keys (%d)", len(keys))

    # ------------------------------------------------------------ authentication

    def _reload_users(self) -> None:
        if self.htpasswd is None:
            return
        try:
            if self.htpasswd.reload():
                log.info("reloaded %s (%d users)", self.htpasswd.path,
                         len(self.htpasswd.users()))
        except (HtpasswdError, OSError) as exc:
            log.error("keeping the previous users: %s", exc)

    async def login(self, user: str, password: str, client: str) -> Identity:
        """Check a user name and password, under the failed-login limits."""
        if self.htpasswd is None:
            raise Unauthenticated("passwords are not accepted here")
        self._reload_users()
        entry: Entry | None = self.htpasswd.cached(user, password)
        if entry is None:
            if self.htpasswd.known_wrong(client, user, password):
                # a client's repeat (skopeo sends it once per layer): a plain 401, not
                # checked or counted again, where a mistyped password was 130 failures
                # and the address's other users were refused for minutes; guesses are
                # distinct passwords, which still count
                raise Unauthenticated("wrong user name or password")
            entry = await self._check_once(user, password, client)
        return Identity(user=entry.user, groups=entry.groups, method="password", client=client,
                        auth_time=int(time.time()))

    async def _check_once(self, user: str, password: str, client: str) -> Entry:
        """The check of `user`'s `password` from `client`, shared by the identical
        attempts in flight in this process: the first request of each of N pulls
        starting at once from one address (CI runners behind one NAT) reserved N of
        the address's failed-login budget, and past it the right password got 429.
        The check is a task of its own, so a client that goes away does not cancel
        the others' answer."""
        key = (client, user, password)
        task = self._checking.get(key)
        if task is None:
            task = asyncio.ensure_future(self._check(user, password, client))
            self._checking[key] = task

            def done(t: asyncio.Task[Entry]) -> None:
                if self._checking.get(key) is t:
                    del self._checking[key]
                if not t.cancelled():
                    t.exception()  # each waiter re-raises it; none left is no warning

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _check(self, user: str, password: str, client: str) -> Entry:
        assert self.htpasswd is not None
        addr, name = limit_key("addr", client), limit_key("user", user)
        # the address's failure is reserved before bcrypt runs, so parallel guesses
        # from one client cannot all pass the check of past failures (it stays a
        # failure unless the check passes); the user's is counted once the check
        # failed: reserved too, many runners logging in at once as one robot
        # account from many addresses were refused with the right password
        try:
            if wait := await self.limiter.retry_after(name):
                raise Throttled(wait)
            attempt = await self.limiter.reserve(addr)
        except Throttled as exc:
            raise RateLimited(exc.retry_after) from None
        entry = await asyncio.to_thread(self.htpasswd.verify, user, password)
        if entry is None:
            self.htpasswd.remember_wrong(client, user, password, self._window)
            await self.limiter.failed(name)
            log.warning("failed login for user %r from %s", user[:64], client)
            raise Unauthenticated("wrong user name or password")
        await attempt.succeeded()
        return entry

    async def authenticate(self, authorization: str | None, client: str) -> Identity:
        """The identity behind an `Authorization` header (anonymous when there is none)."""
        if not authorization:
            return Identity(client=client)
        kind, _, value = authorization.strip().partition(" ")
        kind = kind.lower()
        if kind == "basic" and self.method == "htpasswd":
            user, password = parse_basic(value)
            if not user and not password:
                # containers/image answers a Basic challenge with empty credentials
                # when it has none: that is an anonymous request
                return Identity(client=client)
            return await self.login(user, password, client)
        if kind == "bearer" and self.verifier is not None:
            from dockyard.auth.tokens import InvalidToken

            self._reload_token_keys()
            try:
                return self.verifier.identity(value.strip(), client)
            except InvalidToken as exc:
                log.info("rejected a bearer token from %s: %s", client, exc)
                raise Unauthenticated("invalid token", invalid_token=True) from None
        raise Unauthenticated(f"{kind or 'empty'} credentials are not accepted here")

    # ------------------------------------------------------------ authorization

    def permitted(self, identity: Identity, scope: Scope) -> frozenset[str]:
        """The actions of `scope` that `identity` may take."""
        if identity.grants is not None:
            granted = identity.granted(scope)
            return frozenset(a for a in scope.actions if a in granted)
        return self.policy.allowed(identity, scope)

    def decide(self, identity: Identity, scope: Scope | None) -> Decision:
        """May `identity` do everything in `scope`? (None: only be a known client.)"""
        if scope is None:
            # /v2/: any valid credentials, or a token (an anonymous one too)
            if identity.authenticated or identity.grants is not None:
                return Decision.ALLOW
            return Decision.UNAUTHENTICATED
        if self.permitted(identity, scope) >= scope.actions:
            return Decision.ALLOW
        if not identity.authenticated:
            return Decision.UNAUTHENTICATED
        if identity.grants is not None and self._policy_would_grant(identity, scope):
            return Decision.INSUFFICIENT_SCOPE
        return Decision.DENIED

    def subjects(self, identity: Identity) -> frozenset[str]:
        """The policy subjects `identity` matches (a token's user with their groups)."""
        return self._policy_identity(identity).subjects()

    def _policy_identity(self, identity: Identity) -> Identity:
        """The user behind a token as the policy sees them (groups from the htpasswd
        file; only the name when the token came from an external issuer)."""
        if identity.grants is None:
            return identity
        if identity.user is None:
            return Identity()
        entry = self.htpasswd.entry(identity.user) if self.htpasswd is not None else None
        if entry is None:
            return Identity(user=identity.user)
        return Identity(user=entry.user, groups=entry.groups)

    def catalog_filter(self, identity: Identity) -> Callable[[str], bool] | None:
        """Which repository names listings show `identity`: those the policy lets them
        pull; None when that is every repository (nothing to filter). A bearer token
        without the catalog scope shows only what it may pull itself: a token made for
        one repository does not list the rest of its user's view (in the web UI, the
        admin histories)."""
        who = self._policy_identity(identity)
        policy = self.policy
        if identity.grants is not None and not _lists_catalog(identity):
            def allowed(name: str) -> bool:
                return ("pull" in identity.granted(Scope("repository", name, frozenset()))
                        and "pull" in policy.actions(who, name))
            return allowed
        if policy.pulls_everything(who):
            return None
        return lambda name: "pull" in policy.actions(who, name)

    def _policy_would_grant(self, identity: Identity, scope: Scope) -> bool:
        """Would a new token for this token's user carry `scope`? (Then the client should
        get one: 401 with `error="insufficient_scope"`, as Distribution answers.)"""
        if self.htpasswd is None or self.issuer is None:
            return True  # an external issuer decides; let the client ask it
        entry = self.htpasswd.entry(identity.user or "")
        if entry is None:
            return False
        user = Identity(user=entry.user, groups=entry.groups)
        return self.policy.allowed(user, scope) >= scope.actions

    # ------------------------------------------------------------ token service

    def grant(self, identity: Identity, scopes: Iterable[Scope]) -> list[Scope]:
        """What a token for `identity` may carry: asked ∩ allowed, scope by scope."""
        out: list[Scope] = []
        for scope in scopes:
            allowed = self.policy.allowed(identity, scope)
            if allowed:
                out.append(Scope(scope.type, scope.name, allowed))
        return out

    def issue(self, identity: Identity, scopes: Iterable[Scope], *,
              offline: bool) -> dict[str, Any]:
        assert self.issuer is not None
        access = self.grant(identity, scopes)
        issued = self.issuer.access_token(identity.user or "", access)
        doc: dict[str, Any] = {"token": issued.token, "access_token": issued.token,
                               "expires_in": issued.expires_in, "issued_at": issued.issued_at,
                               "scope": " ".join(str(s) for s in access)}
        if offline and identity.user is not None:
            refresh = self._refresh_token(identity)
            if refresh is not None:
                doc["refresh_token"] = refresh
        return doc

    def _refresh_token(self, identity: Identity) -> str | None:
        """A refresh token bound to the user's password as it stands now."""
        assert self.issuer is not None
        assert identity.user is not None
        entry = self.htpasswd.entry(identity.user) if self.htpasswd is not None else None
        if entry is None or entry.problem:
            return None
        return self.issuer.refresh_token(entry.user, credential_id(entry.hash),
                                         identity.auth_time or int(time.time()))

    def refresh(self, token: str, client: str) -> Identity:
        """The user a refresh token was issued to, if their password is still the one it
        was issued for and its chain has not outlived `refresh_max_lifetime`."""
        assert self.verifier is not None
        from dockyard.auth.tokens import InvalidToken

        try:
            claims = self.verifier.decode(token, refresh=True)
        except InvalidToken as exc:
            log.info("rejected a refresh token from %s: %s", client, exc)
            raise Unauthenticated("invalid refresh token", invalid_token=True) from None
        self._reload_users()
        user, cred, auth_time = claims.get("sub"), claims.get("cred"), claims.get("auth_time")
        if not isinstance(cred, str) or not isinstance(auth_time, int):
            raise Unauthenticated("a refresh token from before credential binding")
        max_lifetime = self.settings.token.refresh_max_lifetime.total_seconds()
        if time.time() > auth_time + max_lifetime:
            log.info("refused a refresh token from %s: its chain began more than "
                     "refresh_max_lifetime ago", client)
            raise Unauthenticated("the refresh chain is too old; log in again")
        entry = self.htpasswd.entry(user) if self.htpasswd and isinstance(user, str) else None
        if entry is None or entry.problem or not hmac.compare_digest(
                cred, credential_id(entry.hash)):
            log.info("refused a refresh token from %s: the user's password changed or the "
                     "user is gone", client)
            raise Unauthenticated("the password this refresh token was issued for changed")
        return Identity(user=entry.user, groups=entry.groups, method="refresh_token",
                        client=client, auth_time=auth_time)

    # ------------------------------------------------------------ browser sessions

    def credential(self, user: str) -> str | None:
        """What a browser session of `user` is bound to now (a digest of their stored
        password hash, as refresh tokens are): None when the user cannot log in."""
        self._reload_users()
        entry = self.htpasswd.entry(user) if self.htpasswd is not None else None
        return None if entry is None or entry.problem else credential_id(entry.hash)

    def session_identity(self, user: str, cred: str, auth_time: int, client: str
                         ) -> Identity | None:
        """The user a browser session names, if their password is still the one it was
        opened with (a password change or removal ends every session); else None."""
        current = self.credential(user)
        if current is None or not hmac.compare_digest(cred, current):
            return None
        assert self.htpasswd is not None
        entry = self.htpasswd.entry(user)
        assert entry is not None
        return Identity(user=entry.user, groups=entry.groups, method="session",
                        client=client, auth_time=auth_time)


def parse_basic(value: str) -> tuple[str, str]:
    try:
        # a header with any non-ASCII character is no base64 (b64decode of such a str
        # raises a plain ValueError)
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        raise Unauthenticated("malformed basic credentials") from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise Unauthenticated("malformed basic credentials")
    return user, password


def _lists_catalog(identity: Identity) -> bool:
    """Whether a token grants the catalog (`registry:catalog:*`)."""
    return "*" in identity.granted(CATALOG_SCOPE)


__all__ = ["ANONYMOUS_IDENTITY", "CATALOG_SCOPE", "AccessControl", "Decision", "RateLimited",
           "Unauthenticated"]
