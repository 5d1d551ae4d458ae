"""The API in the test's loop, over ASGI, against this run's MariaDB database.

``serve`` opens the app's lifespan (httpx's ASGI transport does not run it), so the
in-process dispatcher runs executions as tasks of the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from ansflow.api.app import create_app
from ansflow.config import Settings
from ansflow.db.trust import TrustStore
from ansflow.resources import Resources
from ansflow.trust.tokens import new_token, token_hash, token_prefix

TERMINAL = {"success", "failed", "cancelled", "timed_out", "error"}
Serve = Callable[[Settings], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


async def mint_token(resources: Resources, scope: str, **fields: Any) -> str:
    token = new_token()
    async with resources.db.session() as session:
        await TrustStore(session).add_token(fields.get("name", "test"), scope,
                                            token_prefix(token), token_hash(token),
                                            fields.get("expires_at"))
        await session.commit()
    return token


@contextlib.asynccontextmanager
async def serve_app(settings: Settings, *, raise_app_exceptions: bool = True,
                    app: FastAPI | None = None, scope: str | None = "admin"
                    ) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI; the client carries a fresh token of ``scope`` (None: no token)."""
    app = app or create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        headers = {}
        if scope is not None:
            token = await mint_token(app.state.resources, scope)
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(transport=transport, base_url="http://ansflow.test",
                                     timeout=30, headers=headers) as client:
            yield client


@pytest.fixture
def serve() -> Serve:
    return serve_app


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(settings) as opened:
        yield opened


async def create(client: httpx.AsyncClient, doc: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/pipelines", json=doc)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def start(client: httpx.AsyncClient, pipeline_id: int, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/v1/pipelines/{pipeline_id}/executions", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for(client: httpx.AsyncClient, execution_id: int,
                   done: Callable[[dict[str, Any]], bool] = lambda e: e["status"] in TERMINAL,
                   within: float = 30.0) -> dict[str, Any]:
    """Poll the execution until ``done`` holds; fails the test with the last record."""
    [record] = await wait_for_all(client, [execution_id], lambda records: done(records[0]),
                                  within)
    return record


async def wait_for_all(client: httpx.AsyncClient, ids: list[int],
                       done: Callable[[list[dict[str, Any]]], bool], within: float = 60.0
                       ) -> list[dict[str, Any]]:
    """Poll several executions until ``done`` holds for their records together; fails the
    test with the last records."""
    deadline = time.monotonic() + within
    while True:
        records = []
        for execution_id in ids:
            response = await client.get(f"/api/v1/executions/{execution_id}")
            assert response.status_code == 200, response.text
            records.append(dict(response.json()))
        if done(records):
            return records
        assert time.monotonic() < deadline, f"executions never got there: {records}"
        await asyncio.sleep(0.05)


def step_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(next(s for s in record["steps"] if s["name"] == name))


def assert_envelope(response: httpx.Response, status: int, code: str | None = None
                    ) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"] and "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


class TcpProxy:
    """A real TCP relay in front of MariaDB or Redis. ``stop`` cuts every connection and
    stops listening (an outage); ``start`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0
        """Bumped by ``stop``: a connection accepted before it is not relayed after it."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._generation += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    def url_for(self, url: str) -> str:
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        generation = self._generation
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        if generation != self._generation:  # stopped while it connected upstream
            writer.close()
            up_writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Callable[[str, int], TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.stop()
