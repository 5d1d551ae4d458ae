"""Executions through the API: start, poll, logs by offset, list filters, cancel, and a
Redis outage that must leave no execution behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio
from sqlalchemy import update

from ansflow.config import Settings
from ansflow.db.models import PipelineExecution
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.api.conftest import (
    Serve,
    TcpProxy,
    assert_envelope,
    create,
    start,
    step_of,
    wait_for,
)
from tests.builders import pipeline_doc, step
from tests.conftest import REDIS_URL


async def test_start_poll_and_read_logs(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(
        step("greet", "echo ref=$ANSFLOW_REF; sleep 0.3; echo 'hello ${{ vars.who }}'; "
                      "sleep 0.3; echo bye"),
        step("after", "echo done", depends_on=["greet"]))
    pipeline = await create(client, doc)
    started = await start(client, pipeline["id"], ref="refs/heads/main", commit="abc123",
                          variables={"who": "world"})
    assert started["status"] == "queued"
    assert started["trigger"] == {"type": "api", "ref": "refs/heads/main", "commit": "abc123",
                                  "event": "manual", "actor": "test",
                                  "variables": {"who": "world"}}
    assert {s["name"]: s["status"] for s in started["steps"]} == {"greet": "pending",
                                                                  "after": "pending"}
    record = await wait_for(client, started["id"])
    assert record["status"] == "success", record
    assert record["critical_path"]["steps"] == ["greet", "after"]
    greet = step_of(record, "greet")
    assert greet["exit_code"] == 0 and len(greet["attempts"]) == 1

    logs = f"/api/v1/executions/{started['id']}/steps/greet/logs"
    whole = (await client.get(logs)).json()
    assert whole["complete"] and whole["offset"] == 0 and whole["truncated_bytes"] == 0
    assert "ref=refs/heads/main\n" in whole["content"]
    assert "hello world\n" in whole["content"] and whole["content"].endswith("bye\n")
    assert whole["next_offset"] == len(whole["content"].encode())
    head = (await client.get(logs, params={"offset": 0, "limit": 1})).json()
    assert not head["complete"] and 0 < head["next_offset"] < whole["next_offset"]
    tail = (await client.get(logs, params={"offset": head["next_offset"]})).json()
    assert tail["offset"] == head["next_offset"] and tail["complete"]
    assert head["content"] + tail["content"] == whole["content"]
    middle = (await client.get(logs, params={"offset": 1})).json()
    assert middle["content"] == whole["content"][1:]
    past = (await client.get(logs, params={"offset": whole["next_offset"]})).json()
    assert past["content"] == "" and past["complete"]


async def test_tail_a_running_step(client: httpx.AsyncClient) -> None:
    script = "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.2; done"
    pipeline = await create(client, pipeline_doc(step("count", script)))
    execution = await start(client, pipeline["id"])
    logs = f"/api/v1/executions/{execution['id']}/steps/count/logs"
    content, offset, reads, seen_incomplete = "", 0, 0, False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = (await client.get(logs, params={"offset": offset})).json()
        assert page["offset"] == offset
        content += page["content"]
        offset = page["next_offset"]
        reads += 1
        if page["complete"]:
            break
        seen_incomplete = seen_incomplete or bool(page["content"])
        await asyncio.sleep(0.05)
    assert content.startswith("$ ")  # the command line, then its output
    assert content.split("\n", 1)[1] == "".join(f"line {i}\n" for i in range(1, 7))
    assert seen_incomplete, "the tail never saw output before the step ended"


async def test_unknown_step_and_bad_bodies(client: httpx.AsyncClient) -> None:
    pipeline = await create(client, pipeline_doc(step("only")))
    execution = await start(client, pipeline["id"])
    missing = await client.get(f"/api/v1/executions/{execution['id']}/steps/nope/logs")
    assert "'nope'" in assert_envelope(missing, 404, "not_found")["message"]
    empty = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions")
    assert empty.status_code == 202 and empty.json()["trigger"]["variables"] == {}
    extra = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions",
                              json={"branch": "main"})
    assert assert_envelope(extra, 422, "invalid_request")["details"][0]["field"] == \
        "body.branch"
    malformed = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions",
                                  content=b"{not json", headers={"Content-Type":
                                                                 "application/json"})
    assert "invalid JSON" in assert_envelope(malformed, 422, "invalid_request")["message"]
    assert_envelope(await client.post("/api/v1/pipelines/987654321/executions"), 404)
    await wait_for(client, execution["id"])
    await wait_for(client, empty.json()["id"])


async def test_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    ok = await create(client, pipeline_doc(step("a", "true")))
    bad = await create(client, pipeline_doc(step("a", "exit 3")))
    runs = [await start(client, ok["id"]), await start(client, ok["id"]),
            await start(client, bad["id"])]
    for run in runs:
        await wait_for(client, run["id"])

    async def listed(**params: Any) -> dict[str, Any]:
        response = await client.get("/api/v1/executions", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    mine = await listed(pipeline_id=ok["id"])
    assert mine["total"] == 2
    assert [e["id"] for e in mine["items"]] == [runs[1]["id"], runs[0]["id"]]
    page = await listed(pipeline_id=ok["id"], limit=1, offset=1)
    assert page["total"] == 2 and [e["id"] for e in page["items"]] == [runs[0]["id"]]
    failed = await listed(pipeline_id=bad["id"], status="failed")
    assert failed["total"] == 1 and failed["items"][0]["status"] == "failed"
    assert (await listed(pipeline_id=ok["id"], status="failed"))["total"] == 0
    assert (await listed(pipeline_id=ok["id"], trigger="api"))["total"] == 2
    assert (await listed(pipeline_id=ok["id"], trigger="webhook"))["total"] == 0
    wrong = await client.get("/api/v1/executions", params={"status": "done"})
    assert assert_envelope(wrong, 422)["details"][0]["field"] == "query.status.0"


async def test_cancel_a_running_execution(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("hold", "echo holding; sleep 30"),
                       step("after", "echo never", depends_on=["hold"]))
    pipeline = await create(client, doc)
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"],
                   lambda e: step_of(e, "hold")["status"] == "running")
    asked = time.monotonic()
    cancel = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["cancel_requested"] is True
    record = await wait_for(client, execution["id"], within=10)
    took = time.monotonic() - asked
    assert record["status"] == "cancelled", record
    assert took < 5, f"cancel took {took:.1f}s"
    assert step_of(record, "hold")["status"] == "cancelled"
    assert step_of(record, "after")["status"] == "cancelled"
    again = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    assert "cancelled" in assert_envelope(again, 409, "conflict")["message"]


async def test_redis_outage_leaves_no_execution(
        serve: Serve, settings: Settings, proxy_factory: Callable[[str, int], TcpProxy]
) -> None:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    proxy = proxy_factory(host_port.split(":")[0], int(host_port.split(":")[1]))
    await proxy.start()
    arq = settings.model_copy(update={"redis_url": proxy.url_for(REDIS_URL),
                                      "execution_backend": "arq"})
    direct = redis.asyncio.Redis.from_url(REDIS_URL)
    jobs: list[str] = []
    try:
        async with serve(arq) as client:
            pipeline = await create(client, pipeline_doc(step("a")))
            queued = await start(client, pipeline["id"])
            jobs.append(f"arq:job:execution:{queued['id']}")
            assert await direct.zcard(settings.queue_name) == 1
            metrics = (await client.get("/metrics")).text
            assert 'ansflow_queue_depth{backend="arq"} 1.0' in metrics
            await proxy.stop()
            refused = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions")
            assert "Redis" in assert_envelope(refused, 503, "service_unavailable")["message"]
            listed = (await client.get("/api/v1/executions",
                                       params={"pipeline_id": pipeline["id"]})).json()
            assert [e["id"] for e in listed["items"]] == [queued["id"]]
            ready = await client.get("/readyz")
            error = assert_envelope(ready, 503, "not_ready")
            assert [d["field"] for d in error["details"]] == ["queue (arq)"]
            await proxy.start()
            assert (await client.get("/readyz")).status_code == 200
            await _end_unrun(arq, queued["id"])
            deleted = await client.delete(f"/api/v1/pipelines/{pipeline['id']}?force=true")
            assert deleted.status_code == 204
    finally:
        await direct.delete(settings.queue_name, *jobs)
        await direct.aclose()


async def _end_unrun(settings: Settings, execution_id: int) -> None:
    """No worker runs this test's queue: end the queued execution so no sweeper sees it."""
    async with Resources.open(settings) as resources, resources.db.session() as session:
        await session.execute(update(PipelineExecution)
                              .where(PipelineExecution.id == execution_id)
                              .values(status="cancelled", completed_at=utcnow()))
        await session.commit()
