"""S3Driver: the driver contract over an S3-compatible object store (aiobotocore).

Published objects are plain S3 objects under `rootdirectory`. An upload session is a
set of plain objects too (full parts, and a tail holding the rest), so every byte of a
session can be read back and cut by any node, and publishing copies them server-side
into the blob's own multipart upload. Like every driver it takes no locks: the
metadata store serialises the writers of an upload session.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.loaders import Loader, create_loader

from dockyard.config.settings import S3Settings
from dockyard.drivers.base import Driver, DriverError, Staged, Writer
from dockyard.oci.errors import PayloadTooLarge
from dockyard.received import pieces

#: object metadata of a session's tail: bytes held in its part objects, and their size
#: (kept per session: nodes may differ in `chunksize`)
_BASE, _PART = "dockyard-base", "dockyard-part"
#: a multipart upload has at most 10000 parts; a session's tail is the last one
_MAX_PARTS = 10000
#: server-side part copies in flight at once while publishing
_COPIES = 8
#: part PUTs in flight at once per upload session (each holds a part in memory), for
#: parts of `chunksize`; fewer for larger parts, so as many bytes at most
_PUTS = 3
#: the smallest part S3 takes (but the last)
_MIN_PART = 5 * 1024 * 1024
#: bytes of session tails a process keeps to resume them without a GET (`_Tails`)
_TAIL_CACHE = 64 * 1024 * 1024
#: the most keys one DeleteObjects call takes
_DELETE_BATCH = 1000
#: attempts of an idempotent call (one try and two retries with backoff)
_ATTEMPTS = 3
#: seconds to open a connection to the store
_CONNECT_TIMEOUT = 5
#: calls that must not be retried blindly: a retry would create a second multipart
#: upload, or find the completed one gone
_NOT_IDEMPOTENT = frozenset({"create_multipart_upload", "complete_multipart_upload"})
#: server-side copies: their deadline grows with the bytes the store copies
_COPYING = frozenset({"copy_object", "upload_part_copy", "complete_multipart_upload"})
#: the slowest a request body may go to the store, or the store may copy one (bytes/s),
#: before its call times out
_MIN_RATE = 1024 * 1024
#: connections in the pool of each client
_POOL = 64
#: GETs whose bodies are being streamed at once (each holds a pooled connection while
#: its reader takes the bytes, at the pace of a client downloading them): fewer than
#: `_POOL`, so the other calls (uploads, HEADs, the purge job) always find a connection
_STREAMS = _POOL - 16
#: a read of at most this many bytes takes no `_STREAMS` slot: its body fits the HTTP
#: client's buffers, and the blob GET takes this much whole before it sends a byte
#: (`api.blobs.PREFETCH`), so its connection goes back to the pool at once
_SMALL_READ = 256 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
#: names of part objects (`<session key>.parts/<n>`): the driver's own, never listed
_PART_NAME = re.compile(r"\.parts/\d+$")
#: botocore's parsed service models, shared by every driver's session in the process
#: (parsing them costs ~0.5 s per session)
_LOADER: Loader | None = None


def _loader() -> Loader:
    global _LOADER
    if _LOADER is None:
        _LOADER = create_loader()
    return _LOADER


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _code(exc) in _MISSING


def _range_total(content_range: object) -> int | None:
    """The object's size a `Content-Range: bytes A-B/TOTAL` header names; None when the
    header is absent or names no size."""
    if not isinstance(content_range, str):
        return None
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


def _layout(head: dict[str, Any], chunksize: int) -> tuple[int, int, int]:
    """(bytes in part objects, part size, tail size) of the object a HEAD or GET saw."""
    meta = head.get("Metadata", {})
    base = int(meta.get(_BASE, 0))
    return base, int(meta.get(_PART, chunksize)) if base else chunksize, int(
        head["ContentLength"])


class S3Driver(Driver):
    """Keys are objects `rootdirectory/key` in one bucket; one client per driver.

    An upload session (`writer`) at key K is plain objects, readable and resumable
    from any node:

    - full parts of the session's part size (set by the node that wrote first: its
      `chunksize`, or an even share of the first write's length) as
      `K.parts/00001`, `K.parts/00002`, ..., each PUT once it fills;
    - the tail (less than a part) as the object K itself, stored by `Writer.close`, its
      metadata giving the bytes in parts and the part size. The tail is the commit
      point: part objects past what it counts are leftovers of a cut or a crash.

    `stat` is one HEAD of K (parts + tail); `read` streams the part objects and the tail
    with ranged GETs (a published object: one GET). `writer(K, offset)` resumes anywhere:
    at or past the parts' end the tail is read back; below it the part holding `offset`
    is read back up to it and becomes the tail, and the part objects past it are dropped
    at `close`. `move` creates a multipart upload at the destination and fills it with
    `UploadPartCopy` of each part object, the tail last (a session under one part: one
    `CopyObject`), so no byte goes through Dockyard; then the session's objects go.
    `delete` removes K, what is under `K/` and `K.parts/`, and aborts the multipart
    uploads under K (left by a `move` that died). `delete_many` removes published
    objects with DeleteObjects, 1000 a call. `abort_incomplete` aborts the multipart
    uploads of publishes whose node died (the upload purge runs it with an age longer
    than any publish takes). `list` never shows part objects.
    """

    stores_empty_sessions = False

    def __init__(self, settings: S3Settings) -> None:
        if not settings.bucket:
            raise ValueError("storage.s3.bucket must be set")
        self.settings = settings
        self.bucket = settings.bucket
        self.chunksize = settings.chunksize
        self._root = settings.rootdirectory.strip("/")
        self._session = AioSession()
        self._session.register_component("data_loader", _loader())
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._once: Any = None
        self._opening = asyncio.Lock()
        self._tails = _Tails(_TAIL_CACHE)
        self._streams = asyncio.Semaphore(_STREAMS)

    # --- plumbing ------------------------------------------------------------

    def _config(self, attempts: int = _ATTEMPTS) -> Config:
        """A store that stops answering costs a call at most `readtimeout` per attempt
        (a connection that cannot even be made, `_CONNECT_TIMEOUT`); failed attempts
        are retried with botocore's standard backoff (jittered, exponential)."""
        return Config(
            region_name=self.settings.region,
            connect_timeout=_CONNECT_TIMEOUT,
            read_timeout=self.settings.readtimeout.total_seconds(),
            retries={"mode": "standard", "total_max_attempts": attempts},
            max_pool_connections=_POOL,
            s3={"addressing_style": "path" if self.settings.forcepathstyle else "auto"},
            # plain payload hashing: what every S3-compatible store understands
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    def _endpoint(self) -> str | None:
        endpoint = self.settings.regionendpoint
        if endpoint and "://" not in endpoint:
            endpoint = ("https://" if self.settings.secure else "http://") + endpoint
        return endpoint

    async def _s3(self, *, once: bool = False) -> Any:
        """The shared client (and its connection pool), created on first use; with
        `once`, the one that never retries (for calls that are not idempotent)."""
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._once = await self._open_client(attempts=1)
                    self._client = await self._open_client(attempts=_ATTEMPTS)
        return self._once if once else self._client

    async def _open_client(self, attempts: int) -> Any:
        kwargs: dict[str, Any] = {}
        if self.settings.accesskey and self.settings.secretkey:
            kwargs["aws_access_key_id"] = self.settings.accesskey
            kwargs["aws_secret_access_key"] = self.settings.secretkey
        return await self._stack.enter_async_context(self._session.create_client(
            "s3", region_name=self.settings.region, endpoint_url=self._endpoint(),
            use_ssl=self.settings.secure, verify=not self.settings.skipverify,
            config=self._config(attempts), **kwargs))

    def _deadline(self, params: dict[str, Any], copied: int) -> float:
        """How long a call may take with its retries, body included; a server-side
        copy of `copied` bytes as long as sending them would (a store copying a big
        object may keep the connection alive for minutes while it works, answering
        nothing that `readtimeout` would see)."""
        body = params.get("Body")
        size = len(body) if isinstance(body, (bytes, bytearray)) else copied
        return _ATTEMPTS * self.settings.readtimeout.total_seconds() + size / _MIN_RATE

    async def _call(self, operation: str, *, copied: int = 0, **params: Any) -> Any:
        """Run one S3 call; a missing key raises FileNotFoundError, any other fault
        (unreachable, 5xx, refused, no answer by the call's deadline) `DriverError`.
        A server-side copy says how many bytes it copies (`copied`): its deadline.

        Idempotent calls are retried with backoff; creating and completing a
        multipart upload are not (a retried completion that had succeeded would say
        the upload is unknown): a failed publish is retried whole by its client.
        """
        client = await self._s3(once=operation in _NOT_IDEMPOTENT)
        deadline = self._deadline(params, copied)
        try:
            # a write to a store that stopped reading is bounded by nothing else
            async with asyncio.timeout(deadline):
                return await getattr(client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(str(exc)) from exc
            raise DriverError(f"S3 {self.bucket}: {exc}") from exc
        except TimeoutError as exc:
            raise DriverError(f"S3 {self.bucket}: {operation} got no answer within its "
                              f"{deadline:.0f} s") from exc
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise DriverError(f"S3 {self.bucket}: {type(exc).__name__}: {exc}") from exc

    async def _stream(self, response: dict[str, Any], key: str) -> AsyncIterator[bytes]:
        """The body of a GET in the pieces the HTTP client received (`received`); a
        connection lost midway is a DriverError.

        `StreamingBody.read(n)` would join and slice them into new buffers: a copy of
        every byte, which took a third of a pull's Python time.
        """
        async with response["Body"] as body:
            try:
                async for chunk in pieces(body.raw_stream.content):
                    yield chunk
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise DriverError(f"S3 {self.bucket}: read of {key} cut: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _stream_slot(self, key: str, small: bool) -> AsyncIterator[None]:
        """One of the `_STREAMS` GET bodies that may be streamed at once, waited for
        at most `readtimeout` (then a DriverError: the store is busy for this process);
        nothing for a `small` read."""
        if small:
            yield
            return
        seconds = self.settings.readtimeout.total_seconds()
        try:
            async with asyncio.timeout(seconds):
                await self._streams.acquire()
        except TimeoutError:
            raise DriverError(f"S3 {self.bucket}: read of {key}: all {_STREAMS} streamed "
                              f"reads stayed busy for {seconds:g} s") from None
        try:
            yield
        finally:
            self._streams.release()

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return f"{self._root}/{key}" if self._root else key

    def _unkey(self, name: str) -> str:
        return name[len(self._root) + 1:] if self._root else name

    @staticmethod
    def _part_key(name: str, number: int) -> str:
        """The object holding part `number` (from 1) of the session at `name`."""
        return f"{name}.parts/{number:05d}"

    def _class(self) -> dict[str, Any]:
        cls = self.settings.storageclass
        return {} if cls in ("STANDARD", "NONE", "") else {"StorageClass": cls}

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._call("head_object", Key=key)
        except FileNotFoundError:
            return None
        return head

    async def _range(self, name: str, start: int, stop: int, key: str
                     ) -> AsyncIterator[bytes]:
        """Bytes [start, stop) of the object `name`; all of them, or a DriverError."""
        if stop <= start:
            return
        response = await self._call("get_object", Key=name, Range=f"bytes={start}-{stop - 1}")
        got = 0
        async for chunk in self._stream(response, key):
            got += len(chunk)
            yield chunk
        if got != stop - start:
            raise DriverError(f"S3 {self.bucket}: {name} holds {got} of the {stop - start} "
                              f"bytes from {start} that {key} needs")

    # --- the contract --------------------------------------------------------

    async def stat(self, key: str) -> int | None:
        head = await self._head(self._key(key))
        if head is None:
            return None
        base, _, tail = _layout(head, self.chunksize)
        return base + tail

    async def read(self, key: str, offset: int = 0, length: int | None = None
                   ) -> AsyncIterator[bytes]:
        name = self._key(key)
        if length == 0 or (length is not None and length < 0):
            if await self._head(name) is None:
                raise FileNotFoundError(key)
            return
        small = length is not None and length <= _SMALL_READ
        async with self._stream_slot(key, small):  # held until the stream is closed
            end = "" if length is None else str(offset + length - 1)
            session: dict[str, Any] | None = None
            try:  # one GET for a published object; a session's tail says it has parts
                response = await self._call("get_object", Key=name, Range=f"bytes={offset}-{end}")
            except DriverError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, ClientError) and _code(cause) == "InvalidRange"):
                    raise
                session = await self._head(name)  # past the end: of the tail, or of it all?
                if session is None or not _layout(session, self.chunksize)[0]:
                    return
            else:
                if not _layout(response, self.chunksize)[0]:
                    # every byte the store said it sends (a length past the end stops at
                    # the end), as `_range` checks: never a short body taken as whole
                    want = int(response["ContentLength"])
                    whole = _range_total(response.get("ContentRange"))
                    if whole is not None:
                        # as much as asked, up to the object's end: a store (or a proxy
                        # to it) that announced and sent less made a read cut short
                        # look whole, and the blob was answered "not stored" (404)
                        asked = whole - offset if length is None else length
                        if want < min(asked, whole - offset):
                            response["Body"].close()
                            raise DriverError(f"S3 {self.bucket}: {name} gave {want} of "
                                              f"the {min(asked, whole - offset)} bytes "
                                              f"from {offset} asked for")
                    got = 0
                    async for chunk in self._stream(response, key):
                        got += len(chunk)
                        yield chunk
                    if got != want:
                        raise DriverError(f"S3 {self.bucket}: {name} gave {got} of the {want} "
                                          f"bytes from {offset} it announced")
                    return
                response["Body"].close()
                session = await self._head(name)
                if session is None:
                    raise FileNotFoundError(key)
            async for chunk in self._read_session(key, name, session, offset, length):
                yield chunk

    async def _read_session(self, key: str, name: str, head: dict[str, Any], offset: int,
                            length: int | None) -> AsyncIterator[bytes]:
        """Stream a session's bytes across its part objects and its tail."""
        base, part, tail = _layout(head, self.chunksize)
        total = base + tail
        end = total if length is None else min(total, offset + length)
        pos = offset
        while pos < end:
            if pos < base:  # in part object `index + 1`, which starts at `start`
                index = pos // part
                source, start, stop = self._part_key(name, index + 1), index * part, min(
                    end, (index + 1) * part)
            else:
                source, start, stop = name, base, end
            async for chunk in self._range(source, pos - start, stop - start, key):
                yield chunk
            pos = stop

    async def writer(self, key: str, offset: int = 0, *, resume: bool = False,
                     expect: int | None = None) -> Writer:
        name = self._key(key)
        head = await self._head(name)
        if head is None and resume and offset:
            raise FileNotFoundError(key)
        base, part, tail = _layout(head, self.chunksize) if head else (0, self.chunksize, 0)
        if offset > base + tail:
            raise ValueError(f"cannot resume {key} at {offset}: {base + tail} bytes stored")
        stored = base // part  # part objects the tail counts now
        if offset == 0:  # start empty, with this node's part size or the client's
            keep, part, head_of = 0, self._part_size(expect), None
        elif offset >= base:  # in the tail: read it back up to `offset`
            keep, head_of = base, name
        else:  # in a part: its head up to `offset` becomes the tail
            keep = offset // part * part
            head_of = self._part_key(name, keep // part + 1)
        pending = bytearray()
        cached = self._tails.recall(name, head) if head_of == name else None
        if cached is not None and len(cached) >= offset - keep:
            pending += cached[:offset - keep]  # the tail this process stored: no GET
        elif head_of is not None:
            async for chunk in self._range(head_of, 0, offset - keep, key):
                pending += chunk
        return S3Writer(self, name, keep, part, pending, stored)

    def _part_size(self, expect: int | None) -> int:
        """A new session's part size: `chunksize`, or, when the first write's length
        (`expect`) splits evenly into parts of at most `chunksize` and at least half of
        it, those. A client sending chunks of one size (16 MiB over the default 10 MiB
        `chunksize`: parts of 8 MiB) then fills whole parts with each PATCH, so no tail
        is stored and read back between its PATCHes, and the first part of a PATCH is
        PUT while the next one arrives."""
        size = self.chunksize
        if expect is None or expect <= 0:
            return size
        count = -(-expect // size)  # the fewest parts of at most `size` it fills
        part = expect // count
        smallest = max(_MIN_PART, size // 2)
        return part if expect % count == 0 and part >= smallest else size

    async def create(self, key: str) -> None:
        """Nothing: a session is stored from its first write (no call per POST)."""

    async def move(self, src: str, dst: str) -> None:
        source, target = self._key(src), self._key(dst)
        head = await self._head(source)
        if head is None:
            if await self._head(target) is not None:
                return  # published before (a retried move)
            raise FileNotFoundError(src)
        if await self._head(target) is None:  # else the same bytes are there already
            await self._publish(source, target, head)
        await self._remove(source)

    async def put(self, key: str, data: bytes, *, scratch: str) -> None:
        """One PutObject at `key` (atomic and durable when answered; a key that
        exists holds the same bytes, so no HEAD first): one call for a whole small
        blob. `scratch`, a session with nothing recorded, is stored only if a write
        reached it (an empty PATCH, a crash midway); looking would cost a call on
        every push, so it is left to the upload sweep (`list` shows it, even as
        part objects without their tail)."""
        await self._call("put_object", Key=self._key(key), Body=data, **self._class())

    async def stage(self, key: str, *, scratch: str) -> Staged:
        """Write the object where it ends up: a multipart upload at `key`, created at
        the first full part and completed by `commit` (an object under one part: one
        PutObject then). Its bytes are stored once, never copied by `move`; `scratch`
        is not touched. A process that dies midway leaves an unfinished multipart
        upload, which `abort_incomplete` ends once it is older than any push takes."""
        return _S3Staged(self, self._key(key))

    async def _publish(self, source: str, target: str, head: dict[str, Any]) -> None:
        """Copy a session server-side to `target`: part objects, then the tail, as the
        parts of one multipart upload at `target` (completing it is atomic)."""
        base, part, tail = _layout(head, self.chunksize)
        if not base:  # under one part (< 5 GiB, the most CopyObject takes)
            await self._call("copy_object", Key=target, MetadataDirective="REPLACE",
                copied=tail,
                CopySource={"Bucket": self.bucket, "Key": source}, **self._class())
            return
        sources = [(self._part_key(source, n), part) for n in range(1, base // part + 1)]
        sources += [(source, tail)] if tail else []
        created = await self._call("create_multipart_upload", Key=target, **self._class())
        upload, gate = created["UploadId"], asyncio.Semaphore(_COPIES)

        async def copy(number: int, name: str, size: int) -> dict[str, Any]:
            async with gate:
                done = await self._call(
                    "upload_part_copy", Key=target, UploadId=upload, PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": name}, copied=size)
            return {"PartNumber": number, "ETag": done["CopyPartResult"]["ETag"]}

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(copy(n, name, size))
                         for n, (name, size) in enumerate(sources, 1)]
            await self._call("complete_multipart_upload", Key=target, UploadId=upload,
                copied=base + tail,
                MultipartUpload={"Parts": [t.result() for t in tasks]})
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self._abort(target, upload)
            if isinstance(exc, BaseExceptionGroup):  # a failed copy: raise it as it is
                raise exc.exceptions[0] from None
            raise

    async def _abort(self, name: str, upload: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await self._call("abort_multipart_upload", Key=name, UploadId=upload)

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await self._remove(name)
        await self._abort_under(name)

    async def _remove(self, name: str) -> None:
        """Delete the object `name` and every object under `name/` and `name.parts/`,
        1000 a call; `name` itself (a session's tail, which `list` shows) goes last."""
        self._tails.forget(name)
        batch: list[str] = []
        async for child in self._names(name):
            if child.startswith((name + "/", name + ".parts/")):
                batch.append(child)
                if len(batch) == _DELETE_BATCH:
                    await self._delete_batch(batch)
                    batch = []
        await self._delete_batch([*batch, name])

    async def delete_many(self, keys: Sequence[str]) -> dict[str, DriverError]:
        """DeleteObjects, 1000 keys a call; the keys it refused are reported one by one.
        A call that fails as a whole (the store unreachable after retries) is reported
        for its keys and for the keys after it, which are not tried."""
        names = {self._key(key): key for key in keys}
        pending = list(names)
        failed: dict[str, DriverError] = {}
        while pending:
            batch, pending = pending[:_DELETE_BATCH], pending[_DELETE_BATCH:]
            try:
                refused = await self._delete_objects(batch)
            except DriverError as exc:
                failed.update((names[name], exc) for name in [*batch, *pending])
                break
            failed.update((names[name], DriverError(f"S3 {self.bucket}: cannot delete "
                                                    f"{name}: {why}"))
                          for name, why in refused.items())
        return failed

    async def _delete_objects(self, names: list[str]) -> dict[str, str]:
        """One DeleteObjects call (at most 1000 keys): what it could not delete, with
        the store's reason (a missing key is deleted already)."""
        result = await self._call(
            "delete_objects", Delete={"Objects": [{"Key": n} for n in names], "Quiet": True})
        return {str(e.get("Key")): f"{e.get('Code')}: {e.get('Message')}"
                for e in result.get("Errors", []) if e.get("Code") not in _MISSING}

    async def _delete_batch(self, names: list[str]) -> None:
        """One DeleteObjects call (at most 1000 keys); a key that fails is an error."""
        refused = await self._delete_objects(names)
        if refused:
            name, why = next(iter(refused.items()))
            raise DriverError(f"S3 {self.bucket}: could not delete {len(refused)} keys, "
                              f"e.g. {name}: {why}")

    async def _abort_under(self, name: str) -> None:
        """Abort the multipart uploads at `name` or below it (a `move` cut midway)."""
        async for upload in self._multipart_uploads(name):
            if upload["Key"] == name or upload["Key"].startswith(name + "/"):
                await self._abort(upload["Key"], upload["UploadId"])

    async def abort_incomplete(self, prefix: str, older_than: float) -> int:
        """Abort the multipart uploads under `prefix` initiated before `older_than`:
        the publishes of nodes that died midway (no session knows them)."""
        aborted = 0
        async for upload in self._multipart_uploads(self._key(prefix).rstrip("/") + "/"):
            if upload["Initiated"].timestamp() < older_than:
                await self._abort(upload["Key"], upload["UploadId"])
                aborted += 1
        return aborted

    async def _multipart_uploads(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        """The multipart uploads in progress at names starting with `prefix`
        (ListMultipartUploads, page by page)."""
        kwargs: dict[str, Any] = {}
        while True:
            page = await self._call("list_multipart_uploads", Prefix=prefix, **kwargs)
            for upload in page.get("Uploads", []):
                yield upload
            if not page.get("IsTruncated"):
                return
            kwargs = {"KeyMarker": page.get("NextKeyMarker", ""),
                      "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    async def _names(self, prefix: str) -> AsyncIterator[str]:
        """Every object name starting with `prefix` (ListObjectsV2, page by page)."""
        token: dict[str, Any] = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=prefix, **token)
            for obj in page.get("Contents", []):
                yield obj["Key"]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def list(self, prefix: str) -> AsyncIterator[str]:
        """Keys under `prefix`; a session's part objects are not keys, but a session
        whose tail is gone and whose parts are left (a crash, a cut `put`) is listed
        as its key once, so the sweeps that delete what no session owns see it."""
        # names come in order, so every name starting with K follows K at once: the
        # keys listed that the current name starts with are all that need remembering
        shown: list[str] = []
        async for name in self._names(self._key(prefix).rstrip("/") + "/"):
            while shown and not name.startswith(shown[-1]):
                shown.pop()
            part = _PART_NAME.search(name)
            key = name if part is None else name[:part.start()]
            if key not in shown:
                shown.append(key)
                yield self._unkey(key)

    async def url_for(self, key: str, expires: int = 900) -> str | None:
        client = await self._s3()
        try:
            url: str = await client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires)
        except BotoCoreError as exc:
            raise DriverError(f"S3 {self.bucket}: cannot sign a URL: {exc}") from exc
        return url

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = self._once = None


class _Tails:
    """The session tails this process stored last, by object name, up to `limit` bytes
    (the oldest go first): a chunked push's next PATCH resumes in the tail, and when it
    reaches the process that stored it, the tail's ETag (from the HEAD every resume
    makes) proves the bytes current, which saves reading them back. Any other process
    or node reads the tail from the store, as before: this is a cache, not state."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._size = 0

    def keep(self, name: str, etag: object, body: bytes) -> None:
        self.forget(name)
        if not isinstance(etag, str) or not body or len(body) > self.limit:
            return
        self._held[name] = (etag, body)
        self._size += len(body)
        while self._size > self.limit:
            _, (_, old) = self._held.popitem(last=False)
            self._size -= len(old)

    def recall(self, name: str, head: dict[str, Any] | None) -> bytes | None:
        """The tail stored at `name`, if the object `head` describes is still it."""
        held = self._held.get(name)
        if held is None or head is None or head.get("ETag") != held[0]:
            return None
        self._held.move_to_end(name)
        return held[1]

    def forget(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            self._size -= len(held[1])


class S3Writer(Writer):
    """Appends to one upload session: each full part is PUT as its own object as soon as
    it fills, while the next ones fill (up to `_PUTS` parts' worth of `chunksize` in
    flight, so receiving and storing overlap and the store's latency is hidden; about
    `_PUTS` + 2 parts of `chunksize` in memory); the rest (the tail, with
    the session's layout in its metadata) on `close`, once every part is stored."""

    def __init__(self, driver: S3Driver, name: str, base: int, part: int,
                 pending: bytearray, stored: int) -> None:
        self._driver, self._name = driver, name
        self._base, self._part, self._pending = base, part, pending
        self._stored = stored  # part objects the tail counted when opened
        # part PUTs at once: as many bytes in flight as `_PUTS` of this node's parts
        # (fewer PUTs of a larger part another node chose, more of a smaller one)
        self._puts = max(1, _PUTS * driver.chunksize // part)
        self._closed = False
        #: the part PUTs in flight with their bytes, oldest first
        self._putting: deque[tuple[asyncio.Future[None], bytes]] = deque()

    @property
    def size(self) -> int:
        return self._base + len(self._pending)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("write to a closed upload session")
        if (self.size + len(data)) // self._part >= _MAX_PARTS:  # the tail is the last
            raise PayloadTooLarge(
                f"an upload holds less than {_MAX_PARTS * self._part} bytes on S3 "
                f"({_MAX_PARTS - 1} parts of {self._part} bytes, the session's part size "
                "from storage.s3.chunksize, and a tail)")
        await self._stored_parts(keep=len(self._putting))  # only the ones over: no wait
        self._pending += data
        await self._flush()

    async def _flush(self) -> None:
        """Start the PUT of every full part held back, as the next part object, with at
        most `_PUTS` in flight (a failure is raised here)."""
        part = self._part
        while len(self._pending) >= part:
            await self._stored_parts(keep=self._puts - 1)
            body = bytes(self._pending[:part])
            put = asyncio.ensure_future(self._put_part(self._base // part + 1, body))
            self._putting.append((put, body))
            del self._pending[:part]
            self._base += part

    async def _put_part(self, number: int, body: bytes) -> None:
        d = self._driver
        await d._call("put_object", Key=d._part_key(self._name, number), Body=body,
                      **d._class())

    async def _stored_parts(self, keep: int = 0) -> None:
        """Wait until at most `keep` part PUTs are in flight, oldest first, and take in
        the ones already over (so a failure is raised at the next write). A caller
        cancelled while waiting leaves them running (`close` waits for them again). A
        PUT that failed: the ones after it are let finish, every byte from its part on
        goes back in front of the held ones (so `close` can store them), and it raises.
        """
        while self._putting and (len(self._putting) > keep or self._putting[0][0].done()):
            put, _ = self._putting[0]
            if not put.done():
                await asyncio.wait([put])
            if put.cancelled() or put.exception() is not None:
                rest = list(self._putting)
                self._putting.clear()
                later = [f for f, _ in rest[1:] if not f.done()]
                if later:
                    await asyncio.wait(later)
                for after, _ in rest[1:]:  # their errors too are this one's: taken, not
                    if not after.cancelled():  # logged as "never retrieved"
                        after.exception()
                self._pending[:0] = b"".join(body for _, body in rest)
                self._base -= self._part * len(rest)
                put.result()  # raises the PUT's error (or CancelledError)
            self._putting.popleft()

    async def close(self, *, sync: bool = False) -> None:
        """Store the tail with the count of parts (S3 writes are durable when answered),
        once every part is stored; then drop the part objects past it (a resume below the
        parts' end cut them)."""
        if self._closed:
            return
        self._closed = True
        d = self._driver
        await self._flush()
        await self._stored_parts()
        meta = {_BASE: str(self._base), _PART: str(self._part)} if self._base else {}
        body = bytes(self._pending)
        stored = await d._call("put_object", Key=self._name, Body=body, Metadata=meta,
                               **d._class())
        d._tails.keep(self._name, stored.get("ETag"), body)
        count = self._base // self._part
        stale = [d._part_key(self._name, n) for n in range(count + 1, self._stored + 1)]
        for start in range(0, len(stale), _DELETE_BATCH):
            await d._delete_batch(stale[start:start + _DELETE_BATCH])


class _S3Staged(Staged):
    """A new object as the parts of one multipart upload at its key: each part PUT as it
    fills, up to `_PUTS` in flight (so up to `_PUTS` + 1 parts in memory); a part that
    failed fails the next write or the commit (nothing is published then)."""

    def __init__(self, driver: S3Driver, name: str) -> None:
        self._driver, self._name = driver, name
        self._part = driver.chunksize
        self._pending = bytearray()
        self._written = 0
        self._upload: str | None = None
        self._putting: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._cancelled = False

    @property
    def size(self) -> int:
        return self._written

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._cancelled:  # a late write would start a new multipart upload
            raise ValueError("write to a cancelled staged blob")
        if (self._written + len(data)) // self._part >= _MAX_PARTS:
            raise PayloadTooLarge(
                f"a blob holds less than {_MAX_PARTS * self._part} bytes on S3 "
                f"({_MAX_PARTS} parts of storage.s3.chunksize)")
        await self._taken_in(keep=len(self._putting))  # raise a failure, never wait
        self._pending += data
        self._written += len(data)
        while len(self._pending) >= self._part:
            await self._taken_in(keep=_PUTS - 1)
            body = bytes(self._pending[:self._part])
            del self._pending[:self._part]
            await self._put(body)

    async def _put(self, body: bytes) -> None:
        d = self._driver
        if self._upload is None:
            created = await d._call("create_multipart_upload", Key=self._name, **d._class())
            self._upload = created["UploadId"]
        number = len(self._parts) + len(self._putting) + 1

        async def put() -> dict[str, Any]:
            done = await d._call("upload_part", Key=self._name, UploadId=self._upload,
                                 PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": done["ETag"]}

        self._putting.append(asyncio.ensure_future(put()))

    async def _taken_in(self, keep: int = 0) -> None:
        """Wait until at most `keep` part PUTs are in flight and take in the finished
        ones, oldest first; a failed one raises."""
        while self._putting and (len(self._putting) > keep or self._putting[0].done()):
            self._parts.append(await self._putting.popleft())

    async def close(self, *, sync: bool = False) -> None:
        """Nothing to flush: parts are stored as they fill, the rest by `commit`."""

    async def commit(self) -> None:
        d = self._driver
        if self._upload is None:  # under one part: one atomic PutObject
            await d._call("put_object", Key=self._name, Body=bytes(self._pending),
                          **d._class())
        else:
            if self._pending:
                await self._put(bytes(self._pending))
                self._pending.clear()
            await self._taken_in()
            await d._call("complete_multipart_upload", Key=self._name, UploadId=self._upload,
                          copied=self._written,
                          MultipartUpload={"Parts": self._parts})
        self._upload = None
        self._pending = bytearray()

    async def cancel(self) -> None:
        self._cancelled = True
        for put in self._putting:
            put.cancel()
        await asyncio.gather(*self._putting, return_exceptions=True)
        self._putting.clear()
        self._pending = bytearray()
        if self._upload is not None:
            upload, self._upload = self._upload, None
            await self._driver._abort(self._name, upload)
