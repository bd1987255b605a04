"""The two ends of a copy, one interface for a registry repository and an OCI layout.

A `Source` gives manifests (exact bytes), tags, blobs as streams and referrers; a
`Destination` says what it has, mounts, takes streamed blobs and manifests. The engine
only talks to these, so a registry, a layout directory (and later the local stores) are
interchangeable on either side.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard.received import parse_json


@dataclass(frozen=True, slots=True)
class Fetched:
    """A manifest as stored: its bytes, media type and digest."""

    data: bytes
    media_type: str
    digest: str


def declared_media_type(data: bytes) -> str | None:
    """The `mediaType` a manifest's bytes declare; None for none, or for bytes that are
    no JSON object (the engine's `_load` says so when it walks them)."""
    try:
        declared = parse_json(data).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return declared if isinstance(declared, str) else None


#: a layout's tag of a manifest in index.json
REF_NAME = "org.opencontainers.image.ref.name"


def referrer_descriptor(fetched: Fetched) -> dict[str, Any]:
    """A referrer's descriptor as the referrers API gives it: its artifactType (else
    its config's media type) and annotations (a layout's ref.name aside): what the
    `sha256-<hex>` fallback index and a layout's index.json list, built from the
    manifest itself, not from what the source listed (which may lack them)."""
    doc = parse_json(fetched.data)
    desc: dict[str, Any] = {"mediaType": fetched.media_type, "digest": fetched.digest,
                            "size": len(fetched.data)}
    config = doc.get("config")
    artifact = doc.get("artifactType") or (config.get("mediaType")
                                           if isinstance(config, dict) else None)
    if isinstance(artifact, str):
        desc["artifactType"] = artifact
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):
        kept = {k: v for k, v in annotations.items() if k != REF_NAME and isinstance(v, str)}
        if kept:
            desc["annotations"] = kept
    return desc


class Source(Protocol):
    """Where images are read from."""

    def describe(self) -> str: ...

    async def manifest(self, reference: str) -> Fetched: ...

    async def tags(self) -> list[str]: ...

    def blob(self, digest: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def referrers(self, digest: str) -> list[dict[str, Any]]: ...


class Destination(Protocol):
    """Where images are written to."""

    def describe(self) -> str: ...

    async def prepare(self) -> None: ...

    async def manifest_digest(self, reference: str) -> str | None: ...

    #: whether `manifest_digest` counts only a manifest whose blobs are all here (a
    #: layout checks its files); else the engine checks them before it calls an image
    #: up to date (a registry's blob may have been found corrupt and set aside since)
    whole_on_lookup: bool

    async def stored_manifest(self, digest: str) -> Fetched | None:
        """The manifest `digest` as stored here; None when it is not here."""
        ...

    async def has_blob(self, digest: str, size: int | None = None) -> bool:
        """Whether the blob is here (and, where the end can tell, of `size` bytes)."""
        ...

    def place(self) -> tuple[str, str] | None:
        """(registry, repository) where blobs land, for mount hints; None: cannot mount."""
        ...

    async def mount(self, digest: str, source: Source, known: list[str]) -> bool:
        """Mount `digest` from the source's repository (same registry) or one of the
        `known` repositories of this registry that hold it; True when it worked."""
        ...

    async def put_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None: ...

    async def put_manifest(self, reference: str, fetched: Fetched) -> bool:
        """Store the manifest under `reference`; True when the destination indexed its
        subject itself (a referrers API), so no tag fallback is needed."""
        ...

    async def add_referrer_fallback(self, subject: str, descriptor: dict[str, Any]) -> None: ...

    async def lists_referrer(self, subject: str, digest: str) -> bool:
        """Whether a client asking for `subject`'s referrers here finds `digest` (the
        referrers API, else the tag fallback): a referrer stored by a run that stopped
        before its fallback entry was written is present, yet unlisted."""
        ...


@dataclass
class MountHints:
    """Which repositories of a registry are known to hold a blob, shared by the copiers
    of one job (a sync into many repositories mounts shared layers instead of sending
    them again)."""

    _repos: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, registry: str, digest: str, repository: str) -> None:
        repos = self._repos.setdefault((registry, digest), [])
        if repository not in repos:
            repos.append(repository)

    def get(self, registry: str, digest: str, exclude: str) -> list[str]:
        return [r for r in self._repos.get((registry, digest), []) if r != exclude][:3]
