"""Settings of the `auth:` section and of `http.tls`: who may do what, and certificates.

```yaml
auth:
  method: token              # none (default) | htpasswd | token
  realm: dockyard            # the Basic realm (htpasswd)
  htpasswd:
    path: /etc/dockyard/htpasswd   # bcrypt entries, `user:hash[:group,group]`
  token:
    builtin: true            # serve /auth/token, checking passwords against the htpasswd file
    realm: null              # token endpoint URL; default <public URL>/auth/token
    service: dockyard        # the token's audience
    issuer: dockyard
    algorithm: ES256         # or RS256 (keys this process generates)
    signing_key: null        # PEM private key; default <data>/auth/token-signing-key.pem
    public_keys: []          # more PEM public keys or certificates (old keys, an external issuer)
    jwks: null               # a JWKS file of an external issuer
    expiration: 5m
    refresh_expiration: 7d
    refresh_max_lifetime: 30d  # a refresh chain ends this long after the password login
  access:                    # first rule whose repository glob matches decides
    - repository: "**"
      allow:
        anonymous: [pull]
        builder: [pull, push]
        group:admins: ["*"]
  catalog: [authenticated]   # subjects who may list /v2/_catalog
  ratelimit:
    failures: 10             # failed logins per client address and per user ...
    window: 1m               # ... within this window before 429
```
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.config.types import PositiveDuration

ACTIONS = frozenset({"pull", "push", "delete", "*"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HtpasswdSettings(_Section):
    path: Path | None = None


class TokenSettings(_Section):
    builtin: bool = True
    realm: str | None = None
    service: str = "dockyard"
    issuer: str = "dockyard"
    algorithm: Literal["ES256", "RS256"] = "ES256"
    signing_key: Path | None = None
    public_keys: list[Path] = []
    jwks: Path | None = None
    expiration: PositiveDuration = timedelta(minutes=5)
    refresh_expiration: PositiveDuration = timedelta(days=7)
    #: how long refreshing may go on after the password login that started the chain
    refresh_max_lifetime: PositiveDuration = timedelta(days=30)


def refuse_star_subject(subjects: Iterable[str]) -> None:
    """Refuse `*` as a subject: it reads as "everyone" but matches nobody (`*` is every
    action, never a subject; no user may be called so)."""
    if "*" in subjects:
        raise ValueError("'*' is not a subject (it means every action): use anonymous "
                         "for everyone or authenticated for every logged-in user")


class AccessRule(_Section):
    """One rule: a repository glob (`dockyard.globs`) and the actions it grants."""

    repository: str
    allow: dict[str, list[str]] = {}

    @field_validator("allow")
    @classmethod
    def _actions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        refuse_star_subject(value)
        for subject, actions in value.items():
            bad = set(actions) - ACTIONS
            if bad:
                raise ValueError(f"{subject}: unknown action(s) {sorted(bad)}; "
                                 f"use pull, push, delete or *")
        return value


class RateLimitSettings(_Section):
    failures: int = Field(default=10, ge=1)
    window: PositiveDuration = timedelta(minutes=1)


class AuthSettings(_Section):
    method: Literal["none", "htpasswd", "token"] = "none"
    realm: str = "dockyard"
    htpasswd: HtpasswdSettings = HtpasswdSettings()
    token: TokenSettings = TokenSettings()
    access: list[AccessRule] = [AccessRule(repository="**", allow={"authenticated": ["*"]})]
    catalog: list[str] = ["authenticated"]
    #: subjects who may use the registry-wide admin API (the change feed a replica
    #: follows, replica status): scope `registry:admin:*`; nobody by default
    admin: list[str] = []
    ratelimit: RateLimitSettings = RateLimitSettings()

    @field_validator("catalog", "admin")
    @classmethod
    def _no_star(cls, value: list[str]) -> list[str]:
        refuse_star_subject(value)
        return value

    @model_validator(mode="after")
    def _htpasswd_for_passwords(self) -> AuthSettings:
        # checked when the config is read, so `config check` says it as `serve` does
        if self.htpasswd.path is None and (
                self.method == "htpasswd" or (self.method == "token" and self.token.builtin)):
            by = "" if self.method == "htpasswd" else " by the built-in token service"
            raise ValueError(f"auth.htpasswd.path is required with auth.method: "
                             f"{self.method} (the users whose passwords are checked{by})")
        return self


class TlsSettings(_Section):
    """TLS on the listener itself (PEM files); reloaded on SIGHUP and when they change."""

    certificate: Path | None = None
    key: Path | None = None
    clientcas: list[Path] = Field(default=[], description="CA bundles for client certificates")
    minimum_version: Literal["1.2", "1.3"] = "1.2"
    reload_interval: PositiveDuration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together (give both, or neither)")
        return self
