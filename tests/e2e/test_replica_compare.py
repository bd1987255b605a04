"""A replica's full comparison, against a real primary: a tag that vanishes between the
listing and the look at it deletes nothing else (one failed look used to read as "the
repository has no tags", and the replica deleted every tag of it)."""

from __future__ import annotations

from pathlib import Path

import httpx

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.remote.client import ManifestInfo, RegistryClient
from dockyard.replica.follower import Follower
from tests.support.oci_api import push_image
from tests.support.servers import start_dockyard

REPO = "team/app"


class RacingClient(RegistryClient):
    """A real client whose next look at tag `vanish` first deletes it at the primary:
    the race of a delete landing between a comparison's listing and its look."""

    vanish: str | None = None

    async def head_manifest(self, name: str, reference: str) -> ManifestInfo | None:
        if reference == self.vanish:
            self.vanish = None
            await self.delete_manifest(name, reference)
        return await super().head_manifest(name, reference)


async def test_a_tag_gone_while_comparing_deletes_no_other_tag(tmp_path: Path) -> None:
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            digests = {tag: push_image(client, REPO, tag).digest for tag in ("a", "b", "c")}
        settings = load_settings(env={}, overrides={
            "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
        registry = await open_registry(settings)
        try:
            async with RacingClient(primary.url) as remote:
                follower = Follower(registry, remote, primary.url)
                await follower._compare_repository(REPO)
                assert await registry.replica.tags(REPO) == digests
                remote.vanish = "c"
                await follower._compare_repository(REPO)
                ours = await registry.replica.tags(REPO)
                assert {t: ours.get(t) for t in ("a", "b")} == {
                    "a": digests["a"], "b": digests["b"]}
                # `c` is the feed's to delete (its event follows the comparison)
                async with httpx.AsyncClient(base_url=primary.url) as check:
                    r = await check.get(f"/v2/{REPO}/tags/list")
                    assert sorted(r.json()["tags"]) == ["a", "b"]
        finally:
            await close_registry(registry)
    finally:
        primary.stop()
