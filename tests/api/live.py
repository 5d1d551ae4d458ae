"""The API on a real socket (uvicorn in the test's loop), for streams read as they come:
httpx's ASGI transport hands a response over only once the app has finished it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from ansflow.api.app import create_app
from ansflow.config import Settings
from tests.api.conftest import mint_token


@dataclass
class Live:
    base: str
    token: str
    app: Any

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30,
                                 headers={"Authorization": f"Bearer {token or self.token}"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_http(settings: Settings, scope: str = "admin") -> AsyncIterator[Live]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn stopped while starting"
        await asyncio.sleep(0.02)
    try:
        token = await mint_token(app.state.resources, scope)
        yield Live(f"http://127.0.0.1:{port}", token, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


async def read_events(response: httpx.Response) -> AsyncIterator[Event | str]:
    """Events as they arrive; a comment (keep-alive) comes as its text."""
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        if not block:
            continue
        fields: dict[str, str] = {}
        comments = [b[1:].strip() for b in block if b.startswith(":")]
        for entry in block:
            if not entry.startswith(":"):
                name, _, value = entry.partition(":")
                fields[name] = value.removeprefix(" ")
        block = []
        if "event" in fields:
            yield Event(fields["event"], json.loads(fields["data"]), fields.get("id"))
        else:
            for comment in comments:
                yield comment
