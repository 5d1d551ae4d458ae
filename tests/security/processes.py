"""Real ``ansflow`` processes (``serve`` and one-shot commands) for the trust tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from ansflow.config import Settings

ANSFLOW = str(Path(sys.executable).with_name("ansflow"))


def ansflow_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an ``ansflow`` process using ``settings``' database and dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update({
        "ANSFLOW_DATABASE_URL": settings.database_url,
        "ANSFLOW_WORKSPACE_ROOT": str(settings.workspace_root),
        "ANSFLOW_ARTIFACT_ROOT": str(settings.artifact_root),
        "ANSFLOW_KILL_GRACE_SECONDS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })
    env.update({f"ANSFLOW_{k.upper()}": v for k, v in extra.items()})
    return env


def ansflow(env: dict[str, str], *args: str, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run one ``ansflow`` command to its end."""
    return subprocess.run([ANSFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def api_server(env: dict[str, str], log: Path) -> AsyncIterator[str]:
    """``ansflow serve`` on a free port; yields its base URL once ``/healthz`` answers."""
    port = free_port()
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            ANSFLOW, "serve", "--port", str(port), env=env, stdout=output,
            stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            await _healthy(base, process, log)
            yield base
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _healthy(base: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60  # generous: start-up imports on a loaded 2-core box
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            assert process.returncode is None, f"ansflow serve exited:\n{log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"ansflow serve did not answer within 60 s:\n{log.read_text()}")
