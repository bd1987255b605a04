"""Tag lists and the catalog with `n`/`last` pagination, the referrers API a page at a
time (`Link` to the next, with an opaque `last`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlencode

from aiohttp import web

from dockyard.api.access import catalog_filter
from dockyard.api.context import SETTINGS, Match, registry
from dockyard.core.manifests import referrers_index
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import PaginationInvalid

T = TypeVar("T")

#: what `n` may be: ASCII digits only (Python's int() also takes `1_0`, ` 1`, `+1` and
#: other scripts' digits)
_COUNT = re.compile(r"[0-9]+")


def _count(text: str, most: int) -> int:
    """`n` as a number of results, at most `most`; PaginationInvalid unless digits."""
    if not _COUNT.fullmatch(text):
        raise PaginationInvalid(f"n must be a non-negative integer, not {text[:20]!r}",
                                {"n": text[:20]})
    digits = text.lstrip("0") or "0"
    # past `most`'s length it is more than `most`: no conversion of a huge number
    return most if len(digits) > len(str(most)) else min(int(digits), most)


def page_query(request: web.Request) -> tuple[int, str | None]:
    """`n` and `last` of a listing. Without `n` a page is `limits.tags_page_max` long,
    as with the largest `n`: a listing without it was every tag or repository at once."""
    query = request.rel_url.query
    most = request.app[SETTINGS].limits.tags_page_max
    n = _count(query["n"], most) if "n" in query else most
    # no name or tag holds a NUL, so one past `last` is one past its text before the NUL
    # (which PostgreSQL could not compare: it takes no NUL in text)
    last = query.get("last", "").partition("\x00")[0]
    return n, last or None


def _json(doc: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), content_type="application/json",
                        headers=headers)


def next_link(path: str, params: dict[str, str | int]) -> dict[str, str]:
    """The `Link` header naming the next page of a listing."""
    return {"Link": f'<{path}?{urlencode(params)}>; rel="next"'}


def page_of(found: list[T], n: int, path: str, name: Callable[[T], str]
            ) -> tuple[list[T], dict[str, str] | None]:
    """The first `n` of `found` (read with one more, to know whether a next page exists)
    and the `Link` naming that page, after the last one's `name`; n=0 asks for none and
    names no next page."""
    if len(found) <= n:
        return found, None
    found = found[:n]
    return found, (next_link(path, {"n": n, "last": name(found[-1])}) if found else None)


async def list_tags(request: web.Request, match: Match) -> web.StreamResponse:
    n, last = page_query(request)
    if n == 0:
        await registry(request).manifests.tags(match.name, 0, None)
        return _json({"name": match.name, "tags": []})
    found, headers = page_of(await registry(request).manifests.tags(match.name, n + 1, last),
                             n, f"/v2/{match.name}/tags/list", str)
    return _json({"name": match.name, "tags": found}, headers)


async def tag_records(request: web.Request, match: Match) -> web.StreamResponse:
    """`GET /admin/v1/tags/<name>`: the tags list with each tag's digest, push time and
    pusher (null when no account pushed it), paged as the tags list is (at most
    `limits.tags_page_max` a page)."""
    n, last = page_query(request)
    found, headers = page_of(
        await registry(request).manifests.tag_records(match.name, n + 1 if n else 0, last),
        n, f"/admin/v1/tags/{match.name}", lambda t: t.tag)
    return _json({"name": match.name, "tags": [
        {"tag": t.tag, "digest": t.digest, "pushed_at": t.pushed_at, "pushed_by": t.pushed_by}
        for t in found]}, headers)


async def catalog(request: web.Request, _match: Match) -> web.StreamResponse:
    n, last = page_query(request)
    if n == 0:
        return _json({"repositories": []})
    # only the repositories the caller may pull; one more than a page tells if more exist
    found, headers = page_of(
        await registry(request).repositories.catalog(n + 1, last, catalog_filter(request)),
        n, "/v2/_catalog", str)
    return _json({"repositories": found}, headers)


async def referrers(request: web.Request, match: Match) -> web.StreamResponse:
    """A page of at most `limits.referrers_page_size` descriptors; `Link` names the next
    (its `last` an opaque cursor, `artifactType` kept)."""
    subject = Digest.parse(match.reference)
    query = request.rel_url.query
    artifact_type = query.get("artifactType") or None
    found, following = await registry(request).manifests.referrers(
        match.name, subject, artifact_type,
        size=request.app[SETTINGS].limits.referrers_page_size, last=query.get("last") or None)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    if following is not None:
        params: dict[str, str | int] = {"last": following}
        if artifact_type:
            params["artifactType"] = artifact_type
        headers.update(next_link(f"/v2/{match.name}/referrers/{subject}", params))
    return web.Response(body=referrers_index(found), headers=headers,
                        content_type=mt.OCI_INDEX)


async def base(_request: web.Request, _match: Match) -> web.StreamResponse:
    return _json({})
