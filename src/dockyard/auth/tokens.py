"""Registry tokens (Docker token specification): short-lived JWTs with an `access` claim.

Access tokens carry `iss`, `sub`, `aud` (the service), `exp`, `nbf`, `iat`, `jti` and
`access: [{type, name, actions}]`. Refresh tokens (OAuth2 `refresh_token` grant) are JWTs
signed with the same key, with `typ: refresh` and no access, bound to the credential they
were issued for (`cred`, a digest of the user's stored password hash) and to the password
login that started the chain (`auth_time`): a refresh re-checks both, so a password change
or removal revokes them and a chain ends `refresh_max_lifetime` after that login; it also
re-applies the policy. Verification accepts only asymmetric
algorithms matching the key the `kid` names (no `none`, no HMAC), and requires the
configured issuer and audience.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jwt

from dockyard.auth.identity import Identity, Scope, poses_as_subject
from dockyard.auth.keys import SigningKey, VerifyKey

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """The token is not one this registry accepts (the reason is for logs, not clients)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenIssuer:
    """Signs access and refresh tokens for the built-in token service."""

    def __init__(self, key: SigningKey, *, issuer: str, service: str, expiration: float,
                 refresh_expiration: float, refresh_max_lifetime: float = 30 * 86400
                 ) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.expiration = int(expiration)
        self.refresh_expiration = int(refresh_expiration)
        self.refresh_max_lifetime = int(refresh_max_lifetime)

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key.key, algorithm=self.key.algorithm,
                          headers={"kid": self.key.kid, "typ": "JWT"})

    def access_token(self, subject: str, access: Iterable[Scope]) -> IssuedToken:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp":
                  now + self.expiration, "nbf": now - 1, "iat": now,
                  "jti": secrets.token_urlsafe(16),
                  "access": [s.claim() for s in access if s.actions]}
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return IssuedToken(self._sign(claims), self.expiration, issued)

    def refresh_token(self, subject: str, credential: str, auth_time: int) -> str | None:
        """A refresh token for the chain started by the password login at `auth_time`;
        it expires `refresh_expiration` from now, but never past the chain's end (None
        when the chain has ended)."""
        now = int(time.time())
        exp = min(now + self.refresh_expiration, auth_time + self.refresh_max_lifetime)
        if exp <= now:
            return None
        return self._sign({"iss": self.issuer, "sub": subject, "aud": self.service,
                           "exp": exp, "nbf": now - 1, "iat": now, "auth_time": auth_time,
                           "cred": credential, "jti": secrets.token_urlsafe(16),
                           "typ": "refresh"})


class TokenVerifier:
    """Checks tokens against a set of public keys, an issuer and an audience."""

    def __init__(self, keys: Sequence[VerifyKey], *, issuer: str, service: str) -> None:
        self.keys = list(keys)
        self.by_kid = {k.kid: k for k in self.keys}
        self.issuer = issuer
        self.service = service
        # token -> (accepted until, identity): a token already verified is not verified
        # again on every request of a push (its bytes are the key, so nothing can change)
        self._accepted: dict[str, tuple[float, Identity]] = {}

    def decode(self, token: str, *, refresh: bool = False) -> dict[str, Any]:
        if not token.isascii():  # a JWT is base64url and dots (PyJWT would raise a
            raise InvalidToken("malformed token: not ASCII")  # UnicodeEncodeError)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            candidates = [self.by_kid[kid]] if kid in self.by_kid else []
        else:
            candidates = self.keys
        candidates = [k for k in candidates if alg in k.algorithms]
        if not candidates:
            raise InvalidToken(f"no key for kid={kid!r} alg={alg!r}")
        last: Exception | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key.key, algorithms=list(key.algorithms), audience=self.service,
                    issuer=self.issuer, leeway=LEEWAY_SECONDS,
                    options={"require": REQUIRED_CLAIMS, "verify_signature": True})
            except jwt.PyJWTError as exc:
                last = exc
                continue
            if (claims.get("typ") == "refresh") != refresh:
                raise InvalidToken("wrong kind of token")
            return claims
        raise InvalidToken(f"rejected: {last}")

    def identity(self, token: str, client: str = "") -> Identity:
        """The identity an access token stands for, with exactly the access it grants."""
        hit = self._accepted.get(token)
        if hit is not None:
            if hit[0] > time.time():
                return replace(hit[1], client=client)
            del self._accepted[token]
        found = self._identity(token)
        exp = found[0]
        if len(self._accepted) >= 10_000:
            self._accepted.clear()
        self._accepted[token] = (exp + LEEWAY_SECONDS, found[1])
        return replace(found[1], client=client)

    def _identity(self, token: str) -> tuple[float, Identity]:
        claims = self.decode(token)
        grants: list[Scope] = []
        access = claims.get("access") or []
        if not isinstance(access, list):
            raise InvalidToken("access claim is not a list")
        for entry in access:
            if not isinstance(entry, dict):
                raise InvalidToken("malformed access entry")
            kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
            if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(
                    actions, list) or not all(isinstance(a, str) for a in actions):
                raise InvalidToken("malformed access entry")
            grants.append(Scope(kind, name, frozenset(actions)))
        sub = claims.get("sub")
        user = sub if isinstance(sub, str) and sub else None
        if user is not None and poses_as_subject(user):
            # `group:admins` would match the rules, catalog and metrics.allow of a group
            raise InvalidToken(f"sub {user[:64]!r} is a policy subject, not a user name")
        exp = claims["exp"]
        if not isinstance(exp, int | float):
            raise InvalidToken("exp is not a number")
        return float(exp), Identity(user=user, method="token", grants=tuple(grants),
                                    token_id=str(claims.get("jti", "")))
