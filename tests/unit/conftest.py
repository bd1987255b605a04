"""Unit-test fixtures: a migrated SQLite metadata database, copied per test."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from dockyard.metadata.engine import migrate, open_engines


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database brought to the newest revision, once per session."""
    path = tmp_path_factory.mktemp("metadata-template") / "metadata.db"

    async def build() -> None:
        engines = open_engines(f"sqlite:///{path}")
        await migrate(engines)
        await engines.dispose()

    asyncio.run(build())
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _migrated_template: Path) -> str:
    """URL of a fresh, migrated SQLite file in this test's tmp_path."""
    target = tmp_path / "data" / "metadata.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_template, target)
    return f"sqlite:///{target}"
