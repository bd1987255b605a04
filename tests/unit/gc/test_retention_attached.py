"""Retention and the tags that attach things to a manifest (cosign's `sha256-<hex>.sig`,
`.att`, `.sbom`; the referrers fallback `sha256-<hex>`), on real stores in tmp_path."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import load_settings
from dockyard.gc.retention import apply_retention, configured_rules
from tests.unit.gc.test_collector_failures import _tagged


async def test_signatures_do_not_push_images_out_of_keep_last(tmp_path: Path) -> None:
    # ranked with the images, the newest tags of a signed repository were its
    # signatures: `keep_last: 2` deleted every image tag and kept two signatures
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "retention.rules": [{"repositories": "**", "keep_last": 2}]})
    registry = await open_registry(settings)
    try:
        digests = {}
        for tag in ("v1", "v2", "v3"):
            digests[tag] = await _tagged(registry, "team/app", tag)
            await asyncio.sleep(0.01)
        attached = [digests["v2"].replace(":", "-") + ".sig",
                    digests["v3"].replace(":", "-") + ".sig",
                    digests["v3"].replace(":", "-") + ".att",
                    digests["v3"].replace(":", "-"),
                    # names a manifest the repository does not hold (deleted since)
                    "sha256-" + "0" * 64 + ".sig"]
        for tag in attached:
            await _tagged(registry, "team/app", tag)
            await asyncio.sleep(0.01)

        report = await apply_retention(registry.lifecycle, configured_rules(settings))

        assert report.errors == []
        assert report.deleted == {"team/app": sorted(["v1", "sha256-" + "0" * 64 + ".sig"])}
        left = await registry.manifests.tags("team/app", None, None)
        assert sorted(left) == sorted(["v2", "v3", *attached[:4]])
    finally:
        await close_registry(registry)
