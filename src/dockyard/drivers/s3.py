"""S3Driver: the driver contract over an S3-compatible object store (aiobotocore).

Published objects are plain S3 objects under `rootdirectory`. What an object store
cannot do is said where it matters: an upload whose bytes fill whole multipart parts
cannot be read back before `move` publishes it. Like every driver it takes no locks:
the metadata store serialises the writers of an upload session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.loaders import Loader, create_loader

from dockyard.config.settings import S3Settings
from dockyard.drivers.base import Driver, DriverError, Writer

#: object metadata of a staged upload: bytes held in the multipart upload's parts, its
#: id, and its part size (kept per session: nodes may differ in `chunksize`)
_BASE, _UPLOAD, _PART = "dockyard-base", "dockyard-upload", "dockyard-part"
#: largest object a single CopyObject may copy; bigger ones are copied part by part
_COPY_MAX = 5 * 1024 ** 3
_READ_PIECE = 256 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
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


class S3Driver(Driver):
    """Keys are objects `rootdirectory/key` in one bucket; one client per driver.

    Upload sessions (`writer`) are S3 multipart uploads, resumable from any process:

    - A writer holds back bytes until a full part (`chunksize`) is there, then uploads it
      as the next part of a multipart upload created at the session's own key.
    - `close` stores the bytes short of a part as the object at the key itself (the
      "tail"), with metadata naming the multipart upload and how many bytes its parts
      hold. So the key's one object tells a writer opened later, on any node, where to
      go on: HEAD gives the size (parts + tail), the tail is read back (< one part) and
      the parts of the named upload are kept. Nothing else needs to know the offset.
    - `move` completes the upload in place (the tail joins as the last part, copied
      server-side) and copies the object server-side to its destination: no byte goes
      through Dockyard a second time.
    - Resuming below the bytes already in parts is refused (S3 cannot read or cut
      uploaded parts), and so is reading such a staged key; both raise `DriverError`.
    """

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
        self._opening = asyncio.Lock()

    # --- plumbing ------------------------------------------------------------

    def _config(self) -> Config:
        return Config(
            region_name=self.settings.region,
            connect_timeout=5,
            # CopyObject and CompleteMultipartUpload may take a while on big objects
            read_timeout=60,
            retries={"mode": "standard", "total_max_attempts": 3},
            max_pool_connections=64,
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

    async def _s3(self) -> Any:
        """The shared client (and its connection pool), created on first use."""
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    kwargs: dict[str, Any] = {}
                    if self.settings.accesskey and self.settings.secretkey:
                        kwargs["aws_access_key_id"] = self.settings.accesskey
                        kwargs["aws_secret_access_key"] = self.settings.secretkey
                    self._client = await self._stack.enter_async_context(
                        self._session.create_client(
                            "s3", region_name=self.settings.region,
                            endpoint_url=self._endpoint(), use_ssl=self.settings.secure,
                            verify=not self.settings.skipverify, config=self._config(),
                            **kwargs))
        return self._client

    async def _call(self, operation: str, **params: Any) -> Any:
        """Run one S3 call; a missing key raises FileNotFoundError, any other fault
        (unreachable, 5xx, refused) `DriverError`."""
        client = await self._s3()
        try:
            return await getattr(client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(str(exc)) from exc
            raise DriverError(f"S3 {self.bucket}: {exc}") from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise DriverError(f"S3 {self.bucket}: {type(exc).__name__}: {exc}") from exc

    async def _stream(self, response: dict[str, Any], key: str) -> AsyncIterator[bytes]:
        """The body of a GET, piece by piece; a connection lost midway is a DriverError."""
        async with response["Body"] as body:
            try:
                while chunk := await body.read(_READ_PIECE):
                    yield chunk
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise DriverError(f"S3 {self.bucket}: read of {key} cut: {exc}") from exc

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return f"{self._root}/{key}" if self._root else key

    def _unkey(self, name: str) -> str:
        return name[len(self._root) + 1:] if self._root else name

    def _class(self) -> dict[str, str]:
        cls = self.settings.storageclass
        return {} if cls in ("STANDARD", "NONE", "") else {"StorageClass": cls}

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._call("head_object", Key=key)
        except FileNotFoundError:
            return None
        return head

    # --- the contract --------------------------------------------------------

    async def stat(self, key: str) -> int | None:
        head = await self._head(self._key(key))
        if head is None:
            return None
        return int(head.get("Metadata", {}).get(_BASE, 0)) + int(head["ContentLength"])

    async def read(self, key: str, offset: int = 0, length: int | None = None
                   ) -> AsyncIterator[bytes]:
        name = self._key(key)
        if length == 0 or (length is not None and length < 0):
            if await self._head(name) is None:
                raise FileNotFoundError(key)
            return
        end = "" if length is None else str(offset + length - 1)
        staged = DriverError(f"{key} is a staged upload: its parts are readable once "
                             "published")
        try:
            response = await self._call("get_object", Key=name, Range=f"bytes={offset}-{end}")
        except DriverError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause) == "InvalidRange":
                head = await self._head(name)  # past the end: of the tail, or of it all?
                if head is not None and int(head.get("Metadata", {}).get(_BASE, 0)):
                    raise staged from None
                return
            raise
        if int(response.get("Metadata", {}).get(_BASE, 0)):
            response["Body"].close()
            raise staged
        async for chunk in self._stream(response, key):
            yield chunk

    async def writer(self, key: str, offset: int = 0, *, resume: bool = False) -> Writer:
        name = self._key(key)
        head = await self._head(name)
        if head is None and resume:
            raise FileNotFoundError(key)
        meta = head.get("Metadata", {}) if head else {}
        base, upload = int(meta.get(_BASE, 0)), meta.get(_UPLOAD)
        part = int(meta.get(_PART, self.chunksize))
        size = base + int(head["ContentLength"]) if head else 0
        if offset > size:
            raise ValueError(f"cannot resume {key} at {offset}: {size} bytes stored")
        if offset == 0 and upload:
            await self._abort(name, upload)
            base, upload, part = 0, None, self.chunksize
        if offset < base:
            raise DriverError(f"cannot resume {key} at {offset}: {base} bytes are in "
                              "uploaded parts, which S3 cannot cut")
        tail = b""
        if offset > base:
            tail = b"".join([c async for c in self._read_tail(name, offset - base)])
        return S3Writer(self, name, base, upload, part, bytearray(tail))

    async def _read_tail(self, name: str, length: int) -> AsyncIterator[bytes]:
        response = await self._call("get_object", Key=name, Range=f"bytes=0-{length - 1}")
        async for chunk in self._stream(response, name):
            yield chunk

    async def move(self, src: str, dst: str) -> None:
        source, target = self._key(src), self._key(dst)
        head = await self._head(source)
        if head is None:
            if await self._head(target) is not None:
                return  # published before (a retried move)
            raise FileNotFoundError(src)
        meta = head.get("Metadata", {})
        staged = int(meta.get(_BASE, 0)) > 0
        if await self._head(target) is not None:  # the same bytes are there already
            if staged:
                await self._abort(source, meta[_UPLOAD])
        else:
            if staged:
                head = await self._complete(source, meta[_UPLOAD],
                                            int(head["ContentLength"]))
            await self._copy(source, target, int(head["ContentLength"]))
        await self._call("delete_object", Key=source)

    async def _complete(self, name: str, upload: str, tail: int) -> dict[str, Any]:
        """Finish a staged upload in place: its parts, then the tail (server-side)."""
        parts = [p async for p in self._parts(name, upload)]
        if tail:
            number = len(parts) + 1
            copied = await self._call(
                "upload_part_copy", Key=name, UploadId=upload, PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": name})
            parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        await self._call("complete_multipart_upload", Key=name, UploadId=upload,
            MultipartUpload={"Parts": parts})
        head = await self._head(name)
        if head is None:
            raise DriverError(f"S3 {self.bucket}: {name} vanished after completion")
        return head

    async def _parts(self, name: str, upload: str) -> AsyncIterator[dict[str, Any]]:
        marker = 0
        while True:
            page = await self._call("list_parts", Key=name, UploadId=upload,
                                    PartNumberMarker=marker)
            for part in page.get("Parts", []):
                yield {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
            if not page.get("IsTruncated"):
                return
            marker = int(page["NextPartNumberMarker"])

    async def _copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy; part by part past CopyObject's 5 GiB limit."""
        src = {"Bucket": self.bucket, "Key": source}
        if size <= _COPY_MAX:
            await self._call("copy_object", Key=target, CopySource=src,
                MetadataDirective="REPLACE", **self._class())
            return
        created = await self._call("create_multipart_upload", Key=target, **self._class())
        upload, part, parts = created["UploadId"], max(self.chunksize, size // 9000 + 1), []
        try:
            for number, start in enumerate(range(0, size, part), 1):
                rng = f"bytes={start}-{min(start + part, size) - 1}"
                done = await self._call(
                    "upload_part_copy", Key=target, UploadId=upload, PartNumber=number,
                    CopySource=src, CopySourceRange=rng)
                parts.append({"PartNumber": number, "ETag": done["CopyPartResult"]["ETag"]})
            await self._call("complete_multipart_upload", Key=target, UploadId=upload,
                MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                await self._abort(target, upload)
            raise

    async def _abort(self, name: str, upload: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await self._call("abort_multipart_upload", Key=name, UploadId=upload)

    async def delete(self, key: str) -> None:
        name = self._key(key)
        head = await self._head(name)
        if head is not None and head.get("Metadata", {}).get(_UPLOAD):
            await self._abort(name, head["Metadata"][_UPLOAD])
        batch = [name]
        async for child in self._names(name + "/"):
            batch.append(child)
            if len(batch) == 1000:
                await self._delete_batch(batch)
                batch = []
        if batch:
            await self._delete_batch(batch)
        await self._abort_under(name)

    async def _delete_batch(self, names: list[str]) -> None:
        """One DeleteObjects call (at most 1000 keys); a key that fails is an error."""
        result = await self._call(
            "delete_objects", Delete={"Objects": [{"Key": n} for n in names], "Quiet": True})
        errors = [e for e in result.get("Errors", []) if e.get("Code") not in _MISSING]
        if errors:
            raise DriverError(f"S3 {self.bucket}: could not delete {len(errors)} keys, "
                              f"e.g. {errors[0].get('Key')}: {errors[0].get('Message')}")

    async def _abort_under(self, name: str) -> None:
        """Abort the multipart uploads at `name` or below it (staged upload sessions)."""
        kwargs: dict[str, str] = {}
        while True:
            page = await self._call("list_multipart_uploads", Prefix=name, **kwargs)
            for upload in page.get("Uploads", []):
                if upload["Key"] == name or upload["Key"].startswith(name + "/"):
                    await self._abort(upload["Key"], upload["UploadId"])
            if not page.get("IsTruncated"):
                return
            kwargs = {"KeyMarker": page.get("NextKeyMarker", ""),
                      "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    async def _names(self, prefix: str) -> AsyncIterator[str]:
        """Every object name under `prefix` (ListObjectsV2, page by page)."""
        token: dict[str, str] = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=prefix, **token)
            for obj in page.get("Contents", []):
                yield obj["Key"]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for name in self._names(self._key(prefix).rstrip("/") + "/"):
            yield self._unkey(name)

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
        self._client = None


class S3Writer(Writer):
    """Appends to one upload session: full parts go up at once, the rest on `close`."""

    def __init__(self, driver: S3Driver, name: str, base: int, upload: str | None,
                 part: int, pending: bytearray) -> None:
        self._driver, self._name = driver, name
        self._base, self._upload, self._part, self._pending = base, upload, part, pending
        self._closed = False

    @property
    def size(self) -> int:
        return self._base + len(self._pending)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        part = self._part
        while len(self._pending) >= part:
            await self._put_part(bytes(self._pending[:part]))
            del self._pending[:part]

    async def _put_part(self, data: bytes) -> None:
        d = self._driver
        if self._upload is None:
            created = await d._call("create_multipart_upload", Key=self._name, **d._class())
            self._upload = str(created["UploadId"])
        number = self._base // self._part + 1
        await d._call("upload_part", Key=self._name, UploadId=self._upload, PartNumber=number,
            Body=data)
        self._base += len(data)

    async def close(self, *, sync: bool = False) -> None:
        """Store the tail and where the parts are (S3 writes are durable when answered)."""
        if self._closed:
            return
        self._closed = True
        d = self._driver
        meta = ({_BASE: str(self._base), _UPLOAD: self._upload, _PART: str(self._part)}
                if self._upload else {})
        await d._call("put_object", Key=self._name, Body=bytes(self._pending), Metadata=meta,
            **d._class())
