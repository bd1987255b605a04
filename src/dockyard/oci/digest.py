"""Content digests (`algorithm:hex`) as the OCI image-spec defines them, and their hashers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from dockyard.oci.errors import DigestInvalid

#: Algorithms a registry must or may accept, with the length of their hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def well_formed(text: str) -> bool:
    """Whether `text` has the image-spec's digest grammar (`algorithm:encoded`, any
    algorithm): what may stand in a URL path where a digest goes."""
    return _GRAMMAR.fullmatch(text) is not None


class Hasher(Protocol):
    """The part of hashlib's interface a running digest needs."""

    @property
    def name(self) -> str: ...
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest such as `sha256:e3b0...`."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate `text`; raise `DigestInvalid` with the reason otherwise."""
        if not _GRAMMAR.fullmatch(text):
            raise DigestInvalid(f"invalid digest format: {text!r}")
        algorithm, _, encoded = text.partition(":")
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise DigestInvalid(f"unsupported digest algorithm: {algorithm!r}")
        if len(encoded) != length or not _LOWER_HEX.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest: {text!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of `data` (small payloads such as manifests)."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(algorithm, hasher.hexdigest())

    def hasher(self) -> Hasher:
        """A fresh running hash of this digest's algorithm."""
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def new_hasher(algorithm: str = "sha256") -> Hasher:
    """A running hash for `algorithm` (one of `ALGORITHMS`)."""
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"unsupported digest algorithm: {algorithm!r}")
    return hashlib.new(algorithm)
