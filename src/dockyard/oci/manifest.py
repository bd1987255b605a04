"""Parse and validate manifest payloads into the references a registry must check and keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, ManifestInvalid


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what a manifest points at."""

    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest: its type and every reference it makes, payload kept aside."""

    media_type: str
    blobs: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...]
    subject: Descriptor | None
    config: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] | None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def parse_manifest(payload: bytes, content_type: str | None) -> Manifest:
    """Parse `payload` pushed with `content_type`; raise `ManifestInvalid` on any defect.

    The media type comes from the payload's `mediaType` when present, else from the
    Content-Type; when both are present they must agree (spec: the registry must not
    accept a mismatch). Docker schema 1 is refused.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    ctype = (content_type or "").split(";")[0].strip().lower() or None
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if doc.get("schemaVersion") == 1 or declared in mt.SCHEMA1 or ctype in mt.SCHEMA1 - {
        "application/json"
    }:
        raise ManifestInvalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if declared and ctype and declared != ctype:
        raise ManifestInvalid(
            f"manifest mediaType {declared!r} does not match Content-Type {ctype!r}"
        )
    media_type = declared or ctype or _guess(doc)
    if media_type not in mt.MANIFESTS:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = _opt_str(doc, "artifactType")
    annotations = _annotations(doc.get("annotations"), "annotations")
    if media_type in mt.INDEXES:
        children = _list(doc, "manifests", required=True)
        return Manifest(media_type, (), tuple(_descriptor(c, "manifests[]") for c in children),
                        subject, None, artifact_type, annotations)
    if "config" not in doc:
        raise ManifestInvalid("image manifest has no config")
    config = _descriptor(doc["config"], "config")
    layers = tuple(_descriptor(x, "layers[]") for x in _list(doc, "layers", required=True))
    # The referrers API reports the config media type when artifactType is absent.
    artifact_type = artifact_type or config.media_type
    return Manifest(media_type, (config, *layers), (), subject, config, artifact_type, annotations)


def _guess(doc: dict[str, Any]) -> str:
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc:
        return mt.OCI_MANIFEST
    raise ManifestInvalid("manifest has no mediaType and no recognisable shape")


def _list(doc: dict[str, Any], key: str, *, required: bool) -> list[Any]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ManifestInvalid(f"{key} must be a list")
    return value


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestInvalid(f"{where} must map strings to strings")
    return value


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType is missing")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}.digest is missing")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    try:
        parsed = Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}.digest: {exc.message}") from None
    return Descriptor(media_type, parsed, size, _opt_str(value, "artifactType"),
                      _annotations(value.get("annotations"), f"{where}.annotations"))
