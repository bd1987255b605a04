"""Real clients with credentials against a TLS + token-auth Dockyard (and an htpasswd one).

skopeo (`--dest-creds`, `--creds`), podman (`login`, push, pull), the docker CLI (`login`,
`manifest inspect`), python-dxf over TLS with the CA file, oras-py through the Bearer
flow. Anonymous pull of a public repository works; anonymous push is refused with the
challenge that makes each client ask for credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import types
from collections.abc import Iterator
from pathlib import Path

import oras.client
import oras.decorator
import pytest
from dxf import DXF

from tests.support.authenv import (
    USERS,
    TlsServer,
    basic_auth,
    make_pki,
    start_tls_dockyard,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.clients import DockerCLI, Podman, Skopeo, find_docker_cli
from tests.support.images import random_layout, sha256
from tests.support.servers import Server, start_dockyard

BUILDER = f"builder:{USERS['builder'][0]}"
READER = f"reader:{USERS['reader'][0]}"


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tmp = tmp_path_factory.mktemp("auth-tls")
    pki = make_pki(tmp / "pki")
    htpasswd = write_htpasswd(tmp / "htpasswd")
    config = write_config(tmp / "config.yml", auth=token_auth(htpasswd),
                          http={"tls": {"certificate": pki.cert, "key": pki.key}})
    server = start_tls_dockyard(tmp / "data", config, pki.ca, workers=2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("auth-basic-clients")
    htpasswd = write_htpasswd(tmp / "htpasswd")
    config = write_config(tmp / "config.yml", auth=basic_auth(htpasswd))
    server = start_dockyard(tmp / "data", workers=1, config=config)
    yield server
    server.stop()


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs it)")


@pytest.mark.parametrize("which", ["token-tls", "htpasswd"])
def test_skopeo_creds(which: str, tls_registry: TlsServer, basic_registry: Server,
                      tmp_path: Path) -> None:
    _need("skopeo")
    server: Server = tls_registry if which == "token-tls" else basic_registry
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[server.host])
    layout = random_layout(tmp_path / "oci", "v1")
    dest = f"docker://{server.host}/public/skopeo-{which}:v1"

    refused = skopeo.copy(layout.ref, dest, check=False)
    assert refused.returncode != 0
    assert "authentication required" in refused.stderr or "unauthorized" in \
        refused.stderr.lower(), refused.stderr[-2000:]

    skopeo.copy(layout.ref, dest, "--dest-creds", BUILDER)
    digest = layout.digest
    # anonymous pull of a public repository, and an authenticated one
    assert sha256(skopeo.inspect_raw(dest)) == digest
    info = skopeo.inspect(dest, "--creds", READER)
    assert info["Digest"] == digest
    # reader may not push
    denied = skopeo.copy(layout.ref, f"docker://{server.host}/public/skopeo-{which}:v2",
                         "--dest-creds", READER, check=False)
    assert denied.returncode != 0
    # a cross-repository mount with credentials that may read the source
    skopeo.copy(dest, f"docker://{server.host}/public/skopeo-{which}-copy:v1",
                "--dest-creds", BUILDER, "--src-creds", BUILDER)
    assert sha256(skopeo.inspect_raw(
        f"docker://{server.host}/public/skopeo-{which}-copy:v1")) == digest


def test_podman_login_push_pull(tls_registry: TlsServer, tmp_path: Path) -> None:
    _need("podman")
    host = tls_registry.host
    podman = Podman(tmp_path / "podman", insecure_hosts=[host])
    reason = podman.usable()
    if reason is not None:
        pytest.skip(reason)
    layout = random_layout(tmp_path / "oci", "v1", layer_sizes=(300_000, 5000))
    image_id = podman.pull(layout.ref)
    name = f"{host}/public/podman:v1"
    podman.tag(image_id, name)

    refused = podman.run("push", name, f"docker://{name}", check=False)
    assert refused.returncode != 0
    assert "authentication required" in refused.stderr or "unauthorized" in \
        refused.stderr.lower(), refused.stderr[-2000:]

    bad = podman.run("login", "--tls-verify=false", "-u", "builder", "-p", "wrong", host,
                     check=False)
    assert bad.returncode != 0
    podman.run("login", "--tls-verify=false", "-u", "builder", "-p", USERS["builder"][0], host)
    digest = podman.push(name, f"docker://{name}")
    assert digest.startswith("sha256:")

    puller = Podman(tmp_path / "puller", insecure_hosts=[host])
    assert puller.pull(name) == image_id  # anonymously
    assert puller.image_inspect(name)["Digest"] == digest


def test_docker_login_and_manifest_inspect_over_tls(tls_registry: TlsServer, tmp_path: Path
                                                    ) -> None:
    if find_docker_cli() is None:
        pytest.skip("docker CLI is not installed (/usr/local/bin/docker)")
    _need("skopeo")
    host = tls_registry.host
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[host])
    layout = random_layout(tmp_path / "oci", "v1")
    skopeo.copy(layout.ref, f"docker://{host}/private/docker:v1", "--dest-creds",
                f"admin:{USERS['admin'][0]}")

    docker = DockerCLI(tmp_path / "docker")
    assert tls_registry.ca is not None
    docker.env["SSL_CERT_FILE"] = str(tls_registry.ca)
    # private/ needs a login
    anon = docker.run("manifest", "inspect", "--insecure", f"{host}/private/docker:v1",
                      check=False)
    assert anon.returncode != 0
    bad = docker.run("login", "-u", "reader", "-p", "wrong", host, check=False)
    assert bad.returncode != 0
    docker.run("login", "-u", "reader", "-p", USERS["reader"][0], host)
    stored = json.loads((docker.config_dir / "config.json").read_text())
    assert host in stored["auths"]
    manifest = docker.manifest_inspect(f"{host}/private/docker:v1")
    assert manifest["config"]["digest"] == layout.config_digest()
    docker.run("logout", host)


def test_dxf_over_tls_with_a_ca_file(tls_registry: TlsServer) -> None:
    host = tls_registry.host
    assert tls_registry.ca is not None
    password = USERS["builder"][0]

    def auth(dxf: DXF, response: object) -> None:
        dxf.authenticate("builder", password, response=response)

    pusher = DXF(host, "public/dxf", auth=auth, tlsverify=str(tls_registry.ca))
    data = os.urandom(200_000)
    digest = pusher.push_blob(data=iter([data]), digest=sha256(data))
    pusher.set_alias("v1", digest)

    def anonymous(dxf: DXF, response: object) -> None:
        dxf.authenticate(response=response)

    reader = DXF(host, "public/dxf", auth=anonymous, tlsverify=str(tls_registry.ca))
    assert b"".join(reader.pull_blob(digest)) == data
    assert reader.list_aliases() == ["v1"]
    anon_pusher = DXF(host, "public/dxf", auth=anonymous, tlsverify=str(tls_registry.ca))
    with pytest.raises(Exception, match=r"401|403|unauthorized"):
        anon_pusher.push_blob(data=iter([b"x"]), digest=sha256(b"x"))


def test_oras_bearer_flow(tls_registry: TlsServer, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oras.decorator, "time", types.SimpleNamespace(sleep=lambda _s: None))
    assert tls_registry.ca is not None
    client = oras.client.OrasClient(hostname=tls_registry.host,
                                    tls_verify=str(tls_registry.ca))  # type: ignore[arg-type]
    client.auth.set_basic_auth("builder", USERS["builder"][0])
    src = tmp_path / "artifact.txt"
    src.write_bytes(b"pushed through the token flow\n")
    target = f"{tls_registry.host}/public/oras:v1"
    response = client.push(files=[str(src)], target=target, disable_path_validation=True,
                           quiet=True)
    assert response.status_code == 201

    anon = oras.client.OrasClient(hostname=tls_registry.host,
                                  tls_verify=str(tls_registry.ca))  # type: ignore[arg-type]
    out = tmp_path / "out"
    pulled = anon.pull(target=target, outdir=str(out))
    assert [Path(p).read_bytes() for p in pulled] == [src.read_bytes()]
