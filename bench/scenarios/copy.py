"""Scenario 9: `dockyard copy` against `skopeo copy`, same content, same two registries.

The registry under test is the destination; the source is a CNCF Distribution started by
the scenario (untimed, like the content it is seeded with). Each tool copies into its own
fresh repository (skopeo with an empty blob-info cache, so it cannot mount one tool's
blobs into the other's repository), skopeo first, then Dockyard. Timed: the whole
command, process start included, as a user runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from bench.config import MB, MiB, Settings
from bench.content import BlobSource
from bench.registry import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    Descriptor,
    Registry,
    RegistryError,
    client_session,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited
from bench.servers import start_distribution

PLATFORMS = (("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x"))
INSECURE = ("--src-tls-verify=false", "--dest-tls-verify=false")


async def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env={**os.environ, **(env or {})})
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RegistryError(f"{' '.join(argv[:4])}... exited {proc.returncode}: "
                            f"{err.decode(errors='replace')[-1500:]}")
    return out.decode(errors="replace")


class CopyTools(Scenario):
    number = 9
    name = "copy"
    title = "dockyard copy vs skopeo copy"
    metrics = (
        MetricSpec("copy.image.dockyard", "dockyard copy, one image", "s", "lower", 2),
        MetricSpec("copy.image.skopeo", "skopeo copy, same image", "s", "lower", 2),
        MetricSpec("copy.image.speedup", "image: skopeo time / dockyard time", "x",
                   "higher", 2),
        MetricSpec("copy.index.dockyard", "dockyard copy, 3-platform index", "s", "lower", 2),
        MetricSpec("copy.index.skopeo", "skopeo copy --all, same index", "s", "lower", 2),
        MetricSpec("copy.index.speedup", "index: skopeo time / dockyard time", "x",
                   "higher", 2),
        MetricSpec("copy.noop", "dockyard copy --all-tags, nothing to do", "s", "lower", 2),
    )

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sizes = settings.sizes
        self.layers = [BlobSource.create(sizes.copy_layer_size)
                       for _ in range(sizes.copy_layers)]
        self.platform_layers = [[BlobSource.create(sizes.copy_platform_layer_size)
                                 for _ in range(sizes.copy_platform_layers)]
                                for _ in PLATFORMS]

    async def _image(self, registry: Registry, repo: str, layers: list[BlobSource],
                     label: str) -> bytes:
        await gather_limited(4, [partial(registry.push_monolithic, repo, layer)
                                 for layer in layers])
        config = await registry.push_bytes(repo, image_config([x.digest for x in layers], label))
        return image_manifest(Descriptor(OCI_CONFIG, config.digest, config.size),
                              [Descriptor(OCI_LAYER, x.digest, x.size) for x in layers])

    async def _seed(self, source: Registry, tags: int) -> None:
        await source.put_manifest("src/image", "v1",
                                  await self._image(source, "src/image", self.layers, "image"))
        children = []
        for (os_name, arch), layers in zip(PLATFORMS, self.platform_layers, strict=True):
            body = await self._image(source, "src/index", layers, arch)
            digest = await source.put_manifest("src/index", f"{arch}-only", body)
            children.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "digest": digest, "size": len(body),
                             "platform": {"os": os_name, "architecture": arch}})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": children}).encode()
        await source.put_manifest("src/index", "v1", index, OCI_INDEX)

        async def tag(n: int) -> None:
            layer = await source.push_bytes("src/tags", os.urandom(4096))
            config = await source.push_bytes("src/tags", image_config([layer.digest], str(n)))
            body = image_manifest(Descriptor(OCI_CONFIG, config.digest, config.size),
                                  [Descriptor(OCI_LAYER, layer.digest, layer.size)])
            await source.put_manifest("src/tags", f"t{n:03d}", body)

        await gather_limited(self.settings.sizes.setup_concurrency,
                             [partial(tag, n) for n in range(tags)])

    async def run(self, ctx: Context) -> Outcome:
        sizes = ctx.settings.sizes
        assert ctx.target.data is not None
        work = ctx.target.data.parent / "copy"
        source_server = start_distribution(work / "source")
        skopeo_root = Path(tempfile.mkdtemp(prefix="skopeo-", dir=work))
        try:
            async with client_session() as session:
                source = Registry(session, source_server.url)
                await self._seed(source, sizes.copy_tags)
                src, dst = source_server.url.split("//")[1], ctx.target.url.split("//")[1]

                async def skopeo(*args: str) -> float:
                    cache = Path(tempfile.mkdtemp(dir=skopeo_root))
                    policy = cache / "policy.json"
                    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
                    with Stopwatch() as clock:
                        await _run(shutil.which("skopeo") or "skopeo", "--policy", str(policy),
                                   "--tmpdir", str(cache), "copy", *INSECURE,
                                   "--preserve-digests", *args,
                                   env={"XDG_DATA_HOME": str(cache), "HOME": str(cache),
                                        "_CONTAINERS_ROOTLESS_UID": "1000"})
                    return clock.seconds

                async def dockyard(*args: str) -> tuple[float, str]:
                    with Stopwatch() as clock:
                        out = await _run(sys.executable, "-m", "dockyard", "copy", *INSECURE,
                                         *args)
                    return clock.seconds, out

                values: dict[str, float] = {}
                for kind, extra in (("image", ()), ("index", ("--all",))):
                    values[f"copy.{kind}.skopeo"] = await skopeo(
                        *extra, f"docker://{src}/src/{kind}:v1",
                        f"docker://{dst}/skopeo/{kind}:v1")
                    values[f"copy.{kind}.dockyard"], _ = await dockyard(
                        f"{src}/src/{kind}:v1", f"{dst}/dockyard/{kind}:v1")
                    want = (await source.head_manifest(f"src/{kind}", "v1"))[
                        "Docker-Content-Digest"]
                    for tool in ("skopeo", "dockyard"):
                        got = (await Registry(session, ctx.target.url).head_manifest(
                            f"{tool}/{kind}", "v1"))["Docker-Content-Digest"]
                        if got != want:
                            raise RegistryError(f"{tool} copied {kind} as {got}, not {want}")
                    values[f"copy.{kind}.speedup"] = (values[f"copy.{kind}.skopeo"]
                                                      / values[f"copy.{kind}.dockyard"])

                await dockyard("--all-tags", f"{src}/src/tags", f"{dst}/dockyard/tags")
                values["copy.noop"], summary = await dockyard(
                    "--all-tags", f"{src}/src/tags", f"{dst}/dockyard/tags")
                if "blobs 0 copied" not in summary:
                    raise RegistryError(f"the re-copy copied something: {summary}")
        finally:
            source_server.stop()
        image_mb = sizes.copy_layers * sizes.copy_layer_size / MB
        index_mb = len(PLATFORMS) * sizes.copy_platform_layers * sizes.copy_platform_layer_size
        return Outcome(values=values, notes={"copy": (
            f"image {sizes.copy_layers} x {sizes.copy_layer_size // MiB} MiB "
            f"({image_mb / values['copy.image.dockyard']:.0f} MB/s dockyard, "
            f"{image_mb / values['copy.image.skopeo']:.0f} MB/s skopeo); index "
            f"{len(PLATFORMS)} platforms x {sizes.copy_platform_layers} x "
            f"{sizes.copy_platform_layer_size // MiB} MiB ({index_mb / MB:.0f} MB); "
            f"no-op re-copy of {sizes.copy_tags} tags; source: Distribution; "
            "dockyard copy --jobs 4 (default)")})

