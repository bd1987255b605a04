"""Web UI page times on a registry of 2,000 repositories and ~20,000 tags.

`python -m bench.ui_pages` (run by `make bench` after the registry comparison): starts
`dockyard serve` on a fresh data directory, pushes the content over HTTP (each repository
one config and one layer of its own plus one shared layer; 10 tags each, one repository
with 500), then fetches each page `--requests` times, one at a time, and prints the
median and p99 of the full response time (server render plus loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.support.servers import start_dockyard  # noqa: E402

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _blob(client: httpx.AsyncClient, repo: str, data: bytes) -> dict[str, object]:
    r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(data)},
                          content=data)
    r.raise_for_status()
    return {"digest": _digest(data), "size": len(data)}


async def _repository(client: httpx.AsyncClient, i: int, tags: int) -> None:
    repo = f"team{i % 40}/app{i}"
    config = await _blob(client, repo, json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Env": [f"N={i}"]},
         "history": [{"created_by": "ADD x /"}, {"created_by": "ADD y /"}]}).encode())
    own = await _blob(client, repo, f"layer {i}".encode() * 200)
    shared = await _blob(client, repo, b"shared layer" * 100)
    for t in range(tags):
        doc = {"schemaVersion": 2, "mediaType": MANIFEST,
               "config": {"mediaType": CONFIG, **config},
               "layers": [{"mediaType": LAYER, **own}, {"mediaType": LAYER, **shared}],
               "annotations": {"tag": str(t)}}
        r = await client.put(f"/v2/{repo}/manifests/v{t}", content=json.dumps(doc),
                             headers={"Content-Type": MANIFEST})
        r.raise_for_status()


async def populate(url: str, repositories: int, tags: int, big: int) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        queue = list(range(repositories))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                await _repository(client, i, big if i == 0 else tags)

        await asyncio.gather(*(worker() for _ in range(16)))


PAGES = {
    "home": "/ui/",
    "repository list": "/ui/repositories",
    "repository list by size": "/ui/repositories?sort=size&order=desc",
    "repository, 500 tags": "/ui/r/team0/app0",
    "image page": "/ui/r/team0/app0/-/tags/v7",
    "search": "/ui/search?q=v49",
}


def measure(url: str, requests: int) -> dict[str, tuple[float, float]]:
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for label, path in PAGES.items():
            client.get(path).raise_for_status()  # warm
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                client.get(path).raise_for_status()
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            out[label] = (statistics.median(times),
                          times[min(len(times) - 1, int(len(times) * 0.99))])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_pages", description=__doc__)
    parser.add_argument("--repositories", type=int, default=2000)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--big", type=int, default=500, help="tags of the first repository")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dockyard-ui-bench-") as tmp:
        server = start_dockyard(Path(tmp) / "data", workers=1)
        try:
            began = time.monotonic()
            asyncio.run(populate(server.url, args.repositories, args.tags, args.big))
            total = args.repositories * args.tags - args.tags + args.big
            print(f"pushed {args.repositories} repositories, {total} tags in "
                  f"{time.monotonic() - began:.0f} s")
            print(f"{'page':<28}{'median ms':>10}{'p99 ms':>10}")
            for label, (median, p99) in measure(server.url, args.requests).items():
                print(f"{label:<28}{median:>10.1f}{p99:>10.1f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
