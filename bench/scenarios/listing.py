"""Scenario 5: full listings of many tags and many repositories, paginated by Link headers."""

from __future__ import annotations

import os
import statistics
from functools import partial

from bench.registry import (
    OCI_CONFIG,
    OCI_LAYER,
    Descriptor,
    RegistryError,
    image_config,
    image_manifest,
)
from bench.results import MetricSpec, Outcome
from bench.scenarios.base import Context, Scenario, Stopwatch, gather_limited


def repo_name(index: int) -> str:
    return f"bench/repo-{index:05d}"


class Listing(Scenario):
    number = 5
    name = "list"
    title = "paginated listing"
    metrics = (
        MetricSpec("list.tags", "tags/list, full listing", "s", "lower", 4),
        MetricSpec("list.tags.unpaged", "tags/list without n (reference)", "s", "lower", 4),
        MetricSpec("list.catalog", "_catalog, full listing", "s", "lower", 4),
    )

    async def run(self, ctx: Context) -> Outcome:
        registry = ctx.registry
        sizes = ctx.settings.sizes
        source = repo_name(0)

        layer = await registry.push_bytes(source, os.urandom(sizes.small_layer))
        config = await registry.push_bytes(source, image_config([layer.digest], "listing"))
        manifest = image_manifest(Descriptor(OCI_CONFIG, config.digest, config.size),
                                  [Descriptor(OCI_LAYER, layer.digest, layer.size)])

        async def seed_repo(index: int) -> None:
            repo = repo_name(index)
            for blob in (layer, config):
                if not await registry.mount(repo, blob.digest, source):
                    raise RegistryError(f"mount of {blob.digest} into {repo} opened an upload")
            await registry.put_manifest(repo, "latest", manifest)

        tags = [f"t{i:05d}" for i in range(sizes.tags)]
        await gather_limited(sizes.setup_concurrency,
                             [partial(registry.put_manifest, source, tag, manifest)
                              for tag in tags])
        await gather_limited(sizes.setup_concurrency,
                             [partial(seed_repo, i) for i in range(1, sizes.repositories)])

        out = Outcome()
        tags_path = f"/v2/{source}/tags/list"
        repos = {repo_name(i) for i in range(sizes.repositories)}
        for key, path, field, expected, page in (
            ("list.tags", tags_path, "tags", set(tags), sizes.page_size),
            ("list.tags.unpaged", tags_path, "tags", set(tags), None),
            ("list.catalog", "/v2/_catalog", "repositories", repos, sizes.page_size),
        ):
            times: list[float] = []
            pages = 0
            for _ in range(sizes.listing_repeats):
                with Stopwatch() as clock:
                    entries, pages = await registry.list_all(path, field, page)
                times.append(clock.seconds)
                if set(entries) != expected or len(entries) != len(expected):
                    raise RegistryError(f"{path}: listed {len(entries)} entries "
                                        f"({len(set(entries))} distinct), "
                                        f"expected {len(expected)}")
            out.values[key] = statistics.median(times)
            out.notes[key] = (f"{len(expected)} entries, n={page or 'absent'}, "
                              f"{pages} page(s) fetched, median of {len(times)} listings")
        return out
