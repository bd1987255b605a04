"""Behind a reverse proxy: the client's address and the registry's public URL.

`X-Forwarded-For`, `-Proto` and `-Host` are believed only when the connection comes from an
address in `http.trusted_proxies`; from anyone else they are ignored, so a client cannot
choose the address its failed logins are counted under, nor the URL in a token realm.
The public URL is `http.host` when configured, else what a trusted proxy forwarded, else
the scheme and `Host` of the request itself. With `http.relativeurls: false` every
`Location` header is made absolute on that URL (Distribution's behaviour); by default
Locations stay relative, which every client resolves against the URL it used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from dockyard.api.context import SETTINGS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, cidrs: Sequence[str]) -> None:
        try:
            self.networks: list[Network] = [ipaddress.ip_network(c, strict=False)
                                            for c in cidrs]
        except ValueError as exc:
            raise ValueError(f"http.trusted_proxies: {exc}") from None

    def trusts(self, address: str | None) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.networks)


PROXIES = web.AppKey("trusted_proxies", TrustedProxies)


def _trusted(request: web.Request) -> bool:
    proxies = request.config_dict.get(PROXIES)
    return proxies is not None and proxies.trusts(request.remote)


def client_address(request: web.Request) -> str:
    """The client's address: the last untrusted hop of X-Forwarded-For from a trusted peer."""
    peer = request.remote or ""
    if not _trusted(request):
        return peer
    proxies = request.config_dict[PROXIES]
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
            if h.strip()]
    for hop in reversed(hops):
        if not proxies.trusts(hop):
            return hop
    return hops[0] if hops else peer


def _first(request: web.Request, name: str) -> str:
    return request.headers.get(name, "").split(",")[0].strip()


def public_base(request: web.Request) -> str:
    """`scheme://host[:port]` clients use to reach this registry."""
    configured = request.config_dict[SETTINGS].http.host
    if configured:
        return configured.rstrip("/")
    scheme = "https" if request.secure else "http"
    host = request.host
    if _trusted(request):
        proto = _first(request, "X-Forwarded-Proto").lower()
        if proto in ("http", "https"):
            scheme = proto
        host = _first(request, "X-Forwarded-Host") or host
    return f"{scheme}://{host}"


async def absolute_locations(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: a relative Location becomes absolute on the public URL."""
    location = response.headers.get("Location")
    if location and location.startswith("/"):
        response.headers["Location"] = public_base(request) + location
