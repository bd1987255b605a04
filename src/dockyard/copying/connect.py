"""Opening the end a reference names: a registry repository (client, credentials, TLS)
or an OCI layout directory. Shared by `dockyard copy` and the server's jobs."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from dockyard.copying.layout_end import ImageLayout
from dockyard.copying.refs import DOCKER_HUB, ImageRef, LayoutRef, RegistryRef
from dockyard.copying.registry_end import RegistryRepository
from dockyard.received import MANIFEST_LIMIT
from dockyard.remote import credentials as creds
from dockyard.remote.certs import tls_for
from dockyard.remote.client import RegistryClient

#: Where Docker Hub's API lives.
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach one end: credentials (else auth files) and TLS verification."""

    credentials: creds.Credentials | None = None
    verify_tls: bool = True
    auth_file: Path | None = None
    connections: int = 16
    #: the largest manifest read from a registry (a server: its own limit)
    max_manifest: int = MANIFEST_LIMIT
    #: CAs and client certificates for the registry (default: its `certs.d` directory)
    cert_dir: Path | None = None


#: how long each probe of `base_url` waits for the host's answer
PROBE_SECONDS = 10


async def base_url(host: str, verify_tls: bool, probe: ssl.SSLContext | bool = False
                   ) -> str:
    """`https://host`; without TLS verification, plain `http://host` when the host does
    not speak TLS (as skopeo's `--tls-verify=false`). `probe`: the unverified TLS to ask
    with (a context offering the host's client certificate, if it has one).

    A host silent to the TLS probe may be a plain HTTP server waiting for a line end
    that a TLS hello never sends, so HTTP is asked too; silent to both, the host is
    hung, and that is a `TimeoutError` naming it now rather than each request waiting
    out its own time limit."""
    api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
    if verify_tls:
        return f"https://{api_host}"
    timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(f"https://{api_host}/v2/", ssl=probe):
                return f"https://{api_host}"
        except TimeoutError:
            pass
        except (aiohttp.ClientError, ssl.SSLError, OSError):
            return f"http://{api_host}"
        try:
            async with session.get(f"http://{api_host}/v2/"):
                return f"http://{api_host}"
        except TimeoutError:
            raise TimeoutError(f"{api_host} answered neither HTTPS nor HTTP within "
                               f"{PROBE_SECONDS} s") from None
        except (aiohttp.ClientError, OSError):
            return f"http://{api_host}"


@asynccontextmanager
async def open_end(ref: ImageRef, access: Access
                   ) -> AsyncIterator[RegistryRepository | ImageLayout]:
    """The `Source`/`Destination` for `ref`, closed on exit."""
    if isinstance(ref, LayoutRef):
        yield ImageLayout(Path(ref.path))
        return
    assert isinstance(ref, RegistryRef)
    found = access.credentials
    if found is None:
        files = [access.auth_file] if access.auth_file else None
        found = creds.lookup(ref.host, ref.repository, files)
    # by the host as the reference names it: certs.d calls Docker Hub `docker.io`, not
    # the host its API is on (containers/image)
    tls = tls_for(ref.host, verify=access.verify_tls, cert_dir=access.cert_dir)
    client = RegistryClient(await base_url(ref.host, access.verify_tls, tls),
                            credentials=found, verify_tls=access.verify_tls,
                            connections=access.connections, max_manifest=access.max_manifest,
                            tls=tls)
    try:
        yield RegistryRepository(client, ref.host, ref.repository)
    finally:
        await client.close()
