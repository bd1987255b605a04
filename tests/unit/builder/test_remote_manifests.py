"""The builder's registry look-ups against a registry whose manifests are not what a
manifest must be: a JSON array, or annotations that are not an object. Each is a
failure of that one reference (a build reports it), never an exception out of the
look-up (which stopped a whole build, and every scheduled rebuild, on a traceback)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dockyard.builder.remote import Registries
from dockyard.remote.client import RegistryClientError
from tests.support.servers import free_port

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BODIES = {
    "annotations-list": b'{"schemaVersion":2,"mediaType":"' + MANIFEST.encode()
                        + b'","annotations":["x"]}',
    "annotations-text": b'{"schemaVersion":2,"annotations":"x"}',
    "array": b"[1,2]",
    "not-json": b"{not json",
    "nested": b"[" * 100_000 + b"]" * 100_000,  # a RecursionError escaped the look-up
    "good": b'{"schemaVersion":2,"mediaType":"' + MANIFEST.encode()
            + b'","annotations":{"org.example":"1"}}',
}


async def _manifest(request: web.Request) -> web.Response:
    body = BODIES[request.match_info["ref"]]
    return web.Response(body=body, headers={
        "Content-Type": MANIFEST, "Docker-Content-Digest": "sha256:"
        + hashlib.sha256(body).hexdigest()})


async def _base(_: web.Request) -> web.Response:
    return web.json_response({})


@pytest.fixture
async def registry() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v2/", _base)
    app.router.add_route("*", "/v2/base/manifests/{ref}", _manifest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_lookup_reports_a_malformed_manifest_as_that_reference_failing(
        registry: str) -> None:
    refs = [f"{registry}/base:{name}" for name in BODIES]
    async with Registries([registry]) as registries:
        found = await registries.lookup_many(refs)
    for name in BODIES:
        result = found[f"{registry}/base:{name}"]
        if name == "good":
            assert not isinstance(result, Exception)
            assert result is not None
            assert result.annotations == {"org.example": "1"}
        else:
            assert isinstance(result, RegistryClientError), (name, result)
            assert "not a JSON object" in str(result)


async def test_amend_refuses_a_malformed_manifest_with_one_line(registry: str) -> None:
    async with Registries([registry]) as registries:
        for name in ("annotations-list", "array"):
            with pytest.raises(RegistryClientError, match="not a JSON object"):
                await registries.amend(f"{registry}/base:{name}", {"a": "b"}, [])
