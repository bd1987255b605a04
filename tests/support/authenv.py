"""Certificates, users and configs for the access-control tests (tests/*/test_auth_*)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.servers import Server, free_port

#: The platform's policy: everyone pulls, `builder` pushes, admins do everything.
PLATFORM_ACCESS: list[dict[str, Any]] = [
    {"repository": "private/**", "allow": {"authenticated": ["pull"],
                                           "group:admins": ["*"]}},
    {"repository": "**", "allow": {"anonymous": ["pull"], "builder": ["pull", "push"],
                                   "group:admins": ["*"]}},
]

#: name -> (password, groups)
USERS: dict[str, tuple[str, list[str]]] = {
    "builder": ("builder-secret-pw", []),
    "admin": ("admin-secret-pw", ["admins"]),
    "reader": ("reader-secret-pw", []),
}


def write_htpasswd(path: Path, users: Mapping[str, tuple[str, Sequence[str]]] = USERS) -> Path:
    """bcrypt entries at the lowest cost (the tests need speed, not strength)."""
    lines = []
    for name, (password, groups) in users.items():
        h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{name}:{h}" + (f":{','.join(groups)}" if groups else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate it signed (for 127.0.0.1 and localhost)."""

    ca: Path
    cert: Path
    key: Path
    ca_key: ec.EllipticCurvePrivateKey


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(directory: Path, cn: str = "dockyard-test") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cn} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki = Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key", ca_key)
    issue_server_cert(pki, cn)
    return pki


def issue_server_cert(pki: Pki, cn: str, cert: Path | None = None, key: Path | None = None,
                      *, client: bool = False) -> x509.Certificate:
    """A fresh leaf signed by the CA, written to `cert`/`key` (default: the server pair)."""
    now = datetime.datetime.now(datetime.UTC)
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca.subject).public_key(leaf_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   pki.ca_key.public_key()), critical=False)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.CLIENT_AUTH if client
                    else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    leaf = builder.sign(pki.ca_key, hashes.SHA256())
    cert_path, key_path = cert or pki.cert, key or pki.key
    # write both under temporary names, then rename: what an ACME client does
    tmp_cert, tmp_key = cert_path.with_suffix(".tmp1"), key_path.with_suffix(".tmp2")
    tmp_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    tmp_key.write_bytes(_pem_key(leaf_key))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    return leaf


def write_config(path: Path, **sections: Any) -> Path:
    path.write_text(yaml.safe_dump(_plain(sections)))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def token_auth(htpasswd: Path, **token: Any) -> dict[str, Any]:
    return {"method": "token", "htpasswd": {"path": htpasswd}, "token": token,
            "access": PLATFORM_ACCESS, "catalog": ["group:admins"]}


def basic_auth(htpasswd: Path) -> dict[str, Any]:
    return {"method": "htpasswd", "htpasswd": {"path": htpasswd}, "access": PLATFORM_ACCESS,
            "catalog": ["group:admins"]}


@dataclass
class TlsServer(Server):
    """A Dockyard listening with TLS (its `url` is https)."""

    ca: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def start_tls_dockyard(data: Path, config: Path, ca: Path, *, workers: int = 1,
                       env: dict[str, str] | None = None,
                       context: ssl.SSLContext | None = None) -> TlsServer:
    """`dockyard serve` with TLS from `config`, ready when /v2/ answers over https
    (checked with `context`, default: trusting `ca`)."""
    verify = context or ssl.create_default_context(cafile=str(ca))
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "dockyard", "serve", "--listen", f"127.0.0.1:{port}",
           "--data", str(data), "--workers", str(workers), "--config", str(config)]
    log = data.parent / f"dockyard-{port}.log"
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    server = TlsServer("dockyard", port, data, proc, log, ca=ca)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockyard exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(server.url + "/v2/", verify=verify, timeout=1.0).status_code in (
                    200, 401):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"dockyard did not become ready:\n{log.read_text()[-4000:]}")


def sighup(server: Server) -> None:
    server.proc.send_signal(signal.SIGHUP)


def get_token(base_url: str, scopes: Sequence[str], user: str | None = None,
              verify: bool | ssl.SSLContext = True) -> str:
    auth = (user, USERS[user][0]) if user else None
    resp = httpx.get(f"{base_url}/auth/token", verify=verify, auth=auth,
                     params=[("service", "dockyard"), *[("scope", s) for s in scopes]])
    resp.raise_for_status()
    return str(resp.json()["token"])
