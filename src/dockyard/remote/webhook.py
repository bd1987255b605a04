"""Posting notification envelopes to an endpoint (the `Sender` of `core/notify.py`)."""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict

from dockyard.config.settings import EndpointSettings
from dockyard.core.notify import ENVELOPE_TYPE
from dockyard.received import discard


class DeliveryFailed(Exception):
    """The endpoint answered with a status other than 2xx or 3xx."""


class WebhookSender:
    """One HTTP client session for every endpoint; Distribution counts any 2xx or 3xx
    answer as delivered (redirects are not followed)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def send(self, endpoint: EndpointSettings, body: bytes) -> None:
        if self._session is None:
            # the answer's body is never used: read (1 MiB at most) only so that the
            # connection serves the next envelope, and never inflated
            self._session = aiohttp.ClientSession(auto_decompress=False,
                                                  headers={"Accept-Encoding": "identity"})
        headers: CIMultiDict[str] = CIMultiDict()
        for name, values in endpoint.headers.items():
            for value in values:
                headers.add(name, value)
        headers["Content-Type"] = ENVELOPE_TYPE
        timeout = aiohttp.ClientTimeout(total=endpoint.timeout.total_seconds())
        async with self._session.post(endpoint.url, data=body, headers=headers,
                                      timeout=timeout, allow_redirects=False) as resp:
            await discard(resp)
            if not 200 <= resp.status < 400:
                raise DeliveryFailed(f"{endpoint.url} answered HTTP {resp.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
