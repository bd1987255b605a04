"""Browsing use cases for the web UI: summaries, search, tag and image details, operations.

Everything here reads; deletes go through `ManifestService` and `RepositoryService` like
the API's. Names a caller may not see are dropped by the `visible` filter the caller
passes (the access policy's), before counting, paging or cutting a search short.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard.core.layers import LayerFiles, list_layer
from dockyard.core.leases import Leases
from dockyard.core.lifecycle import GC_LEASE, CollectionRecord, LifecycleBackend
from dockyard.globs import glob_matches, is_glob
from dockyard.metadata.browse import RepositorySummary, TagDetail, UploadInFlight
from dockyard.metadata.records import ReferrerRecord
from dockyard.metadata.store import MetadataStore
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import BlobUnknown, ManifestUnknown, NameUnknown, RegistryError
from dockyard.oci.reference import is_tag, is_valid_tag
from dockyard.storage.blobstore import BlobStore

__all__ = [
    "BrowseBackend",
    "BrowseService",
    "CollectionRecord",
    "ImageView",
    "RepositorySummary",
    "TagView",
    "UploadInFlight",
]

#: the largest config blob the image page reads
CONFIG_MAX = 1024 * 1024
#: the largest SBOM document the image page reads
SBOM_MAX = 8 * 1024 * 1024
#: the referrers the image page lists at most (the referrers API pages through all)
REFERRERS_SHOWN = 100
SPDX = "application/spdx+json"
CYCLONEDX = "application/vnd.cyclonedx+json"
SORTS = ("name", "push", "size", "tags")
#: layer listings running at once in one worker (each reads and decompresses a layer)
LISTINGS = 2
Visible = Callable[[str], bool] | None


class BrowseBackend(Protocol):
    """The metadata reads behind the UI (`metadata.browse.BrowseStore`)."""

    async def summaries(self) -> list[RepositorySummary]: ...
    async def tag_details(self, name: str, *, offset: int = 0, limit: int | None = None,
                          digest: str | None = None) -> tuple[list[TagDetail], int] | None:
        ...
    async def search_tags(self, text: str, limit: int,
                          among: Sequence[str] | None = None) -> list[tuple[str, str]]: ...
    async def uploads(self, limit: int) -> list[UploadInFlight]: ...
    async def collections(self, limit: int) -> list[CollectionRecord]: ...
    async def counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class TagView:
    """A tag as the repository page shows it."""

    tag: str
    digest: str
    kind: str  # image, index or artifact
    media_type: str
    artifact_type: str | None
    platforms: tuple[str, ...]
    #: compressed size: config and layers of an image, the children's manifests of an index
    size: int
    pushed_at: float
    pulled_at: float | None
    #: the account that last pushed the tag (None: anonymous, a sync, a replica, an import)
    pushed_by: str | None = None
    #: what it was built from (`org.opencontainers.image.source` and `.revision`)
    built_from: str | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created: str
    created_by: str
    empty_layer: bool
    size: int | None  # of the layer it made, when it made one


@dataclass(frozen=True, slots=True)
class Platform:
    platform: str
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Package:
    """One package an SBOM lists."""

    name: str
    version: str
    license: str


@dataclass
class ImageView:
    """Everything the image page shows about one manifest."""

    name: str
    digest: str
    media_type: str
    kind: str
    artifact_type: str | None
    pretty: str
    raw: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    subject: str | None = None
    layers: list[Layer] = field(default_factory=list)
    platforms: list[Platform] = field(default_factory=list)
    referrers: list[ReferrerRecord] = field(default_factory=list)
    #: more referrers than `referrers` (the first REFERRERS_SHOWN) refer to the manifest
    referrers_more: bool = False
    config_digest: str | None = None
    config_media_type: str | None = None
    created: str | None = None
    os_arch: str | None = None
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    #: the packages of an SBOM artifact (SPDX or CycloneDX JSON); None: not an SBOM
    packages: list[Package] | None = None
    sbom_format: str | None = None


@dataclass(frozen=True, slots=True)
class LayerView:
    """A layer blob of a repository: its size and the files it holds."""

    name: str
    digest: str
    size: int
    files: LayerFiles


@dataclass(frozen=True, slots=True)
class Home:
    counts: dict[str, int]
    recent: list[RepositorySummary]
    repositories: int
    used: int
    free: int | None
    total: int | None


@dataclass(frozen=True, slots=True)
class Operations:
    counts: dict[str, int]
    uploads: list[UploadInFlight]
    collection: tuple[str, float] | None  # holder and lease expiry of the running `gc`
    used: int
    free: int | None
    total: int | None
    largest: list[RepositorySummary]
    metadata_ok: bool
    storage_ok: bool
    #: the latest finished collections, newest first
    collections: list[CollectionRecord] = field(default_factory=list)


def _doc(payload: bytes) -> dict[str, Any]:
    """A JSON object from stored bytes, or {} (a config or SBOM blob may be anything,
    nested past the recursion limit too)."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _platform(p: object) -> str:
    if not isinstance(p, dict):
        return "unknown"
    text = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return text + (f"/{p['variant']}" if p.get("variant") else "")


