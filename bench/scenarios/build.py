"""Scenario 10: `dockyard build` of the test catalogue (tests/e2e/builder_catalogue).

Setup (untimed): a busybox base made with umoci, copied into the registry with skopeo;
the catalogue copied into a git checkout. Timed, each as the whole `dockyard build`
process: a full build with `--jobs 1` and with `--jobs 2` (`--no-cache`, each in an empty
image store, nothing pushed), then, after a push, the rebuild of the unchanged catalogue
(target: under 2 s and no engine call: every image skipped on its key).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario

CATALOGUE = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "builder_catalogue"


class CatalogueBuild(Scenario):
    number = 12
    name = "build"
    title = "dockyard build of the test catalogue"
    min_timeout = 1800.0  # four builds of nine images with a real engine
    metrics = (
        MetricSpec("build.jobs1", "full build, --jobs 1", "s", "lower", 1),
        MetricSpec("build.jobs2", "full build, --jobs 2", "s", "lower", 1),
        MetricSpec("build.speedup", "speed-up of --jobs 2", "x", "higher", 2),
        MetricSpec("build.nochange", "rebuild of the unchanged catalogue", "s", "lower", 2),
    )

    async def run(self, ctx: Context) -> Outcome:
        host = ctx.target.url.split("://", 1)[1].rstrip("/")
        parent = ctx.target.data.parent if ctx.target.data else None
        return await asyncio.to_thread(self._measure, host, parent)

    def _measure(self, host: str, parent: Path | None) -> Outcome:
        from tests.support.images import busybox_layout

        work = Path(tempfile.mkdtemp(prefix="bench-build-", dir=parent))
        try:
            layout = busybox_layout(work / "busybox", "latest")
            subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                            f"oci:{layout.path}:latest",
                            f"docker://{host}/upstream/busybox:latest"],
                           check=True, capture_output=True)
            catalogue = work / "catalogue"
            shutil.copytree(CATALOGUE, catalogue)
            subprocess.run(["git", "init", "-q", str(catalogue)], check=True)
            subprocess.run(["git", "-C", str(catalogue), "add", "-A"], check=True)
            subprocess.run(["git", "-C", str(catalogue), "-c", "user.name=b", "-c",
                            "user.email=b@example.invalid", "commit", "-qm", "c"],
                           check=True)

            def build(store: str, *args: str) -> tuple[float, dict[str, object]]:
                argv = [sys.executable, "-m", "dockyard", "build", "--catalogue",
                        str(catalogue), "--registry", host, "--image-prefix", "bench",
                        "--work-dir", str(work / "work"), "--storage", str(work / store),
                        "--json", *args]
                env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")}
                start = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=env)
                took = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"dockyard build failed:\n{proc.stderr[-3000:]}")
                return took, json.loads(proc.stdout)

            jobs1, _ = build("store-1", "--no-cache", "--jobs", "1", "--no-sbom")
            jobs2, _ = build("store-2", "--no-cache", "--jobs", "2", "--no-sbom")
            build("store-2", "--jobs", "2", "--push", "--no-sbom")
            nochange, report = build("store-2", "--push", "--no-sbom")
            images = report["images"]
            assert isinstance(images, list)
            skipped = sum(1 for i in images if i["result"] == "skipped")
            return Outcome(
                values={"build.jobs1": jobs1, "build.jobs2": jobs2,
                         "build.speedup": jobs1 / jobs2, "build.nochange": nochange},
                notes={"images": str(len(images)),
                       "skipped on rebuild": f"{skipped}/{len(images)}"})
        finally:
            shutil.rmtree(work, ignore_errors=True)
