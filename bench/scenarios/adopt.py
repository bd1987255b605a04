"""Scenario 9: adopting a large Distribution registry — `dockyard import`, then `fsck`.

Setup (untimed): a Distribution tree of `repositories` x `tags per repository` images
written directly as files in the shape `docker-registry` writes (`bench/distribution_tree.py`):
2,000 repositories and 20,000 tags in the full run.

Timed, Dockyard: `dockyard import --distribution TREE` with the data directory at the
tree's `docker/registry/v2` (in place: no byte moves), then `dockyard fsck` without
`--verify-digests` on the result. Distribution has no import; its nearest counterpart of
the check is `docker-registry garbage-collect --dry-run` (it reads every repository's
manifests and marks their blobs), timed on the same tree as the check figure.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from bench.config import Settings
from bench.distribution_tree import TreeShape, write_tree
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch
from bench.servers import DOCKER_REGISTRY


def _dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dockyard", *args], capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)


class Adoption(Scenario):
    number = 10
    name = "adopt"
    title = "import a Distribution tree, then check it"
    metrics = (
        MetricSpec("adopt.import", "dockyard import (2,000 repos, 20,000 tags)", "s", "lower",
                   1),
        MetricSpec("adopt.tags", "tags imported per second", "tags/s", "higher", 0),
        MetricSpec("adopt.check", "fsck (Distribution: garbage-collect --dry-run)", "s",
                   "lower", 2),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.shape = TreeShape(200, 10) if settings.quick else TreeShape(2000, 10)

    async def run(self, ctx: Context) -> Outcome:
        target = ctx.target
        assert target.data is not None
        tree = target.data.parent / "tree"
        writer = await asyncio.to_thread(write_tree, tree, self.shape)
        tags = self.shape.repositories * self.shape.tags_per_repository
        notes = {"tree": f"{self.shape.repositories} repositories, {tags} tags, "
                         f"{writer.blobs} blobs, {writer.links} link files"}
        if target.name == "distribution":
            cfg = tree.parent / "gc.yml"
            cfg.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tree}\n")
            with Stopwatch() as walk:
                await asyncio.to_thread(
                    subprocess.run, [DOCKER_REGISTRY, "garbage-collect", "--dry-run", str(cfg)],
                    check=True, capture_output=True, timeout=900)
            return Outcome({"adopt.check": walk.seconds}, notes)
        data = tree / "docker" / "registry" / "v2"
        with Stopwatch() as imported:
            proc = await asyncio.to_thread(_dockyard, "import", "--data", str(data),
                                           "--distribution", str(tree), "--json")
        if proc.returncode != 0:
            raise RuntimeError(f"dockyard import failed: {proc.stderr[-2000:]}")
        report = json.loads(proc.stdout)
        if report["tags"] != tags:
            raise RuntimeError(f"imported {report['tags']} tags of {tags}")
        with Stopwatch() as checked:
            proc = await asyncio.to_thread(_dockyard, "fsck", "--data", str(data), "--json")
        if proc.returncode != 0:
            raise RuntimeError(f"fsck found problems: {proc.stdout[-2000:]}")
        notes["import"] = (f"{report['manifests']} manifests, {report['blobs']} blobs in place,"
                           f" {report['handed_to_collector']} unused blobs handed to the "
                           f"collector; the command's own figure {report['duration']:.1f} s")
        notes["fsck"] = f"{json.loads(proc.stdout)['duration']:.2f} s inside the command"
        return Outcome({"adopt.import": imported.seconds,
                        "adopt.tags": tags / imported.seconds,
                        "adopt.check": checked.seconds}, notes)
