"""Shared fixtures: real registry servers on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import postgres_unavailable, running_postgres, stop_postgres
from tests.support.s3 import stop_s3
from tests.support.servers import Server, start_distribution, start_dockyard


@pytest.fixture(scope="session", autouse=True)
def _shared_services() -> Iterator[None]:
    """Stop the PostgreSQL and the S3 server the session's tests shared, if any started."""
    yield
    stop_s3()
    stop_postgres()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh database of the session's PostgreSQL for the module; skips without one."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `dockyard serve` for the session, on the embedded defaults (2 workers)."""
    server = start_dockyard(tmp_path_factory.mktemp("dockyard") / "data", workers=2)
    yield server
    server.stop()


@pytest.fixture
def fresh_dockyard(tmp_path: Path) -> Iterator[Server]:
    """A `dockyard serve` of its own for a test that needs an empty registry."""
    server = start_dockyard(tmp_path / "data", workers=1)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Debian's docker-registry (CNCF Distribution 2.8) for differential tests."""
    server = start_distribution(tmp_path_factory.mktemp("distribution") / "data")
    yield server
    server.stop()
