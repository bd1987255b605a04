"""A server imports what its configuration uses and nothing else (its start time is
mostly imports: the test suite starts hundreds of servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: never imported by a server on the defaults (filesystem, SQLite, no token auth)
UNUSED = ("aiobotocore", "botocore", "asyncpg", "jwt", "cryptography", "alembic",
          "sqlalchemy.orm", "sqlalchemy.ext.asyncio", "sqlalchemy.dialects.postgresql",
          "dockyard.drivers.s3", "dockyard.mirror.sync", "dockyard.replica.follower")

_START = """
import asyncio, json, sys
from dockyard.backends import close_registry, migrate_database, open_registry, preload
from dockyard.config.settings import load_settings
from dockyard.jobs import server_jobs
import dockyard.server

settings = load_settings(env={}, overrides=json.loads(sys.argv[1]))
preload(settings)
asyncio.run(migrate_database(settings))

async def worker():
    registry = await open_registry(settings, run_migrations=False)
    server_jobs(registry, settings)
    await close_registry(registry)

asyncio.run(worker())
print(json.dumps(sorted(sys.modules)))
"""


def _started(overrides: dict[str, object]) -> set[str]:
    """The modules a server's start (supervisor and worker) imported with `overrides`."""
    out = subprocess.run([sys.executable, "-c", _START, json.dumps(overrides)], check=True,
                         capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("DOCKYARD_")})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_defaults_import_no_unused_backend(tmp_path: Path) -> None:
    overrides = {"storage.filesystem.rootdirectory": str(tmp_path)}
    _started(overrides)  # a fresh database: migrated (Alembic), then current
    imported = _started(overrides)
    assert not [m for m in UNUSED if m in imported]
    assert "dockyard.web.app" in imported  # the UI is on: imported before a fork


def test_what_a_configuration_uses_is_imported_before_the_workers(tmp_path: Path) -> None:
    imported = _started({"storage.filesystem.rootdirectory": str(tmp_path),
                         "ui.enabled": False, "scrub.enabled": True})
    assert "dockyard.gc.scrub" in imported
    assert "jinja2" not in imported
    assert "dockyard.web.app" not in imported
