"""A registry repository as a copy's end, against a real aiohttp server on loopback that
answers what real registries may: a referrers fallback tag that is no index of
descriptors, an `Oci-Subject` header spelled as Go spells it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.copying.ends import Fetched
from dockyard.copying.registry_end import RegistryRepository
from dockyard.remote.client import RegistryClient, RegistryClientError

SUBJECT = "sha256:" + "a" * 64
REFERRER = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "b" * 64, "size": 10}
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
async def malformed() -> AsyncIterator[TestServer]:
    """A registry without the referrers API whose fallback tag holds `[5]`."""
    body = b'{"schemaVersion": 2, "mediaType": "' + INDEX.encode() + b'", "manifests": [5]}'

    async def fallback(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={
            "Content-Type": INDEX, "Docker-Content-Digest": "sha256:" + "c" * 64})

    async def none(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", f"/v2/a/manifests/sha256-{'a' * 64}", fallback)
    app.router.add_get(f"/v2/a/referrers/{SUBJECT}", none)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def test_a_malformed_referrers_fallback_index_is_a_client_error(
        malformed: TestServer) -> None:
    async with RegistryClient(str(malformed.make_url(""))) as client:
        repo = RegistryRepository(client, "h", "a")
        with pytest.raises(RegistryClientError, match="not an index of descriptors"):
            await repo.referrers(SUBJECT)
        with pytest.raises(RegistryClientError, match="not an index of descriptors"):
            await repo.add_referrer_fallback(SUBJECT, REFERRER)


@pytest.mark.parametrize("spelling", ["OCI-Subject", "Oci-Subject", "oci-subject"])
async def test_a_subject_header_in_any_case_means_no_fallback_tag_is_needed(
        spelling: str) -> None:
    # Go registries send `Oci-Subject`: read case-sensitively, the engine wrote
    # sha256-<hex> fallback tags into registries that have a referrers API
    async def put(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, headers={spelling: SUBJECT,
                                                 "Docker-Content-Digest": REFERRER["digest"]})

    app = web.Application()
    app.router.add_put("/v2/a/manifests/{reference}", put)
    async with TestServer(app, host="127.0.0.1") as srv, \
            RegistryClient(str(srv.make_url(""))) as client:
        repo = RegistryRepository(client, "h", "a")
        fetched = Fetched(b'{"schemaVersion": 2}', REFERRER["mediaType"], REFERRER["digest"])
        assert await repo.put_manifest(REFERRER["digest"], fetched) is True
