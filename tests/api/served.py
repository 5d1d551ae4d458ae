"""``ansflow serve`` as a real process (uvicorn, embedded SQLite, in-process execution)
on a free port, with a token minted by ``ansflow token create``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
               ANSFLOW_WORKSPACE_ROOT=str(tmp_path / "ws"),
               ANSFLOW_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
    return env


@pytest.fixture
def token(env: dict[str, str], tmp_path: Path) -> str:
    """A token minted as a user would: ``ansflow token create`` prints it alone."""
    result = subprocess.run([sys.executable, "-m", "ansflow.cli.app", "token", "create",
                             "--scope", "admin", "--name", "client-test"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@contextlib.contextmanager
def serve_process(tmp_path: Path, env: dict[str, str]
                  ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``ansflow serve`` on a free port; yields its base URL and the process."""
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ansflow.cli.app", "serve", "--host", "127.0.0.1",
         "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, tmp_path / "server.log")
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str], token: str) -> Iterator[str]:
    """``ansflow serve`` on a free port with a fresh SQLite file; yields its base URL."""
    with serve_process(tmp_path, env) as (base, _):
        yield base


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ansflow serve exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"ansflow serve did not answer within 30 s:\n{log.read_text()}")
