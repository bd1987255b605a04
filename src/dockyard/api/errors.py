"""The one table from domain errors to OCI error codes and HTTP statuses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from dockyard.oci.errors import RegistryError

#: OCI / Docker error code -> HTTP status.
STATUS: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "RANGE_INVALID": 416,
    "PAGINATION_NUMBER_INVALID": 400,
    "UNKNOWN": 500,
    # Distribution's errcode for a backend that cannot answer now (503, with Retry-After)
    "UNAVAILABLE": 503,
    # Dockyard's change feed (`GET /admin/v1/events`): a cursor that is not an event id,
    # and one older than the events kept (the follower then compares in full)
    "CURSOR_INVALID": 400,
    "CURSOR_EXPIRED": 410,
}

#: Status overrides for errors whose code is shared with another status. A full disk is
#: 507 Insufficient Storage: clients that skip the body of a 5xx (containers/image,
#: Docker) still print the status line, which names the cause; 500 would not.
STATUS_BY_CLASS: dict[str, int] = {"PayloadTooLarge": 413, "StorageFull": 507}


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def error_response(
    code: str, message: str, detail: Any = None, *, status: int | None = None,
    headers: dict[str, str] | None = None, head: bool = False,
) -> web.StreamResponse:
    """An OCI error envelope; HEAD responses carry the status and no body."""
    body = error_body(code, message, detail)
    if head:
        return HeadResponse(status or STATUS[code], len(body),
                            {**(headers or {}), "Content-Type": "application/json"})
    return web.Response(status=status or STATUS[code], headers=headers,
                        content_type="application/json", body=body)


class HeadResponse(web.StreamResponse):
    """An answer to HEAD: the headers of the GET, Content-Length included, no body."""

    def __init__(self, status: int, length: int, headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self.content_length = length


def from_exception(
    exc: RegistryError, *, head: bool = False, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    # a subclass (the guard's `UploadsRefused`) answers as the class it refines
    status = next((STATUS_BY_CLASS[c.__name__] for c in type(exc).__mro__
                   if c.__name__ in STATUS_BY_CLASS), STATUS.get(exc.code, 400))
    if exc.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
    return error_response(exc.code, exc.message, exc.detail, status=status, head=head,
                          headers=headers)
