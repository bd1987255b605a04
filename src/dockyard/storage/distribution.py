"""A CNCF Distribution storage tree, read through a driver (for `dockyard import`).

The driver is rooted at Distribution's `docker/registry/v2` (`layout.DISTRIBUTION_ROOT`
under its `rootdirectory`), on a filesystem or in an S3 bucket alike: one listing of
`repositories/` gives every tag, revision and layer link; only tag links are read (the
keys of revision and layer links already name their digest, which is all Distribution
writes in them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from dockyard.drivers.base import Driver
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid
from dockyard.storage import layout

#: link reads in flight at once
READ_CONCURRENCY = 64


@dataclass
class DistributionRepository:
    """One repository of the tree: its tags and links."""

    name: str
    #: tag -> the digest its `current/link` names (None: unreadable or not a digest)
    tags: dict[str, str | None] = field(default_factory=dict)
    revisions: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)


class DistributionTree:
    """Distribution's repositories and blobs under one driver."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def close(self) -> None:
        """Close the driver the tree is read through (an S3 client's connections)."""
        await self.driver.close()

    async def repositories(self) -> list[DistributionRepository]:
        """Every repository with its links, sorted by name; tag links read."""
        repos: dict[str, DistributionRepository] = {}
        tag_links: list[tuple[DistributionRepository, str, str]] = []
        async for key in self.driver.list(layout.DIST_REPOSITORIES):
            link = layout.distribution_link(key)
            if link is None:
                continue
            repo = repos.get(link.repository)
            if repo is None:
                repo = repos[link.repository] = DistributionRepository(link.repository)
            if link.kind == "tag":
                tag_links.append((repo, link.name, key))
            elif link.kind == "revision":
                repo.revisions.add(link.name)
            else:
                repo.layers.add(link.name)
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def read_tag(repo: DistributionRepository, tag: str, key: str) -> None:
            async with limit:
                repo.tags[tag] = await self._read_link(key)

        await asyncio.gather(*(read_tag(*t) for t in tag_links))
        return [repos[name] for name in sorted(repos)]

    async def _read_small(self, key: str, limit: int = 4096) -> bytes:
        """At most `limit` + 1 bytes of a small object (more means: too big). A local
        file is read inline: a link or a manifest in the page cache costs less than the
        thread hops of a streamed read."""
        path = self.driver.local_path(key)
        if path is not None:
            try:
                with path.open("rb") as f:
                    return f.read(limit + 1)
            except (NotADirectoryError, IsADirectoryError):
                raise FileNotFoundError(key) from None
        return b"".join([c async for c in self.driver.read(key, 0, limit + 1)])

    async def _read_link(self, key: str) -> str | None:
        try:
            text = (await self._read_small(key)).decode().strip()
            return str(Digest.parse(text))
        except (FileNotFoundError, UnicodeDecodeError, DigestInvalid):
            return None

    async def blob_size(self, digest: str) -> int | None:
        return await self.driver.stat(layout.blob_key(Digest.parse(digest)))

    async def read_blob(self, digest: str, limit: int) -> bytes | None:
        """A small blob's bytes (a manifest), at most `limit` + 1 of them (more: it is
        too big); None when its data is gone."""
        try:
            return await self._read_small(layout.blob_key(Digest.parse(digest)), limit)
        except FileNotFoundError:
            return None

    async def blobs(self) -> AsyncIterator[str]:
        """Every digest with data in the tree."""
        async for key in self.driver.list(layout.BLOBS):
            digest = layout.blob_of(key)
            if digest is not None:
                yield str(digest)
