"""S3 mode: one SeaweedFS and one PostgreSQL for the whole mode, a fresh bucket and a fresh
database for every measurement.

Reuses the test suite's starters (tests/support/s3.py, tests/support/postgres.py), which
run the project's scripts/services/s3.sh and postgres.sh on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.support.postgres import running_postgres  # noqa: E402
from tests.support.s3 import S3Server, running_s3  # noqa: E402

CHUNK = 10 * 1024 * 1024
"""Part size of both registries' multipart uploads (both drivers' default, written out)."""


@dataclass(frozen=True)
class Store:
    """Where one measurement keeps its data: its own bucket and its own database."""

    bucket: str
    database_url: str


class S3Backend:
    """The shared S3 server and PostgreSQL, and the stores cut out of them."""

    def __init__(self, s3: S3Server, postgres_url: str) -> None:
        self.s3 = s3
        self.postgres_url = postgres_url
        self._admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
        self.s3_pid = int((s3.home / "weed.pid").read_text())
        self.postgres_pid = asyncio.run(self._postmaster())

    def _client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        info = self.s3.info
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=info["endpoint"], region_name=info["region"],
            aws_access_key_id=info["accesskey"], aws_secret_access_key=info["secretkey"],
            config=Config(s3={"addressing_style": "path"}))

    async def _sql(self, *statements: str) -> Any:
        import asyncpg

        conn = await asyncpg.connect(self._admin_url)
        try:
            result = None
            for statement in statements:
                result = await conn.fetchval(statement)
            return result
        finally:
            await conn.close()

    async def _postmaster(self) -> int:
        """PostgreSQL's main process: the parent of the backend serving this connection."""
        import asyncpg

        conn = await asyncpg.connect(self._admin_url)
        try:
            parent = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).parent()
        finally:
            await conn.close()
        assert parent is not None
        return int(parent.pid)

    def fresh(self) -> Store:
        """A new empty bucket (its first write done, so SeaweedFS has grown its volumes
        before anything is timed) and a new empty database."""
        name = f"bench-{uuid.uuid4().hex[:16]}"
        client = self._client()
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key="bench-warm-up", Body=b"warm")
        client.delete_object(Bucket=name, Key="bench-warm-up")
        database = name.replace("-", "_")
        asyncio.run(self._sql(f"CREATE DATABASE {database}"))
        return Store(name, self.postgres_url.rsplit("/", 1)[0] + f"/{database}")

    def release(self, store: Store) -> None:
        """Drop the bucket with everything in it (SeaweedFS drops its volumes), and the
        database."""
        with contextlib.suppress(Exception):
            self._client().delete_bucket(Bucket=store.bucket)
        database = store.database_url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            asyncio.run(self._sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))

    def dockyard_config(self, store: Store, path: Path) -> Path:
        """Dockyard's config on `store`: blobs streamed (no redirect), the same part size
        as Distribution; absolute Locations behind a trusted local proxy (the cluster)."""
        info = self.s3.info
        config = {
            "http": {"trusted_proxies": ["127.0.0.1/32"], "relativeurls": False},
            "storage": {"driver": "s3", "redirect": False, "s3": {
                "bucket": store.bucket, "region": info["region"],
                "regionendpoint": info["endpoint"], "accesskey": info["accesskey"],
                "secretkey": info["secretkey"], "forcepathstyle": True, "secure": False,
                "rootdirectory": "dockyard", "chunksize": CHUNK}},
            "database": {"url": store.database_url},
        }
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        return path

    def distribution_storage(self, store: Store) -> str:
        """Distribution's `storage:` section on `store`, redirects off."""
        info = self.s3.info
        return (
            "storage:\n"
            "  s3:\n"
            f"    region: {info['region']}\n"
            f"    regionendpoint: {info['endpoint']}\n"
            f"    bucket: {store.bucket}\n"
            f"    accesskey: {info['accesskey']}\n"
            f"    secretkey: {info['secretkey']}\n"
            "    secure: false\n"
            "    v4auth: true\n"
            "    forcepathstyle: true\n"
            f"    chunksize: {CHUNK}\n"
            "    rootdirectory: /distribution\n"
            "  redirect:\n    disable: true\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        )


@contextlib.contextmanager
def running_backend() -> Iterator[S3Backend]:
    """SeaweedFS and PostgreSQL for the `with` block; stopped and removed after."""
    with running_s3(own=True) as s3, running_postgres() as url:
        yield S3Backend(s3, url)
