"""A replica against a real primary: a tag that vanishes between the comparison's listing
and its look at it deletes nothing else (one failed look used to read as "the
repository has no tags", and the replica deleted every tag of it); a blob body longer
than its descriptor is not read past the descriptor's size; indexes nested 1,500 deep
replicate (no recursion); a pusher longer than a replica keeps is written once, not at
every comparison."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.registry import Registry
from dockyard.oci.digest import Digest
from dockyard.oci.errors import RegistryError
from dockyard.remote.client import ManifestInfo, RegistryClient, RegistryClientError, TagTime
from dockyard.replica.follower import IDLE_PAUSE, IDLE_STEPS, Follower
from tests.support.oci_api import canonical, descriptor, push_blob, push_image, put_manifest
from tests.support.servers import start_dockyard

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@asynccontextmanager
async def replica_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """The replica's own stores, under `tmp_path/replica`, closed after."""
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "replica")})
    registry = await open_registry(settings)
    try:
        yield registry
    finally:
        await close_registry(registry)


class RacingClient(RegistryClient):
    """A real client whose next look at tag `vanish` first deletes it at the primary:
    the race of a delete landing between a comparison's listing and its look. It asks
    as the client of a primary older than `/admin/v1/tags/<name>` (which names each
    tag's digest in the listing itself, so that there is no look to race)."""

    vanish: str | None = None

    async def tag_times(self, name: str) -> None:
        return None

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
        async with replica_registry(tmp_path) as registry, \
                RacingClient(primary.url) as remote:
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
        async with replica_registry(tmp_path) as registry, \
                PaddingClient(primary.url) as remote:
            follower = Follower(registry, remote, primary.url)
            with pytest.raises(RegistryError):
                await asyncio.wait_for(follower.ensure_manifest(REPO, pushed.digest), 30)
            assert remote.padded <= 1 << 20  # stopped at the size, not at the end
            assert await registry.replica.tags(REPO) == {}
            assert not list((tmp_path / "replica").glob("blobs/**/data"))
            assert (await registry.operations.state(fresh=True)).upload_sessions == 0
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
        async with replica_registry(tmp_path) as registry, \
                RegistryClient(primary.url) as remote:
            follower = Follower(registry, remote, primary.url)
            assert await asyncio.wait_for(follower.ensure_manifest(REPO, digest), 30)
            got = await registry.blobs.stat(REPO, Digest.parse(layer_digest))
            assert got.size == len(layer)
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
        async with replica_registry(tmp_path) as registry, \
                PromotingClient(primary.url) as remote:
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
        async with replica_registry(tmp_path) as registry, \
                RegistryClient(primary.url) as remote:
            await Follower(registry, remote, primary.url)._compare_repository(REPO)
            assert await registry.replica.tags(REPO) == {"base": pushed.digest,
                                                         "top": str(Digest.of(body))}
            assert len(await registry.replica.manifest_digests(REPO)) == 1501
    finally:
        primary.stop()


class OlderPrimaryClient(RegistryClient):
    """A real client that asks as the client of a primary older than
    `/admin/v1/tags/<name>`: tags list, a HEAD per tag, no push times."""

    async def tag_times(self, name: str) -> None:
        return None


async def test_a_replica_keeps_its_primarys_tag_times_so_keep_last_keeps_the_same_tags(
        tmp_path: Path) -> None:
    """A full comparison set every tag at the time it ran, in the listing's (lexical)
    order, so on a replica promoted after it `keep_last` kept the lexically last tags
    and deleted the newest. Now the comparison and the feed copy each tag's push time,
    and a comparison corrects the times an older one wrote."""
    from dockyard.gc.retention import apply_retention, configured_rules

    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            for tag in ("c", "b", "a"):  # "a" is the newest, and first by name
                push_image(client, REPO, tag)
                await asyncio.sleep(0.05)

            def theirs() -> dict[str, tuple[str, float]]:
                r = client.get(f"/admin/v1/tags/{REPO}")
                assert r.status_code == 200, r.text
                return {t["tag"]: (t["digest"], t["pushed_at"]) for t in r.json()["tags"]}

            first = theirs()
            assert sorted(first) == ["a", "b", "c"]
            assert first["c"][1] < first["b"][1] < first["a"][1]
            settings = load_settings(env={}, overrides={
                "storage.filesystem.rootdirectory": str(tmp_path / "replica"),
                "retention": {"rules": [{"repositories": "**", "keep_last": 1}]}})
            registry = await open_registry(settings)
            try:
                def ours(timed: dict[str, Any]) -> dict[str, tuple[str, float]]:
                    return {t: (r.digest, r.pushed_at) for t, r in timed.items()}

                async with OlderPrimaryClient(primary.url) as old:
                    await Follower(registry, old, primary.url)._compare_repository(REPO)
                compared = ours(await registry.replica.timed_tags(REPO))
                assert {t: d for t, (d, _) in compared.items()} == {
                    t: d for t, (d, _) in first.items()}
                async with RegistryClient(primary.url) as remote:
                    follower = Follower(registry, remote, primary.url)
                    await follower._compare_repository(REPO)
                    assert ours(await registry.replica.timed_tags(REPO)) == first
                    rules = configured_rules(settings)
                    report = await apply_retention(registry.lifecycle, rules, dry_run=True)
                    assert report.deleted == {REPO: ["b", "c"]}
                    # a tag set through the feed gets the event's time, the primary's
                    await follower.run(until_caught_up=True)  # a cursor, at the head
                    assert await registry.replica.cursor() is not None
                    push_image(client, REPO, "0")
                    await follower.run(until_caught_up=True)
                    now = theirs()
                    assert sorted(now) == ["0", "a", "b", "c"]
                    assert ours(await registry.replica.timed_tags(REPO)) == now
                    report = await apply_retention(registry.lifecycle, rules, dry_run=True)
                    assert report.deleted == {REPO: ["a", "b", "c"]}
            finally:
                await close_registry(registry)
    finally:
        primary.stop()


