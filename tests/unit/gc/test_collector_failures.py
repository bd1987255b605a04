"""A collection goes on past a step that fails, and reports it (real stores in tmp_path)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.registry import Registry
from dockyard.core.uploads import Chunk
from dockyard.gc.collector import Collector
from dockyard.gc.fsck import Fsck
from dockyard.gc.scheduler import collect_once
from dockyard.oci.digest import Digest
from dockyard.oci.errors import NameUnknown, StorageFull, StorageUnavailable
from dockyard.storage import layout

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_collection_goes_on_past_a_failed_step(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        digests = []
        for i in range(3):
            data = f"blob {i}".encode()
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            record = await registry.uploads.start("repo")
            await registry.uploads.finish("repo", record.id, digest, _body(data),
                                          Chunk(length=len(data)))
            await registry.blobs.delete("repo", digest)  # nothing links it any more
            digests.append(digest)
        await asyncio.sleep(0.01)
        collector = Collector(registry, grace=0)
        begin = collector.lifecycle.begin_blob_deletion

        async def first_fails(digest: str, cutoff: float) -> int | None:
            if digest == str(digests[0]):
                raise StorageFull("insufficient storage: the disk is full")
            return await begin(digest, cutoff)

        monkeypatch.setattr(collector.lifecycle, "begin_blob_deletion", first_fails)
        report = await collector.run()
        assert report.failed == 1
        assert report.errors == [f"deleting the row of {digests[0]}: "
                                 "insufficient storage: the disk is full"]
        assert report.blobs_deleted == 2
        on_disk = [(tmp_path / "data" / layout.blob_key(d)).exists() for d in digests]
        assert on_disk == [True, False, False]
        assert report.to_json()["failed"] == 1
    finally:
        await close_registry(registry)


async def _tagged(registry: Registry, name: str, tag: str) -> str:
    """An image (a config, no layers) pushed as `name:tag` through core; its digest."""
    config = f'{{"architecture":"amd64","os":"linux","name":"{name}:{tag}"}}'.encode()
    digest = Digest.parse("sha256:" + hashlib.sha256(config).hexdigest())
    await registry.uploads.upload(name, None, digest, _body(config), Chunk(length=len(config)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(digest), "size": len(config)}, "layers": []}).encode()
    await registry.manifests.put(name, tag, manifest, OCI_MANIFEST)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


async def test_failed_retention_and_pull_times_do_not_skip_the_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a failure in retention (one repository) or in writing pull times escaped from
    # the scheduled run: nothing was collected for a whole interval, the other
    # repositories' rules were not applied, and the pull times gathered were dropped
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "gc.grace": "0s", "retention.rules": [{"repositories": "**", "keep_last": 0}]})
    registry = await open_registry(settings)
    try:
        for name in ("a/app", "b/app"):
            await _tagged(registry, name, "v1")
        garbage = b"unlinked"
        gone = Digest.parse("sha256:" + hashlib.sha256(garbage).hexdigest())
        await registry.uploads.upload("c/app", None, gone, _body(garbage),
                                      Chunk(length=len(garbage)))
        await registry.blobs.delete("c/app", gone)
        registry.pulls.record("a/app", "v1")
        await asyncio.sleep(0.01)
        delete_tag = registry.lifecycle.delete_tag_if_unchanged
        names = dict(await registry.lifecycle.repositories())

        async def refused_in_a(repo_id: int, tag: str, at: float) -> bool:
            if names[repo_id] == "a/app":
                raise StorageFull("insufficient storage: the disk is full")
            return await delete_tag(repo_id, tag, at)

        async def down(batch: object) -> int:
            raise StorageFull("insufficient storage: the disk is full")

        monkeypatch.setattr(registry.lifecycle, "delete_tag_if_unchanged", refused_in_a)
        record_pulls = registry.pulls.store.record_pulls
        monkeypatch.setattr(registry.pulls.store, "record_pulls", down)

        report = await collect_once(registry, settings)

        # pull times unwritten: no retention this run (a rule on pulls would judge by
        # stale times), the collection still runs
        assert report is not None
        assert report.failed == 2
        assert report.errors == [
            "writing pull times: insufficient storage: the disk is full",
            "retention skipped: the pull times are not written"]
        assert not (tmp_path / "data" / layout.blob_key(gone)).exists()  # collected
        assert await registry.manifests.tags("b/app", None, None) == ["v1"]
        monkeypatch.setattr(registry.pulls.store, "record_pulls", record_pulls)

        report = await collect_once(registry, settings)

        assert report is not None
        assert report.errors == ["retention of a/app: insufficient storage: the disk is full"]
        with pytest.raises(NameUnknown):  # b's rule ran: its tag, then all of it, went
            await registry.manifests.tags("b/app", None, None)
        assert await registry.manifests.tags("a/app", None, None) == ["v1"]
        assert await registry.pulls.flush() == 0  # the pull time kept was written
    finally:
        await close_registry(registry)


async def test_fsck_says_when_removing_an_orphan_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the removal's failure was counted in a collector report fsck threw away: the
    # finding still said the orphan was given to the collector, as if all went well
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        orphans = []
        for i in range(2):
            data = f"orphan {i}".encode()
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            path = tmp_path / "data" / layout.blob_key(digest)
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
            orphans.append(digest)
        delete_bytes = registry.blobs.delete_bytes

        async def refuse_first(digests: list[Digest]) -> dict[Digest, Exception]:
            kept = [d for d in digests if d != orphans[0]]
            failed: dict[Digest, Exception] = dict(await delete_bytes(kept))
            if orphans[0] in digests:
                failed[orphans[0]] = StorageUnavailable("the store refused: AccessDenied")
            return failed

        monkeypatch.setattr(registry.blobs, "delete_bytes", refuse_first)
        report = await Fsck(registry, grace=0, repair=True).run()
        repairs = {f.subject: f.repair for f in report.findings}
        assert repairs[str(orphans[1])] == "removed"
        assert repairs[str(orphans[0])] == (
            f"given to the collector; removing it now failed (deleting {orphans[0]}: "
            "the store refused: AccessDenied)")
    finally:
        await close_registry(registry)


async def test_unlinked_blobs_are_read_a_page_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every unlinked blob was read into one list: millions after a large deletion
    from dockyard.gc import collector as collector_module

    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        digests = []
        for i in range(25):
            data = f"page blob {i}".encode()
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            await registry.uploads.upload("repo", None, digest, _body(data),
                                          Chunk(length=len(data)))
            await registry.blobs.delete("repo", digest)
            digests.append(digest)
        await asyncio.sleep(0.01)
        monkeypatch.setattr(collector_module, "PAGE", 10)
        pages: list[int] = []
        read = registry.lifecycle.unlinked_blobs

        async def counted(cutoff: float, **kw: object) -> list[tuple[str, int]]:
            page = await read(cutoff, **kw)  # type: ignore[arg-type]
            pages.append(len(page))
            return page

        monkeypatch.setattr(registry.lifecycle, "unlinked_blobs", counted)
        dry = await Collector(registry, grace=0).run(dry_run=True)
        assert dry.blobs_deleted == 25
        report = await Collector(registry, grace=0).run()
        assert report.failed == 0, report.errors
        assert report.blobs_deleted == 25
        assert max(pages) == 10
        assert not any((tmp_path / "data" / layout.blob_key(d)).exists() for d in digests)
    finally:
        await close_registry(registry)
