"""A replica against a real primary: a tag that vanishes between the comparison's listing
and its look at it deletes nothing else (one failed look used to read as "the
repository has no tags", and the replica deleted every tag of it); a blob body longer
than its descriptor is not read past the descriptor's size; indexes nested 1,500 deep
replicate (no recursion)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError
from dockyard.remote.client import ManifestInfo, RegistryClient
from dockyard.replica.follower import Follower
from tests.support.oci_api import canonical, descriptor, push_blob, push_image, put_manifest
from tests.support.servers import start_dockyard

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


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


class PaddingClient(RegistryClient):
    """A real client whose blob bodies go on after the blob's bytes, without end: a
    primary (or a path to it) that sends more than the manifest says."""

    padded = 0

    @asynccontextmanager
    async def open_blob(self, name: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        async with super().open_blob(name, digest) as chunks:
            async def more() -> AsyncIterator[bytes]:
                async for chunk in chunks:
                    yield chunk
                while True:
                    self.padded += 65536
                    yield b"\0" * 65536
            yield more()


async def test_a_blob_longer_than_its_descriptor_is_not_read_past_its_size(
        tmp_path: Path) -> None:
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            pushed = push_image(client, REPO, "v1")
        settings = load_settings(env={}, overrides={
            "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
        registry = await open_registry(settings)
        try:
            async with PaddingClient(primary.url) as remote:
                follower = Follower(registry, remote, primary.url)
                with pytest.raises(RegistryError):
                    await asyncio.wait_for(follower.ensure_manifest(REPO, pushed.digest), 30)
                assert remote.padded <= 1 << 20  # stopped at the size, not at the end
                assert await registry.replica.tags(REPO) == {}
                assert not list((tmp_path / "replica").glob("blobs/**/data"))
                assert (await registry.operations.state(fresh=True)).upload_sessions == 0
        finally:
            await close_registry(registry)
    finally:
        primary.stop()


async def test_a_manifest_whose_descriptor_size_is_wrong_still_replicates(
        tmp_path: Path) -> None:
    # the primary takes a manifest without checking its descriptors' sizes: bounding
    # the read by the descriptor froze the follower on that event for ever
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        layer = os.urandom(5000)
        config = b'{"architecture": "amd64", "os": "linux"}'
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            layer_digest = push_blob(client, REPO, layer)
            config_digest = push_blob(client, REPO, config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest, "size": len(layer) + 7}]}).encode()
            r = put_manifest(client, REPO, "odd", manifest, OCI_MANIFEST)
            assert r.status_code == 201, r.text
            digest = r.headers["Docker-Content-Digest"]
        settings = load_settings(env={}, overrides={
            "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
        registry = await open_registry(settings)
        try:
            async with RegistryClient(primary.url) as remote:
                follower = Follower(registry, remote, primary.url)
                assert await asyncio.wait_for(follower.ensure_manifest(REPO, digest), 30)
            got = await registry.blobs.stat(REPO, Digest.parse(layer_digest))
            assert got.size == len(layer)
        finally:
            await close_registry(registry)
    finally:
        primary.stop()


class PromotingClient(RegistryClient):
    """A real client that, once the comparison has listed the primary's repositories,
    runs `then` (a promotion and a client's push to the promoted registry)."""

    then: Callable[[], Awaitable[None]] | None = None

    def repositories(self) -> AsyncIterator[str]:
        async def listed() -> AsyncIterator[str]:
            async for name in super(PromotingClient, self).repositories():
                yield name
            if self.then is not None:
                then, self.then = self.then, None
                await then()
        return listed()


async def test_a_promotion_during_a_comparison_stops_it_before_its_next_write(
        tmp_path: Path) -> None:
    # promotion was asked only between steps: a comparison under way went on deleting
    # and moving tags to the primary's, undoing what clients pushed after the promotion
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            pushed = push_image(client, REPO, "a")
        settings = load_settings(env={}, overrides={
            "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
        registry = await open_registry(settings)
        try:
            async with PromotingClient(primary.url) as remote:
                follower = Follower(registry, remote, primary.url)
                await asyncio.wait_for(follower.run(until_caught_up=True), 60)
                assert await registry.replica.tags(REPO) == {"a": pushed.digest}

                async def promote_then_push() -> None:
                    assert await registry.replica.promote() == primary.url
                    record = await registry.manifests.get(REPO, pushed.digest)
                    assert record.payload is not None
                    await registry.manifests.put(REPO, "mine", record.payload,
                                                 record.media_type)

                remote.then = promote_then_push
                await registry.replica.save(None, {})  # the next step compares in full
                await asyncio.wait_for(follower.run(until_caught_up=True), 60)
            assert await registry.replica.tags(REPO) == {"a": pushed.digest,
                                                         "mine": pushed.digest}
        finally:
            await close_registry(registry)
    finally:
        primary.stop()


async def test_indexes_nested_deeper_than_the_stack_replicate(tmp_path: Path) -> None:
    """A pusher nests indexes as deep as it likes (each pushed after its child): the
    comparison walks them without recursion (1,500 levels raised RecursionError, and the
    comparison failed the same way at every attempt, the replica never in step)."""
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            pushed = push_image(client, REPO, "base")
            body, media_type = pushed.payload, pushed.media_type
            for level in range(1, 1501):
                body = canonical({"schemaVersion": 2, "mediaType": INDEX,
                                  "manifests": [descriptor(media_type, body)]})
                media_type = INDEX
                reference = "top" if level == 1500 else str(Digest.of(body))
                assert put_manifest(client, REPO, reference, body, INDEX).status_code == 201
        settings = load_settings(env={}, overrides={
            "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
        registry = await open_registry(settings)
        try:
            async with RegistryClient(primary.url) as remote:
                await Follower(registry, remote, primary.url)._compare_repository(REPO)
            assert await registry.replica.tags(REPO) == {"base": pushed.digest,
                                                         "top": str(Digest.of(body))}
            assert len(await registry.replica.manifest_digests(REPO)) == 1501
        finally:
            await close_registry(registry)
    finally:
        primary.stop()
