"""Scheduled rebuilds: the `builder:` config section and the server job it adds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.config.settings import ConfigError, load_settings
from dockyard.jobs import rebuild_command, rebuild_failures, rebuild_summary, server_jobs


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_enabled_without_a_catalogue_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"builder.catalogue is required"):
        load_settings(_write(tmp_path, "builder:\n  enabled: true\n"), env={})
    with pytest.raises(ConfigError, match=r"builder.engine"):
        load_settings(_write(tmp_path, "builder:\n  engine: docker-ish\n"), env={})


def test_the_job_runs_a_no_cache_rebuild_that_keeps_unchanged_tags(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, (
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        "builder:\n  enabled: true\n  catalogue: /srv/images\n  interval: 7d\n"
        "  registry: registry.example\n  image_prefix: toolforge\n"
        "  auth_file: /etc/dockyard/builder-auth.json\n")), env={})
    argv = rebuild_command(settings)
    assert argv[1:4] == ["-m", "dockyard", "build"]
    for flag in ("--push", "--no-cache", "--keep-same-layers"):
        assert flag in argv
    assert argv[argv.index("--catalogue") + 1] == "/srv/images"
    assert argv[argv.index("--image-prefix") + 1] == "toolforge"
    assert argv[argv.index("--authfile") + 1] == "/etc/dockyard/builder-auth.json"
    assert argv[argv.index("--work-dir") + 1] == str(tmp_path / "data" / "builder")
    jobs = {job.name: job for job in server_jobs(None, settings)}  # type: ignore[arg-type]
    assert jobs["builder.rebuild"].interval == 7 * 86400
    off = load_settings(_write(tmp_path, "gc:\n  enabled: false\n"), env={})
    assert "builder.rebuild" not in {j.name for j in server_jobs(None, off)}  # type: ignore[arg-type]


def test_a_rebuild_is_summarised_from_its_json_output() -> None:
    images = [{"image": p, "name": f"r.example/{p}:latest", "result": r,
               "error": "buildah bud exited with 3" if r == "failed" else None}
              for p, r in (("a", "pushed"), ("b", "kept"), ("c", "kept"), ("d", "failed"))]
    out = json.dumps({"ok": False, "images": images}, indent=2).encode()
    assert rebuild_summary(out) == "4 images: pushed 1, kept 2, failed 1"
    assert rebuild_failures(out) == ["failed: r.example/d:latest: buildah bud exited with 3"]
    assert rebuild_summary(json.dumps({"ok": True, "images": []}).encode()) == \
        "0 images: failed 0"
    for broken in (b"", b"Error: no such catalogue", b'{"images": [{}]}', b"[1]"):
        assert rebuild_summary(broken) == ""
        assert rebuild_failures(broken) == []


def test_lifetime_and_sampling_jobs_are_not_recorded(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, (
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        "builder:\n  enabled: true\n  catalogue: /srv/images\n")), env={})
    jobs = {job.name: job for job in server_jobs(None, settings)}  # type: ignore[arg-type]
    assert not jobs["usage.sample"].record
    assert [n for n in ("builder.rebuild", "gc", "uploads.purge", "feed.prune")
            if not jobs[n].record] == []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("ending", ["timeout", "cancelled"])
async def test_a_rebuild_that_runs_too_long_is_stopped_with_what_it_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    # a catalogue test that never exits held the job's lease for ever; a cancelled job
    # (lease lost, server stopping) left its build running, orphaned
    import asyncio

    import dockyard.jobs as jobs

    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait"
    monkeypatch.setattr(jobs, "rebuild_command", lambda _s: ["bash", "-c", script])
    settings = load_settings(_write(tmp_path, (
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        "builder:\n  enabled: true\n  catalogue: /srv/images\n  timeout: 1s\n")), env={})
    job = jobs.builder_job(settings)
    if ending == "timeout":
        result = await asyncio.wait_for(job.run(), 30)
        assert result is not None
        assert not result.ok
        assert "stopped after 1s" in result.summary
    else:
        running = asyncio.ensure_future(job.run())
        while not pids.exists() or len(pids.read_text().split()) < 2:  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    for _ in range(50):
        if not any(_alive(p) for p in started):
            break
        await asyncio.sleep(0.1)
    assert not any(_alive(p) for p in started), "the rebuild's processes outlived it"
