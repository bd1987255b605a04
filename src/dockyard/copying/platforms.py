"""`--platform os/arch[/variant]` and narrowing an index to the platforms asked for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dockyard.copying.ends import Fetched
from dockyard.oci.digest import Digest
from dockyard.received import parse_json


@dataclass(frozen=True, slots=True)
class Platform:
    """A platform as `--platform` names it; the variant is optional."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r}: expected OS/ARCH[/VARIANT] (e.g. linux/arm64/v8)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: Any) -> bool:
        if not isinstance(platform, dict):
            return False
        if platform.get("os") != self.os or platform.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        theirs = platform.get("variant")
        return (_variant(self.architecture, self.variant)
                == _variant(self.architecture, theirs if isinstance(theirs, str) else None))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


#: the variant an architecture's platforms mean when they name none (containerd's and
#: containers/image's normalisation): arm64 is v8, arm v7
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def _variant(architecture: str, variant: str | None) -> str | None:
    """`variant` as compared: an architecture's default when none is named, so
    `linux/arm64/v8` matches an index's `linux/arm64` (and the other way round)."""
    return variant or _DEFAULT_VARIANT.get(architecture)


def narrow(index: Fetched, platforms: tuple[Platform, ...]) -> Fetched | None:
    """A new index keeping only the children of `platforms` (same order, same fields);
    the original when it already has no others; None when nothing matches."""
    doc = parse_json(index.data)
    children = doc.get("manifests") or []
    kept = [c for c in children if any(p.matches(c.get("platform")) for p in platforms)]
    if not kept:
        return None
    if len(kept) == len(children):
        return index
    doc["manifests"] = kept
    data = json.dumps(doc, indent=2).encode()
    return Fetched(data, index.media_type, str(Digest.of(data)))
