"""Typed, frozen records the metadata store returns (never ORM rows or dicts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlobRecord:
    digest: str
    size: int
    touched_at: float


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    payload: bytes | None
    subject_digest: str | None = None


@dataclass(frozen=True, slots=True)
class ReferrerRecord:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None
    #: where it stands in the referrers' order (created_at, id): a page after it starts
    #: past this (`MetadataStore.referrers`' `after`)
    position: tuple[float, int] = (0.0, 0)


@dataclass(frozen=True, slots=True)
class Claim:
    """A blob claimed before its bytes are published (`MetadataStore.claim_blob`)."""

    #: the corrupt mark the claim found (None: unmarked); the link after the publish of
    #: verified bytes clears it, unless fsck marked the blob again meanwhile
    mark: float | None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    id: str
    repository: str
    offset: int
    started_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class NewManifest:
    """What a manifest PUT records: the payload and every reference it makes."""

    digest: str
    media_type: str
    payload: bytes
    artifact_type: str | None
    subject_digest: str | None
    config_digest: str | None
    annotations: str | None
    blob_digests: tuple[str, ...]
    child_digests: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UsageSample:
    """The data filesystem at one moment, and the bytes of the blobs stored then."""

    taken_at: float
    used_bytes: int
    free_bytes: int
    total_bytes: int
    blob_bytes: int


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A tag, the manifest it names, and when and by whom it was last pushed (what
    retention's `keep_last` orders by, and a replica copies from its primary)."""

    tag: str
    digest: str
    pushed_at: float
    pushed_by: str | None = None


@dataclass(frozen=True, slots=True)
class CachedTag:
    """A tag of a pull-through cache: where it came from and when."""

    tag: str
    upstream: str
    digest: str
    fetched_at: float
    checked_at: float
