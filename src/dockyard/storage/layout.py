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
      imports/<alg>-<hex>           a blob `dockyard import --copy` is copying in
      reserve                       the ballast: allocated space given up when the disk
                                    is full, so metadata writes can go on (`guard.py`)

The blob keys are the ones CNCF Distribution uses under `docker/registry/v2/`, so an
existing Distribution tree can be adopted without copying a byte. Distribution's own
keys (read by `dockyard import`) are drawn below, with the functions that name them::

    docker/registry/v2/                         DISTRIBUTION_ROOT: Dockyard's root there
      blobs/sha256/xx/<hex>/data                the same keys as Dockyard's
      repositories/<name>/                      <name> may contain '/'
        _manifests/tags/<tag>/current/link      "sha256:<hex>": the tag's manifest
        _manifests/tags/<tag>/index/sha256/<hex>/link   earlier targets of the tag
        _manifests/revisions/sha256/<hex>/link  a manifest held by the repository
        _layers/sha256/<hex>/link               a blob linked into the repository
        _uploads/<id>/...                       uploads in progress (ignored)
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid

BLOBS = "blobs"
UPLOADS = "uploads"
IMPORTS = "imports"
"""Blobs being copied in by `dockyard import --copy` (published from here by a move)."""
RESERVE = "reserve"
"""Key of the ballast file (`storage/guard.py`)."""


def blob_key(digest: Digest) -> str:
    """Key of the published bytes of `digest`."""
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blob_dir(digest: Digest) -> str:
    """Prefix holding everything stored for `digest`."""
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def import_key(digest: Digest) -> str:
    """Key of the bytes of `digest` while `dockyard import --copy` copies them in."""
    return f"{IMPORTS}/{digest.algorithm}-{digest.hex}"


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



def blob_of(key: str) -> Digest | None:
    """The digest whose bytes `key` holds (`blobs/<alg>/<xx>/<hex>/data`), else None."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != BLOBS or parts[4] != "data":
        return None
    try:
        digest = Digest.parse(f"{parts[1]}:{parts[3]}")
    except DigestInvalid:
        return None
    return digest if parts[2] == digest.hex[:2] else None


# --- CNCF Distribution's tree (read by `dockyard import`) ---------------------------

DISTRIBUTION_ROOT = "docker/registry/v2"
"""Where Distribution's keys start under its `rootdirectory`; its blob keys below it
are Dockyard's own."""
DIST_REPOSITORIES = "repositories"


@dataclass(frozen=True, slots=True)
class DistributionLink:
    """One link file of a Distribution repository, named by its key."""

    repository: str
    #: "tag" (`_manifests/tags/<tag>/current/link`), "revision" or "layer"
    kind: str
    #: the tag, or the digest the key names (revisions and layers)
    name: str


def distribution_link(key: str) -> DistributionLink | None:
    """What the key (relative to `DISTRIBUTION_ROOT`) of a link file says; None for
    any other key (tag index history, uploads, stray files)."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != DIST_REPOSITORIES or parts[-1] != "link":
        return None
    for i in range(2, len(parts)):
        if parts[i] in ("_manifests", "_layers"):
            repository = "/".join(parts[1:i])
            rest = parts[i:]
            break
    else:
        return None
    if rest[:2] == ["_manifests", "tags"] and len(rest) == 5 and rest[3] == "current":
        return DistributionLink(repository, "tag", rest[2])
    kind = {("_manifests", "revisions"): "revision", ("_layers",): "layer"}.get(
        tuple(rest[:2]) if rest[0] == "_manifests" else tuple(rest[:1]))
    algorithm, hex_ = (rest[2], rest[3]) if rest[0] == "_manifests" else (rest[1], rest[2])
    if kind is None or len(rest) != (5 if rest[0] == "_manifests" else 4):
        return None
    return DistributionLink(repository, kind, f"{algorithm}:{hex_}")
