"""A minimal HTTP/1.1 receiver on 127.0.0.1 standing in for the services the engine posts
to (webhooks, chat services, git hosts): it records every request and answers as told."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers with ``responses`` in turn, repeating the last one,
    each with ``answer_headers``."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    responses: list[tuple[int, bytes]] = field(default_factory=lambda: [(200, b"ok")])
    answer_headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, *responses: tuple[int, object]) -> None:
        self.responses = [(status, body if isinstance(body, bytes) else json.dumps(body).encode())
                          for status, body in responses]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {name.strip().lower(): value.strip()
                   for name, value in (line.split(":", 1) for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, target, headers, body))
        status, payload = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.answer_headers.items())
        writer.write(f"HTTP/1.1 {status} Whatever\r\n{extra}Content-Length: {len(payload)}\r\n"
                     "Connection: close\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()

    async def received(self, count: int, within: float = 30) -> list[Request]:
        """The requests, once there are ``count`` of them (fails after ``within`` s)."""
        deadline = time.monotonic() + within
        while len(self.requests) < count:
            assert time.monotonic() < deadline, self.requests
            await asyncio.sleep(0.05)
        return self.requests
