"""Identities and scopes: who is asking, and what they ask to do."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

#: The subject every requester matches, logged in or not.
ANONYMOUS = "anonymous"
#: The subject every logged-in requester matches.
AUTHENTICATED = "authenticated"


#: Names no user may have, besides `kind:value` ones: the subjects of everyone and of
#: every logged-in user, and `*`, which reads as everyone in a rule (as it means every
#: action) while the policy would match it only as a user so named.
RESERVED_NAMES = (ANONYMOUS, AUTHENTICATED, "*")
#: What `poses_as_subject` refuses, for messages.
RESERVED_WORDS = "anonymous, authenticated, * and kind:value names such as group:admins"


def poses_as_subject(name: str) -> bool:
    """Whether a user name would read as another policy subject: a `kind:value` one such
    as `group:admins`, `anonymous`, `authenticated` or `*`. No user may be called that
    (a token's `sub` so named is refused, an htpasswd file holding one does not load,
    `dockyard user add` refuses it), so a name never matches a rule meant for others."""
    return ":" in name or name in RESERVED_NAMES


def credential_id(stored_hash: bytes) -> str:
    """What a refresh token's `cred` claim and a browser session hold: a digest of the
    user's stored password hash, which changes with the password (a new salt) and says
    nothing about it."""
    digest = hashlib.sha256(b"dockyard-refresh-credential\0" + stored_hash).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


@dataclass(frozen=True, slots=True)
class Scope:
    """`type:name:actions` of the Docker token specification (`repository:a/b:pull,push`)."""

    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """A scope string; None when it is malformed. Names may contain `:` (a port)."""
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            return None
        return cls(kind, name, frozenset(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, object]:
        """The `access` entry of a token granting this scope."""
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


@dataclass(frozen=True, slots=True)
class Identity:
    """A requester: a user with groups, or anonymous; `grants` are a token's `access`.

    `grants` is None when the identity came from a password (the policy decides); for a
    bearer token it holds exactly what the token grants, whatever the policy says now.
    """

    user: str | None = None
    groups: frozenset[str] = frozenset()
    method: str = "anonymous"
    grants: tuple[Scope, ...] | None = None
    client: str = ""
    token_id: str = field(default="", compare=False)
    #: UNIX time of the password login behind this identity (0: none); a refresh chain
    #: carries the first one, so `refresh_max_lifetime` counts from it
    auth_time: int = field(default=0, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    @property
    def name(self) -> str:
        return self.user if self.user is not None else ANONYMOUS

    def subjects(self) -> frozenset[str]:
        """Every policy subject this identity matches."""
        out = {ANONYMOUS}
        if self.user is not None:
            out |= {AUTHENTICATED, self.user, *(f"group:{g}" for g in self.groups)}
        return frozenset(out)

    def granted(self, scope: Scope) -> frozenset[str]:
        """What the token grants on `scope`'s resource (only meaningful with grants)."""
        out: set[str] = set()
        for g in self.grants or ():
            if g.type == scope.type and g.name == scope.name:
                out |= g.actions
        if "*" in out:
            out |= {"pull", "push", "delete", "*"}
        return frozenset(out)


ANONYMOUS_IDENTITY = Identity()
