"""The token endpoint's OAuth2 form (`POST /auth/token`): read bounded, parse leniently.

A pure parser the tests can fuzz: whatever the bytes, it answers with a dict of strings,
never an exception; the endpoint then refuses what it does not understand with an
OAuth2 error.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from dockyard.api.bodies import read_body

#: Largest form accepted: a few scopes and a refresh token take a few KiB.
MAX_FORM = 64 * 1024


async def read_form(request: web.Request) -> bytes | None:
    """The request body, or None when it is longer than `MAX_FORM` (chunked or not)."""
    if (request.content_length or 0) > MAX_FORM:
        return None
    try:
        return await read_body(request, MAX_FORM, OverflowError())
    except OverflowError:
        return None


def parse_form(body: bytes) -> dict[str, str]:
    """`application/x-www-form-urlencoded` fields; the last of a repeated field wins.

    Invalid UTF-8, raw or percent-encoded, becomes U+FFFD, so every value can be
    encoded again (into a log line, a token claim or a bcrypt input).
    """
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                          encoding="utf-8", errors="replace"))
