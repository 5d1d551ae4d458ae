"""Where the store keeps its objects: a directory (``file://``) or an S3 bucket.

Keys are ``/``-separated names chosen by the store (``blobs/ab/<sha256>``, ``caches/<pipeline
id>/k-<key>``), never text from a step. Blobs are immutable and named by their content's
sha256; a writer that finds a blob present does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from ansflow.config import local_store_path
from ansflow.errors import AnsFlowError, ConfigurationError
from ansflow.trust.private import private_dir

CHUNK = 1 << 20
Opener = Callable[[str], BinaryIO]
"""Opens a stored object for reading, from a worker thread."""


class StoreError(AnsFlowError):
    """The workspace store failed (unreachable, or an object is missing or corrupt)."""

    code, status_code = "store_error", 503


class ChangedWhileSaving(StoreError):
    """A file's content changed between its scan and its upload."""


@dataclass(frozen=True, slots=True)
class Upload:
    key: str
    source: Callable[[], BinaryIO]
    """Opens the local content (a workspace file, opened without leaving the workspace)."""
    digest: str


@dataclass(frozen=True, slots=True)
class Listed:
    key: str
    modified: datetime
    size: int


class Backend(Protocol):
    """Object storage for the workspace store. Every method may be called concurrently
    from the event loop; none blocks it."""

    url: str

    async def upload(self, items: Sequence[Upload]) -> int:
        """Store every item whose key is absent, checking its digest; bytes sent."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def get_bytes(self, key: str) -> bytes:
        """The object's content; ``StoreError`` if it is missing."""
        ...

    def staged(self, keys: Sequence[str]) -> contextlib.AbstractAsyncContextManager[Opener]:
        """Make ``keys`` readable from a worker thread for the duration of the block."""
        ...

    async def stream(self, key: str) -> tuple[int, AsyncIterator[bytes]]:
        """Size and chunks of an object (for downloads through the API)."""
        ...

    async def listing(self, prefix: str) -> list[Listed]: ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


class FileBackend:
    """Objects as files under a directory (a local disk, or a shared mount for a fleet).
    Writes go to a temporary name and are renamed into place, so a reader never sees a
    partial object."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    async def upload(self, items: Sequence[Upload]) -> int:
        return await asyncio.to_thread(self._upload_all, items)

    def _upload_all(self, items: Sequence[Upload]) -> int:
        sent = 0
        for item in items:
            target = self._path(item.key)
            if target.exists():
                continue
            with item.source() as source:
                sent += self._write(target, source, item.digest)
        return sent

    def _write(self, target: Path, source: BinaryIO, digest: str | None) -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        hasher, size = hashlib.sha256(), 0
        try:
            with temporary.open("wb") as sink:
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
            if digest is not None and hasher.hexdigest() != digest:
                raise ChangedWhileSaving("a file changed while it was being saved")
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        return size

    async def put_bytes(self, key: str, data: bytes) -> None:
        def write() -> None:
            self._write(self._path(key), io.BytesIO(data), None)

        await asyncio.to_thread(write)

    async def get_bytes(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise StoreError(f"the store has no object {key!r}") from exc

    @contextlib.asynccontextmanager
    async def staged(self, keys: Sequence[str]) -> AsyncIterator[Opener]:
        yield self._open

    def _open(self, key: str) -> BinaryIO:
        try:  # unbuffered: whole chunks are read, the buffer would only cost a copy
            return open(os.path.join(self._root, key), "rb", buffering=0)
        except FileNotFoundError as exc:
            raise StoreError(f"the store has no object {key!r}") from exc

    async def stream(self, key: str) -> tuple[int, AsyncIterator[bytes]]:
        handle = await asyncio.to_thread(self._open, key)
        size = os.fstat(handle.fileno()).st_size

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(handle.read, CHUNK):
                    yield chunk
            finally:
                handle.close()

        return size, chunks()

    async def listing(self, prefix: str) -> list[Listed]:
        return await asyncio.to_thread(lambda: list(self._list(prefix)))

    def _list(self, prefix: str) -> Iterator[Listed]:
        stack = [prefix.rpartition("/")[0]]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(self._path(directory) if directory else self.root))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                name = f"{directory}/{entry.name}" if directory else entry.name
                if entry.name.endswith(".tmp"):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name.startswith(prefix) or prefix.startswith(name + "/"):
                        stack.append(name)
                elif name.startswith(prefix):
                    st = entry.stat(follow_symlinks=False)
                    yield Listed(name, datetime.fromtimestamp(st.st_mtime, UTC), st.st_size)

    async def delete(self, keys: Sequence[str]) -> None:
        def remove() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()

        await asyncio.to_thread(remove)

    async def close(self) -> None:
        return None


def open_backend(url: str, *, endpoint_url: str | None = None,
                 region: str | None = None) -> Backend:
    """The backend for ``ANSFLOW_STORE_URL``: ``file:///path`` or ``s3://bucket/prefix``."""
    local = local_store_path(url)
    if local is not None:
        return FileBackend(private_dir(local))
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from ansflow.workspace.s3 import S3Backend

        return S3Backend(parts.netloc, parts.path.strip("/"), endpoint_url=endpoint_url,
                         region=region)
    raise ConfigurationError(f"ANSFLOW_STORE_URL {url!r}: expected file:///path or "
                             "s3://bucket/prefix")
