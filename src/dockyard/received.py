"""What an HTTP client response's body holds, streamed on or read into memory with a bound.

`StreamReader.read(n)`, `iter_chunked(n)` and `iter_any()` join the buffered pieces
into a new buffer, and `read(n)` slices them too: a copy of every byte. A stream passed
on (an S3 object to a client, a blob copied or fetched through a pull-through cache)
needs no buffer of its own. A body cut short raises in aiohttp, which knows its length.

A body read whole (a manifest, a listing page, a token, an error) comes from someone
else's server: it is read only up to a size no honest server exceeds (the limits of
containers/image since CVE-2020-1702), so a hostile or broken upstream cannot make a
process allocate without bound.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

MiB = 1 << 20
#: a manifest or an index: CNCF Distribution refuses to store larger ones
MANIFEST_LIMIT = 4 * MiB
#: a JSON document of several entries: a tags or catalog page, a referrers index, a
#: page of the change feed (Distribution 2.8 answers all of a repository's tags at once)
DOCUMENT_LIMIT = 32 * MiB
#: a token, an error, an answer whose body is only glanced at
SMALL_LIMIT = 1 * MiB


class BodyTooLarge(Exception):
    """A response body is longer than the limit its reader set; nothing more is read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body is larger than {_size(limit)}")
        self.limit = limit


async def pieces(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's bytes in the pieces the connection delivered them, none copied.

    (b"", True) is an empty chunked-encoding boundary, except from aiohttp's shared
    reader of bodiless answers (HEAD, 204, Content-Length 0), which says (b"", False)
    once per process and (b"", True) ever after: it is at EOF, so that ends too."""
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk or content.at_eof():
            return


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` as soon as it (or its Content-Length) passes
    `limit` bytes; the connection is then closed rather than drained."""
    if resp.content_length is not None and resp.content_length > limit:
        resp.close()
        raise BodyTooLarge(limit)
    body = bytearray()
    async for piece in pieces(resp.content):
        body += piece
        if len(body) > limit:
            resp.close()
            raise BodyTooLarge(limit)
    return bytes(body)


async def discard(resp: aiohttp.ClientResponse) -> None:
    """Read a body nobody needs, so the connection can serve again; a long one closes
    the connection instead."""
    with contextlib.suppress(BodyTooLarge):
        await read_at_most(resp, SMALL_LIMIT)


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"


def parse_json(data: bytes | str) -> Any:
    """`json.loads`, where nesting deeper than the decoder can follow is a `ValueError`
    too: a document of a hundred thousand `[` from someone else's server (a manifest, a
    listing, an error body, a token) ended a copy, a sync's source or a build on a
    RecursionError traceback."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None