def _descriptors(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key)
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []


def _size(d: dict[str, Any]) -> int:
    size = d.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def kind_of(media_type: str, artifact_type: str | None, doc: dict[str, Any]) -> str:
    """image, index or artifact: what a person would call this manifest."""
    if media_type in mt.INDEXES:
        return "artifact" if artifact_type else "index"
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if artifact_type or config_type not in (mt.OCI_CONFIG, "application/vnd.docker.container"
                                                          ".image.v1+json"):
        return "artifact"
    return "image"


def built_from(doc: dict[str, Any]) -> str | None:
    """`source@revision` from a manifest's OCI annotations (what `dockyard build` and
    most CI builders stamp), the short revision; None when it says neither."""
    annotations = doc.get("annotations")
    if not isinstance(annotations, dict):
        return None
    source = annotations.get("org.opencontainers.image.source")
    revision = annotations.get("org.opencontainers.image.revision")
    source = source if isinstance(source, str) and source else None
    revision = revision[:12] if isinstance(revision, str) and revision else None
    if source is None and revision is None:
        return None
    return f"{source or ''}@{revision}" if revision else source


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def matches(name: str, pattern: str) -> bool:
    """A glob (`dockyard.globs`) matches the whole name; plain text matches anywhere."""
    if not pattern:
        return True
    if is_glob(pattern):
        return glob_matches(name, pattern)
    return pattern in name


def _license(item: dict[str, Any]) -> str:
    for key in ("licenseConcluded", "licenseDeclared"):
        if isinstance(item.get(key), str) and item[key] not in ("NOASSERTION", "NONE"):
            return str(item[key])
    names = []
    licenses = item.get("licenses")
    for entry in licenses if isinstance(licenses, list) else []:
        lic = entry.get("license") if isinstance(entry, dict) else None
        if isinstance(lic, dict):
            names.append(str(lic.get("id") or lic.get("name") or ""))
        elif isinstance(entry, dict) and entry.get("expression"):
            names.append(str(entry["expression"]))
    return ", ".join(n for n in names if n)


def sbom_packages(doc: dict[str, Any]) -> list[Package]:
    """The packages of an SPDX (`packages`) or CycloneDX (`components`) JSON document."""
    items = _descriptors(doc, "packages") or _descriptors(doc, "components")
    return [Package(str(p.get("name", "")), str(p.get("versionInfo") or p.get("version")
                                                  or ""), _license(p)) for p in items]


