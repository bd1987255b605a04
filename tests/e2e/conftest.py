"""Fixtures for end-to-end tests with real clients.

`registry` is the server under test. By default it is Dockyard; set
`E2E_REGISTRIES=dockyard,distribution` (or `distribution`) to run the same tests
against CNCF Distribution too, which is how the tests themselves are checked.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from tests.support.clients import DockerCLI, Podman, Skopeo, find_docker_cli
from tests.support.images import Layout, busybox_layout
from tests.support.servers import Server

REGISTRIES = [
    name.strip()
    for name in os.environ.get("E2E_REGISTRIES", "dockyard").split(",")
    if name.strip()
]


@pytest.fixture(params=REGISTRIES)
def registry(request: pytest.FixtureRequest) -> Server:
    """The registry under test (a session server: `dockyard` or `distribution`)."""
    server: Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses: `e2e/<test-name>-<random>`."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"e2e/{base}-{uuid.uuid4().hex[:8]}"


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs it)")


@pytest.fixture
def skopeo(tmp_path: Path, registry: Server) -> Skopeo:
    _need("skopeo")
    return Skopeo(tmp_path / "skopeo", insecure_hosts=[registry.host])


@pytest.fixture
def podman(tmp_path: Path, registry: Server) -> Podman:
    _need("podman")
    client = Podman(tmp_path / "podman", insecure_hosts=[registry.host])
    reason = client.usable()
    if reason is not None:
        pytest.skip(reason)
    return client


@pytest.fixture
def docker_cli(tmp_path: Path) -> DockerCLI:
    if find_docker_cli() is None:
        pytest.skip("docker CLI is not installed (/usr/local/bin/docker)")
    return DockerCLI(tmp_path / "docker")


@pytest.fixture(scope="session")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A real busybox image made once per session with umoci (read-only for tests)."""
    _need("umoci")
    if not Path("/bin/busybox").is_file():
        pytest.skip("/bin/busybox is missing (apt-get install busybox-static)")
    return busybox_layout(tmp_path_factory.mktemp("busybox") / "layout", "latest")
