"""Blob content that is unique per run without holding a large blob in memory.

A large blob is one random 1 MiB block repeated, with the last 16 bytes of every block
replaced by the block's index. Only the random block is kept; blocks are built as they
are sent, and the digest is computed once, when the source is created, by the same
generator.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from bench.config import MiB

BLOCK = MiB
_SUFFIX = 16


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobSource:
    """A large blob described by its random block; its bytes are generated on demand."""

    base: bytes
    size: int
    digest: str

    @classmethod
    def create(cls, size: int) -> BlobSource:
        if size <= 0 or size % BLOCK:
            raise ValueError(f"blob size must be a positive multiple of {BLOCK}, not {size}")
        base = os.urandom(BLOCK)
        hasher = hashlib.sha256()
        for block in _blocks(base, 0, size // BLOCK):
            hasher.update(block)
        return cls(base, size, "sha256:" + hasher.hexdigest())

    @property
    def blocks_total(self) -> int:
        return self.size // BLOCK

    def blocks(self, first: int = 0, count: int | None = None) -> Iterator[bytes]:
        """Blocks `first` .. `first + count - 1` (to the end when `count` is None)."""
        if count is None:
            count = self.blocks_total - first
        return _blocks(self.base, first, count)

    async def stream(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes `offset` .. `offset + length` as an async body for aiohttp."""
        if length is None:
            length = self.size - offset
        if offset % BLOCK or length % BLOCK:
            raise ValueError("stream ranges must be block-aligned")
        for block in self.blocks(offset // BLOCK, length // BLOCK):
            yield block


def _blocks(base: bytes, first: int, count: int) -> Iterator[bytes]:
    head = base[:-_SUFFIX]
    for index in range(first, first + count):
        yield head + index.to_bytes(_SUFFIX, "big")
