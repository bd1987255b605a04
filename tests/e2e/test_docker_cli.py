"""The docker CLI (no daemon) against a plain-HTTP registry: `docker manifest`.

With `--insecure` the CLI first opens a TLS connection to the plain-HTTP port; it falls back
to HTTP only when the bytes that come back read as an HTTP response ("server gave HTTP
response to HTTPS client"). A listener that hangs up or answers garbage fails every command
here before any registry logic runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.clients import ClientError, DockerCLI, Skopeo
from tests.support.images import multiplatform_layout, random_layout, sha256
from tests.support.servers import Server


def test_tls_hello_on_plain_http_port_gets_an_http_answer(registry: Server) -> None:
    """What the docker CLI (Go's crypto/tls) needs: a reply whose first bytes are `HTTP/`.

    This is the precise check behind every other test in this file failing at once.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    client_hello = outgoing.read()
    assert client_hello[:1] == b"\x16"  # a TLS handshake record

    answer = b""
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        sock.sendall(client_hello)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while len(answer) < 5:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer[:5] == b"HTTP/", f"a TLS ClientHello got {answer[:200]!r}"


def test_manifest_inspect_image(
    docker_cli: DockerCLI, skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    oci = random_layout(tmp_path / "oci", "v1")
    docker = random_layout(tmp_path / "docker", "v2", docker=True)
    for layout in (oci, docker):
        skopeo.copy(layout.ref, f"docker://{registry.host}/{repo}:{layout.tag}",
                    "--preserve-digests")

        ref = f"{registry.host}/{repo}:{layout.tag}"
        assert docker_cli.manifest_inspect(ref) == layout.manifest()

        verbose = docker_cli.manifest_inspect(ref, verbose=True)
        assert verbose["Descriptor"]["digest"] == layout.digest
        assert verbose["Descriptor"]["mediaType"] == layout.media_type
        assert verbose["Descriptor"]["size"] == len(layout.manifest_bytes())
        assert verbose["Descriptor"]["platform"] == {"architecture": "amd64", "os": "linux"}

        by_digest = f"{registry.host}/{repo}@{layout.digest}"
        assert docker_cli.manifest_inspect(by_digest) == layout.manifest()


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_manifest_inspect_index(
    docker_cli: DockerCLI, skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path,
    docker: bool,
) -> None:
    index = multiplatform_layout(tmp_path / "src", "multi", docker=docker)
    skopeo.copy(index.ref, f"docker://{registry.host}/{repo}:multi", "--all",
                "--preserve-digests")
    ref = f"{registry.host}/{repo}:multi"

    assert docker_cli.manifest_inspect(ref) == index.manifest()

    verbose = docker_cli.manifest_inspect(ref, verbose=True)
    assert isinstance(verbose, list)
    assert [entry["Descriptor"]["digest"] for entry in verbose] == \
        [child["digest"] for child in index.children()]
    for entry in verbose:  # "Raw" is the child manifest as the registry served it
        raw = base64.b64decode(entry["Raw"])
        assert raw == index.manifest_bytes(entry["Descriptor"]["digest"])


def test_manifest_inspect_unknown(
    docker_cli: DockerCLI, skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    layout = random_layout(tmp_path / "src", "v1", layer_sizes=(1000,))
    skopeo.copy(layout.ref, f"docker://{registry.host}/{repo}:v1", "--preserve-digests")
    for missing in (f"{repo}:nope", f"{repo}-absent:v1", f"{repo}@{sha256(b'nothing')}"):
        with pytest.raises(ClientError) as err:
            docker_cli.manifest_inspect(f"{registry.host}/{missing}")
        assert "no such manifest" in err.value.stderr


def test_manifest_create_and_push(
    docker_cli: DockerCLI, skopeo: Skopeo, registry: Server, repo: str, tmp_path: Path
) -> None:
    """`docker manifest create/push` makes an index from images in other repositories.

    The push mounts each image's blobs into the list's repository, puts each image
    manifest there by digest, then puts the index.
    """
    amd64 = random_layout(tmp_path / "amd64", "v1", layer_sizes=(30_000, 2000))
    arm64 = multiplatform_layout(tmp_path / "arm", "v1",
                                 platforms=[("linux", "arm64", "v8")], docker=True)
    arm64_child = arm64.children()[0]["digest"]
    skopeo.copy(amd64.ref, f"docker://{registry.host}/{repo}/amd64:v1", "--preserve-digests")
    skopeo.copy(arm64.ref, f"docker://{registry.host}/{repo}/arm64:v1", "--all",
                "--preserve-digests")

    target = f"{registry.host}/{repo}/list:v1"
    docker_cli.run("manifest", "create", "--insecure", target,
                   f"{registry.host}/{repo}/amd64:v1",
                   f"{registry.host}/{repo}/arm64@{arm64_child}")
    out = docker_cli.run("manifest", "push", "--insecure", target).stdout
    pushed = out.strip().splitlines()[-1]
    assert pushed.startswith("sha256:")

    raw = skopeo.inspect_raw(f"docker://{target}")
    assert sha256(raw) == pushed
    index = json.loads(raw)
    assert [(m["digest"], m["platform"]["architecture"]) for m in index["manifests"]] == \
        [(amd64.digest, "amd64"), (arm64_child, "arm64")]

    # the images now live in the list's repository too, byte for byte
    list_repo = f"docker://{registry.host}/{repo}/list"
    assert skopeo.inspect_raw(f"{list_repo}@{amd64.digest}") == amd64.manifest_bytes()
    assert skopeo.inspect_raw(f"{list_repo}@{arm64_child}") == arm64.manifest_bytes(arm64_child)
    assert docker_cli.manifest_inspect(target) == index
    out_dir = tmp_path / "out"
    skopeo.copy(f"{list_repo}:v1", f"dir:{out_dir}", "--all", "--preserve-digests")
    for digest in amd64.layer_digests() + arm64.layer_digests(arm64_child):
        blob = (out_dir / digest.split(":", 1)[1]).read_bytes()
        assert sha256(blob) == digest
