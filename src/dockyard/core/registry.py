"""The registry's use cases bundled for the layers above, built from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dockyard.auth.ratelimit import FailureLog
from dockyard.config.proxy import ProxyRule
from dockyard.config.settings import EndpointSettings
from dockyard.core.blobs import TOUCH_INTERVAL, BlobService
from dockyard.core.browse import BrowseService
from dockyard.core.feed import FeedService
from dockyard.core.health import HealthService
from dockyard.core.importer import Importer, Progress
from dockyard.core.integrity import IntegrityBackend
from dockyard.core.jobruns import JobHistory
from dockyard.core.leases import LeaseBackend, Leases
from dockyard.core.lifecycle import LifecycleBackend
from dockyard.core.manifests import ManifestService
from dockyard.core.mirrors import MirrorRecords
from dockyard.core.notify import MAX_QUEUED, Deliverer, Notifier, Sender
from dockyard.core.operations import OperationsService
from dockyard.core.proxy import FOLLOW_LAG, ProxyRoutes, PullThrough, Upstream
from dockyard.core.pulls import PullRecorder
from dockyard.core.replica import ReplicaService
from dockyard.core.repositories import RepositoryService
from dockyard.core.secrets import SecretBackend
from dockyard.core.sessions import SessionRevocations
from dockyard.core.uploads import NO_CAPS, SessionCaps, UploadService
from dockyard.metadata.adoption import AdoptionStore
from dockyard.metadata.browse import BrowseStore
from dockyard.metadata.integrity import IntegrityStore
from dockyard.metadata.jobruns import JobRunStore
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.logins import LoginFailureStore
from dockyard.metadata.mirrors import MirrorStore
from dockyard.metadata.notifications import NotificationStore
from dockyard.metadata.operations import OperationsStore
from dockyard.metadata.secrets import SecretStore
from dockyard.metadata.sessions import RevokedSessionStore
from dockyard.metadata.store import MetadataStore
from dockyard.storage.blobstore import BlobStore
from dockyard.storage.distribution import DistributionTree


@dataclass(frozen=True)
class Registry:
    """Everything a request handler or a long-running job needs, as services.

    This is the only way into the stores for the layers above `core`: they get
    services and `core` Protocols, never the metadata store or the blob store.
    """

    blobs: BlobService
    uploads: UploadService
    manifests: ManifestService
    repositories: RepositoryService
    pulls: PullRecorder
    leases: Leases
    #: failed logins, shared by every worker (handed to the failed-login limiter)
    login_failures: FailureLog
    #: what the collector, retention and usage read and delete
    lifecycle: LifecycleBackend
    #: the change feed (ordered events of every change), for replicas
    feed: FeedService
    #: this registry as a standby replica: read-only flag, cursor, lag
    replica: ReplicaService
    #: what the integrity check (fsck, the scrub job) reads and repairs
    integrity: IntegrityBackend
    #: readiness checks (`/readyz`, `dockyard status`)
    health: HealthService
    #: counts, storage use and its trend, past collections
    operations: OperationsService
    #: pull-through caches (`proxy:`): their routes, fetches and provenance
    cache: PullThrough
    #: mirror sync history and where mirrored tags came from
    mirrors: MirrorRecords
    #: the last runs of each background job (written by the jobs runner)
    job_runs: JobHistory
    #: queues the events of pushes, pulls and deletes for the notification endpoints
    notifier: Notifier
    #: what the web UI reads
    browse: BrowseService
    #: random keys shared by every worker and node (the UI's session key)
    secrets: SecretBackend
    #: web UI sessions logged out before their cookie expires
    sessions: SessionRevocations
    _store: MetadataStore = field(repr=False)
    _blobstore: BlobStore = field(repr=False)

    @classmethod
    def build(
        cls, store: MetadataStore, blobstore: BlobStore, leases: LeaseBackend, *,
        delete_enabled: bool,
        manifest_max_size: int, delete_referrers: bool = True,
        touch_interval: float = TOUCH_INTERVAL, session_caps: SessionCaps = NO_CAPS,
        redirect_expiry: float | None = None, feed_max_wait: float = 60.0,
        observe: Callable[[str, float], object] | None = None,
        proxies: Sequence[tuple[ProxyRule, Upstream]] = (),
        endpoints: Sequence[EndpointSettings] = (), source_addr: str = "",
        job_repositories: Mapping[str, str] | None = None, follow_lag: float = FOLLOW_LAG,
        max_queued: int = MAX_QUEUED,
    ) -> Registry:
        pulls = PullRecorder(store)
        notifier = Notifier(NotificationStore(store), endpoints, source_addr, max_queued)
        lifecycle = LifecycleStore(store)
        ops = OperationsStore(store)
        lease_holder = Leases(leases)
        routes = ProxyRoutes(list(proxies))
        uploads = UploadService(store, blobstore, session_caps, routes=routes,
                                notifier=notifier, leases=lease_holder)
        cache = PullThrough(routes, store, blobstore, uploads, leases, lease_holder.holder,
                            pulls, follow_lag=follow_lag)
        return cls(
            health=HealthService(ops, blobstore, observe=observe),
            operations=OperationsService(ops, blobstore),
            _store=store,
            notifier=notifier,
            _blobstore=blobstore,
            pulls=pulls,
            leases=lease_holder,
            browse=BrowseService(BrowseStore(store), store, blobstore, lease_holder,
                                 lifecycle),
            secrets=SecretStore(store),
            sessions=RevokedSessionStore(store),
            lifecycle=lifecycle,
            integrity=IntegrityStore(store),
            cache=cache,
            blobs=BlobService(store, blobstore, delete_enabled=delete_enabled,
                              touch_interval=touch_interval,
                              redirect_expiry=redirect_expiry, routes=routes,
                              proxy=cache if proxies else None, notifier=notifier),
            uploads=uploads,
            manifests=ManifestService(store, max_size=manifest_max_size,
                                      delete_enabled=delete_enabled,
                                      delete_referrers=delete_referrers, pulls=pulls,
                                      routes=routes, proxy=cache if proxies else None,
                                      notifier=notifier),
            repositories=RepositoryService(store, blobstore, lifecycle,
                                           delete_enabled=delete_enabled, notifier=notifier),
            login_failures=LoginFailureStore(store),
            feed=FeedService(store, max_wait=feed_max_wait),
            replica=ReplicaService(store, lifecycle),
            mirrors=MirrorStore(store),
            job_runs=JobHistory(JobRunStore(store), repositories=job_repositories),
        )

    def importer(self, tree: DistributionTree, *, copy: bool, max_manifest_size: int,
                 progress: Progress | None = None) -> Importer:
        """An import of Distribution's `tree` into these stores (`dockyard import`)."""
        return Importer(AdoptionStore(self._store), self._blobstore, tree, copy=copy,
                        max_manifest_size=max_manifest_size, progress=progress)

    def deliverer(self, sender: Callable[[], Sender]) -> Deliverer:
        """The delivery of the notifier's endpoints through `sender` (the job's work)."""
        return Deliverer(NotificationStore(self._store), self.notifier.endpoints, sender,
                         max_queued=self.notifier.max_queued)

    async def close(self) -> None:
        """Release the upstreams' and the stores' connections (the driver's, then the
        database's)."""
        await self.cache.routes.close()
        await self._blobstore.driver.close()
        await self._store.close()
