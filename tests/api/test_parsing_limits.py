"""Alias bombs and 20 MB definitions, posted to a real ``ansflow serve`` (uvicorn) while
another process probes ``/healthz`` every 50 ms: each is refused at once, naming the
limit, and ``/healthz`` keeps answering (PRODUCT.md section 8, "Parsing limits").

Latencies are measured on the client side: a refusal from writing the request's headers
to reading the status line, ``/healthz`` per request in a process of its own (so this
test's own work does not slow its probes). The 20 MB document is declared by its
Content-Length and its bytes are not sent: a server that waited for them would never
answer. Streamed (chunked), it is sent up to just past the 1 MiB limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.spec.test_limits import alias_bomb

ANSFLOW = Path(sys.executable).parent / "ansflow"
SECONDS = 5.0
"""How long /healthz is probed without attacks, then under attack (about 100 probes)."""
REFUSAL_BUDGET = 0.1
"""Seconds (PRODUCT.md section 8): what the median refusal must stay under."""
REFUSAL_CEILING = 1.0
"""No single refusal may take longer, even on a loaded CI box (about 50 ms at worst here)."""
HEALTHZ_P99 = 0.05
"""Seconds (PRODUCT.md section 8) that the attacks may add to the /healthz p99 the same
server shows without them. Not an absolute bound: on the shared 2-core machines the
tests run on, /healthz alone has a p99 of 20-60 ms when the other cores are busy. A
parser on the event loop would add seconds (the alias bomb froze it for 84 s)."""
HEALTHZ_CEILING = 1.0
"""No /healthz answer may take longer while the attacks run (under 100 ms here)."""

PROBE = """
import json, sys, time, httpx
url, stop = sys.argv[1], sys.argv[2]
latencies, errors = [], 0
with httpx.Client(timeout=5) as client:
    next_at = time.perf_counter()
    while True:
        started = time.perf_counter()
        try:
            ok = client.get(url).status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - started)
        errors += not ok
        try:
            open(stop).close()
            break
        except FileNotFoundError:
            pass
        next_at += 0.05
        time.sleep(max(0.0, next_at - time.perf_counter()))
