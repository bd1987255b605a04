"""A retention rule's `keep_tags` runs against tags anyone with push rights chooses, on
the collector's event loop: it is matched by RE2 (`dockyard.regex`), in time linear in
the tag, where Python's `re` backtracked on `^(a+)+$` against 58 `a` and a `-` for as
long as it cared to (the worker stopped answering, SIGTERM included). A pattern RE2
cannot take is refused at its key. On real stores in tmp_path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import ConfigError, load_settings
from tests.unit.gc.test_collector_failures import _tagged

EVIL = "a" * 58 + "-"


async def test_a_backtracking_pattern_against_a_hostile_tag_ends_at_once(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(env={}, overrides={"storage.filesystem.rootdirectory": str(data)})
    registry = await open_registry(settings)
    try:
        for tag in (EVIL, "aaaa", "latest"):
            await _tagged(registry, "app", tag)
            await asyncio.sleep(0.01)
    finally:
        await close_registry(registry)
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"retention": {"rules": [
        {"repositories": "**", "keep_tags": "^(a+)+$", "keep_last": 1}]}}))
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "dockyard", "retention", "--dry-run",
                         "--config", str(config), "--data", str(data)],
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    # kept: aaaa (the pattern), latest (the newest); the hostile tag would go
    assert run.stdout.splitlines() == [f"would delete app:{EVIL}", "1 tags would be deleted"]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"v(?=1)"])
def test_a_pattern_only_backtracking_can_match_is_refused_at_its_key(pattern: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={"retention.rules": [
            {"repositories": "**", "keep_tags": pattern, "keep_last": 1}]})
    assert "retention.rules.0.keep_tags" in str(caught.value)
    assert "no backreferences, lookaround" in str(caught.value)
