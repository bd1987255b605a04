"""TLS on the listener: certificates reloaded on SIGHUP and when the files change, while an
upload that started before goes on over its connection; mutual TLS with a client CA."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.authenv import (
    issue_server_cert,
    make_pki,
    sighup,
    start_tls_dockyard,
    write_config,
)


def peer_cn(port: int, ca: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def wait_for_cn(port: int, ca: Path, cn: str, timeout: float = 15.0) -> None:
    """Every new handshake (on whichever worker takes it) presents `cn`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(peer_cn(port, ca) == cn for _ in range(8)):
            return
        time.sleep(0.1)
    raise AssertionError(f"handshakes still do not present {cn}")


def _read_response(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.0/1.1 on purpose
def test_certificate_reload_keeps_an_upload_in_flight(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", cn="first")
    config = write_config(tmp_path / "config.yml", http={"tls": {
        "certificate": pki.cert, "key": pki.key, "reload_interval": "1s"}})
    server = start_tls_dockyard(tmp_path / "data", config, pki.ca, workers=2)
    try:
        assert peer_cn(server.port, pki.ca) == "first"
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        # TLS 1.2 is the floor
        old = ssl.create_default_context(cafile=str(pki.ca))
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises((ssl.SSLError, ConnectionResetError)), \
                socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                old.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass

        repo = "tls/reload"
        r = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", verify=ctx)
        assert r.status_code == 202
        location = r.headers["Location"]
        data = os.urandom(3 * 1024 * 1024)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(f"PUT {location}?digest={digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode())
        half = len(data) // 2
        tls.sendall(data[:half])

        # an ACME client renews: new files, then SIGHUP
        issue_server_cert(pki, "second")
        sighup(server)
        wait_for_cn(server.port, pki.ca, "second")

        tls.sendall(data[half:])
        head = _read_response(tls)
        assert head.startswith(b"HTTP/1.1 201"), head[:300]
        # the same connection keeps working after the reload
        tls.sendall(f"HEAD /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_response(tls).startswith(b"HTTP/1.1 200")
        tls.close()
        got = httpx.get(f"{server.url}/v2/{repo}/blobs/{digest}", verify=ctx)
        assert got.content == data

        # no signal: the files change and the workers notice on their own
        issue_server_cert(pki, "third")
        wait_for_cn(server.port, pki.ca, "third")

        # a broken pair keeps the previous certificate
        pki.cert.write_text("not a certificate")
        sighup(server)
        time.sleep(1.5)
        assert peer_cn(server.port, pki.ca) == "third"
        assert "keeping the previous certificate" in server.log.read_text()
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    client_cert, client_key = tmp_path / "client.crt", tmp_path / "client.key"
    issue_server_cert(pki, "builder", client_cert, client_key, client=True)
    config = write_config(tmp_path / "config.yml", http={"tls": {
        "certificate": pki.cert, "key": pki.key, "clientcas": [pki.ca]}})
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(client_cert), str(client_key))
    server = start_tls_dockyard(tmp_path / "data", config, pki.ca, context=ctx)
    try:
        plain = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.url}/v2/", verify=plain)
        assert httpx.get(f"{server.url}/v2/", verify=ctx).status_code == 200
    finally:
        server.stop()
