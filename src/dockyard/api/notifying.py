"""What a request tells the notifications (`core/notify.py`): its id, client, host,
method, user agent, user and public URL, bound to the request's context and read only
when an event is made."""

from __future__ import annotations

from aiohttp import web

from dockyard.api.access import identity
from dockyard.api.proxy import client_address, public_base
from dockyard.core.notify import RequestInfo, bind_request


def bind(request: web.Request) -> None:
    """Tie `request` to the events its handler's core calls make."""

    def info() -> RequestInfo:
        return RequestInfo(
            id=getattr(request.protocol, "request_id", "") or "",
            addr=client_address(request), host=request.host, method=request.method,
            useragent=request.headers.get("User-Agent", ""),
            actor=identity(request).user or "", base_url=public_base(request))

    bind_request(info)
