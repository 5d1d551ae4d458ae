"""A concurrency group spans API processes: two real ``ansflow serve`` processes on one
MariaDB, each running executions in-process, never run two of one group at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.api.conftest import mint_token
from tests.builders import pipeline_doc, step

ANSFLOW = str(Path(sys.executable).with_name("ansflow"))
TERMINAL = {"success", "failed", "cancelled", "timed_out", "error"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_process(settings: Settings, log: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update(ANSFLOW_DATABASE_URL=settings.database_url,
               ANSFLOW_WORKSPACE_ROOT=str(settings.workspace_root),
               ANSFLOW_ARTIFACT_ROOT=str(settings.artifact_root),
               ANSFLOW_SWEEP_INTERVAL_SECONDS="1")
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([ANSFLOW, "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def finished(client: httpx.AsyncClient, base: str, execution_id: int
                   ) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        record: dict[str, Any] = (await client.get(
            f"{base}/api/v1/executions/{execution_id}")).json()
        if record["status"] in TERMINAL:
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.1)


async def test_a_group_spans_two_api_processes(settings: Settings, tmp_path: Path) -> None:
    async with Resources.open(settings) as resources:
        token = await mint_token(resources, "admin")
    doc = pipeline_doc(step("deploy", "sleep 1.5"), concurrency="deploy-${{ vars.env }}")
    with api_process(settings, tmp_path / "a.log") as a, \
            api_process(settings, tmp_path / "b.log") as b:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                     timeout=30) as client:
            created = await client.post(f"{a}/api/v1/pipelines", json=doc)
            assert created.status_code == 201, created.text
            url = f"/api/v1/pipelines/{created.json()['id']}/executions"
            body = {"variables": {"env": "prod"}}
            # started together, on both processes: one runs, one waits, and the newest
            # of those waiting supersedes the other
            started = await asyncio.gather(*(client.post(f"{base}{url}", json=body)
                                             for base in (a, b, a)))
            ids = [r.json()["id"] for r in started]
            records = [await finished(client, a, i) for i in ids]
    ran = [r for r in records if r["status"] == "success"]
    assert len(ran) == 2, [(r["id"], r["status"], r["error"]) for r in records]
    superseded = next(r for r in records if r["status"] == "cancelled")
    assert superseded["error"].startswith("superseded by execution ")
    assert superseded["id"] != max(ids)
    first, second = sorted((r["steps"][0] for r in ran), key=lambda s: s["started_at"])
    assert (datetime.fromisoformat(second["started_at"])
            >= datetime.fromisoformat(first["completed_at"]))