async def test_a_full_comparison_reports_its_progress(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison reports, every `REPORT_EVERY` seconds (here: after each repository),
    how many repositories it compared: its status stays fresh, so an alert on a
    follower that stopped reporting does not fire on a long comparison, and the admin
    API shows how far it got."""
    from dockyard.replica import follower as follower_module

    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            for repo in ("p/one", "p/two", "p/three"):
                push_image(client, repo, "v1")
        async with replica_registry(tmp_path) as registry:
            monkeypatch.setattr(follower_module, "REPORT_EVERY", 0.0)
            saved: list[dict[str, Any]] = []
            save = registry.replica.save

            async def recording(cursor: int | None, status: dict[str, Any]) -> None:
                saved.append(status)
                await save(cursor, status)

            monkeypatch.setattr(registry.replica, "save", recording)
            async with RegistryClient(primary.url) as remote:
                await Follower(registry, remote, primary.url).compare(0)
            assert [(s["state"], s.get("repositories_compared"), s.get("repositories"))
                    for s in saved] == [("comparing", None, None), ("comparing", 1, 3),
                                        ("comparing", 2, 3), ("comparing", 3, 3),
                                        ("following", None, None)]
            status = await registry.replica.status()
            assert status["state"] == "following"
            assert sorted(await registry.repositories.catalog(None, None)) == [
                "p/one", "p/three", "p/two"]
    finally:
        primary.stop()


class LongPusherClient(RegistryClient):
    """A real client of a primary whose tag listing names a pusher longer than a
    replica keeps (an older Dockyard on SQLite recorded whole account names)."""

    pusher = "svc-" + "x" * 296

    async def tag_times(self, name: str) -> list[TagTime] | None:
        found = await super().tag_times(name)
        return None if found is None else [replace(t, pushed_by=self.pusher) for t in found]


async def test_a_pusher_longer_than_kept_is_written_once_not_at_every_comparison(
        tmp_path: Path) -> None:
    """The replica keeps the first 255 characters of a longer pusher; a later comparison
    sees the tag as it is, where each one wrote it again (a new event in the replica's
    feed every time)."""
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            push_image(client, REPO, "a")
        async with replica_registry(tmp_path) as registry, \
                LongPusherClient(primary.url) as remote:
            follower = Follower(registry, remote, primary.url)
            await follower._compare_repository(REPO)
            head = (await registry.feed.changes(0, 1000)).head
            kept = {t: r.pushed_by
                    for t, r in (await registry.replica.timed_tags(REPO)).items()}
            assert kept == {"a": LongPusherClient.pusher[:255]}
            await follower._compare_repository(REPO)
            assert (await registry.feed.changes(0, 1000)).head == head
    finally:
        primary.stop()


class AheadClient(RegistryClient):
    """A real client of a primary whose feed, once the replica has caught up, says its
    head is further on but lists no event past the cursor, every time it is asked."""

    asked = 0

    async def events(self, after: int, limit: int, wait: float) -> dict[str, Any]:
        page = await super().events(after, limit, wait)
        if after and not page["events"]:
            self.asked += 1
            page = {**page, "head": after + 5}
        return page


async def test_a_feed_that_lists_nothing_before_its_head_fails_the_step_after_pauses(
        tmp_path: Path) -> None:
    """The follower asked again without pause, for good (`--once` never ended); now it
    pauses between such answers, and after `IDLE_STEPS` of them the step fails (the
    server's follower retries with backoff; `--once` ends with the message)."""
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            push_image(client, REPO, "a")
        async with replica_registry(tmp_path) as registry, AheadClient(primary.url) as remote:
            follower = Follower(registry, remote, primary.url)
            await follower.step(0.0)  # the first comparison sets the cursor
            started = time.monotonic()
            with pytest.raises(RegistryClientError, match="answered no event after"):
                await asyncio.wait_for(follower.run(until_caught_up=True), 30)
            assert remote.asked == IDLE_STEPS
            assert time.monotonic() - started >= (IDLE_STEPS - 1) * IDLE_PAUSE
    finally:
        primary.stop()


async def test_the_lag_is_saved_before_the_first_event_of_a_page_is_applied(
        tmp_path: Path) -> None:
    """While one event took long (a large blob), the status said "0 behind" at the old
    head: the alert could not fire, and an operator about to promote was misled. The
    page's head and lag are saved before its first event is applied."""
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        with httpx.Client(base_url=primary.url, timeout=30) as client:
            push_image(client, REPO, "first")
            async with replica_registry(tmp_path) as registry, \
                    RegistryClient(primary.url) as remote:
                follower = Follower(registry, remote, primary.url)
                await follower.step(0.0)  # no cursor yet: compares in full
                assert (await registry.replica.status())["events_behind"] == 0
                for tag in ("a", "b", "c"):
                    push_image(client, REPO, tag)
                head = int((await remote.events(0, 0, 0))["head"])
                seen: list[dict[str, Any]] = []
                apply = follower.apply

                async def watched(event: dict[str, Any]) -> None:
                    if not seen:  # what the status says while the first event applies
                        seen.append(await registry.replica.status())
                    await apply(event)

                follower.apply = watched  # type: ignore[method-assign]
                assert await follower.step(0.0)
        [during] = seen
        assert during["head"] == head
        assert during["events_behind"] > 0, during
        assert during["seconds_behind"] is not None
    finally:
        primary.stop()


def _signature(client: httpx.Client, subject_digest: str, subject_size: int,
               subject_type: str, kind: str) -> str:
    """Push an artifact whose subject is that manifest; its digest."""
    push_blob(client, REPO, b"{}")
    payload = canonical({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
        "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"), "layers": [],
        "subject": {"mediaType": subject_type, "digest": subject_digest,
                    "size": subject_size}})
    digest = "sha256:" + __import__("hashlib").sha256(payload).hexdigest()
    assert put_manifest(client, REPO, digest, payload, OCI_MANIFEST).status_code == 201
    return digest


def _seed_referrers(url: str) -> dict[str, str]:
    """An index `multi` of two untagged platforms; a signature of one platform, an SBOM
    of the index and a signature of the SBOM. Their digests by name."""
    from tests.support.oci_api import index_of

    with httpx.Client(base_url=url, timeout=30) as client:
        amd64, arm64 = (push_image(client, REPO, f"p{i}") for i in range(2))
        index = index_of([amd64, arm64])
        assert put_manifest(client, REPO, "multi", index.payload,
                            index.media_type).status_code == 201
        for tag in ("p0", "p1"):  # the children untagged: the index keeps them
            assert client.delete(f"/v2/{REPO}/manifests/{tag}").status_code == 202
        on_child = _signature(client, arm64.digest, arm64.size, arm64.media_type,
                              "application/vnd.example.signature")
        sbom = _signature(client, index.digest, index.size, index.media_type,
                          "application/spdx+json")
        sbom_size = len(client.get(f"/v2/{REPO}/manifests/{sbom}",
                                   headers={"Accept": OCI_MANIFEST}).content)
        on_sbom = _signature(client, sbom, sbom_size, OCI_MANIFEST,
                             "application/vnd.example.signature")
    return {"index": index.digest, "arm64": arm64.digest, "on_child": on_child,
            "sbom": sbom, "on_sbom": on_sbom}


async def test_a_full_comparison_brings_referrers_of_children_and_of_referrers(
        tmp_path: Path) -> None:
    """A new replica (or one past `feed.keep`) compared in full fetched the referrers of
    each tagged manifest only: a signature of one platform of an index, and a signature
    of an SBOM, stayed on the primary alone."""
    primary = start_dockyard(tmp_path / "primary" / "data")
    try:
        d = _seed_referrers(primary.url)
        async with replica_registry(tmp_path) as registry, \
                RegistryClient(primary.url) as remote:
            await Follower(registry, remote, primary.url)._compare_repository(REPO)

            async def referrers(digest: str) -> list[str]:
                found, _ = await registry.manifests.referrers(
                    REPO, Digest.parse(digest), None, size=100)
                return [r.digest for r in found]

            assert await referrers(d["index"]) == [d["sbom"]]
            assert await referrers(d["arm64"]) == [d["on_child"]]
            assert await referrers(d["sbom"]) == [d["on_sbom"]]
    finally:
        primary.stop()
