"""An OCI image layout directory (`index.json`, `blobs/sha256/...`) as a copy's end.

Tags are the `org.opencontainers.image.ref.name` annotations of `index.json`. Blobs are
written to a temporary file, checked against their digest, then renamed into place, and
`index.json` is replaced the same way, so a reader never sees half a blob or index.
A tag or manifest counts as present only when every blob it needs is here at its
descriptor's size, so a rerun restores blobs deleted or cut short since the last copy.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.copying.ends import (
    REF_NAME,
    Fetched,
    Source,
    declared_media_type,
    referrer_descriptor,
)
from dockyard.oci.digest import Digest, new_hasher
from dockyard.oci.errors import DigestInvalid
from dockyard.received import DOCUMENT_LIMIT, MANIFEST_LIMIT, parse_json

INDEX = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
#: the largest index.json read (a layout of many thousand images is far smaller)
INDEX_LIMIT = DOCUMENT_LIMIT


class LayoutError(Exception):
    """The layout is missing, malformed, or lacks what was asked for."""


class ImageLayout:
    """One OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"oci:{self.path}"

    def _blob_path(self, digest: str) -> Path:
        parsed = Digest.parse(digest)
        return self.path / "blobs" / parsed.algorithm / parsed.hex

    def _blobs_to_write(self, algorithm: str) -> Path:
        """The directory a copy writes blobs of `algorithm` into: inside the layout,
        through no link (a `blobs` linked elsewhere had a copy write outside the
        layout). A layout read from may keep its blobs elsewhere: what is read is
        checked by digest."""
        directory = self.path / "blobs" / algorithm
        for part in (directory.parent, directory):
            if part.is_symlink():
                raise LayoutError(f"{part}: a symbolic link; the blobs a copy writes are "
                                  "kept inside the layout")
        return directory

    def _target(self, digest: str) -> Path:
        parsed = Digest.parse(digest)
        return self._blobs_to_write(parsed.algorithm) / parsed.hex

    def _index(self) -> dict[str, Any]:
        try:
            doc = parse_json(_read_bounded(self.path / "index.json", INDEX_LIMIT))
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: not an OCI image layout (no index.json)") from None
        except ValueError as exc:
            raise LayoutError(f"{self.path}/index.json: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise LayoutError(f"{self.path}/index.json: not an image index")
        for n, entry in enumerate(doc.get("manifests", [])):
            problem = _entry_problem(entry)
            if problem:
                raise LayoutError(f"{self.path}/index.json: manifests[{n}] {problem}")
        return doc

    # ------------------------------------------------------------ as a source

    async def manifest(self, reference: str) -> Fetched:
        if ":" in reference:
            digest, media_type = reference, ""
        else:
            found = [d for d in self._index().get("manifests", [])
                     if (d.get("annotations") or {}).get(REF_NAME) == reference]
            if not found:
                raise LayoutError(f"{self.path}: no image tagged {reference!r}")
            digest, media_type = found[-1]["digest"], found[-1].get("mediaType", "")
        try:
            data = _read_bounded(self._blob_path(digest), MANIFEST_LIMIT)
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: manifest {digest} is missing") from None
        if str(Digest.of(data, Digest.parse(digest).algorithm)) != digest:
            raise LayoutError(f"{self.path}: blob {digest} does not match its digest")
        declared = declared_media_type(data)
        return Fetched(data, declared if declared is not None else media_type, digest)

    async def tags(self) -> list[str]:
        names = [(d.get("annotations") or {}).get(REF_NAME)
                 for d in self._index().get("manifests", [])]
        return sorted({n for n in names if isinstance(n, str) and n})

    async def only_manifest(self) -> tuple[str, str | None]:
        """The digest of the layout's one manifest and its `ref.name` (None: unnamed),
        for `oci:PATH` without a tag."""
        found = self._index().get("manifests", [])
        if len(found) != 1:
            raise LayoutError(f"{self.path}: holds {len(found)} images; name one with "
                              "oci:PATH:TAG")
        name = (found[0].get("annotations") or {}).get(REF_NAME)
        return str(found[0]["digest"]), name if isinstance(name, str) and name else None

    @asynccontextmanager
    async def blob(self, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            handle = os.fdopen(_open_regular(self._blob_path(digest)), "rb")
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: blob {digest} is missing") from None

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(handle.read, CHUNK):
                yield data

        try:
            yield chunks()
        finally:
            handle.close()

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """Manifests of the layout whose `subject` is `digest` (the layout has no API)."""
        found = []
        for desc in self._index().get("manifests", []):
            try:
                doc = parse_json(_read_bounded(self._blob_path(desc["digest"]),
                                               MANIFEST_LIMIT))
            except (OSError, ValueError, LayoutError):
                continue
            if isinstance(doc, dict) and (doc.get("subject") or {}).get("digest") == digest:
                found.append({k: v for k, v in desc.items() if k != "annotations"})
        return found

    # ------------------------------------------------------------ as a destination

    async def prepare(self) -> None:
        self._blobs_to_write("sha256").mkdir(parents=True, exist_ok=True)
        layout = self.path / "oci-layout"
        if not layout.exists():
            self._replace(layout, b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.path / "index.json").exists():
            self._replace(self.path / "index.json",
                          json.dumps({"schemaVersion": 2, "manifests": []}).encode())

    async def manifest_digest(self, reference: str) -> str | None:
        """What `reference` names here, counting only a manifest whose blobs are all here
        (`_complete`): a layout, unlike a registry, may lose a blob after its manifest
        was written (deleted, cut short), and a rerun must then write it again rather
        than take the image for up to date. A referrer (a manifest with a `subject`)
        counts only once index.json lists it, so a rerun lists one an earlier run left
        out."""
        if ":" in reference:
            data = self._intact(reference)
            if data is None:
                return None
            if _subject(data) is not None and not any(
                    d.get("digest") == reference for d in self._index().get("manifests", [])):
                return None
            return reference if self._complete(reference, data) else None
        if not (self.path / "index.json").exists():
            return None
        for desc in reversed(self._index().get("manifests", [])):
            if (desc.get("annotations") or {}).get(REF_NAME) == reference:
                digest = str(desc["digest"])
                return digest if self._complete(digest) else None
        return None

    async def has_blob(self, digest: str, size: int | None = None) -> bool:
        """Whether the blob is here: a regular file of the descriptor's `size` when it is
        known (a blob left short by a crash is written again)."""
        return self._present(digest, size)

    def _present(self, digest: str, size: int | None) -> bool:
        try:
            found = os.lstat(self._blob_path(digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(found.st_mode) and (size is None or found.st_size == size)

    def _complete(self, digest: str, data: bytes | None = None) -> bool:
        """Whether the manifest `digest` (its bytes `data`, when read already) is here
        with everything it needs: an index's child manifests intact and complete in
        turn, an image's config and layers regular files of their descriptors' sizes.
        Blobs are not hashed (a rerun stays cheap; `put_blob` verified each when it
        wrote it), manifests are, as `_intact` always did; each is read once."""
        pending: list[tuple[str, bytes | None]] = [(digest, data)]
        seen: set[str] = set()
        while pending:
            manifest, known = pending.pop()
            if manifest in seen:
                continue
            seen.add(manifest)
            body = known if known is not None else self._intact(manifest)
            if body is None:
                return False
            try:
                doc = parse_json(body)
            except ValueError:
                return False
            if not isinstance(doc, dict):
                return False
            if "manifests" in doc:  # an index (as the engine tells one)
                listed = doc.get("manifests") or []
                wanted = []
            else:
                listed = []
                config = doc.get("config")
                wanted = [config, *(doc.get("layers") or [])] if config is not None \
                    else list(doc.get("layers") or [])
            if not isinstance(listed, list):
                return False
            for desc in listed:
                child = _digest_and_size(desc)
                if child is None:
                    return False
                pending.append((child[0], None))
            for desc in wanted:
                blob = _digest_and_size(desc)
                if blob is None or not self._present(*blob):
                    return False
        return True

    #: `manifest_digest` counts only a manifest whose blobs are all here
    whole_on_lookup = True

    async def stored_manifest(self, digest: str) -> Fetched | None:
        data = self._intact(digest)
        return None if data is None else Fetched(data, declared_media_type(data) or "", digest)

    def _intact(self, digest: str) -> bytes | None:
        """The manifest blob `digest` when it is here with the bytes of its digest; None
        when missing or damaged (a rerun writes it again)."""
        try:
            data = _read_bounded(self._blob_path(digest), MANIFEST_LIMIT)
        except FileNotFoundError:
            return None
        if str(Digest.of(data, Digest.parse(digest).algorithm)) != digest:
            return None
        return data

    def place(self) -> tuple[str, str] | None:
        return None

    async def mount(self, digest: str, source: Source, known: list[str]) -> bool:
        return False

    async def put_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        target = self._target(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        hasher = new_hasher(Digest.parse(digest).algorithm)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for data in chunks:
                    hasher.update(data)
                    written += len(data)
                    await asyncio.to_thread(_write, out, data)
                got = f"{hasher.name}:{hasher.hexdigest()}"
                if got != digest or written != size:
                    raise LayoutError(f"blob {digest}: received {written} bytes hashing to "
                                      f"{got}")
                await asyncio.to_thread(_flush, out)  # on disk before its name is
            os.replace(tmp, target)
            await asyncio.to_thread(_sync_dir, target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put_manifest(self, reference: str, fetched: Fetched) -> bool:
        """Write the manifest; a tag or a referrer is listed in index.json (a layout's
        referrers are the listed manifests whose `subject` names the image)."""
        target = self._target(fetched.digest)
        if self._intact(fetched.digest) is None:
            self._replace(target, fetched.data)
        if ":" in reference and _subject(fetched.data) is not None:
            await self.add_referrer_fallback("", referrer_descriptor(fetched))
        elif ":" not in reference:
            index = self._index()
            kept = [d for d in index.get("manifests", [])
                    if (d.get("annotations") or {}).get(REF_NAME) != reference]
            kept.append({"mediaType": fetched.media_type, "digest": fetched.digest,
                         "size": len(fetched.data), "annotations": {REF_NAME: reference}})
            index["manifests"] = kept
            self._replace(self.path / "index.json", json.dumps(index, indent=2).encode())
        return True

    async def lists_referrer(self, subject: str, digest: str) -> bool:
        return True  # `manifest_digest` counts a referrer only once index.json lists it

    async def add_referrer_fallback(self, subject: str, descriptor: dict[str, Any]) -> None:
        """Referrers in a layout are found by their `subject`: list them in index.json."""
        index = self._index()
        if not any(d.get("digest") == descriptor["digest"] for d in index["manifests"]):
            index["manifests"].append(descriptor)
            self._replace(self.path / "index.json", json.dumps(index, indent=2).encode())

    @staticmethod
    def _replace(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                _flush(out)
            os.replace(tmp, target)
            _sync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _open_regular(path: Path) -> int:
    """A descriptor of `path` read-only, which must be a regular file and not a symbolic
    link (a blob linked to /dev/zero or elsewhere is no blob of the layout):
    `LayoutError` otherwise; FileNotFoundError as is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LayoutError(f"{path}: a symbolic link, not a file of the layout") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LayoutError(f"{path}: not a regular file")
    return fd


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (`_open_regular`), at most `limit` of them:
    a longer one is a one-line `LayoutError`, not read to its end."""
    with os.fdopen(_open_regular(path), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LayoutError(f"{path}: larger than {limit // (1 << 20)} MiB, the most read")
    return data


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one descriptor of index.json (None: a dict with a digest that
    parses, a str mediaType and an annotations object of strings when given)."""
    if not isinstance(entry, dict):
        return "is not a JSON object"
    digest = entry.get("digest")
    if not isinstance(digest, str):
        return "has no digest"
    try:
        Digest.parse(digest)
    except DigestInvalid:
        return f"has an invalid digest {digest[:80]!r}"
    if not isinstance(entry.get("mediaType", ""), str):
        return "has a mediaType that is not a string"
    annotations = entry.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()):
        return "has annotations that are not an object of strings"
    return None


def _digest_and_size(desc: Any) -> tuple[str, int] | None:
    """A descriptor's digest (one that parses) and size; None when it has no such."""
    if not isinstance(desc, dict):
        return None
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    try:
        return str(Digest.parse(digest)), size
    except DigestInvalid:
        return None


def _subject(data: bytes) -> str | None:
    """The digest a manifest's `subject` names (it is a referrer of it), else None."""
    try:
        doc = parse_json(data)
    except ValueError:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None


def _write(out: BinaryIO, data: bytes) -> None:
    out.write(data)


def _flush(out: BinaryIO) -> None:
    """The file's bytes on disk (before it is renamed into place)."""
    out.flush()
    os.fsync(out.fileno())


def _sync_dir(path: Path) -> None:
    """A rename into `path` on disk (the directory's entry)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
