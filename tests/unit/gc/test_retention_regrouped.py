"""Retention says which repositories another rule governs since the one glob dialect
(a `team/*` rule took `team/sub/app` when globs were fnmatch's): in its report, in
`dockyard retention`'s output and in the collector's log. On real stores in tmp_path."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dockyard.backends import close_registry, open_registry
from dockyard.config.settings import RetentionRule, load_settings
from dockyard.gc.retention import apply_retention, configured_rules, regrouped, rule_index
from dockyard.gc.scheduler import collect_once
from tests.unit.gc.test_collector_failures import _tagged

NOTE = ("2 repositories (team/sub/app, team/sub/lib) now under the rule for \"**\", not "
        "the rule for \"team/*\" as before the one glob dialect (a * or ? stays within "
        "one path component; a ** component spans any number)")


def _retention(config: Path, data: Path, *more: str) -> subprocess.CompletedProcess[str]:
    """`dockyard retention --dry-run`, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "dockyard", "retention", "--dry-run",
                           "--config", str(config), "--data", str(data), *more],
                          capture_output=True, text=True, timeout=120, check=False)


def _governed(rules: list[RetentionRule], names: list[str]) -> dict[str, int | None]:
    return {name: rule_index(rules, name) for name in names}


def test_only_the_repositories_whose_rule_changed_are_named() -> None:
    rules = [RetentionRule(repositories="team/*", keep_last=3),
             RetentionRule(repositories="**", keep_last=1)]
    names = ["team/app", "team/sub/app", "team/sub/lib", "misc"]
    assert regrouped(rules, _governed(rules, names)) == [NOTE]
    # written for the new dialect: nothing moved
    new = [RetentionRule(repositories="team/**", keep_last=3),
           RetentionRule(repositories="**", keep_last=1)]
    assert regrouped(new, _governed(new, names)) == []
    # a repository no rule governs any more is named too, with more than 3 as a count
    many = [f"a/b/c{i}" for i in range(5)]
    one = [RetentionRule(repositories="a/*", keep_last=1)]
    assert regrouped(one, _governed(one, many)) == [
        "5 repositories (a/b/c0, a/b/c1, a/b/c2 and 2 more) now under no rule, not the "
        "rule for \"a/*\" as before the one glob dialect (a * or ? stays within one path "
        "component; a ** component spans any number)"]


async def test_the_report_and_the_command_name_them(tmp_path: Path) -> None:
    rules = [{"repositories": "team/*", "keep_last": 3}, {"repositories": "**", "keep_last": 1}]
    data = tmp_path / "data"
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(data), "retention.rules": rules})
    registry = await open_registry(settings)
    try:
        for name in ("team/app", "team/sub/app", "team/sub/lib"):
            for tag in ("v1", "v2"):
                await _tagged(registry, name, tag)
                await asyncio.sleep(0.01)
        report = await apply_retention(registry.lifecycle, configured_rules(settings),
                                       dry_run=True)
    finally:
        await close_registry(registry)
    assert report.regrouped == [NOTE]
    # the rule now in force decides: keep_last 1 below team/, keep_last 3 at its top
    assert report.deleted == {"team/sub/app": ["v1"], "team/sub/lib": ["v1"]}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"retention": {"rules": rules}}))
    run = await asyncio.to_thread(_retention, config, data)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [f"note: {NOTE}"]
    assert run.stdout.splitlines()[-1] == "2 tags would be deleted"
    run = await asyncio.to_thread(_retention, config, data, "--json")
    assert json.loads(run.stdout)["regrouped"] == [NOTE]


async def test_the_scheduled_collection_logs_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env={}, overrides={
        "storage.filesystem.rootdirectory": str(tmp_path / "data"),
        "retention.rules": [{"repositories": "team/*", "keep_last": 3},
                            {"repositories": "**", "keep_last": 1}]})
    registry = await open_registry(settings)
    try:
        for name in ("team/app", "team/sub/app", "team/sub/lib"):
            await _tagged(registry, name, "v1")
        with caplog.at_level(logging.WARNING, logger="dockyard.gc"):
            assert await collect_once(registry, settings) is not None
    finally:
        await close_registry(registry)
    assert [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("retention:")] == [f"retention: {NOTE}"]
