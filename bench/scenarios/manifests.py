"""Scenario 4: manifest GET and HEAD by tag at a fixed concurrency, driven by wrk (GET) and
ab (HEAD)."""

from __future__ import annotations

import os

from bench.loadgen import LoadResult, run_ab, run_wrk
from bench.procstats import CpuMeter
from bench.registry import (
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario

REPO = "bench/manifest"
TAG = "latest"


class ManifestRate(Scenario):
    number = 4
    name = "manifest"
    title = "manifest by tag"
    metrics = (
        MetricSpec("manifest.get", "GET by tag", "req/s", "higher", 0),
        MetricSpec("manifest.get.cpu", "GET: server CPU per request", "CPU ms/req", "lower", 3),
        MetricSpec("manifest.head", "HEAD by tag", "req/s", "higher", 0),
        MetricSpec("manifest.head.cpu", "HEAD: server CPU per request", "CPU ms/req", "lower", 3),
    )

    async def run(self, ctx: Context) -> Outcome:
        registry = ctx.registry
        sizes = ctx.settings.sizes
        layer = await registry.push_bytes(REPO, os.urandom(sizes.small_layer))
        config_bytes = image_config([layer.digest], "manifest")
        config = await registry.push_bytes(REPO, config_bytes)
        manifest = image_manifest(Descriptor(OCI_CONFIG, config.digest, config.size),
                                  [Descriptor(OCI_LAYER, layer.digest, layer.size)])
        digest = await registry.put_manifest(REPO, TAG, manifest)
        body, media_type = await registry.get_manifest(REPO, TAG)
        if body != manifest or media_type != OCI_MANIFEST:
            raise RuntimeError(f"GET manifest returned other bytes or type {media_type!r}")
        head = await registry.head_manifest(REPO, TAG)
        if head.get("Docker-Content-Digest") != digest:
            raise RuntimeError(f"HEAD manifest digest {head.get('Docker-Content-Digest')!r}")

        out = Outcome()
        url = f"{ctx.target.url}/v2/{REPO}/manifests/{TAG}"
        headers = {"Accept": MANIFEST_ACCEPT}
        seconds = sizes.manifest_seconds
        for method in ("GET", "HEAD"):
            cpu = CpuMeter(ctx.target.tree)
            cpu.start()
            result: LoadResult
            if method == "GET":
                result = await run_wrk(url, method=method, headers=headers,
                                       connections=sizes.manifest_connections,
                                       threads=ctx.settings.wrk_threads, seconds=seconds)
            else:
                result = await run_ab(url, head=True, headers=headers,
                                      connections=sizes.manifest_connections, seconds=seconds)
            cpu.stop()
            if result.requests == 0:
                raise RuntimeError(f"{method}: {result.tool} completed no request")
            key = f"manifest.{method.lower()}"
            out.values[key] = result.good / result.seconds
            out.values[f"{key}.cpu"] = cpu.seconds * 1000 / result.requests
            errors = ", ".join(f"{k} {v}" for k, v in result.errors.items()) or "none"
            keepalive = ("" if result.keepalive is None
                         else f", {result.keepalive} on kept-alive connections")
            out.notes[method] = (f"{result.tool}: {result.requests} requests in "
                                 f"{result.seconds:.1f} s{keepalive}, p50 {result.p50_ms:.1f} ms, "
                                 f"p99 {result.p99_ms:.1f} ms, errors: {errors}")
        rounded = max(1, round(seconds))
        out.notes["load"] = (f"GET: wrk -t{ctx.settings.wrk_threads} "
                             f"-c{sizes.manifest_connections} -d{rounded}s; HEAD: ab -k -i "
                             f"-c{sizes.manifest_connections} -t{rounded}; manifest "
                             f"{len(manifest)} B; Accept: {MANIFEST_ACCEPT}")
        return out
