"""Domain errors raised by `oci`, `core` and `storage`; `api` maps them to OCI error codes."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base of every error a client can cause; `code` is the OCI error code it maps to.

    `retry_after`, when set, is sent as `Retry-After` (seconds): the client may try
    again then. `server_fault`: the registry's side failed, so the error is also logged
    (each time, unless `log_each` is off: whoever raises it logs a summary instead).
    """

    code = "UNKNOWN"
    retry_after: int | None = None
    server_fault = False
    log_each = True

    def __init__(self, message: str = "", detail: Any = None) -> None:
        # the class's docstring is the default message: its first paragraph only (the
        # rest is for developers, not for clients)
        message = message or (self.__class__.__doc__ or self.code).strip().split("\n\n")[0]
        super().__init__(message)
        self.message = message
        self.detail = detail


class BlobUnknown(RegistryError):
    """blob unknown to registry"""

    code = "BLOB_UNKNOWN"


class BlobUploadInvalid(RegistryError):
    """blob upload invalid"""

    code = "BLOB_UPLOAD_INVALID"


class BlobUploadUnknown(RegistryError):
    """blob upload unknown to registry"""

    code = "BLOB_UPLOAD_UNKNOWN"


class RangeInvalid(RegistryError):
    """requested range is not satisfiable or out of order"""

    code = "RANGE_INVALID"

    def __init__(self, message: str = "", detail: Any = None, *, offset: int = 0) -> None:
        super().__init__(message, detail)
        self.offset = offset


class DigestInvalid(RegistryError):
    """provided digest did not match uploaded content"""

    code = "DIGEST_INVALID"


class SizeInvalid(RegistryError):
    """provided length did not match content length"""

    code = "SIZE_INVALID"


class ManifestBlobUnknown(RegistryError):
    """manifest references a manifest or blob unknown to registry"""

    code = "MANIFEST_BLOB_UNKNOWN"


class ManifestInvalid(RegistryError):
    """manifest invalid"""

    code = "MANIFEST_INVALID"


class ManifestUnknown(RegistryError):
    """manifest unknown to registry"""

    code = "MANIFEST_UNKNOWN"


class NameInvalid(RegistryError):
    """invalid repository name"""

    code = "NAME_INVALID"


class NameUnknown(RegistryError):
    """repository name not known to registry"""

    code = "NAME_UNKNOWN"


class TagInvalid(RegistryError):
    """manifest tag did not match URI"""

    code = "TAG_INVALID"


class Unsupported(RegistryError):
    """the operation is unsupported"""

    code = "UNSUPPORTED"


class PayloadTooLarge(RegistryError):
    """payload is larger than the registry accepts"""

    code = "SIZE_INVALID"


class PaginationInvalid(RegistryError):
    """invalid number of results requested"""

    code = "PAGINATION_NUMBER_INVALID"


class TooManyRequests(RegistryError):
    """too many requests"""

    code = "TOOMANYREQUESTS"

    def __init__(self, message: str = "", detail: Any = None, *, retry_after: int = 1) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class StorageUnavailable(RegistryError):
    """the registry's storage is unavailable; try again later"""

    code = "UNAVAILABLE"
    retry_after = 5
    server_fault = True


class StorageFull(RegistryError):
    """insufficient storage: the registry's disk is full"""

    code = "UNKNOWN"
    server_fault = True


class CursorInvalid(RegistryError):
    """the change feed's cursor is not a valid event id"""

    code = "CURSOR_INVALID"


class CursorExpired(RegistryError):
    """the change feed no longer holds the events after this cursor; compare in full"""

    code = "CURSOR_EXPIRED"


class ReadOnlyReplica(RegistryError):
    """this registry is a read-only replica"""

    code = "UNSUPPORTED"


class Denied(RegistryError):
    """requested access to the resource is denied"""

    code = "DENIED"


class UpstreamUnavailable(RegistryError):
    """the upstream registry of this pull-through cache cannot be reached; try again later"""

    code = "UNAVAILABLE"
    retry_after = 5
    server_fault = True


def one_line(exc: BaseException) -> str:
    """The first line of what `exc` says, else its class name; for an exception that
    wraps a driver's (SQLAlchemy's `orig`), the driver's. A time limit that says nothing
    (asyncio's, aiohttp's, asyncpg's connect) is "no answer in time", not
    "TimeoutError"."""
    inner = getattr(exc, "orig", None)
    cause = inner if isinstance(inner, BaseException) else exc
    said = str(cause).strip()
    if said:
        return said.splitlines()[0]
    return "no answer in time" if isinstance(cause, TimeoutError) else type(cause).__name__
