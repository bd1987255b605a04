"""Build the concrete backends named in settings (for the app factory and the CLI only).

An unknown backend name is a startup error. A backend's own client library is imported
by the function building it, so a deployment loads only what it uses (aiobotocore with
`storage.driver: s3`, the HTTP client of `proxy:` rules when there are some).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from pathlib import Path

from dockyard.config.proxy import ProxyCredentials, ProxyRule
from dockyard.config.secrets import from_env, read_secret
from dockyard.config.settings import S3Settings, Settings
from dockyard.core.metrics import metrics
from dockyard.core.mirrors import job_name
from dockyard.core.proxy import Upstream
from dockyard.core.registry import Registry
from dockyard.core.uploads import SessionCaps
from dockyard.drivers.base import Driver
from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.leases import LeaseStore
from dockyard.metadata.store import MetadataStore
from dockyard.remote.credentials import Credentials
from dockyard.storage import layout
from dockyard.storage.blobstore import BlobStore
from dockyard.storage.distribution import DistributionTree
from dockyard.storage.guard import DiskGuard
from dockyard.units import human_bytes

log = logging.getLogger("dockyard")


def build_driver(settings: Settings) -> Driver:
    """The storage driver named by `storage.driver`."""
    if settings.storage.driver == "filesystem":
        fs = settings.storage.filesystem
        return FilesystemDriver(fs.rootdirectory, direct_writes=fs.direct_writes)
    if settings.storage.driver == "s3":
        if not settings.storage.s3.bucket:
            raise ValueError("storage.s3.bucket is required with storage.driver: s3")
        from dockyard.drivers.s3 import S3Driver

        return S3Driver(settings.storage.s3)
    raise ValueError(f"unknown storage driver {settings.storage.driver!r} "
                     "(filesystem or s3)")


def distribution_tree(root: Path | None = None, *, s3: S3Settings | None = None
                      ) -> DistributionTree:
    """CNCF Distribution's tree under its `rootdirectory`: a local directory, or the
    bucket and `rootdirectory` of `s3` (Distribution's own `storage.s3` keys)."""
    if s3 is not None:
        from dockyard.drivers.s3 import S3Driver

        prefix = "/".join(p for p in (s3.rootdirectory.strip("/"), layout.DISTRIBUTION_ROOT)
                          if p)
        return DistributionTree(S3Driver(s3.model_copy(update={"rootdirectory": prefix})))
    assert root is not None
    return DistributionTree(FilesystemDriver(root / layout.DISTRIBUTION_ROOT))


def build_guard(settings: Settings, driver: Driver) -> DiskGuard:
    """The free-space guard and storage reserve of `storage.guard`."""
    guard = settings.storage.guard
    return DiskGuard(driver, min_free=guard.min_free_bytes, reserve=guard.reserve)


def upstream_credentials(index: int, creds: ProxyCredentials) -> Credentials:
    """Resolve a rule's credentials from the environment or files it names; a missing
    variable or unreadable file is a startup error naming the key (never the value)."""
    where = f"proxy.{index}.credentials"
    user = creds.username if creds.username is not None else \
        from_env(creds.username_env or "", f"{where}.username_env")
    password = read_secret(creds.password_env, creds.password_file, where)
    assert password is not None  # the model requires one of the two
    return Credentials(user, password)


def check_guard(settings: Settings) -> None:
    """ValueError naming `storage.guard.min_free` when it asks more space to stay free
    than the data filesystem holds in all: every upload would be refused, and each
    worker failed its start on a traceback (`dockyard serve` checks before it starts)."""
    if settings.storage.driver != "filesystem":
        return
    path = settings.data_dir
    while not path.exists() and path != path.parent:  # not made yet: where it will be
        path = path.parent
    try:  # statvfs, not the driver: that would make the directory, here and now
        st = os.statvfs(path)
    except OSError:
        return  # opening the storage says what is wrong with it
    total = st.f_blocks * st.f_frsize
    wanted = settings.storage.guard.min_free_bytes(total)
    if wanted >= total > 0:
        raise ValueError(f"storage.guard.min_free: {human_bytes(wanted)} must stay free, "
                         f"but the data filesystem holds {human_bytes(total)} in all")


def check_upstreams(settings: Settings) -> None:
    """ValueError naming the key when a `proxy:` rule's credentials, or the CAs and
    client certificates of its upstream's `certs.d` directory, cannot be used
    (`dockyard serve` checks before it starts anything)."""
    for i, rule in enumerate(settings.proxy):
        if rule.credentials is not None:
            upstream_credentials(i, rule.credentials)
        if rule.upstream.startswith("https://") and rule.tls_verify:
            from dockyard.remote.certs import host_of, tls_for

            try:
                tls_for(host_of(rule.upstream))
            except ValueError as exc:
                raise ValueError(f"proxy.{i}.upstream: {exc}") from None


def build_upstreams(settings: Settings) -> list[tuple[ProxyRule, Upstream]]:
    """A client per `proxy:` rule (call inside the event loop that will use them).

    A rule whose credentials cannot be read goes anonymous, with a warning: the server
    refused to start on it already (`check_upstreams`), and the CLI's commands (gc, du,
    rm) never pull from upstream.
    """
    if not settings.proxy:
        return []
    # the HTTP client only when there are upstreams: the CLI's commands start faster
    from dockyard.remote.client import RegistryClient
    from dockyard.remote.upstream import RemoteUpstream

    out: list[tuple[ProxyRule, Upstream]] = []
    for i, rule in enumerate(settings.proxy):
        creds = None
        if rule.credentials is not None:
            try:
                creds = upstream_credentials(i, rule.credentials)
            except ValueError as exc:
                log.warning("%s; %s is reached without credentials", exc, rule.upstream)
        try:
            client = RegistryClient(rule.upstream, credentials=creds,
                                    verify_tls=rule.tls_verify,
                                    max_manifest=settings.limits.manifest_max_size)
        except ValueError as exc:  # its certs.d changed since the start checked it
            log.error("proxy.%d.upstream: %s; the system's CAs are used", i, exc)
            client = RegistryClient(rule.upstream, credentials=creds,
                                    verify_tls=rule.tls_verify, tls=rule.tls_verify,
                                    max_manifest=settings.limits.manifest_max_size)
        out.append((rule, RemoteUpstream(client)))
    return out


def _connect_timeout(settings: Settings) -> float:
    return settings.database.connect_timeout.total_seconds()


async def migrate_database(settings: Settings) -> None:
    """Bring the metadata schema up to date (once, before workers open the store)."""
    engines = open_engines(settings.database_url, connect_timeout=_connect_timeout(settings))
    try:
        await migrate(engines)
    finally:
        await engines.dispose()


async def open_registry(settings: Settings, *, run_migrations: bool = True) -> Registry:
    """Open the metadata store and blob store named by `settings`."""
    engines = open_engines(settings.database_url, pool_size=settings.database.pool_size,
                           connect_timeout=_connect_timeout(settings))
    driver = build_driver(settings)
    guard = build_guard(settings, driver)
    # a metadata write on a full disk gives back the reserve and is tried again
    engines.on_full = guard.release
    m = metrics()
    engines.observe = m.requests_stats.db_write  # batched: several writes per push
    guard.on_refusal = m.rate_limited.labels("disk_guard").inc
    if run_migrations:
        await migrate(engines)
    await guard.ensure()
    uploads = settings.storage.uploads
    blobstore = BlobStore(driver, buffer_size=uploads.chunk_buffer, guard=guard)
    # a slot frees when a session ends, at the latest at the next purge of idle ones
    caps = SessionCaps(uploads.max_sessions, uploads.max_sessions_per_user,
                       max(1, min(60, int(uploads.purge_interval.total_seconds()))))
    return Registry.build(
        MetadataStore(engines), blobstore, LeaseStore(engines),
        delete_enabled=settings.storage.delete.enabled,
        delete_referrers=settings.storage.delete.referrers,
        manifest_max_size=settings.limits.manifest_max_size, session_caps=caps,
        redirect_expiry=(settings.storage.redirect_expiry.total_seconds()
                         if settings.storage.redirect else None),
        feed_max_wait=settings.feed.max_wait.total_seconds(),
        observe=lambda kind, seconds: m.db_latency.labels(kind).observe(seconds),
        proxies=build_upstreams(settings),
        endpoints=settings.notifications.active,
        source_addr=f"{socket.gethostname()}:{settings.http.addr.rpartition(':')[2]}",
        job_repositories={job_name(s.key): s.local for s in settings.mirror},
        follow_lag=settings.http.body_timeout.total_seconds(),
        max_queued=settings.notifications.max_queued,
    )


async def close_registry(registry: Registry) -> None:
    await registry.close()


def preload(settings: Settings) -> None:
    """Import now the modules of what `settings` uses that are otherwise imported where
    they are built, in each worker once the supervisor has forked it (the S3 driver,
    the upstream clients of `proxy:` rules, the optional jobs, the web UI): called by
    `dockyard serve` before it starts the workers, so they share one copy instead of
    each importing its own. What a configuration does not use is never imported."""
    modules = []
    if settings.storage.driver == "s3":
        modules.append("dockyard.drivers.s3")
    if settings.proxy:
        modules.append("dockyard.remote.upstream")
    if settings.replica.primary is not None:
        modules.append("dockyard.replica.follower")
    if settings.scrub.enabled:
        modules.append("dockyard.gc.scrub")
    if settings.mirror:
        modules.append("dockyard.mirror.schedule")
    if settings.notifications.active:
        modules.append("dockyard.remote.webhook")
    if settings.ui.enabled:
        modules.append("dockyard.web.app")
    for name in modules:
        importlib.import_module(name)
