"""`mirror:` in the config: the upstream repositories `dockyard sync` keeps copies of.

Each source names one upstream repository, which of its tags to keep (globs, a regular
expression, the newest N by semver), the platforms, the local repository, how often to
sync and the credentials, by reference only: a password comes from an environment
variable or a file, never from the config itself.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from dockyard.config.types import PositiveDuration, Regex
from dockyard.oci.errors import NameInvalid
from dockyard.oci.reference import validate_name

#: Docker Hub's names, where an official image's repository is `library/<name>`
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_PLATFORM = re.compile(r"^[^/\s]+/[^/\s]+(?:/[^/\s]+)?$")
#: longest source key (its `name`, default its local repository): it is stored in
#: columns of 200 characters (`leases.name` as `job:mirror.<key>`, `job_runs.job`,
#: `mirror_runs.source`, `mirror_tags.source`) that PostgreSQL enforces
MAX_KEY = 180


class MirrorCredentials(BaseModel):
    """Who to log in to the upstream as: `username` with `password_env` (a variable's
    name) or `password_file` (a file holding the password); or `auth_file`, a
    docker/podman auth file. Never the password itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    auth_file: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> MirrorCredentials:
        by_password = self.password_env is not None or self.password_file is not None
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if by_password and not self.username:
            raise ValueError("password_env/password_file need a username")
        if self.username and not by_password:
            raise ValueError("username needs password_env or password_file "
                             "(passwords are never written in the config)")
        if self.auth_file is not None and by_password:
            raise ValueError("give auth_file or username/password, not both")
        return self


class MirrorSource(BaseModel):
    """One upstream repository kept in sync into a local one.

    Tags kept: those matching any glob of `tags` or the `tags_regex` (whole tag); all of
    them when neither is given; of those, with `newest`, only the N highest by semver.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=MAX_KEY,
                             description="what `dockyard sync NAME` calls it; default: "
                             "the destination repository")
    registry: str = Field(min_length=1, description="upstream host[:port], e.g. quay.io")
    repository: str = Field(min_length=1, description="upstream repository")
    tags: list[str] | None = None
    tags_regex: Regex | None = None
    newest: int | None = Field(default=None, ge=1)
    platforms: list[str] = Field(default_factory=list)
    destination: str | None = Field(default=None, description="local repository; default: "
                                    "the last component of `repository`")
    prefix: str = Field(default="", description="put before the destination, e.g. mirror")
    schedule: PositiveDuration = timedelta(hours=1)
    prune: bool = False
    referrers: bool = False
    tls_verify: bool = True
    credentials: MirrorCredentials | None = None
    retries: int = Field(default=3, ge=0, le=100, description="attempts after a failed one")
    retry_backoff: PositiveDuration = timedelta(seconds=10)

    @field_validator("registry")
    @classmethod
    def _host(cls, value: str) -> str:
        if "://" in value or "/" in value:
            raise ValueError(f"{value!r}: a host[:port] only (e.g. quay.io, "
                             "127.0.0.1:5000); no scheme, no path")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        for text in value:
            if not _PLATFORM.match(text):
                raise ValueError(f"{text!r}: expected OS/ARCH[/VARIANT] (e.g. linux/arm64)")
        return value

    @property
    def local(self) -> str:
        """The local repository the tags land in."""
        dest = self.destination or self.repository.rsplit("/", 1)[-1]
        return f"{self.prefix.strip('/')}/{dest}" if self.prefix.strip("/") else dest

    @property
    def key(self) -> str:
        """The source's name: given, else its local repository."""
        return self.name or self.local

    @property
    def upstream_repository(self) -> str:
        """The repository as the upstream names it (`library/` for Docker Hub's own)."""
        if self.registry in DOCKER_HUB and "/" not in self.repository:
            return f"library/{self.repository}"
        return self.repository

    @property
    def upstream(self) -> str:
        return f"{self.registry}/{self.upstream_repository}"

    @model_validator(mode="after")
    def _names(self) -> MirrorSource:
        for what, value in (("repository", self.repository), ("destination", self.local)):
            try:
                validate_name(value)
            except NameInvalid:
                raise ValueError(f"{what}: invalid repository name {value!r}") from None
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must be lower-case letters, digits "
                             "and . _ - between them")
        if len(self.key) > MAX_KEY:
            raise ValueError(f"destination: {self.local[:40]!r}... is {len(self.local)} "
                             f"characters, past the {MAX_KEY} a source's name may have "
                             "(by default its destination): give it a shorter `name`")
        return self


def check_unique(sources: list[MirrorSource]) -> list[MirrorSource]:
    """Source names must differ (they key the schedule, the history and the CLI)."""
    seen: set[str] = set()
    for source in sources:
        if source.key in seen:
            raise ValueError(f"two sources are called {source.key!r}: give them a name")
        seen.add(source.key)
    return sources
