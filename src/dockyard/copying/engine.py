"""The copy engine: walk an image's manifests, move its blobs, children before parents.

Manifests travel as the exact bytes the source stored, so digests are the same at both
ends (an index narrowed to some platforms is the one new document, and is reported).
A blob the destination has is skipped; one it can mount from the source's repository
(or a repository `MountHints` knows holds it) is mounted; any other streams from the
source's response into the destination's upload, never touching local disk (the
destination verifies the digest). Up to `jobs` blobs move at once; a blob needed twice
moves once. Tags are written last, so a destination tag never names a manifest whose
content is still arriving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from dockyard.copying.ends import (
    Destination,
    Fetched,
    MountHints,
    Source,
    referrer_descriptor,
)
from dockyard.copying.layout_end import LayoutError
from dockyard.copying.platforms import Platform, narrow
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, RegistryError, one_line
from dockyard.received import parse_json
from dockyard.remote.auth import AuthError
from dockyard.remote.client import RegistryClientError
from dockyard.units import human_bytes

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
#: Failures of either end that end one copy (reported, never a traceback).
END_ERRORS = (RegistryClientError, AuthError, LayoutError, RegistryError, aiohttp.ClientError,
              asyncio.TimeoutError, OSError, ValueError)


MAX_MANIFESTS = 10_000
"""Manifests (children, referrers) a copy fetches at most per image it was asked for: a
source that lists without end is an error, not a copy that never ends."""
MAX_CHILDREN = 1_000
"""Children one index may list (real ones list a few dozen platforms)."""
MAX_DEPTH = 8
"""Indexes within indexes, at most."""


class CopyError(Exception):
    """A copy failed; the message is one line naming the image and the failing end."""


class Progress(Protocol):
    """What the engine reports while it works (a terminal display, a log, a job's status)."""

    def blob_started(self, digest: str, size: int) -> None: ...

    def blob_advanced(self, digest: str, nbytes: int) -> None: ...

    def blob_finished(self, digest: str, outcome: str, size: int) -> None: ...

    def note(self, message: str) -> None: ...


class Silent:
    """A `Progress` that reports nothing."""

    def blob_started(self, digest: str, size: int) -> None:
        pass

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        pass

    def blob_finished(self, digest: str, outcome: str, size: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class CopyOptions:
    """How to copy: platforms to keep, referrers, dry run, blobs in flight."""

    platforms: tuple[Platform, ...] = ()
    referrers: bool = False
    dry_run: bool = False
    jobs: int = 4


@dataclass
class Summary:
    """What a copy did, for the closing line and for jobs' reports."""

    images: int = 0
    images_current: int = 0
    manifests_copied: int = 0
    manifests_present: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    referrers: int = 0
    narrowed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def line(self, dry_run: bool = False) -> str:
        verb = "would copy" if dry_run else "copied"
        text = (f"{verb} {self.images} image(s) ({self.images_current} already up to date): "
                f"blobs {self.blobs_copied} copied, {self.blobs_mounted} mounted, "
                f"{self.blobs_skipped} skipped; manifests {self.manifests_copied} copied, "
                f"{self.manifests_present} present; {human_bytes(self.bytes_copied)}")
        if self.referrers:
            text += f"; {self.referrers} referrer(s)"
        return text


class Copier:
    """Copies images from one `Source` to one `Destination`; reusable for many tags."""

    def __init__(self, source: Source, destination: Destination,
                 options: CopyOptions | None = None, progress: Progress | None = None,
                 hints: MountHints | None = None) -> None:
        self.source = source
        self.destination = destination
        self.options = options or CopyOptions()
        self.progress: Progress = progress or Silent()
        self.summary = Summary()
        self.hints = hints if hints is not None else MountHints()
        self._place = destination.place()
        self._slots = asyncio.Semaphore(max(1, self.options.jobs))
        self._blobs: dict[str, asyncio.Task[None]] = {}
        self._manifests: dict[str, asyncio.Task[None]] = {}
        self._referred: set[str] = set()
        #: manifests the destination has whose blobs and children were looked at
        self._checked: set[str] = set()
        self._prepared = False
        #: top-level copies begun: each may bring `MAX_MANIFESTS` manifests
        self._tops = 0

    # ------------------------------------------------------------ public

    async def copy(self, reference: str, tag: str | None) -> str:
        """Copy what `reference` names at the source; tag it `tag` at the destination
        (None: by digest only). Returns the digest now at the destination."""
        image = f"{self.source.describe()}:{reference}" if ":" not in reference else \
            f"{self.source.describe()}@{reference}"
        self._tops += 1
        try:
            return await self._copy(reference, tag)
        except CopyError as exc:
            raise CopyError(f"{image} -> {self.destination.describe()}: {exc}") from exc

    async def copy_tags(self, tags: list[str]) -> None:
        """Copy each tag under the same name, several at once (a tag already up to date
        costs two small requests, so more tags than blobs are in flight); the first
        failure stops."""
        gate = asyncio.Semaphore(max(1, self.options.jobs) * 4)

        async def one(tag: str) -> None:
            async with gate:
                await self.copy(tag, tag)

        await _all(one(t) for t in tags)  # the first failure cancels the others

    async def close(self) -> None:
        """Cancel the blobs and manifests still in flight that no copy awaits any more
        (a copy failed while they moved), and wait for them: they went on after the
        run, and their failures were logged as "Task exception was never retrieved"."""
        pending = [t for t in (*self._blobs.values(), *self._manifests.values())
                   if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------ walking

    async def _copy(self, reference: str, tag: str | None) -> str:
        with self._failing("source", self.source.describe(), f"manifest {reference}"):
            top = await self.source.manifest(reference)
        original = top
        if self.options.platforms and top.media_type in INDEX_TYPES:
            _descriptors(_load(top), "manifests", top)  # every child an object, checked
            narrowed = narrow(top, self.options.platforms)
            if narrowed is None:
                wanted = ", ".join(str(p) for p in self.options.platforms)
                raise CopyError(f"index {top.digest} has none of the platforms {wanted}")
            if narrowed is not top:
                top = narrowed
                self.summary.narrowed.append(top.digest)
                self.progress.note(f"narrowed index {original.digest} to "
                                   f"{', '.join(str(p) for p in self.options.platforms)}: "
                                   f"new index {top.digest}")
        self.summary.images += 1
        target = tag or top.digest
        with self._failing("destination", self.destination.describe(), f"manifest {target}"):
            current = await self.destination.manifest_digest(target)
        if current == top.digest:
            self.summary.images_current += 1
            self.summary.manifests_present += 1
            await self._whole(top, depth=0)
            self.progress.note(f"{target}: up to date ({top.digest})")
        elif target != top.digest and await self._has_manifest(top.digest):
            # the content is there (another tag, an earlier run): only the tag moves
            await self._whole(top, depth=0)
            if not self.options.dry_run:
                with self._failing("destination", self.destination.describe(),
                                   f"manifest {target}"):
                    await self.destination.put_manifest(target, top)
            self.summary.manifests_present += 1
            self.progress.note(f"{target}: {'would be ' if self.options.dry_run else ''}"
                               f"{top.digest} (content already there)")
        else:
            await self._prepare()
            await self._tree(top, reference_at_destination=target, depth=0)
            self.progress.note(f"{target}: {'would be ' if self.options.dry_run else ''}"
                               f"{top.digest}")
        if self.options.referrers:
            await self._referrers(top)
        return top.digest

    async def _whole(self, fetched: Fetched, *, depth: int) -> None:
        """Bring what the destination lacks below a manifest it has: a blob set aside
        since (a registry's fsck found it corrupt: pulls answer BLOB_UNKNOWN until it
        is pushed again), a child manifest gone. Each blob's look is one HEAD, once per
        copier; a destination that counts only whole manifests as there needs none."""
        if self.destination.whole_on_lookup or fetched.digest in self._checked:
            return
        self._checked.add(fetched.digest)
        await self._below(fetched, depth, self.destination.describe(), self._whole_child)

    async def _below(self, fetched: Fetched, depth: int, end: str,
                     child: Callable[[str, int, str], Awaitable[None]]) -> None:
        """What a manifest names, at once: an index's children, each through `child`
        (its digest, depth and descriptor media type), or an image's blobs (`_blob`).
        `end` is the side whose index lists too many or nests too deep."""
        doc = _load(fetched)
        if fetched.media_type in INDEX_TYPES or "manifests" in doc:
            children = _descriptors(doc, "manifests", fetched)
            if len(children) > MAX_CHILDREN or depth >= MAX_DEPTH:
                raise CopyError(f"{end}: index {fetched.digest} lists {len(children)} "
                                f"manifests at depth {depth + 1} (at most {MAX_CHILDREN} "
                                f"and {MAX_DEPTH} levels are copied)")
            types = [_media_type(d) for d in doc.get("manifests") or []]
            await _all(child(digest, depth + 1, media_type)
                       for (digest, _), media_type in zip(children, types, strict=True))
        else:
            blobs = _descriptors(doc, "layers", fetched)
            if doc.get("config") is not None:
                blobs.insert(0, _descriptor(doc["config"], fetched, "config"))
            await _all(self._blob(digest, size) for digest, size in blobs)

    async def _whole_child(self, digest: str, depth: int, media_type: str) -> None:
        with self._failing("destination", self.destination.describe(), f"manifest {digest}"):
            stored = await self.destination.stored_manifest(digest)
        if stored is None:
            await self._manifest_by_digest(digest, depth, media_type)
        else:
            await self._whole(stored, depth=depth)

    async def _prepare(self) -> None:
        if not self._prepared and not self.options.dry_run:
            with self._failing("destination", self.destination.describe(), "authenticate"):
                await self.destination.prepare()
            self._prepared = True

    async def _manifest_by_digest(self, digest: str, depth: int, media_type: str = ""
                                  ) -> None:
        """Copy the manifest `digest` and everything below it, once per copier;
        `media_type` is its descriptor's, for a manifest that declares none."""
        task = self._manifests.get(digest)
        if task is None:
            self._count_manifest(digest)
            task = asyncio.ensure_future(self._child(digest, depth, media_type))
            task.add_done_callback(_retrieved)
            self._manifests[digest] = task
        await asyncio.shield(task)

    async def _has_manifest(self, digest: str) -> bool:
        with self._failing("destination", self.destination.describe(), f"manifest {digest}"):
            return await self.destination.manifest_digest(digest) == digest

    def _count_manifest(self, digest: str) -> None:
        if len(self._manifests) + len(self._referred) >= MAX_MANIFESTS * max(1, self._tops):
            raise CopyError(f"{self.source.describe()}: more than {MAX_MANIFESTS:,} manifests "
                            f"to copy for one image (at {digest}); stopped")

    async def _child(self, digest: str, depth: int, media_type: str) -> None:
        if await self._has_manifest(digest):
            self.summary.manifests_present += 1
            return
        with self._failing("source", self.source.describe(), f"manifest {digest}"):
            fetched = await self.source.manifest(digest)
        if not fetched.media_type and media_type:
            # an image-spec 1.0-era manifest that declares no mediaType (a layout knows
            # none for it): its parent's descriptor says, and a registry needs one
            fetched = Fetched(fetched.data, media_type, fetched.digest)
        await self._tree(fetched, reference_at_destination=digest, depth=depth)

    async def _tree(self, fetched: Fetched, *, reference_at_destination: str, depth: int
                    ) -> bool:
        """Children and blobs first, then the manifest itself under the reference."""
        await self._below(fetched, depth, self.source.describe(), self._manifest_by_digest)
        subject_indexed = True
        if not self.options.dry_run:
            with self._failing("destination", self.destination.describe(),
                               f"manifest {reference_at_destination}"):
                subject_indexed = await self.destination.put_manifest(
                    reference_at_destination, fetched)
        self.summary.manifests_copied += 1
        return subject_indexed

    # ------------------------------------------------------------ referrers

    async def _referrers(self, top: Fetched) -> None:
        """Bring every referrer of the image (and of an index's children), recursively."""
        subjects = [top.digest]
        doc = _load(top)
        subjects += [digest for digest, _ in _descriptors(doc, "manifests", top)]
        while subjects:
            subject = subjects.pop()
            if subject in self._referred:
                continue
            self._count_manifest(subject)
            self._referred.add(subject)
            with self._failing("source", self.source.describe(), f"referrers of {subject}"):
                found = await self.source.referrers(subject)
            for desc in found:
                digest, _ = _descriptor(desc, top, f"referrer of {subject}")
                await self._referrer(subject, digest)
                subjects.append(digest)

    async def _referrer(self, subject: str, digest: str) -> None:
        """Bring one referrer of `subject`; where the destination has no referrers API,
        list it in the `sha256-<hex>` fallback index too."""
        if await self._has_manifest(digest):
            self.summary.manifests_present += 1
            # present, but listed? a run that stopped between the referrer's PUT and
            # its fallback entry left it where no client finds it, and reruns took it
            # for done
            with self._failing("destination", self.destination.describe(),
                               f"referrers of {subject}"):
                if await self.destination.lists_referrer(subject, digest):
                    return
            if self.options.dry_run:
                return
            with self._failing("source", self.source.describe(), f"referrer {digest}"):
                fetched = await self.source.manifest(digest)
        else:
            await self._prepare()
            with self._failing("source", self.source.describe(), f"referrer {digest}"):
                fetched = await self.source.manifest(digest)
            indexed = await self._tree(fetched, reference_at_destination=digest, depth=0)
            self.summary.referrers += 1
            self.progress.note(f"referrer {digest} of {subject}")
            if indexed or self.options.dry_run:
                return
        with self._failing("destination", self.destination.describe(),
                           f"referrers tag of {subject}"):
            # the descriptor the referrers API would give, from the manifest itself:
            # the source's listing may lack its annotations or artifactType
            await self.destination.add_referrer_fallback(subject,
                                                         referrer_descriptor(fetched))

    # ------------------------------------------------------------ blobs

    async def _blob(self, digest: str, size: int) -> None:
        task = self._blobs.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._move(digest, size))
            task.add_done_callback(_retrieved)
            self._blobs[digest] = task
        await asyncio.shield(task)

    async def _move(self, digest: str, size: int) -> None:
        async with self._slots:
            outcome = await self._place_blob(digest, size)
        if self._place is not None and outcome != "would copy":
            self.hints.add(self._place[0], digest, self._place[1])
        self.progress.blob_finished(digest, outcome, size)

    async def _place_blob(self, digest: str, size: int) -> str:
        """Skip, mount or stream one blob; the outcome's name."""
        with self._failing("destination", self.destination.describe(), f"blob {digest}"):
            if await self.destination.has_blob(digest, size):
                self.summary.blobs_skipped += 1
                return "skipped"
            await self._prepare()  # push credentials (checking an image needs none)
            known = [] if self._place is None else \
                self.hints.get(self._place[0], digest, exclude=self._place[1])
            if not self.options.dry_run and await self.destination.mount(
                    digest, self.source, known):
                self.summary.blobs_mounted += 1
                return "mounted"
        if self.options.dry_run:
            self.summary.blobs_copied += 1
            self.summary.bytes_copied += size
            return "would copy"
        self.progress.blob_started(digest, size)
        await self._stream(digest, size)
        self.summary.blobs_copied += 1
        return "copied"

    async def _stream(self, digest: str, size: int) -> None:
        """Source response -> destination upload, counted on the way. The destination
        checks the digest (a registry on `PUT ?digest=`, a layout before its rename), so
        the bytes are hashed once, where they land."""
        state: dict[str, Any] = {"read": 0, "error": None}
        src = self.source.describe()

        def source_failed(exc: BaseException) -> CopyError:
            if exc is state["error"] and isinstance(exc, ValueError):  # a length wrong
                return CopyError(f"source: blob {digest}: {exc}")
            return CopyError(f"source: blob {digest}: connection lost after "
                             f"{state['read']} of {size} bytes ({one_line(exc)})")

        async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            try:
                async for data in chunks:
                    state["read"] += len(data)
                    if state["read"] > size:  # a source that sends without end: stop
                        # here, not when a layout's disk is full
                        state["error"] = ValueError(f"it sent more than the {size} bytes "
                                                    "the manifest says")
                        raise state["error"]
                    self.summary.bytes_copied += len(data)
                    self.progress.blob_advanced(digest, len(data))
                    yield data
            except END_ERRORS as exc:
                state["error"] = exc
                raise
            if state["read"] != size:
                state["error"] = ValueError(f"received {state['read']} bytes, "
                                            f"the manifest says {size}")
                raise state["error"]

        try:
            with self._failing("source", src, f"blob {digest}"):
                opened = self.source.blob(digest)
                chunks = await opened.__aenter__()
            try:
                with self._failing("destination", self.destination.describe(),
                                   f"blob {digest}"):
                    await self.destination.put_blob(digest, size, counted(chunks))
            finally:
                await opened.__aexit__(None, None, None)
        except CopyError as exc:
            if state["error"] is not None:
                raise source_failed(state["error"]) from exc
            raise
        except END_ERRORS as exc:
            raise source_failed(exc) from exc

    # ------------------------------------------------------------ errors

    @contextmanager
    def _failing(self, side: str, end: str, what: str) -> Iterator[None]:
        """Turn an end's failure into a one-line `CopyError` (`end` is for the log)."""
        try:
            yield
        except CopyError:
            raise
        except END_ERRORS as exc:
            raise CopyError(f"{side}: {what}: {one_line(exc)}") from exc


def _descriptor(value: Any, fetched: Fetched, what: str) -> tuple[str, int]:
    """The digest and size of a descriptor the source listed, or `CopyError`.

    What a source lists is checked before anything is fetched by it or written under
    it: a "digest" that is a tag (`latest`) would fetch a manifest by tag, unverified,
    and write it at the destination under that tag; one with a path in it would reach
    another repository or file.
    """
    if not isinstance(value, dict):
        raise CopyError(f"manifest {fetched.digest}: its {what} is not a JSON object")
    try:
        digest = str(Digest.parse(str(value.get("digest"))))
    except DigestInvalid as exc:
        raise CopyError(f"manifest {fetched.digest}: its {what}: {exc}") from None
    size = value.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CopyError(f"manifest {fetched.digest}: its {what} {digest} has no valid "
                        f"size ({str(size)[:40]!r})")
    return digest, size


def _media_type(descriptor: dict[str, Any]) -> str:
    """A checked descriptor's mediaType ("" for none)."""
    found = descriptor.get("mediaType")
    return found if isinstance(found, str) else ""


def _descriptors(doc: dict[str, Any], key: str, fetched: Fetched) -> list[tuple[str, int]]:
    """The checked descriptors of the list `key` (`manifests`, `layers`) of a manifest."""
    listed = doc.get(key)
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise CopyError(f"manifest {fetched.digest}: its {key} is not a list")
    return [_descriptor(d, fetched, key.rstrip("s")) for d in listed]


def _load(fetched: Fetched) -> dict[str, Any]:
    try:
        doc = parse_json(fetched.data)
    except ValueError as exc:
        raise CopyError(f"manifest {fetched.digest} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CopyError(f"manifest {fetched.digest} is not a JSON object")
    return doc


def _retrieved(task: asyncio.Task[None]) -> None:
    """A shared task's failure reaches each copy awaiting it; when every one of them was
    cancelled first, it is still taken here (asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


async def _all(aws: Any) -> None:
    """Await every awaitable; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

