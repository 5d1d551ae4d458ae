"""The S3 backend against a local S3-compatible server (moto's, standing in for a real
service off this machine): objects, listings, multipart uploads and a whole restore."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from ansflow.workspace.backend import StoreError, Upload
from ansflow.workspace.manifest import ManifestRef, blob_key
from ansflow.workspace.s3 import PART, S3Backend
from ansflow.workspace.store import WorkspaceStore


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def backend(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Backend]:
    # the credentials botocore reads for any S3 service; moto accepts any
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"ansflow-{os.urandom(4).hex()}"
    opened = S3Backend(bucket, "fleet/store", endpoint_url=endpoint, region="us-east-1")
    s3 = await opened._s3()
    await s3.create_bucket(Bucket=bucket)
    yield opened
    await opened.close()


def upload_of(data: bytes) -> Upload:
    digest = hashlib.sha256(data).hexdigest()
    return Upload(blob_key(digest), lambda: io.BytesIO(data), digest)


async def test_objects_round_trip_and_list_by_prefix(backend: S3Backend) -> None:
    small, large = b"hello", os.urandom(PART + 1000)  # the large one goes up in two parts
    sent = await backend.upload([upload_of(small), upload_of(large)])
    assert sent == len(small) + len(large)
    assert await backend.upload([upload_of(small)]) == 0  # present: not sent again
    key = upload_of(large).key
    size, chunks = await backend.stream(key)
    assert size == len(large)
    assert b"".join([chunk async for chunk in chunks]) == large
    await backend.put_bytes("caches/1/k-npm-a", b"{}")
    await backend.put_bytes("caches/1/k-npm-b", b"{}")
    await backend.put_bytes("caches/2/k-npm-c", b"{}")
    listed = sorted(item.key for item in await backend.listing("caches/1/k-npm-"))
    assert listed == ["caches/1/k-npm-a", "caches/1/k-npm-b"]
    await backend.delete(listed)
    assert await backend.listing("caches/1/") == []
    with pytest.raises(StoreError, match="the store has no object"):
        await backend.get_bytes("caches/1/k-npm-a")


async def test_a_file_that_changes_while_uploading_is_refused(backend: S3Backend) -> None:
    honest = upload_of(b"before")
    with pytest.raises(StoreError, match="changed while it was being saved"):
        await backend.upload([Upload(honest.key, lambda: io.BytesIO(b"after!"), honest.digest)])
    assert await backend.listing("blobs/") == []


async def test_a_workspace_saved_to_s3_is_restored_on_another_host(
        backend: S3Backend, tmp_path: Path) -> None:
    store = WorkspaceStore(backend)
    source = tmp_path / "a" / "1"
    start = await store.before_step(source, [])
    (source / "lib").mkdir()
    (source / "lib" / "a.bin").write_bytes(os.urandom(100_000))
    os.symlink("lib/a.bin", source / "link")
    saved = await store.after_step(start)
    target = tmp_path / "b" / "1"
    restored = await store.before_step(target, [ManifestRef("s", saved.digest,
                                                            datetime.now(UTC))])
    assert restored.restored.files == 1
    assert (target / "lib" / "a.bin").read_bytes() == (source / "lib" / "a.bin").read_bytes()
    assert os.readlink(target / "link") == "lib/a.bin"
