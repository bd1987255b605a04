"""Deep chains of referrers and indexes are collected in one pass: each manifest is
tried once, subjects and indexes before what they keep (real SQLite and filesystem)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.uploads import Chunk
from dockyard.gc.collector import Collector, deletion_order
from dockyard.metadata.lifecycle import ManifestNode
from dockyard.oci.digest import Digest
from dockyard.oci.errors import ManifestUnknown, NameUnknown

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _digest(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def _manifest(n: int, subject: bytes | None, media_type: str = OCI_MANIFEST) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST,
                   "size": 2}, "layers": [], "annotations": {"n": str(n)}}
    if subject is not None:
        doc["subject"] = {"mediaType": media_type, "digest": _digest(subject),
                          "size": len(subject)}
    return json.dumps(doc).encode()


def _index(n: int, child: bytes, media_type: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": media_type, "digest": _digest(child), "size": len(child)}],
        "annotations": {"n": str(n)}}).encode()


def _node(i: int, *, subject: int | None = None, children: tuple[int, ...] = ()) -> ManifestNode:
    return ManifestNode(i, f"sha256:{i:064x}", 0.0, False,
                        None if subject is None else f"sha256:{subject:064x}",
                        tuple(f"sha256:{c:064x}" for c in children))


def test_subjects_and_indexes_come_before_what_they_keep() -> None:
    # listed in the worst order: the end of each chain first
    signatures = [_node(i, subject=i - 1 if i > 1 else None) for i in range(50, 0, -1)]
    indexes = [_node(100 + i, children=(100 + i + 1,)) for i in range(30, -1, -1)]
    shared = [_node(200), _node(201, children=(200,)), _node(202, children=(200, 201))]
    order = deletion_order(signatures + indexes + shared)
    place = {n.id: k for k, n in enumerate(order)}
    assert sorted(place) == sorted(n.id for n in signatures + indexes + shared)
    assert all(place[i - 1] < place[i] for i in range(2, 51))
    assert all(place[100 + i] < place[100 + i + 1] for i in range(30))
    assert place[202] < place[201] < place[200]


@pytest.mark.parametrize("kind", ["signatures", "indexes"])
async def test_a_deep_chain_is_collected_trying_each_manifest_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """300 signatures each of the one before (or 300 indexes each of the next), none
    tagged: one collection deletes them all with 301 tries, where it retried what was
    left until the chain ended (N²/4 transactions: 231 s for a chain of 1,000)."""
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        await registry.uploads.upload("chain", None, Digest.parse(EMPTY_DIGEST), _body(EMPTY),
                                      Chunk(length=len(EMPTY)))
        pushed: list[bytes] = [_manifest(0, None)]
        media = [OCI_MANIFEST]
        for n in range(1, 301):
            if kind == "signatures":
                pushed.append(_manifest(n, pushed[-1]))
                media.append(OCI_MANIFEST)
            else:
                pushed.append(_index(n, pushed[-1], media[-1]))
                media.append(OCI_INDEX)
        for payload, media_type in zip(pushed, media, strict=True):
            await registry.manifests.put("chain", _digest(payload), payload, media_type)
        await asyncio.sleep(0.01)
        collector = Collector(registry, grace=0)
        tries = 0
        delete = collector.lifecycle.delete_dead_manifest

        async def counted(*args: object, **kwargs: object) -> bool:
            nonlocal tries
            tries += 1
            return await delete(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(collector.lifecycle, "delete_dead_manifest", counted)
        report = await collector.run()
        assert report.failed == 0, report.errors
        assert report.repo("chain").manifests == 301
        assert tries == 301
        for payload in (pushed[0], pushed[150], pushed[-1]):
            with pytest.raises((ManifestUnknown, NameUnknown)):
                await registry.manifests.get("chain", _digest(payload))
    finally:
        await close_registry(registry)
