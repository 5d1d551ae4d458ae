"""The store in an S3-compatible bucket (``s3://bucket/prefix``), through aiobotocore.

Credentials and the region come from the usual ``AWS_*`` variables (or the instance's
role); ``ANSFLOW_STORE_S3_ENDPOINT_URL`` points at a non-AWS service (MinIO, Ceph, R2...).
Needs the ``ansflow[s3]`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ansflow.errors import ConfigurationError
from ansflow.workspace.backend import CHUNK, ChangedWhileSaving, Listed, Opener, StoreError, Upload

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

PART = 16 << 20
"""Files above this size go up in parts of this size (S3 wants ≥ 5 MiB parts)."""
CONCURRENCY = 16


class S3Backend:
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None,
                 region: str | None = None) -> None:
        try:
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise ConfigurationError("an s3:// ANSFLOW_STORE_URL needs the ansflow[s3] extra "
                                     "(pip install 'ansflow[s3]')") from exc
        if not bucket:
            raise ConfigurationError("ANSFLOW_STORE_URL s3://bucket/prefix names no bucket")
        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{bucket}/{prefix}"
        self._session = get_session()
        self._options: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": region}
        self._client: S3Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def _s3(self) -> S3Client:
        async with self._lock:
            client = self._client
            if client is None:
                client = self._client = await self._stack.enter_async_context(
                    self._session.create_client("s3", **self._options))
            return client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"the store ({self.url}) failed: {exc}") from exc
        return True

    async def upload(self, items: Sequence[Upload]) -> int:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(item: Upload) -> int:
            async with gate:
                if await self._exists(item.key):
                    return 0
                return await self._put_file(item)

        return sum(await asyncio.gather(*(one(item) for item in items)))

    async def _put_file(self, item: Upload) -> int:
        s3 = await self._s3()
        handle = await asyncio.to_thread(item.source)
        try:
            first = await asyncio.to_thread(handle.read, PART)
            if len(first) < PART:
                if hashlib.sha256(first).hexdigest() != item.digest:
                    raise ChangedWhileSaving("a file changed while it was being saved")
                await s3.put_object(Bucket=self.bucket, Key=self._key(item.key), Body=first)
                return len(first)
            return await self._put_parts(s3, item, handle, first)
        finally:
            handle.close()

    async def _put_parts(self, s3: S3Client, item: Upload, handle: BinaryIO, first: bytes
                         ) -> int:
        key = self._key(item.key)
        upload = await s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        hasher, size, chunk = hashlib.sha256(), 0, first
        parts: list[CompletedPartTypeDef] = []
        try:
            while chunk:
                hasher.update(chunk)
                size += len(chunk)
                number = len(parts) + 1
                sent = await s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                            PartNumber=number, Body=chunk)
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                chunk = await asyncio.to_thread(handle.read, PART)
            if hasher.hexdigest() != item.digest:
                raise ChangedWhileSaving("a file changed while it was being saved")
            await s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except BaseException:
            await asyncio.shield(s3.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                           UploadId=upload_id))
            raise
        return size

    async def put_bytes(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    async def _body(self, key: str) -> tuple[int, Any]:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except s3.exceptions.NoSuchKey as exc:
            raise StoreError(f"the store has no object {key!r}") from exc
        return int(response["ContentLength"]), response["Body"]

    async def get_bytes(self, key: str) -> bytes:
        _, body = await self._body(key)
        async with body:
            return bytes(await body.read())

    async def stream(self, key: str) -> tuple[int, AsyncIterator[bytes]]:
        size, body = await self._body(key)

        async def chunks() -> AsyncIterator[bytes]:
            async with body:
                while chunk := await body.read(CHUNK):
                    yield bytes(chunk)

        return size, chunks()

    @contextlib.asynccontextmanager
    async def staged(self, keys: Sequence[str]) -> AsyncIterator[Opener]:
        """Downloads ``keys`` into a temporary directory first (concurrently)."""
        directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ansflow-stage-"))
        gate = asyncio.Semaphore(CONCURRENCY)

        async def fetch(key: str) -> None:
            async with gate:
                _, body = await self._body(key)
                sink = await asyncio.to_thread((directory / key.replace("/", "_")).open, "wb")
                try:
                    async with body:
                        while chunk := await body.read(CHUNK):
                            await asyncio.to_thread(sink.write, chunk)
                finally:
                    sink.close()

        try:
            await asyncio.gather(*(fetch(key) for key in keys))
            yield lambda key: (directory / key.replace("/", "_")).open("rb")
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def listing(self, prefix: str) -> list[Listed]:
        s3 = await self._s3()
        strip = len(self._key(""))
        found: list[Listed] = []
        async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)):
            found.extend(Listed(item["Key"][strip:], item["LastModified"], item["Size"])
                         for item in page.get("Contents", []))
        return found

    async def delete(self, keys: Sequence[str]) -> None:
        s3 = await self._s3()
        for start in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": self._key(key)}
                                                    for key in keys[start:start + 1000]]
            await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
