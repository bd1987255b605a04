"""Dockyard behind Debian's nginx with deploy/nginx/dockyard.conf: TLS at nginx, token auth,
push and pull with skopeo and podman, Location headers and the token realm on the public URL.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import nginx
from tests.support.authenv import (
    USERS,
    Pki,
    get_token,
    make_pki,
    token_auth,
    write_config,
    write_htpasswd,
)
from tests.support.clients import Podman, Skopeo
from tests.support.images import random_layout, sha256
from tests.support.servers import Server, free_port, start_dockyard

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "dockyard.conf"
BUILDER = f"builder:{USERS['builder'][0]}"


@dataclass
class Front:
    dockyard: Server
    port: int
    pki: Pki
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"


def nginx_conf(root: Path, upstream: int, port: int, pki: Pki) -> Path:
    site = SITE.read_text()
    for old, new in (("server 127.0.0.1:5000;", f"server 127.0.0.1:{upstream};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("/etc/ssl/registry/fullchain.pem", str(pki.cert)),
                     ("/etc/ssl/registry/privkey.pem", str(pki.key))):
        assert old in site, f"{SITE} no longer has {old!r}"
        site = site.replace(old, new)
    return nginx.write_conf(root, site)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    if not Path(nginx.NGINX).exists():
        pytest.skip("nginx is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("auth-nginx")
    pki = make_pki(tmp / "pki")
    htpasswd = write_htpasswd(tmp / "htpasswd")
    config = write_config(tmp / "config.yml", auth=token_auth(htpasswd),
                          http={"trusted_proxies": ["127.0.0.1/32"], "relativeurls": False})
    server = start_dockyard(tmp / "data", workers=2, config=config)
    port = free_port()
    root = tmp / "nginx"
    root.mkdir()
    conf = nginx_conf(root, server.port, port, pki)
    try:
        proc = nginx.start(conf, f"https://127.0.0.1:{port}/v2/")
    except RuntimeError:
        server.stop()
        raise
    yield Front(server, port, pki, proc)
    nginx.stop(proc)
    server.stop()


def test_challenge_and_locations_carry_the_public_url(front: Front) -> None:
    import ssl

    verify = ssl.create_default_context(cafile=str(front.pki.ca))
    r = httpx.get(f"{front.url}/v2/", verify=verify)
    assert r.status_code == 401
    assert f'realm="{front.url}/auth/token"' in r.headers["WWW-Authenticate"]

    token = get_token(front.url, ["repository:public/loc:pull,push"], "builder", verify=verify)
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{front.url}/v2/public/loc/blobs/uploads/", headers=auth, verify=verify)
    assert r.status_code == 202
    location = r.headers["Location"]
    assert location.startswith(f"{front.url}/v2/public/loc/blobs/uploads/"), location
    data = b"through nginx"
    r = httpx.put(location, params={"digest": sha256(data)}, content=data, headers=auth,
                  verify=verify)
    assert r.status_code == 201
    assert r.headers["Location"] == f"{front.url}/v2/public/loc/blobs/{sha256(data)}"

    # straight to Dockyard from an address that is not a trusted proxy: forwarded headers
    # are ignored (the realm and the Location name the address actually used)
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport) as c:
        direct = f"http://127.0.0.1:{front.dockyard.port}"
        r = c.get(f"{direct}/v2/", headers={"X-Forwarded-Host": "evil.example",
                                            "X-Forwarded-Proto": "https"})
        assert f'realm="{direct}/auth/token"' in r.headers["WWW-Authenticate"]


def test_skopeo_and_podman_through_nginx(front: Front, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    skopeo = Skopeo(tmp_path / "skopeo", insecure_hosts=[front.host])
    layout = random_layout(tmp_path / "oci", "v1", layer_sizes=(2_500_000, 40_000))
    dest = f"docker://{front.host}/public/nginx:v1"
    refused = skopeo.copy(layout.ref, dest, check=False)
    assert refused.returncode != 0
    copied = skopeo.copy(layout.ref, dest, "--dest-creds", BUILDER)
    # every request went to the public URL nginx serves
    assert re.search(rf"https://{re.escape(front.host)}/v2/public/nginx/blobs/uploads/",
                     copied.stderr)
    assert sha256(skopeo.inspect_raw(dest)) == layout.digest

    podman = Podman(tmp_path / "podman", insecure_hosts=[front.host])
    reason = podman.usable()
    if reason is not None:
        pytest.skip(reason)
    name = f"{front.host}/public/nginx:v1"
    image_id = podman.pull(name)  # anonymously
    podman.run("login", "--tls-verify=false", "-u", "builder", "-p", USERS["builder"][0],
               front.host)
    name2 = f"{front.host}/public/nginx-podman:v2"
    podman.tag(image_id, name2)
    digest = podman.push(name2, f"docker://{name2}")
    assert sha256(skopeo.inspect_raw(f"docker://{name2}")) == digest
    access = (front.dockyard.data.parent / "nginx" / "access.log").read_text()
    assert "PUT /v2/public/nginx-podman/manifests/v2" in access