print(json.dumps({"latencies": latencies, "errors": errors}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base: str
    port: int
    token: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``ansflow serve`` with its own SQLite file, shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
               ANSFLOW_WORKSPACE_ROOT=str(tmp_path / "ws"))
    token = subprocess.run([str(ANSFLOW), "token", "create", "--scope", "admin"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True
                           ).stdout.strip()
    port = _free_port()
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen([str(ANSFLOW), "serve", "--port", str(port)], env=env,
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp_path / "server.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.1)
            yield Server(base, port, token)
        finally:
            process.terminate()
            process.wait(15)


@contextlib.asynccontextmanager
async def probing(url: str, stop: Path) -> AsyncIterator[dict[str, list[float]]]:
    """``/healthz`` every 50 ms from another process; the latencies once the block ends."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, url, str(stop), stdout=asyncio.subprocess.PIPE)
    found: dict[str, list[float]] = {}
    try:
        await asyncio.sleep(0.5)  # a few probes before the first attack
        yield found
        await asyncio.sleep(0.3)
    finally:
        stop.touch()
        out, _ = await probe.communicate()
    result = json.loads(out)
    found["latencies"] = result["latencies"]
    assert result["errors"] == 0, f"/healthz failed {result['errors']} times"


async def post(server: Server, path: str, body: bytes, content_type: str, *,
               chunked: bool = False, declared: int | None = None
               ) -> tuple[int, float, dict[str, Any]]:
    """Status, seconds from the headers sent to the status line read, and the answer.

    ``declared``: send only the headers, with this Content-Length (a 20 MB upload
    whose refusal must not wait for its bytes: had the server waited, it would never
    answer). Otherwise the whole ``body`` is sent, chunked or not.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    length = ("Transfer-Encoding: chunked" if chunked
              else f"Content-Length: {declared if declared is not None else len(body)}")
    writer.write(f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "
                 f"{server.token}\r\nContent-Type: {content_type}\r\n{length}\r\n"
                 "Connection: close\r\n\r\n".encode())
    started = time.perf_counter()
    if declared is None:
        for start in range(0, len(body), 64 * 1024):
            part = body[start:start + 64 * 1024]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
        if chunked:
            writer.write(b"0\r\n\r\n")
    try:
        status = await reader.readline()
        elapsed = time.perf_counter() - started
        head = await reader.readuntil(b"\r\n\r\n")
        size = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:"))
        answer = json.loads(await reader.readexactly(size))
    finally:
        writer.close()
    return int(status.split()[1]), elapsed, answer


def twenty_megabytes() -> bytes:
    steps = [{"name": f"s{i}", "type": "custom", "config": {"script": "echo " + "x" * 200}}
             for i in range(80_000)]
    body = json.dumps({"name": "big", "steps": steps}).encode()
    assert len(body) > 20 * 1024 * 1024
    return body


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def test_limits_refuse_at_once_while_healthz_keeps_answering(server: Server,
                                                                    tmp_path: Path) -> None:
    bomb, big = alias_bomb().encode(), twenty_megabytes()
    # a streamed body is refused once it passes 1 MiB: it is sent up to just past that,
    # so the server has read all of it when it answers and closes
    streamed = big[:1024 * 1024 + 1]
    attacks: list[tuple[bytes, str, dict[str, Any], int, str]] = [
        (bomb, "application/yaml", {}, 422, "the limit of 10000 nodes"),
        (b"", "application/json", {"declared": len(big)}, 413,
         f"the pipeline definition is {len(big)} bytes; the limit is 1048576 bytes"),
        (streamed, "application/json", {"chunked": True}, 413,
         "the pipeline definition is larger than the limit; the limit is 1048576 bytes"),
    ]
    await warm_up(server)
    async with probing(f"{server.base}/healthz", tmp_path / "stop-baseline") as baseline:
        await asyncio.sleep(SECONDS)
    refusals: list[float] = []
    async with probing(f"{server.base}/healthz", tmp_path / "stop") as healthz:
        until = time.monotonic() + SECONDS
        while time.monotonic() < until:
            for path in ("/api/v1/pipelines/validate", "/api/v1/pipelines"):
                for body, content_type, how, status, message in attacks:
                    code, elapsed, answer = await post(server, path, body, content_type, **how)
                    assert code == status, (path, code, answer)
                    assert message in answer["error"]["message"], answer
                    refusals.append(elapsed)
    quiet, attacked = baseline["latencies"], healthz["latencies"]
    report = (f"refusals: median {ms(statistics.median(refusals))}, max {ms(max(refusals))} "
              f"({len(refusals)}); /healthz without attacks: p50 {ms(statistics.median(quiet))},"
              f" p99 {ms(p99(quiet))} ({len(quiet)} probes); under attack: p50 "
              f"{ms(statistics.median(attacked))}, p99 {ms(p99(attacked))}, max "
              f"{ms(max(attacked))} ({len(attacked)} probes)")
    sys.stderr.write(report + "\n")  # the figures, for the record (pytest -s)
    assert statistics.median(refusals) <= REFUSAL_BUDGET, report
    assert max(refusals) <= REFUSAL_CEILING, report
    assert p99(attacked) <= p99(quiet) + HEALTHZ_P99, report
    assert max(attacked) <= HEALTHZ_CEILING, report


async def warm_up(server: Server) -> None:
    """First use imports the definition checks and step types: not what is measured."""
    small = json.dumps({"name": "warm", "steps": [{"name": "a", "type": "custom",
                                                   "config": {"script": "true"}}]}).encode()
    code, _, answer = await post(server, "/api/v1/pipelines/validate", small,
                                 "application/json")
    assert code == 200, answer