class BrowseService:
    """What the web UI reads, each call a few queries."""

    def __init__(self, backend: BrowseBackend, store: MetadataStore, blobs: BlobStore,
                 leases: Leases, lifecycle: LifecycleBackend) -> None:
        self.backend = backend
        self.lifecycle = lifecycle
        self.store = store
        self.blobs = blobs
        self.leases = leases
        self._listings = asyncio.Semaphore(LISTINGS)

    async def summaries(self, visible: Visible) -> list[RepositorySummary]:
        return [s for s in await self.backend.summaries() if visible is None or visible(s.name)]

    async def repositories(self, visible: Visible, *, pattern: str = "", sort: str = "name",
                           descending: bool = False) -> list[RepositorySummary]:
        """The repositories `visible` accepts that match `pattern`, sorted by `sort`."""
        found = [s for s in await self.summaries(visible) if matches(s.name, pattern)]
        keys: dict[str, Callable[[RepositorySummary], Any]] = {
            "name": lambda s: s.name, "push": lambda s: s.last_push or 0.0,
            "size": lambda s: s.bytes, "tags": lambda s: s.tags}
        found.sort(key=keys.get(sort, keys["name"]), reverse=descending)
        return found

    async def search(self, text: str, visible: Visible, limit: int = 20
                     ) -> tuple[list[str], list[tuple[str, str]]]:
        """Repository names and (repository, tag) pairs containing `text`."""
        text = text.strip()[:128]
        if not text:
            return [], []
        shown = [s.name for s in await self.summaries(visible)]
        names = [name for name in shown if text in name][:limit]
        if "\x00" in text:  # no tag holds one (and PostgreSQL takes no NUL in text)
            return names, []
        # only where the caller may look: a filter after the query's LIMIT hid every
        # match when repositories it may not see held the first few hundred
        pairs = await self.backend.search_tags(text, limit,
                                               None if visible is None else shown)
        return names, pairs

    def _space(self) -> tuple[int | None, int | None]:
        space = self.blobs.driver.space()
        return (None, None) if space is None else space

    async def home(self, visible: Visible, recent: int = 8) -> Home:
        """Counts, storage and the latest pushes of what `visible` lets the caller see:
        a caller who sees only part of the registry gets that part's figures (tags,
        manifests and bytes of the repositories shown), so totals reveal no hidden
        repository; the whole registry's (blobs too) when `visible` is None."""
        shown = await self.summaries(visible)
        latest = sorted((s for s in shown if s.last_push), key=lambda s: s.last_push or 0.0,
                        reverse=True)[:recent]
        free, total = self._space()
        if visible is None:
            counts = await self.backend.counts()
            used = (await self._totals())[1]
        else:
            counts = {"tags": sum(s.tags for s in shown),
                      "manifests": sum(s.manifests for s in shown)}
            used = sum(s.bytes for s in shown)
        return Home(counts, latest, len(shown), used, free, total)

    async def _totals(self) -> tuple[int, int]:
        return await self.lifecycle.total_bytes()

    async def tags(self, name: str, *, offset: int = 0, limit: int | None = None,
                   digest: str | None = None) -> tuple[list[TagView], int]:
        """`limit` tags of `name` from `offset`, by name (those at manifest `digest`, if
        given), and how many there are: a page of a repository that may hold 100,000."""
        found = await self.backend.tag_details(name, offset=offset, limit=limit,
                                               digest=digest)
        if found is None:
            raise NameUnknown(f"repository {name!r} is not known", {"name": name})
        details, total = found
        out = []
        for d in details:
            doc = _doc(d.payload)
            # the stored artifact type falls back to the config's media type (as the
            # referrers API reports it); what the manifest itself says decides the kind
            declared = doc.get("artifactType")
            kind = kind_of(d.media_type, declared if isinstance(declared, str) else None, doc)
            children = _descriptors(doc, "manifests")
            if d.media_type in mt.INDEXES:
                platforms = tuple(_platform(c.get("platform")) for c in children
                                  if isinstance(c.get("platform"), dict))
                size = sum(_size(c) for c in children)
            else:
                platforms = ()
                config = doc.get("config")
                size = (_size(config) if isinstance(config, dict) else 0) + sum(
                    _size(layer) for layer in _descriptors(doc, "layers"))
            out.append(TagView(d.tag, d.digest, kind, d.media_type,
                               d.artifact_type if kind == "artifact" else None,
                               platforms, size, d.pushed_at, d.pulled_at, d.pushed_by,
                               built_from(doc)))
        return out, total

    async def image(self, name: str, reference: str) -> ImageView:
        """The manifest `name:tag` or `name@digest` (reading it records no pull)."""
        if is_tag(reference):
            record = (await self.store.manifest(name, tag=reference)
                      if is_valid_tag(reference) else None)
        else:
            record = await self.store.manifest(name, digest=str(Digest.parse(reference)))
        if record is None or record.payload is None:
            raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {name}",
                                  {"name": name, "reference": reference[:200]})
        payload = bytes(record.payload)
        doc = _doc(payload)
        artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"),
                                                              str) else None
        try:
            pretty = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            pretty = payload.decode("utf-8", "replace")
        annotations = doc.get("annotations")
        subject = doc.get("subject")
        view = ImageView(
            name=name, digest=record.digest, media_type=record.media_type,
            kind=kind_of(record.media_type, artifact_type, doc), artifact_type=artifact_type,
            pretty=pretty, raw=payload.decode("utf-8", "replace"), size=record.size,
            annotations={str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, dict) else {},
            subject=str(subject.get("digest")) if isinstance(subject, dict) else None,
            layers=[Layer(str(d.get("digest", "")), str(d.get("mediaType", "")), _size(d))
                    for d in _descriptors(doc, "layers")],
            platforms=[Platform(_platform(d.get("platform")), str(d.get("digest", "")),
                                str(d.get("mediaType", "")), _size(d))
                       for d in _descriptors(doc, "manifests")],
        )
        # the first ones only (one more tells if there are others): anyone who may push
        # can attach any number of artifacts to an image
        referrers = await self.store.referrers(name, record.digest, None,
                                               limit=REFERRERS_SHOWN + 1)
        view.referrers = referrers[:REFERRERS_SHOWN]
        view.referrers_more = len(referrers) > REFERRERS_SHOWN
        config = doc.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            view.config_digest = config["digest"]
            view.config_media_type = str(config.get("mediaType", ""))
            if view.kind == "image":
                await self._read_config(view, _size(config))
        sbom = next((layer for layer in view.layers if layer.media_type in (SPDX, CYCLONEDX)),
                    None)
        if sbom is not None:
            body = await self._read_blob(name, sbom.digest, sbom.size, SBOM_MAX)
            if body is not None:
                view.sbom_format = "SPDX" if sbom.media_type == SPDX else "CycloneDX"
                view.packages = sbom_packages(_doc(body))
        return view

    async def layer(self, name: str, digest_text: str) -> LayerView:
        """The blob `digest_text` of repository `name` with its files listed (a tar layer;
        anything else says what it is not)."""
        digest = Digest.parse(digest_text)
        record = await self.store.blob_in_repository(name, str(digest))
        if record is None:
            raise BlobUnknown(f"blob {digest} is not in {name}",
                              {"name": name, "digest": str(digest)})
        async with self._listings:
            files = await list_layer(self.blobs.read(digest, 0, record.size))
        return LayerView(name, str(digest), record.size, files)

    async def _read_blob(self, name: str, digest_text: str, size: int, limit: int
                         ) -> bytes | None:
        """A small blob of the repository, whole; None when too big, absent or unreadable."""
        try:
            digest = Digest.parse(digest_text)
        except RegistryError:
            return None
        if size > limit or await self.store.blob_in_repository(name, str(digest)) is None:
            return None
        try:
            return b"".join([c async for c in self.blobs.read(digest, 0, size)])
        except (OSError, RegistryError):
            return None  # bytes missing or the store unreachable: the page shows the rest

    async def _read_config(self, view: ImageView, size: int) -> None:
        """Fill created, env, entrypoint, cmd, labels and history from the config blob."""
        assert view.config_digest is not None
        body = await self._read_blob(view.name, view.config_digest, size, CONFIG_MAX)
        if body is None:
            return
        doc = _doc(body)
        inner = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        assert isinstance(inner, dict)
        view.created = str(doc["created"]) if "created" in doc else None
        if doc.get("os") or doc.get("architecture"):
            view.os_arch = _platform(doc)
        view.env = _strings(inner.get("Env"))
        view.entrypoint = _strings(inner.get("Entrypoint"))
        view.cmd = _strings(inner.get("Cmd"))
        labels = inner.get("Labels")
        view.labels = ({str(k): str(v) for k, v in labels.items()}
                       if isinstance(labels, dict) else {})
        sizes = iter(layer.size for layer in view.layers)
        for h in _descriptors(doc, "history"):
            empty = bool(h.get("empty_layer"))
            view.history.append(HistoryEntry(
                str(h.get("created", "")), str(h.get("created_by", "")), empty,
                None if empty else next(sizes, None)))

    async def operations(self, visible: Visible, largest: int = 10, history: int = 60
                         ) -> Operations:
        """Readiness, a running collection, storage, and the uploads in flight and
        largest repositories among those `visible` accepts (the registry's operators
        see every name only if the policy lets them pull everything)."""
        try:
            counts = await self.backend.counts()
            metadata_ok = True
        except Exception:
            counts, metadata_ok = {}, False
        free, total = self._space()
        if not metadata_ok:
            return Operations(counts, [], None, 0, free, total, [], False, free != 0)
        uploads = [u for u in await self.backend.uploads(100)
                   if visible is None or visible(u.repository)]
        if visible is not None:  # the count of sessions in repositories it may not see
            counts = {**counts, "uploads": len(uploads)}  # would say they exist
        used = (await self._totals())[1]
        biggest = sorted(await self.summaries(visible), key=lambda s: s.bytes,
                         reverse=True)[:largest]
        collection = await self.leases.holder_of(GC_LEASE)
        return Operations(counts, uploads, collection, used, free, total, biggest,
                          True, free is None or free > 0,
                          await self.backend.collections(history))
