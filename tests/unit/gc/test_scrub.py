"""The scrub job's slices: every blob verified once per period, damage marked (real
stores in tmp_path), and its settings checked."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import ConfigError, load_settings
from dockyard.core.uploads import Chunk
from dockyard.gc.fsck import slice_bounds, slice_of
from dockyard.gc.scrub import scrub_once
from dockyard.jobs import server_jobs
from dockyard.oci.digest import Digest
from dockyard.storage import layout


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_every_blob_is_verified_once_per_period_and_damage_is_marked(
        tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "scrub.enabled": True, "scrub.interval": "1h", "scrub.period": "3h"})
    registry = await open_registry(settings)
    try:
        digests = []
        for i in range(30):
            data = f"blob {i}".encode()
            digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
            record = await registry.uploads.start("repo")
            await registry.uploads.finish("repo", record.id, digest, _body(data),
                                          Chunk(length=len(data)))
            digests.append(digest)
        damaged = digests[7]
        (tmp_path / "data" / layout.blob_key(damaged)).write_bytes(b"blob 7 but not")
        verified = []
        found = []
        for run in range(3):  # three runs an interval apart make one period
            report = await scrub_once(registry, settings, now=run * 3600.0)
            verified.append(report.blobs)
            found += [f.subject for f in report.findings]
        assert sum(verified) == 30
        assert all(0 < n < 30 for n in verified)  # each run a slice, not everything
        assert found == [str(damaged)]
        assert await registry.blobs.stored_size(damaged) is None  # never served again
        with pytest.raises(Exception, match="not in repo"):
            await registry.blobs.stat("repo", damaged)
        # the next period starts over, and the damaged blob is no longer in it
        again = [await scrub_once(registry, settings, now=run * 3600.0) for run in (3, 4, 5)]
        assert sum(r.blobs for r in again) == 29
        assert not any(r.findings for r in again)
    finally:
        await close_registry(registry)


def test_scrub_is_off_by_default_and_a_job_when_on(tmp_path: Path) -> None:
    off = load_settings(env={})
    assert not off.scrub.enabled
    on = load_settings(env={}, overrides={"scrub.enabled": True})
    assert on.scrub.slices == 7 * 24  # hourly slices of a week

    class _Operations:
        sample_usage = None

    class _Registry:
        uploads = None
        operations = _Operations()

    names = [j.name for j in server_jobs(_Registry(), on)]  # type: ignore[arg-type]
    assert "scrub" in names
    assert "scrub" not in [j.name for j in server_jobs(_Registry(), off)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("scrub.period", "10m", "scrub.period must be at least scrub.interval"),
    ("scrub.interval", "0s", "scrub.interval: must be longer than zero"),
    ("scrub.every", "1h", "scrub.every: unknown key"),
])
def test_bad_scrub_settings_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(env={}, overrides={key: value})


@pytest.mark.parametrize("parts", [1, 2, 7, 168, 1000])
def test_slices_are_contiguous_ranges_covering_every_digest(parts: int) -> None:
    import os

    bounds = [slice_bounds(i, parts) for i in range(parts)]
    assert bounds[0][0] == "00000000"
    assert bounds[-1][1] is None
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(parts - 1))
    for _ in range(2000):
        hex_ = os.urandom(32).hex()
        part = slice_of("sha256:" + hex_, parts)
        lo, hi = bounds[part]
        assert lo <= hex_
        assert (hi is None or hex_ < hi)
    for edge in ("0" * 64, "f" * 64, *(b[0] + "0" * 56 for b in bounds)):
        lo, hi = bounds[slice_of("sha256:" + edge, parts)]
        assert lo <= edge
        assert (hi is None or edge < hi)


async def test_a_slice_is_read_by_range_for_each_algorithm(tmp_path: Path) -> None:
    # the scrub read every blob row each run and kept one slice in Python
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data")})
    registry = await open_registry(settings)
    try:
        pushed = set()
        for i in range(20):
            data = f"blob {i}".encode()
            algorithm = "sha512" if i % 2 else "sha256"
            digest = Digest.parse(f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest())
            await registry.uploads.upload("repo", None, digest, _body(data),
                                          Chunk(length=len(data)))
            pushed.add(str(digest))
        seen: list[str] = []
        for part in range(4):
            rows = await registry.integrity.blob_rows(hex_range=slice_bounds(part, 4))
            assert all(slice_of(r.digest, 4) == part for r in rows)
            seen += [r.digest for r in rows]
        assert sorted(seen) == sorted(pushed)
    finally:
        await close_registry(registry)


async def test_one_bad_read_of_a_sound_blob_is_no_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read the store (or the network to it) damaged once: the scrub took it for the
    blob's bytes and deleted them for good. It reads a mismatch again before it marks."""
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "scrub.enabled": True, "scrub.interval": "1h", "scrub.period": "1h"})
    registry = await open_registry(settings)
    try:
        data = b"a sound blob " * 1000
        digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
        record = await registry.uploads.start("repo")
        await registry.uploads.finish("repo", record.id, digest, _body(data),
                                      Chunk(length=len(data)))
        read_stored = registry.blobs.read_stored
        reads = 0

        async def damaged_once(d: Digest) -> AsyncIterator[bytes]:
            nonlocal reads
            reads += 1
            async for chunk in read_stored(d):
                yield chunk[:-1] if reads == 1 else chunk  # the first one cut short

        monkeypatch.setattr(registry.blobs, "read_stored", damaged_once)
        report = await scrub_once(registry, settings, now=0.0)
        assert report.blobs == 1
        assert report.findings == []
        assert reads == 2
        assert await registry.blobs.stored_size(digest) == len(data)
    finally:
        await close_registry(registry)
