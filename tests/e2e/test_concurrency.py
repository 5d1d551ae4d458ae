"""A concurrency group spans API processes: two real ``ansflow serve`` processes on one
MariaDB, each running executions in-process, never run two of one group at once."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import httpx

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.api.conftest import TERMINAL, mint_token, wait_for_all
from tests.builders import gated, pipeline_doc, step
from tests.e2e.workers import api_processes


async def test_a_group_spans_two_api_processes(settings: Settings, tmp_path: Path) -> None:
    async with Resources.open(settings) as resources:
        token = await mint_token(resources, "admin")
    go = tmp_path / "go"
    doc = pipeline_doc(step("deploy", gated(go)),
                       concurrency="deploy-${{ vars.env }}")
    with api_processes(settings, tmp_path, count=2) as apis:
        a, b = (api.url for api in apis)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                     base_url=a, timeout=30) as client:
            created = await client.post(f"{a}/api/v1/pipelines", json=doc)
            assert created.status_code == 201, created.text
            url = f"/api/v1/pipelines/{created.json()['id']}/executions"
            body = {"variables": {"env": "prod"}}
            # started together, on both processes: one runs, one waits, and the newest
            # of those waiting supersedes the other
            started = await asyncio.gather(*(client.post(f"{base}{url}", json=body)
                                             for base in (a, b, a)))
            ids = [r.json()["id"] for r in started]
            # the deploy holding the group waits at the gate until the supersede is seen
            await wait_for_all(client, ids, lambda records: any(
                r["status"] == "cancelled" for r in records))
            go.touch()
            records = await wait_for_all(client, ids, lambda records: all(
                r["status"] in TERMINAL for r in records))
    ran = [r for r in records if r["status"] == "success"]
    assert len(ran) == 2, [(r["id"], r["status"], r["error"]) for r in records]
    superseded = next(r for r in records if r["status"] == "cancelled")
    assert superseded["error"].startswith("superseded by execution ")
    assert superseded["id"] != max(ids)
    first, second = sorted((r["steps"][0] for r in ran), key=lambda s: s["started_at"])
    assert (datetime.fromisoformat(second["started_at"])
            >= datetime.fromisoformat(first["completed_at"]))
