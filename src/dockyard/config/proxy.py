"""The `proxy:` settings: repository prefixes that are pull-through caches of upstreams.

Each rule maps the local repositories under `prefix/` to an upstream registry (with an
optional upstream repository prefix, e.g. `library/` for Docker Hub's official images).
Credentials are given by reference only (environment variables or a file), never inline.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from dockyard.config.types import Duration, PositiveDuration, http_url
from dockyard.oci.reference import NAME_PATTERN

_URL = re.compile(r"https?://[^/\s]+/?")
NAME_RE = re.compile(NAME_PATTERN)


class ProxyCredentials(BaseModel):
    """Who we are upstream, by reference: the user name inline or from a variable, the
    password from an environment variable or a file (its first line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> ProxyCredentials:
        if (self.username is None) == (self.username_env is None):
            raise ValueError("give exactly one of username, username_env")
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("give exactly one of password_env, password_file "
                             "(passwords are never written in the config)")
        return self


class ProxyRule(BaseModel):
    """One pull-through cache: local `prefix/<rest>` is upstream `upstream_prefix<rest>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: local repository prefix, e.g. `hub` (then `hub/library/nginx` is cached)
    prefix: str
    #: the upstream registry's base URL, e.g. https://registry-1.docker.io
    upstream: str
    #: prepended to the rest of the name upstream, e.g. `library/`
    upstream_prefix: str = ""
    credentials: ProxyCredentials | None = None
    #: a cached tag is re-checked upstream (HEAD by tag) when older than this
    tag_ttl: Duration = timedelta(minutes=5)
    #: after upstream answered "not found" (404, or 401/403 as registries answer for a
    #: name they hide) for a tag or digest, the cache answers 404 itself for this long
    #: instead of asking again; 0: ask every time
    not_found_ttl: Duration = timedelta(seconds=30)
    tls_verify: bool = True
    #: cached tags not pulled for this long are deleted (then collected); null: never
    retention: PositiveDuration | None = timedelta(days=30)
    #: how long a pull waits for another pull's fetch of the same blob (then 503)
    fetch_wait: PositiveDuration = timedelta(minutes=10)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a repository name prefix (e.g. hub or "
                             "cache/quay)")
        return value

    @field_validator("upstream_prefix")
    @classmethod
    def _upstream_prefix(cls, value: str) -> str:
        if value and not (value.endswith("/") and NAME_RE.fullmatch(value[:-1])):
            raise ValueError(f"{value!r} must be a repository path ending in / "
                             "(e.g. library/)")
        return value

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL.fullmatch(value) or not http_url(value.rstrip("/")):
            raise ValueError(f"{value.split('@')[-1]!r} is not a registry base URL "
                             "(https://host[:port], no user:password@: credentials go in "
                             "the rule's credentials)")
        return value.rstrip("/")


def check_prefixes(rules: list[ProxyRule]) -> list[ProxyRule]:
    """Prefixes may not nest: each proxied repository has exactly one upstream."""
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            if a.prefix == b.prefix or a.prefix.startswith(b.prefix + "/") \
                    or b.prefix.startswith(a.prefix + "/"):
                raise ValueError(f"prefixes {a.prefix!r} and {b.prefix!r} overlap")
    return rules
