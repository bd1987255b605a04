"""The one place that knows where bytes live in a driver.

::

    <driver root>/
      blobs/
        sha256/
          e3/                       first two hex digits of the digest
            e3b0c442...b855/
              data                  the blob's bytes, published by an atomic move
        sha512/...
      uploads/
        <session id>                bytes of an upload in progress (one flat file: no
                                    directory to create and remove for each session)
      reserve                       the ballast: allocated space given up when the disk
                                    is full, so metadata writes can go on (`guard.py`)

The blob keys are the ones CNCF Distribution uses under `docker/registry/v2/`, so an
existing Distribution tree can be adopted without copying a byte.
"""

from __future__ import annotations

from dockyard.oci.digest import Digest

BLOBS = "blobs"
UPLOADS = "uploads"
RESERVE = "reserve"
"""Key of the ballast file (`storage/guard.py`)."""


def blob_key(digest: Digest) -> str:
    """Key of the published bytes of `digest`."""
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blob_dir(digest: Digest) -> str:
    """Prefix holding everything stored for `digest`."""
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def upload_key(session_id: str) -> str:
    """Key of the bytes received so far by upload session `session_id`."""
    return f"{UPLOADS}/{session_id}"


def probe_key(name: str) -> str:
    """Key of a readiness probe's few bytes: under `uploads/`, so one a crash left
    behind is swept with the orphaned uploads."""
    return f"{UPLOADS}/{name}"


def session_of(key: str) -> str | None:
    """The upload session a key under `uploads/` belongs to (None for any other key).

    Earlier builds kept a session's bytes at `uploads/<id>/data`; such keys still name
    their session, so the sweep of orphaned uploads removes what an upgrade left behind.
    """
    parts = key.split("/")
    if parts[0] != UPLOADS or len(parts) not in (2, 3) or not parts[1]:
        return None
    return parts[1] if len(parts) == 2 or parts[2] == "data" else None

