"""Manifest use cases: verified push, pull by tag or digest, delete, tags, referrers."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

from dockyard.core.notify import Notifier
from dockyard.core.proxy import ProxyRoutes, Pulled, PullThrough
from dockyard.core.pulls import PullRecorder
from dockyard.metadata.records import ManifestRecord, NewManifest, ReferrerRecord, TagRecord
from dockyard.metadata.store import MetadataStore, MissingReferences
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestUnknown,
    NameUnknown,
    PaginationInvalid,
    PayloadTooLarge,
    Unsupported,
)
from dockyard.oci.manifest import parse_manifest
from dockyard.oci.reference import is_tag, is_valid_tag, validate_tag


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    subject: str | None


def _is_foreign(media_type: str) -> bool:
    """Non-distributable layers are fetched from their URLs, not from the registry."""
    return "foreign" in media_type or "nondistributable" in media_type


def prepare_manifest(payload: bytes, content_type: str | None, digest: Digest
                     ) -> NewManifest:
    """Parse and validate a manifest into what the store records (a push, an import);
    `ManifestInvalid` on any defect."""
    manifest = parse_manifest(payload, content_type)
    return NewManifest(
        digest=str(digest),
        media_type=manifest.media_type,
        payload=payload,
        artifact_type=manifest.artifact_type,
        subject_digest=str(manifest.subject.digest) if manifest.subject else None,
        config_digest=str(manifest.config.digest) if manifest.config else None,
        annotations=json.dumps(manifest.annotations) if manifest.annotations else None,
        blob_digests=tuple(dict.fromkeys(
            str(b.digest) for b in manifest.blobs if not _is_foreign(b.media_type)
        )),
        child_digests=tuple(dict.fromkeys(str(c.digest) for c in manifest.children)),
    )


class ManifestService:
    """Manifests, tags and referrers of repositories."""

    def __init__(self, store: MetadataStore, *, max_size: int, delete_enabled: bool,
                 delete_referrers: bool = True, pulls: PullRecorder | None = None,
                 routes: ProxyRoutes | None = None, proxy: PullThrough | None = None,
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.routes = routes or ProxyRoutes()
        self.proxy = proxy
        self.notifier = notifier
        self.pulls = pulls
        self.max_size = max_size
        self.delete_enabled = delete_enabled
        self.delete_referrers = delete_referrers

    async def put(
        self, name: str, reference: str, payload: bytes, content_type: str | None, *,
        by: str | None = None, pushed_at: float | None = None,
    ) -> PutResult:
        """Store a pushed manifest (by the account `by`, when one pushed it; a tag's push
        time is `pushed_at` when given, else now)."""
        self.routes.refuse_writes(name)
        if len(payload) > self.max_size:
            raise PayloadTooLarge(f"manifest is larger than {self.max_size} bytes")
        if is_tag(reference):
            validate_tag(reference)
            wanted, tag = None, reference
        else:
            wanted, tag = Digest.parse(reference), None
        new = new_manifest(payload, content_type, wanted)
        try:
            await self.store.put_manifest(name, new, tag, by=by, pushed_at=pushed_at)
        except MissingReferences as exc:
            raise ManifestBlobUnknown(
                f"manifest references unknown blobs or manifests: {', '.join(exc.missing)}",
                [{"digest": d} for d in exc.missing],
            ) from None
        if self.notifier is not None:
            await self.notifier.emit("push", name, digest=new.digest, tag=tag,
                                     media_type=new.media_type, size=len(payload))
        return PutResult(new.digest, new.subject_digest)

    async def pull(self, name: str, reference: str, *, payload: bool = True) -> Pulled:
        """A client's pull: `get`, or in a pull-through cache, from upstream if need be.
        A GET (`payload`) is a pull event; a HEAD is none, as in Distribution."""
        route = self.proxy.route(name) if self.proxy is not None else None
        if route is None:
            pulled = Pulled(await self.get(name, reference, payload=payload))
        else:
            pulled = await self.proxy.manifest(route, name, reference,  # type: ignore[union-attr]
                                               payload=payload)
        if payload and self.notifier is not None and self.notifier.wants("pull"):
            record = pulled.record
            await self.notifier.emit("pull", name, digest=record.digest,
                                     media_type=record.media_type, size=record.size,
                                     tag=reference if is_tag(reference) else None)
        return pulled

    async def get(self, name: str, reference: str, *, payload: bool = True,
                  pull: bool = True) -> ManifestRecord:
        """The manifest `reference` names; by tag, a pull of it is recorded (its last-pull
        time, GET or HEAD) unless `pull` is False (a look by a job, as a sync's, is no
        pull)."""
        if is_tag(reference):
            # a reference that cannot be a tag names nothing: 404, as the conformance
            # suite expects, not TAG_INVALID (which is for pushes)
            record = (await self.store.manifest(name, tag=reference, payload=payload)
                      if is_valid_tag(reference) else None)
            if record is not None and self.pulls is not None and pull:
                self.pulls.record(name, reference)
        else:
            digest = str(Digest.parse(reference))
            record = await self.store.manifest(name, digest=digest, payload=payload)
        if record is None:
            raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {name}",
                                  {"name": name, "reference": reference[:200]})
        return record

    async def delete(self, name: str, reference: str, *, only_at: str | None = None) -> None:
        """Delete a tag or a manifest; a tag with `only_at` only while it names that
        digest (else `ManifestUnknown`, as for a tag that is not there)."""
        self.routes.refuse_writes(name)
        if not self.delete_enabled:
            raise Unsupported("deletes are disabled (storage.delete.enabled)")
        deleted: list[str] = []
        if is_tag(reference):
            found = is_valid_tag(reference) and await self.store.delete_tag(name, reference,
                                                                            only_at)
        else:
            deleted = await self.store.delete_manifest(
                name, str(Digest.parse(reference)), referrers=self.delete_referrers)
            found = bool(deleted)
        if not found:
            raise ManifestUnknown(f"manifest {reference[:200]!r} is not in {name}")
        if self.notifier is not None:
            if not deleted:
                await self.notifier.emit("delete", name, tag=reference)
            for d in deleted:  # the manifest, and the children and referrers it took
                await self.notifier.emit("delete", name, digest=d)

    async def tags(self, name: str, n: int | None, last: str | None) -> list[str]:
        found = await self.store.list_tags(name, n, last)
        if found is None:
            raise NameUnknown(f"repository {name!r} is not known", {"name": name})
        return found

    async def tag_records(self, name: str, n: int | None, last: str | None
                          ) -> list[TagRecord]:
        """`tags` with each tag's digest, push time and pusher (what a replica's full
        comparison reads from its primary, so that its tags keep their order for
        `keep_last` and say who pushed them)."""
        found = await self.store.tag_records(name, n, last)
        if found is None:
            raise NameUnknown(f"repository {name!r} is not known", {"name": name})
        return found

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None, *, size: int,
        last: str | None = None,
    ) -> tuple[list[ReferrerRecord], str | None]:
        """At most `size` referrers of `subject` (of `artifact_type`, if given) past the
        cursor `last`, and the cursor of the next page (None: there is none).
        `PaginationInvalid` for a `last` that is no cursor `referrer_cursor` made."""
        after = None if last is None else parse_referrer_cursor(last)
        if artifact_type is not None and "\x00" in artifact_type:
            return [], None  # no media type holds a NUL (nor may PostgreSQL compare one)
        # one more than a page tells whether another follows
        found = await self.store.referrers(name, str(subject), artifact_type,
                                           limit=size + 1, after=after)
        if len(found) <= size:
            return found, None
        return found[:size], referrer_cursor(found[size - 1])


def new_manifest(payload: bytes, content_type: str | None, wanted: Digest | None
                 ) -> NewManifest:
    """`prepare_manifest` of a pushed or fetched manifest; `wanted`: the digest it must
    have (`DigestInvalid` otherwise)."""
    if wanted is None:
        digest = Digest.of(payload)
    else:
        digest = Digest.of(payload, wanted.algorithm)
        if digest != wanted:
            raise DigestInvalid(f"manifest digest is {digest}, not {wanted}",
                                {"digest": str(wanted)})
    return prepare_manifest(payload, content_type, digest)


#: a referrers page cursor: the last referrer's created_at (the IEEE 754 bits of the
#: double, in hex: exact, whatever the value) and its row id
_CURSOR = re.compile(r"([0-9a-f]{16})\.([0-9]{1,10})")
#: `manifests.id` is an INTEGER: 32 bits on PostgreSQL, which refuses a larger operand
_MAX_ID = 2**31 - 1


def referrer_cursor(record: ReferrerRecord) -> str:
    """The opaque `last` of the referrers page that follows `record`."""
    created_at, row = record.position
    return f"{struct.pack('>d', created_at).hex()}.{row}"


def parse_referrer_cursor(text: str) -> tuple[float, int]:
    """The position a `referrer_cursor` names; `PaginationInvalid` for anything else
    (clients take it from the `Link` header and never make one)."""
    match = _CURSOR.fullmatch(text)
    if match is not None:
        created_at = struct.unpack(">d", bytes.fromhex(match[1]))[0]
        row = int(match[2])
        if math.isfinite(created_at) and row <= _MAX_ID:
            return created_at, row
    raise PaginationInvalid("last is not a referrers page cursor of this registry (follow "
                            "the Link header)", {"last": text[:100]})


def referrers_index(referrers: list[ReferrerRecord]) -> bytes:
    """The OCI image index the referrers API answers with."""
    entries = []
    for r in referrers:
        entry: dict[str, object] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        if r.artifact_type:
            entry["artifactType"] = r.artifact_type
        if r.annotations:
            entry["annotations"] = r.annotations
        entries.append(entry)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    return json.dumps(doc, separators=(",", ":")).encode()
