"""`fsck --repair` removes orphan bytes under the collector's lease (real stores): a push
of a digest being deleted waits only while that lease is held, and went through fsck's
deletion, then lost its bytes to it (201, then BLOB_UNKNOWN)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.core.lifecycle import GC_LEASE
from dockyard.gc.collector import Collector
from dockyard.gc.fsck import Fsck
from dockyard.oci.digest import Digest
from dockyard.storage import layout


def _orphan(data: Path, text: str) -> Digest:
    payload = text.encode()
    digest = Digest.parse("sha256:" + hashlib.sha256(payload).hexdigest())
    path = data / layout.blob_key(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return digest


@pytest.mark.parametrize("collecting", [False, True])
async def test_orphans_are_removed_under_the_collectors_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collecting: bool) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        orphan = _orphan(tmp_path / "data", "an orphan")
        holders: list[str | None] = []
        remove = Collector.remove_unlinked

        async def watched(self: Collector, digests: list[str]) -> list[tuple[str, int]]:
            held = await registry.leases.holder_of(GC_LEASE)
            holders.append(None if held is None else held[0])
            return await remove(self, digests)

        monkeypatch.setattr(Collector, "remove_unlinked", watched)
        if collecting:  # a collection runs elsewhere: the orphan is left to it
            assert await registry.leases.backend.acquire(GC_LEASE, "elsewhere:1:x:", 60)
        report = await Fsck(registry, grace=0, repair=True).run()
        [finding] = [f for f in report.findings if f.kind == "orphan_blob"]
        if collecting:
            assert holders == []
            assert finding.repair == "given to the collector (removed after gc.grace)"
            assert (tmp_path / "data" / layout.blob_key(orphan)).exists()
        else:
            assert holders == [registry.leases.holder]
            assert finding.repair == "removed"
            assert not (tmp_path / "data" / layout.blob_key(orphan)).exists()
            assert await registry.leases.holder_of(GC_LEASE) is None  # released
    finally:
        await close_registry(registry)
