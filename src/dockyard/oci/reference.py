"""Repository name and tag grammar of the OCI distribution-spec, and the tags that name
a digest (the referrers tag schema, cosign's attachments)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dockyard.oci.errors import NameInvalid, TagInvalid

#: `<name>` as the distribution-spec defines it: path components of lower-case
#: alphanumerics joined by `.`, `_`, `__`, `-`+.
NAME_PATTERN = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
TAG_PATTERN = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
MAX_NAME_LENGTH = 255

_NAME = re.compile(NAME_PATTERN)
_TAG = re.compile(TAG_PATTERN)


def validate_name(name: str) -> str:
    """Return `name` if it is a valid repository name; raise `NameInvalid` otherwise."""
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name: {name[:300]!r}", {"name": name[:300]})
    return name


def is_tag(reference: str) -> bool:
    """True when `reference` has the shape of a tag (a digest contains ':')."""
    return ":" not in reference


def is_valid_tag(tag: str) -> bool:
    return _TAG.fullmatch(tag) is not None


def invalid_tags(names: Iterable[str]) -> list[str]:
    """The names among `names` that are no valid tag: what a registry that does not
    follow the grammar (or lies) lists, and a copy or a sync leaves out."""
    return [n for n in names if not is_valid_tag(n)]


def left_out(invalid: Sequence[str]) -> str:
    """What a copy or a sync says of the listed names it left out (`invalid_tags`)."""
    return (f"left out {len(invalid)} listed name(s) that are no valid tag (the first: "
            f"{invalid[0][:60]!r})")


def validate_tag(tag: str) -> str:
    """Return `tag` if it matches the tag grammar; raise `TagInvalid` otherwise."""
    if not _TAG.fullmatch(tag):
        raise TagInvalid(f"invalid tag: {tag[:200]!r}", {"tag": tag[:200]})
    return tag


#: tags that attach something to a manifest by naming its digest: the referrers tag
#: schema's index (`sha256-<hex>`; a sha512 digest's hex cut to 64 characters) and
#: cosign's signatures, attestations and SBOMs (`sha256-<hex>.sig`, `.att`, `.sbom`)
_ATTACHED = re.compile(r"(sha256-[0-9a-f]{64}|sha512-[0-9a-f]{64}(?:[0-9a-f]{64})?)"
                       r"(\.[A-Za-z0-9_-]+)?")


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag of a subject, `<alg>-<ref>` with the algorithm cut
    to 32 characters and the hex to 64 (a tag holds at most 128): `sha256:<hex>` ->
    `sha256-<hex>`; a sha512 subject's whole hex made no valid tag."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def subject_of(tag: str) -> str | None:
    """The manifest digest an attached tag names (`sha256-<hex>.sig` -> `sha256:<hex>`),
    or None for any other tag: the inverse of `fallback_tag`, suffix allowed. Of a
    sha512 subject it may be the first 64 hex characters only (`names`)."""
    found = _ATTACHED.fullmatch(tag)
    return found.group(1).replace("-", ":", 1) if found else None


def names(subject: str, digest: str) -> bool:
    """Whether `subject` (from `subject_of`) names the manifest `digest`: equal, or its
    start where the referrers tag schema cut a sha512 digest's hex to 64 characters."""
    return digest == subject or (len(subject) == len("sha512:") + 64
                                 and subject.startswith("sha512:")
                                 and digest.startswith(subject))
