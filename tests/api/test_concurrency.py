"""Concurrency groups through the API (in-process execution on MariaDB): one running per
group, the newest waits and supersedes an older waiting one, cancel_in_progress."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import create, start, step_of, wait_for, wait_for_all
from tests.builders import gated, pipeline_doc, step

MAIN = "refs/heads/main"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def grouped(script: str, **concurrency: Any) -> dict[str, Any]:
    return pipeline_doc(step("deploy", script),
                        concurrency={"group": "deploy-${{ trigger.branch }}", **concurrency})


def running(record: dict[str, Any]) -> bool:
    return step_of(record, "deploy")["status"] == "running"


async def test_the_newest_waits_and_supersedes_an_older_waiting_one(
        client: httpx.AsyncClient, tmp_path: Path) -> None:
    go = tmp_path / "go"
    pipeline = await create(client, grouped(gated(go)))
    first = await start(client, pipeline["id"], ref=MAIN)
    await wait_for(client, first["id"], running)
    second = await start(client, pipeline["id"], ref=MAIN)
    other_branch = await start(client, pipeline["id"], ref="refs/heads/dev")
    record = await wait_for(client, second["id"], lambda r: (
        step_of(r, "deploy")["waiting_for"] != ["a parallel slot (0 of 5 in use)"]))
    assert record["status"] == "queued"
    assert step_of(record, "deploy")["waiting_for"] == [
        f"the concurrency group 'deploy-main' (held by execution {first['id']})"]
    third = await start(client, pipeline["id"], ref=MAIN)
    superseded = await wait_for(client, second["id"])
    # another branch is another group: it runs alongside the first
    await wait_for_all(client, [first["id"], other_branch["id"]],
                       lambda records: all(map(running, records)))
    go.touch()
    assert superseded["status"] == "cancelled"
    assert superseded["error"] == (f"superseded by execution {third['id']} in concurrency "
                                   "group 'deploy-main'")
    assert step_of(superseded, "deploy")["status"] == "cancelled"
    assert superseded["started_at"] is None
    done = [await wait_for(client, e["id"]) for e in (first, third, other_branch)]
    assert [r["status"] for r in done] == ["success", "success", "success"]
    first_run, third_run, dev_run = (step_of(r, "deploy") for r in done)
    assert ts(third_run["started_at"]) >= ts(first_run["completed_at"])
    assert ts(dev_run["started_at"]) < ts(first_run["completed_at"])


async def test_cancel_in_progress_cancels_the_running_one(client: httpx.AsyncClient) -> None:
    pipeline = await create(client, grouped("sleep 30", cancel_in_progress=True))
    quick = await create(client, grouped("echo replaced", cancel_in_progress=True))
    first = await start(client, pipeline["id"], ref=MAIN)
    await wait_for(client, first["id"], running)
    second = await start(client, quick["id"], ref=MAIN)
    cancelled = await wait_for(client, first["id"], within=20)
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == (f"cancelled: execution {second['id']} started in "
                                  "concurrency group 'deploy-main' (cancel_in_progress)")
    assert step_of(cancelled, "deploy")["status"] == "cancelled"
    record = await wait_for(client, second["id"])
    assert record["status"] == "success"
    assert ts(step_of(record, "deploy")["started_at"]) >= ts(cancelled["completed_at"])


async def test_a_step_group_serializes_only_that_step(client: httpx.AsyncClient,
                                                      tmp_path: Path) -> None:
    builds_go, deploys_go = tmp_path / "builds-go", tmp_path / "deploys-go"
    doc = pipeline_doc(
        step("build", gated(builds_go)),
        step("deploy", gated(deploys_go), depends_on=["build"],
             concurrency="deploy-${{ vars.env }}"),
    )
    pipeline = await create(client, doc)
    runs = [await start(client, pipeline["id"], variables={"env": "prod"}) for _ in range(3)]
    ids = [e["id"] for e in runs]
    # the builds are not in the group: all three run at once
    await wait_for_all(client, ids, lambda records: all(
        step_of(r, "build")["status"] == "running" for r in records))
    builds_go.touch()
    # one deploy holds the group; of the two queued behind it, the newer supersedes the older
    await wait_for_all(client, ids, lambda records: {"cancelled", "running"} <= {
        step_of(r, "deploy")["status"] for r in records})
    deploys_go.touch()
    records = [await wait_for(client, e["id"], within=60) for e in runs]
    statuses = sorted(r["status"] for r in records)
    assert statuses == ["cancelled", "success", "success"], statuses
    deploys = sorted((step_of(r, "deploy") for r in records if r["status"] == "success"),
                     key=lambda d: d["started_at"])
    assert ts(deploys[1]["started_at"]) >= ts(deploys[0]["completed_at"])
    loser = next(r for r in records if r["status"] == "cancelled")
    assert step_of(loser, "deploy")["error"].startswith("superseded by execution ")
    assert "in concurrency group 'deploy-prod'" in step_of(loser, "deploy")["error"]
    assert loser["id"] != max(r["id"] for r in records)


async def test_cancelling_a_waiting_execution(client: httpx.AsyncClient,
                                              tmp_path: Path) -> None:
    go = tmp_path / "go"
    pipeline = await create(client, grouped(gated(go)))
    first = await start(client, pipeline["id"], ref=MAIN)
    await wait_for(client, first["id"], running)
    second = await start(client, pipeline["id"], ref=MAIN)
    await wait_for(client, second["id"], lambda r: "concurrency group" in " ".join(
        step_of(r, "deploy")["waiting_for"]))
    cancel = await client.post(f"/api/v1/executions/{second['id']}/cancel")
    assert cancel.status_code == 202 and cancel.json()["status"] == "cancelled"
    go.touch()
    assert (await wait_for(client, first["id"]))["status"] == "success"


async def test_a_parked_holder_is_cancelled_in_progress(client: httpx.AsyncClient) -> None:
    gate = {"name": "approve", "type": "approval", "config": {}}
    doc = pipeline_doc(gate, step("deploy", "true", depends_on=["approve"]),
                       concurrency={"group": "release", "cancel_in_progress": True})
    pipeline = await create(client, doc)
    first = await start(client, pipeline["id"])
    await wait_for(client, first["id"], lambda r: step_of(r, "approve")["status"] == "waiting")
    second = await start(client, pipeline["id"])
    cancelled = await wait_for(client, first["id"], within=20)
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["steps"]] == ["cancelled", "cancelled"]
    assert "(cancel_in_progress)" in cancelled["error"]
    record = await wait_for(client, second["id"], lambda r: (
        step_of(r, "approve")["status"] == "waiting"))
    assert record["status"] == "running"
