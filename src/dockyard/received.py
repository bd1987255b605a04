"""An HTTP client response's body as the pieces arrived, for the places that stream one.

`StreamReader.read(n)`, `iter_chunked(n)` and `iter_any()` join the buffered pieces
into a new buffer, and `read(n)` slices them too: a copy of every byte. A stream passed
on (an S3 object to a client, a blob copied or fetched through a pull-through cache)
needs no buffer of its own. A body cut short raises in aiohttp, which knows its length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


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
