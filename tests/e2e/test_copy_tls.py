"""`dockyard copy` to registries with a private CA and with client certificates.

Two real `dockyard serve` with TLS from a CA made here: one that any client with the CA
reaches, one that also asks for a client certificate. Trust comes, as for podman and
skopeo, from `--dest-cert-dir` or from the registry's `certs.d` directory; what landed
is read back with skopeo (`--cert-dir`), a client that no one here wrote.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.authenv import (
    Pki,
    TlsServer,
    issue_server_cert,
    make_pki,
    start_tls_dockyard,
    write_config,
)
from tests.support.clients import Skopeo
from tests.support.images import Layout, random_layout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    tmp = tmp_path_factory.mktemp("tls")
    config = write_config(tmp / "config.yml", http={"tls": {
        "certificate": pki.cert, "key": pki.key}})
    server = start_tls_dockyard(tmp / "data", config, pki.ca)
    yield server
    server.stop()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return random_layout(tmp_path / "layout", "v1", layer_sizes=(4096, 1024))


def copy(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`dockyard copy` with HOME (and so the per-user certs.d) under the test's folder."""
    return subprocess.run(
        [sys.executable, "-m", "dockyard", "copy", *args], text=True, capture_output=True,
        timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"})


def certs(directory: Path, *files: Path) -> Path:
    directory.mkdir(parents=True)
    for f in files:
        shutil.copy(f, directory / f.name)
    return directory


def digest_at(tmp_path: Path, cert_dir: Path, ref: str) -> str:
    skopeo = Skopeo(tmp_path / "skopeo")
    out = skopeo.run("inspect", "--cert-dir", str(cert_dir), "--format", "{{.Digest}}",
                     f"docker://{ref}")
    return out.stdout.strip()


def test_a_private_ca_from_cert_dir_or_certs_d(tls: TlsServer, pki: Pki, layout: Layout,
                                               tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    src = f"oci:{layout.path}:v1"

    refused = copy(src, f"{tls.host}/private/app:v1", home=home)
    assert refused.returncode == 1, refused.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr

    ca_dir = certs(tmp_path / "ca", pki.ca)
    done = copy("--dest-cert-dir", str(ca_dir), src, f"{tls.host}/private/app:v1", home=home)
    assert done.returncode == 0, done.stderr
    assert digest_at(tmp_path, ca_dir, f"{tls.host}/private/app:v1") == layout.digest

    # the registry's certs.d directory, as podman has it: no option needed
    certs(home / ".config" / "containers" / "certs.d" / tls.host, pki.ca)
    done = copy(src, f"{tls.host}/private/app:v2", home=home)
    assert done.returncode == 0, done.stderr
    assert digest_at(tmp_path, ca_dir, f"{tls.host}/private/app:v2") == layout.digest


def test_an_unusable_cert_dir_is_named(tls: TlsServer, pki: Pki, layout: Layout,
                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    lone = certs(tmp_path / "lone", pki.ca)
    (lone / "client.cert").write_bytes(pki.cert.read_bytes())
    proc = copy("--dest-cert-dir", str(lone), f"oci:{layout.path}:v1",
                f"{tls.host}/private/lone:v1", home=home)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        f"Error: {lone / 'client.cert'}: client certificate without its key client.key"

    # a *.crt with no certificate in it is passed over, as podman does: said, and the
    # registry's certificate is then not trusted
    bad = certs(tmp_path / "bad")
    (bad / "ca.crt").write_text("not a certificate\n")
    proc = copy("--dest-cert-dir", str(bad), f"oci:{layout.path}:v1",
                f"{tls.host}/private/bad:v1", home=home)
    assert proc.returncode == 1, proc.stderr
    assert f"{bad / 'ca.crt'}: no certificate in it" in proc.stderr, proc.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr.strip().splitlines()[-1], proc.stderr

    # an encrypted client key is refused, not prompted for
    locked = certs(tmp_path / "locked", pki.ca)
    issue_server_cert(pki, "locked", locked / "client.cert", locked / "plain.key",
                      client=True)
    key = serialization.load_pem_private_key((locked / "plain.key").read_bytes(), None)
    (locked / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    proc = copy("--dest-cert-dir", str(locked), f"oci:{layout.path}:v1",
                f"{tls.host}/private/locked:v1", home=home)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: {locked / 'client.cert'}: an encrypted private key is not supported")

    proc = copy("--dest-cert-dir", str(tmp_path / "nowhere"), f"oci:{layout.path}:v1",
                f"{tls.host}/private/bad:v1", home=home)
    assert proc.returncode == 2, proc.stderr
    assert "--dest-cert-dir" in proc.stderr, proc.stderr


def test_a_client_certificate_for_mutual_tls(pki: Pki, layout: Layout, tmp_path: Path
                                             ) -> None:
    home = tmp_path / "home"
    home.mkdir()
    client_dir = certs(tmp_path / "client", pki.ca)
    issue_server_cert(pki, "builder", client_dir / "client.cert", client_dir / "client.key",
                      client=True)
    config = write_config(tmp_path / "config.yml", http={"tls": {
        "certificate": pki.cert, "key": pki.key, "clientcas": [pki.ca]}})
    ready = ssl.create_default_context(cafile=str(pki.ca))
    ready.load_cert_chain(str(client_dir / "client.cert"), str(client_dir / "client.key"))
    server = start_tls_dockyard(tmp_path / "data", config, pki.ca, context=ready)
    try:
        ca_only = certs(tmp_path / "ca", pki.ca)
        refused = copy("--dest-cert-dir", str(ca_only), f"oci:{layout.path}:v1",
                       f"{server.host}/mtls/app:v1", home=home)
        assert refused.returncode == 1, refused.stderr
        done = copy("--dest-cert-dir", str(client_dir), f"oci:{layout.path}:v1",
                    f"{server.host}/mtls/app:v1", home=home)
        assert done.returncode == 0, done.stderr
        assert digest_at(tmp_path, client_dir, f"{server.host}/mtls/app:v1") == layout.digest
        # without verification the client certificate is still offered (as skopeo's)
        keys_only = certs(tmp_path / "keys", client_dir / "client.cert",
                          client_dir / "client.key")
        done = copy("--dest-tls-verify=false", "--dest-cert-dir", str(keys_only),
                    f"oci:{layout.path}:v1", f"{server.host}/mtls/app:v2", home=home)
        assert done.returncode == 0, done.stderr
        assert digest_at(tmp_path, client_dir, f"{server.host}/mtls/app:v2") == layout.digest
    finally:
        server.stop()
