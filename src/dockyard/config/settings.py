"""Dockyard's settings: one pydantic model per config section, loaded from YAML and env.

The file has the shape of CNCF Distribution's `config.yml` where it fits (`http.addr`,
`storage.filesystem.rootdirectory`, `storage.delete.enabled`). Any leaf can be overridden
by `DOCKYARD_<SECTION>_<KEY>` (for example `DOCKYARD_HTTP_ADDR=0.0.0.0:5000`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dockyard.config.auth import AuthSettings, TlsSettings, refuse_star_subject
from dockyard.config.mirror import MirrorSource, check_unique
from dockyard.config.proxy import ProxyRule, check_prefixes
from dockyard.config.secrets import read_secret
from dockyard.config.types import (
    ByteSize,
    Duration,
    PositiveDuration,
    Regex,
    as_bytes,
    http_url,
)
from dockyard.config.yamlfile import load_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's `true`/`false` where a number or a duration goes is refused: pydantic
        took them for 1 and 0 (`gc: {interval: true}` a one-second collection)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and bool not in getattr(annotation, "__args__", ()):
                raise ValueError("a number or a duration, not true/false")
        return value


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong, and where (line:column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _host_port(value: str | None, lowest: int = 1) -> str | None:
    """`HOST:PORT` (IPv6 in brackets), or None; ports from `lowest` (0: any free one)."""
    if value is None:
        return None
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, not {value!r}")
    return value


class DebugSettings(_Section):
    """A second listener for operators (Distribution's `http.debug`)."""

    #: serve `/metrics` (and `/healthz`, `/readyz`) on this HOST:PORT instead of the
    #: main listener; null keeps them on the main one
    addr: str | None = None

    @field_validator("addr")
    @classmethod
    def _addr(cls, value: str | None) -> str | None:
        return _host_port(value)


#: worker processes at most: past any machine's cores, and a typo (99999) would fork
#: until the machine stops answering
MAX_WORKERS = 256


class HttpSettings(_Section):
    """The HTTP listener."""

    addr: str = "127.0.0.1:5000"
    workers: int = Field(default=0, ge=0, le=MAX_WORKERS,
                         description="processes; 0 means one per CPU core")
    host: str | None = Field(default=None, description="public base URL, e.g. https://reg.example")
    relativeurls: bool = True
    keepalive_timeout: Duration = timedelta(seconds=75)
    #: a connection must deliver a request's whole header this soon after connecting or
    #: after its first byte, else it is closed
    header_timeout: PositiveDuration = timedelta(seconds=20)
    #: a request body that sends no byte for this long is answered 408 and closed
    body_timeout: PositiveDuration = timedelta(seconds=60)
    #: on SIGTERM, requests in flight get this long to finish before they are cut off
    drain_timeout: PositiveDuration = timedelta(seconds=30)
    #: connections one client address may hold open before any of them authenticated,
    #: counted for the node, over all its workers (0: no limit); trusted proxies are exempt
    unauthenticated_connections: int = Field(default=64, ge=0)
    tls: TlsSettings = TlsSettings()
    debug: DebugSettings = DebugSettings()
    trusted_proxies: list[str] = Field(
        default=[], description="CIDRs whose X-Forwarded-Proto/Host/For are honoured")

    @field_validator("addr")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host_port(value, lowest=0)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for n, cidr in enumerate(value):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"item {n}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_listener_each(self) -> HttpSettings:
        # the same address twice failed the start as a "storage" error (address in use)
        if self.debug.addr is not None and self.debug.addr == self.addr:
            raise ValueError("debug.addr is http.addr: the debug listener needs an "
                             "address of its own")
        return self


class FilesystemSettings(_Section):
    rootdirectory: Path = Path("var/dockyard")
    #: write upload bytes with O_DIRECT, past the page cache (falls back by itself where
    #: the filesystem refuses it, e.g. tmpfs before Linux 6.6)
    direct_writes: bool = False


class DeleteSettings(_Section):
    enabled: bool = True
    #: deleting a manifest also deletes manifests whose `subject` it is (signatures, SBOMs)
    referrers: bool = True


class GcSettings(_Section):
    """Online garbage collection: schedule and safety margin."""

    enabled: bool = True
    interval: PositiveDuration = timedelta(hours=1)
    #: anything uploaded, mounted, pushed or HEAD-checked more recently is never collected
    grace: Duration = timedelta(hours=1)
    #: keep referrers (signatures, SBOMs) whose subject manifest is gone
    keep_referrers: bool = False


class ScrubSettings(_Section):
    """The scrub job: re-hashes a slice of the blobs each `interval`, so that every blob
    is verified once per `period`; a blob whose bytes do not match its digest is marked
    corrupt (never served again until pushed again), as `dockyard fsck --repair` does."""

    enabled: bool = False
    interval: PositiveDuration = timedelta(hours=1)
    period: PositiveDuration = timedelta(days=7)

    @model_validator(mode="after")
    def _period_covers_interval(self) -> ScrubSettings:
        if self.period < self.interval:
            raise ValueError("scrub.period must be at least scrub.interval")
        return self

    @property
    def slices(self) -> int:
        """Runs per period: each verifies one slice of the blobs."""
        return max(1, round(self.period / self.interval))


class RetentionRule(_Section):
    """Which tags of the repositories matching `repositories` are deleted.

    `repositories` is a glob of `dockyard.globs` (`*` within a path component, a `**`
    component for any number of them); the default, `**`, is every repository.

    Kept always: tags matching `keep_tags`, the `keep_last` most recently pushed, and
    those pulled within `keep_pulled_within`. Of the rest, with `delete_older_than`
    those pushed longer ago go; without it (and with `keep_last`), all of them go.
    `delete_untagged: false` keeps untagged manifests of these repositories from the
    collector.
    """

    repositories: str = "**"
    keep_last: int | None = Field(default=None, ge=0)
    keep_tags: Regex | None = None
    delete_older_than: Duration | None = None
    keep_pulled_within: Duration | None = None
    delete_untagged: bool = True


class RetentionSettings(_Section):
    """Ordered rules; the first whose glob matches a repository applies to it."""

    rules: list[RetentionRule] = Field(default_factory=list)
    #: how often each worker writes the last-pull times it collected (one batch)
    pull_flush_interval: PositiveDuration = timedelta(seconds=30)


class UploadSettings(_Section):
    """Upload sessions: idle sessions expire and their bytes are removed."""

    expiry: PositiveDuration = timedelta(hours=24)
    purge_interval: PositiveDuration = timedelta(minutes=10)
    #: the purge aborts what a publish left unfinished in the store (S3: a multipart
    #: upload whose node died mid-publish) once it is this old; longer than any
    #: publish can take (a server-side copy of up to 10000 parts)
    publish_expiry: Duration = timedelta(hours=24)
    #: request bytes gathered before each hash-and-write; bigger buffers fall out of the
    #: CPU cache and were slower here (bench: 512 KiB ~5% faster than 1 MiB, 4 MiB -40%);
    #: from 64 KiB (0 failed every upload) to 64 MiB (each upload holds a few at once)
    chunk_buffer: ByteSize = Field(default=512 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    #: open sessions of all users together, and of one user (anonymous: one client
    #: address); past either a new session is refused with 429 TOOMANYREQUESTS; 0: no cap
    max_sessions: int = Field(default=10000, ge=0)
    max_sessions_per_user: int = Field(default=1000, ge=0)


    @field_validator("publish_expiry")
    @classmethod
    def _longer_than_a_publish(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("must be at least 1h: a publish still running when it is "
                             "reached would be cut")
        return value


_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


class GuardSettings(_Section):
    """Space kept free on the data filesystem, so a full disk stays recoverable.

    Uploads are refused (507) while less than `min_free` is free; a ballast file of
    `reserve` bytes in the data directory is released when a metadata write finds the
    disk full, so deletes and collections can still commit, and made again once there
    is room for it.
    """

    #: bytes (`2GiB`) or a share of the filesystem (`5%`); 0 refuses nothing
    min_free: Annotated[str, BeforeValidator(str)] = "5%"
    #: the ballast's size; 0 keeps none
    reserve: ByteSize = 16 * 1024 * 1024

    @field_validator("min_free")
    @classmethod
    def _amount(cls, value: str) -> str:
        m = _PERCENT.fullmatch(value)
        if m is not None:
            if float(m.group(1)) >= 100:
                raise ValueError("a share of the disk must be below 100%")
            return value.strip()
        if not isinstance(as_bytes(value), int):
            raise ValueError(f"expected bytes (e.g. 2GiB) or a percentage (e.g. 5%), "
                             f"not {value!r}")
        return value.strip()

    def min_free_bytes(self, total: int) -> int:
        """`min_free` in bytes on a filesystem of `total` bytes."""
        m = _PERCENT.fullmatch(self.min_free)
        if m is not None:
            return int(total * float(m.group(1)) / 100)
        size = as_bytes(self.min_free)
        assert isinstance(size, int)
        return size


class S3Settings(_Section):
    """An S3-compatible object store; the keys of CNCF Distribution's `storage.s3`.

    Without `accesskey`/`secretkey`, credentials come from the standard AWS environment
    variables and files (`AWS_ACCESS_KEY_ID`, `~/.aws/credentials`, ...).
    """

    bucket: str = ""
    region: str = "us-east-1"
    #: endpoint of a non-AWS store, e.g. http://127.0.0.1:8333 (scheme optional)
    regionendpoint: str | None = None
    accesskey: str | None = None
    secretkey: str | None = None
    #: prefix of every key in the bucket
    rootdirectory: str = ""
    forcepathstyle: bool = False
    secure: bool = True
    skipverify: bool = False
    #: part size of upload sessions: bytes are held until a part this big fills; S3
    #: takes parts of 5 MiB to 5 GiB (as Distribution's `chunksize`)
    chunksize: Annotated[int, BeforeValidator(as_bytes),
                         Field(ge=5 * 1024 * 1024, le=5 * 1024 ** 3)] = 10 * 1024 * 1024
    storageclass: str = "STANDARD"
    #: a call waits this long for the store to answer, per attempt (idempotent calls
    #: are tried 3 times with backoff), so a store that stops answering gets clients a
    #: 503 instead of a hang; a call sending a body gets 1 s more per MiB of it
    readtimeout: Duration = timedelta(seconds=10)

    @field_validator("readtimeout")
    @classmethod
    def _some_seconds(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=10):
            raise ValueError("must be longer than zero and at most 10m")
        return value


class StorageSettings(_Section):
    driver: Literal["filesystem", "s3"] = "filesystem"
    filesystem: FilesystemSettings = FilesystemSettings()
    s3: S3Settings = S3Settings()
    #: answer blob GETs with 307 to a presigned URL of the store, where the driver can
    #: sign one (s3); the client then fetches the bytes from the store directly
    redirect: bool = False
    #: how long such a URL stays valid (whole seconds, at least 1s)
    redirect_expiry: Duration = timedelta(minutes=20)
    delete: DeleteSettings = DeleteSettings()
    uploads: UploadSettings = UploadSettings()
    guard: GuardSettings = GuardSettings()

    @field_validator("redirect_expiry")
    @classmethod
    def _a_second_or_more(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s: a presigned URL lives whole seconds")
        return value

    @model_validator(mode="after")
    def _bucket_with_s3(self) -> StorageSettings:
        # checked here, not only where the driver is built: that is in every worker, so
        # `serve` would start and its workers die one after the other
        if self.driver == "s3" and not self.s3.bucket:
            raise ValueError("storage.s3.bucket is required with storage.driver: s3")
        return self


class DatabaseSettings(_Section):
    """Metadata store; SQLite under the data directory unless a URL is given."""

    url: str | None = Field(default=None, description="SQLAlchemy URL, e.g. postgresql://...")
    pool_size: int = Field(default=10, ge=1)
    #: PostgreSQL: how long a new connection may take (asyncpg's default is 60 s: a
    #: database host that drops packets held each request, or a start, that long)
    connect_timeout: PositiveDuration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
                r"(sqlite(\+\w+)?:///(?!:memory:).+|postgresql(\+\w+)?://\S+)", value):
            raise ValueError("must be a postgresql://... URL, or sqlite:///PATH (a file "
                             "every process shares)")
        return value


class LimitsSettings(_Section):
    #: 1 KiB to 64 MiB: 0 refused every push (and meant no limit at all to aiohttp)
    manifest_max_size: Annotated[ByteSize, Field(ge=1024, le=64 * 1024 * 1024)] = \
        4 * 1024 * 1024
    tags_page_max: int = Field(default=10000, ge=1)
    #: descriptors per page of the referrers API (a `Link` header names the next page)
    referrers_page_size: int = Field(default=1000, ge=1)


class MetricsSettings(_Section):
    """`GET /metrics` (Prometheus). Who may scrape: a client from `allow_from`, or
    one whose credentials make it a subject listed in `allow` (as in `auth.access`:
    a user name, `group:<name>`, `authenticated`)."""

    enabled: bool = True
    allow_from: list[str] = Field(default=["127.0.0.1/32", "::1/128"],
                                  description="CIDRs that may scrape without credentials")
    allow: list[str] = Field(default=[], description="subjects that may scrape")

    @field_validator("allow")
    @classmethod
    def _no_star(cls, value: list[str]) -> list[str]:
        refuse_star_subject(value)
        return value

    @field_validator("allow_from")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an address or network: {exc}") from None
        return value


class BuilderSettings(_Section):
    """Scheduled rebuilds of an image catalogue: the server runs `dockyard build --push
    --no-cache --keep-same-layers` every `interval` (one process, one host, per interval),
    so base-image security updates land without moving tags whose layers did not change."""

    enabled: bool = False
    catalogue: Path | None = None
    registry: str | None = None       # default: catalogue.yaml's
    image_prefix: str | None = None   # default: catalogue.yaml's
    tag: str = "latest"
    interval: PositiveDuration = timedelta(days=7)
    #: a rebuild still running after this is stopped (its processes too) and fails
    timeout: PositiveDuration = timedelta(hours=6)
    engine: str = Field(default="buildah", pattern="^(buildah|podman|docker)$")
    #: `dockyard build --jobs`, which takes 1 to 64
    jobs: int = Field(default=2, ge=1, le=64)
    work_dir: Path | None = None      # default: <data>/builder
    storage: Path | None = None       # a private image store; default: the engine's
    tls_verify: bool | None = None    # default: off for loopback registries, else on
    auth_file: Path | None = None     # credentials to push with; default: the usual files

    @model_validator(mode="after")
    def _catalogue_when_enabled(self) -> BuilderSettings:
        if self.enabled and self.catalogue is None:
            raise ValueError("builder.catalogue is required when builder.enabled is true")
        return self


class LogSettings(_Section):
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    #: `text` lines, or `json`: one object per line, with request ids and fields
    format: str = Field(default="text", pattern="^(text|json)$")
    accesslog: bool = False


class FeedSettings(_Section):
    """The change feed (`GET /admin/v1/events`) that replicas follow."""

    #: events older than this are pruned; a follower further behind compares in full
    keep: PositiveDuration = timedelta(days=7)
    prune_interval: PositiveDuration = timedelta(hours=1)
    #: the longest a reader may wait for new events in one request (`?wait=`); a
    #: follower asks again at once, so 0 would have it poll without pause
    max_wait: PositiveDuration = timedelta(seconds=30)


class ReplicaSettings(_Section):
    """Follow a primary Dockyard as a read-only standby (`dockyard replicate`).

    Credentials by reference only: the password is read from the environment variable
    named by `password_env` or from the file `password_file`, never written here.
    """

    #: the primary's base URL, e.g. https://registry.example; unset: not a replica
    primary: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    #: how soon a stopped follower (primary unreachable, node gone) starts again
    interval: PositiveDuration = timedelta(seconds=10)
    #: how long one request to the primary's feed waits for new events
    wait: PositiveDuration = timedelta(seconds=25)
    #: events asked for at a time
    batch: int = Field(default=500, ge=1, le=10000)
    #: TLS verification of the primary's certificate
    tls_verify: bool = True

    @field_validator("primary")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not http_url(value):
            raise ValueError("must be an http:// or https:// URL (HOST[:PORT], IPv6 in "
                             "brackets) without user:password@ (the password goes in "
                             "replica.password_env or replica.password_file)")
        return value.rstrip("/") if value else value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must name an environment variable")
        return value

    def password(self) -> str | None:
        """The password from its reference; ValueError naming the key when unreadable."""
        if self.password_env and self.password_file:
            raise ValueError("replica: set password_env or password_file, not both")
        return read_secret(self.password_env, self.password_file, "replica")


class IgnoreSettings(_Section):
    """Events an endpoint is not sent: by target media type, by action."""

    mediatypes: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        for action in value:
            if action not in NOTIFY_ACTIONS:
                raise ValueError(f"{action!r} is not an action "
                                 f"(one of {', '.join(NOTIFY_ACTIONS)})")
        return value


#: the actions of Distribution's events that Dockyard sends
NOTIFY_ACTIONS = ("push", "pull", "mount", "delete")


class EndpointSettings(_Section):
    """One receiver of event envelopes (Distribution's `notifications.endpoints[]`).

    Events go to it in order, in POSTs of up to `maxevents`; a failed POST is retried at
    once until `threshold` failures in a row, then every `backoff` until it succeeds.
    """

    name: str = Field(min_length=1, max_length=100)
    url: str
    disabled: bool = False
    #: extra request headers, each a list of values as in Distribution (a string too)
    headers: dict[str, list[str]] = Field(default_factory=dict)
    timeout: PositiveDuration = timedelta(seconds=1)
    threshold: int = Field(default=10, ge=1)
    backoff: PositiveDuration = timedelta(seconds=1)
    #: Distribution's older spelling of `ignore.mediatypes`; both apply
    ignoredmediatypes: list[str] = Field(default_factory=list)
    ignore: IgnoreSettings = IgnoreSettings()
    #: events sent in one envelope at most
    maxevents: int = Field(default=100, ge=1, le=10000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not http_url(value):
            raise ValueError("must be an http:// or https:// URL (HOST[:PORT], IPv6 in "
                             "brackets) without user:password@ (credentials go in "
                             "headers)")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _header_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    def ignores(self, action: str, media_type: str | None) -> bool:
        """Whether an event of `action` on a target of `media_type` is not for this one."""
        return action in self.ignore.actions or (
            media_type is not None
            and (media_type in self.ignore.mediatypes or media_type in self.ignoredmediatypes))


class NotificationsSettings(_Section):
    """Webhook notifications of pushes, pulls and deletes (Distribution's
    `notifications`), queued in the metadata store and delivered by one process."""

    endpoints: list[EndpointSettings] = Field(default_factory=list)
    #: events kept waiting per endpoint; past it (an endpoint down for long) the oldest
    #: are dropped, logged and counted in `dockyard_notifications_dropped_total`
    max_queued: int = Field(default=100_000, ge=1)

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, value: list[EndpointSettings]) -> list[EndpointSettings]:
        names = [e.name for e in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"endpoint names must be unique: {', '.join(dup)}")
        return value

    @property
    def active(self) -> list[EndpointSettings]:
        return [e for e in self.endpoints if not e.disabled]


class UiSettings(_Section):
    """The web UI under /ui/ (`web/`)."""

    enabled: bool = True
    #: how long a browser session lasts after logging in
    session_lifetime: PositiveDuration = timedelta(hours=12)


class Settings(_Section):
    """Every setting, one attribute per config section."""

    version: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, float) else v)] = (
        "0.1"
    )
    http: HttpSettings = HttpSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    limits: LimitsSettings = LimitsSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    gc: GcSettings = GcSettings()
    scrub: ScrubSettings = ScrubSettings()
    retention: RetentionSettings = RetentionSettings()
    auth: AuthSettings = AuthSettings()
    builder: BuilderSettings = BuilderSettings()
    feed: FeedSettings = FeedSettings()
    replica: ReplicaSettings = ReplicaSettings()
    #: pull-through caches: repository prefixes served from upstream registries
    proxy: list[ProxyRule] = Field(default_factory=list)

    @field_validator("proxy")
    @classmethod
    def _proxy_prefixes(cls, value: list[ProxyRule]) -> list[ProxyRule]:
        return check_prefixes(value)

    #: upstream repositories kept in sync (`dockyard sync`, and a job per source)
    mirror: list[MirrorSource] = Field(default_factory=list)

    @field_validator("mirror")
    @classmethod
    def _unique_sources(cls, value: list[MirrorSource]) -> list[MirrorSource]:
        return check_unique(value)

    notifications: NotificationsSettings = NotificationsSettings()
    ui: UiSettings = UiSettings()

    @property
    def data_dir(self) -> Path:
        return self.storage.filesystem.rootdirectory

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        # as SQLAlchemy's `URL.create("sqlite", database=...)` renders it (the settings
        # do not import SQLAlchemy: `dockyard copy`, `build` and `config check` need none)
        return "sqlite:///" + quote(str(self.data_dir / "metadata.db"), safe=" +/")


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key."""


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from `path` (YAML), then `DOCKYARD_*` env vars, then `overrides`.

    `overrides` maps dotted keys (`http.addr`) to values, for command-line flags.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = load_yaml(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {yaml_problem(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    environ = os.environ if env is None else env
    from_env: dict[tuple[str, ...], str] = {}
    for name, value in environ.items():
        if name.startswith("DOCKYARD_"):
            found = _env_path(Settings, name[len("DOCKYARD_"):].lower())
            if found is None:
                raise ConfigError(f"{name}: no such setting")
            keys, annotation = found
            _set(data, keys, _env_value(annotation, name, value))
            from_env[tuple(keys)] = name
    for dotted, value in (overrides or {}).items():
        _set(data, dotted.split("."), value)
        from_env.pop(tuple(dotted.split(".")), None)  # the command line's value won
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, from_env)) from None


def _env_path(model: type[BaseModel], rest: str) -> tuple[list[str], Any] | None:
    """Match `http_addr` to (['http', 'addr'], the field's type) by walking the model's
    field names."""
    for field, info in model.model_fields.items():
        if rest == field:
            return [field], info.annotation
        sub = info.annotation
        if rest.startswith(field + "_") and isinstance(sub, type) and issubclass(sub, BaseModel):
            found = _env_path(sub, rest[len(field) + 1:])
            if found is not None:
                return [field, *found[0]], found[1]
    return None


def _env_value(annotation: Any, name: str, value: str) -> Any:
    """A variable's text as a value of its setting: for a list, a YAML flow sequence
    (`[a, b]`; JSON is one too) or, of plain values, items between commas (`a,b`);
    for anything else the text itself, which the setting's type converts."""
    if get_origin(annotation) in (Union, UnionType):  # `list[...] | None`
        annotation = next((a for a in get_args(annotation) if a is not type(None)), str)
    if get_origin(annotation) is not list:
        return value
    (item,) = get_args(annotation)
    if value.lstrip().startswith("["):
        try:
            parsed = load_yaml(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not a YAML list: {yaml_problem(exc)}") from None
        if not isinstance(parsed, list):
            raise ConfigError(f"{name}: not a YAML list")
        return parsed
    if isinstance(item, type) and issubclass(item, BaseModel):
        raise ConfigError(f"{name}: a list of mappings, written as YAML or JSON "
                          "(`[{key: value, ...}, ...]`)")
    return [part.strip() for part in value.split(",") if part.strip()]


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _describe(exc: ValidationError, path: Path | None,
              from_env: Mapping[tuple[str, ...], str] | None = None) -> str:
    """One line naming every bad key (`; ` between them), each with where its value
    came from: the environment variable that set it (or a key above it), else the
    config file."""
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        env = from_env or {}
        variable = next((v for k, v in env.items() if loc[:len(k)] == k), None)
        where = f"{variable} " if variable else f"{path}: " if path else ""
        # a validator's own message, without pydantic's "Value error, " before it
        msg = ("unknown key" if err["type"] == "extra_forbidden"
               else err["msg"].removeprefix("Value error, "))
        # a section's own check (loc: the section) may come of a variable set inside it
        inside = sorted(v for k, v in env.items() if len(k) > len(loc) and k[:len(loc)] == loc)
        also = f" (with {', '.join(inside)} from the environment)" if inside else ""
        lines.append(f"{where}({key}): {msg}" if variable else f"{where}{key}: {msg}{also}")
    return "invalid configuration: " + "; ".join(lines)
