"""Parse and validate manifest payloads into the references a registry must check and keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, ManifestInvalid

#: The image-spec's descriptor sizes are int64.
MAX_SIZE = 2**63 - 1
#: Longest media type kept (RFC 6838: type and subtype of at most 127 characters each).
MAX_MEDIA_TYPE = 255
#: The fields this parser reads, by their case-folded spelling. Go's encoding/json
#: (docker, containerd, skopeo, Distribution) fills a struct field from a key in any
#: case (`"Layers"` too) and keeps the last: a manifest whose `layers` clients read
#: other than the registry does would have its blobs collected under them, so such
#: keys are refused rather than guessed at.
_READ_FIELDS = {f.casefold(): f for f in (
    "schemaVersion", "mediaType", "config", "layers", "manifests", "subject",
    "artifactType", "annotations", "digest", "size")}


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
    doc = _load(payload)
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
    version = doc.get("schemaVersion")
    if type(version) is not int or version != 2:  # 2.0 or true are not what clients read
        raise ManifestInvalid("schemaVersion must be the integer 2")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = _media_type(doc.get("artifactType"), "artifactType")
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


def _load(payload: bytes) -> Any:
    """The JSON document in `payload`, which must be plain JSON as the image-spec requires.

    UTF-8 only (no byte order mark, no UTF-16/32, which `json.loads` would guess), no
    NaN or Infinity, no key twice in an object (`_object`); nesting deeper than the
    decoder's recursion limit is refused rather than escaping as a RecursionError.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: not UTF-8 ({exc.reason} at "
                              f"byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise ManifestInvalid("manifest is not valid JSON: it starts with a byte order mark "
                              "(send plain UTF-8)")
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except RecursionError:
        raise ManifestInvalid("manifest is nested too deeply") from None
    except ValueError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object, refused when parsers could read it differently: a key given
    twice (RFC 8259 leaves which one counts to each parser: Python and Go keep the last,
    others the first or refuse the document), or a field this parser reads beside a key
    equal to it but for case (Go's decoder keeps whichever comes last)."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ManifestInvalid(f"manifest is not valid JSON: key {key!r} appears "
                                      "twice in one object")
            seen.add(key)
    if len(doc) > 1:
        folded: dict[str, str] = {}
        for key in doc:
            field = _READ_FIELDS.get(key.casefold())
            if field is None:
                continue
            other = folded.setdefault(field, key)
            if other != key:
                raise ManifestInvalid(f"manifest is not valid JSON: keys {other!r} and "
                                      f"{key!r} differ only in case")
    return doc


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


def _media_type(value: Any, where: str) -> str | None:
    """A media type as stored and served back: printable ASCII of at most 255 characters
    (RFC 6838), so every database and client can hold it; None when absent ("" is kept:
    an empty artifactType means none)."""
    if value is None or value == "":
        return None if value is None else ""
    if (not isinstance(value, str) or len(value) > MAX_MEDIA_TYPE
            or not all(" " <= c <= "~" for c in value)):
        raise ManifestInvalid(f"{where} must be a media type (printable ASCII, at most "
                              f"{MAX_MEDIA_TYPE} characters)")
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
    media_type = _media_type(value.get("mediaType"), f"{where}.mediaType")
    digest, size = value.get("digest"), value.get("size")
    if not media_type:
        raise ManifestInvalid(f"{where}.mediaType is missing")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}.digest is missing")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ManifestInvalid(f"{where}.size must be an integer from 0 to 2^63-1")
    try:
        parsed = Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}.digest: {exc.message}") from None
    return Descriptor(media_type, parsed, size,
                      _media_type(value.get("artifactType"), f"{where}.artifactType"),
                      _annotations(value.get("annotations"), f"{where}.annotations"))
