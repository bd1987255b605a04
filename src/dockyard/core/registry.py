"""The registry's use cases bundled for the layers above, built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.auth.ratelimit import FailureLog
from dockyard.core.blobs import TOUCH_INTERVAL, BlobService
from dockyard.core.browse import BrowseService
from dockyard.core.leases import LeaseBackend, Leases
from dockyard.core.lifecycle import LifecycleBackend
from dockyard.core.manifests import ManifestService
from dockyard.core.pulls import PullRecorder
from dockyard.core.repositories import RepositoryService
from dockyard.core.secrets import SecretBackend
from dockyard.core.uploads import NO_CAPS, SessionCaps, UploadService
from dockyard.metadata.browse import BrowseStore
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.logins import LoginFailureStore
from dockyard.metadata.secrets import SecretStore
from dockyard.metadata.store import MetadataStore
from dockyard.storage.blobstore import BlobStore


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
    #: what the web UI reads
    browse: BrowseService
    #: random keys shared by every worker and node (the UI's session key)
    secrets: SecretBackend
    _store: MetadataStore = field(repr=False)
    _blobstore: BlobStore = field(repr=False)

    @classmethod
    def build(
        cls, store: MetadataStore, blobstore: BlobStore, leases: LeaseBackend, *,
        delete_enabled: bool,
        manifest_max_size: int, delete_referrers: bool = True,
        touch_interval: float = TOUCH_INTERVAL, session_caps: SessionCaps = NO_CAPS,
        redirect_expiry: float | None = None,
    ) -> Registry:
        pulls = PullRecorder(store)
        lifecycle = LifecycleStore(store)
        held = Leases(leases)
        return cls(
            _store=store,
            _blobstore=blobstore,
            pulls=pulls,
            leases=held,
            browse=BrowseService(BrowseStore(store), store, blobstore, held, lifecycle),
            secrets=SecretStore(store),
            lifecycle=lifecycle,
            blobs=BlobService(store, blobstore, delete_enabled=delete_enabled,
                              touch_interval=touch_interval,
                              redirect_expiry=redirect_expiry),
            uploads=UploadService(store, blobstore, session_caps),
            manifests=ManifestService(store, max_size=manifest_max_size,
                                      delete_enabled=delete_enabled,
                                      delete_referrers=delete_referrers, pulls=pulls),
            repositories=RepositoryService(store, blobstore, lifecycle,
                                           delete_enabled=delete_enabled),
            login_failures=LoginFailureStore(store),
        )

    async def close(self) -> None:
        """Release the stores' connections (the driver's, then the database's)."""
        await self._blobstore.driver.close()
        await self._store.close()
