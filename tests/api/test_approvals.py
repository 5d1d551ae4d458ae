"""Approval steps through the API (in-process execution on MariaDB): the execution parks
while the step waits, a decision resumes it at once, and who decided is recorded."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest

from ansflow.config import Settings
from ansflow.db.models import PipelineExecution
from tests.api.conftest import (
    Serve,
    assert_envelope,
    create,
    mint_token,
    start,
    step_of,
    wait_for,
)
from tests.api.test_events import parse
from tests.builders import pipeline_doc, step

# the next step starts this soon after a decision (PRODUCT.md section 11)
RESUME_SECONDS = 1.0


def gated(approvers: list[str] | None = None, timeout: float | None = None
          ) -> dict[str, Any]:
    config: dict[str, Any] = {"message": "ship ${{ vars.version }}?"}
    if approvers is not None:
        config["approvers"] = approvers
    if timeout is not None:
        config["timeout"] = timeout
    return pipeline_doc(
        step("build", "echo built"),
        {"name": "approve", "type": "approval", "depends_on": ["build"], "config": config},
        step("deploy", "echo deploying", depends_on=["approve"]),
    )


def waiting(record: dict[str, Any]) -> bool:
    return step_of(record, "approve")["status"] == "waiting"


async def parked(client: httpx.AsyncClient, execution_id: int) -> PipelineExecution:
    """The execution's row: parked means no worker and no lease."""
    resources = client._transport.app.state.resources  # type: ignore[attr-defined]
    async with resources.db.session() as session:
        row = await session.get(PipelineExecution, execution_id)
        assert row is not None
        return row


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_approve_resumes_within_a_second_and_records_who(
        client: httpx.AsyncClient) -> None:
    pipeline = await create(client, gated())
    execution = await start(client, pipeline["id"], variables={"version": "1.2"})
    record = await wait_for(client, execution["id"], waiting)
    assert record["status"] == "running"
    gate = step_of(record, "approve")
    assert gate["approval"]["message"] == "ship 1.2?"
    assert gate["approval"]["approvers"] == [] and gate["approval"]["decision"] is None
    assert gate["waiting_for"] == ["an approval by a token with the trigger scope"]
    assert step_of(record, "deploy")["waiting_for"] == ["approve"]
    row = await parked(client, execution["id"])
    assert row.parked_at is not None and row.worker_id is None and row.lease_expires_at is None

    answer = await client.post(f"/api/v1/executions/{execution['id']}/steps/approve/approve",
                               json={"comment": "looks good"})
    assert answer.status_code == 200, answer.text
    assert step_of(answer.json(), "approve")["approval"]["decision"] == "approved"
    record = await wait_for(client, execution["id"])
    assert record["status"] == "success", record
    gate, deploy = step_of(record, "approve"), step_of(record, "deploy")
    approval = gate["approval"]
    assert approval["decision"] == "approved" and approval["decided_by"] == "test"
    assert approval["comment"] == "looks good"
    assert ts(approval["decided_at"]) == ts(gate["completed_at"])
    resumed = (ts(deploy["started_at"]) - ts(approval["decided_at"])).total_seconds()
    assert 0 <= resumed <= RESUME_SECONDS, resumed
    assert deploy["ready_at"] == gate["completed_at"]
    assert (await parked(client, execution["id"])).parked_at is None
    audit = await client.get("/api/v1/audit", params={"action": "step.approve"})
    assert audit.status_code == 200, audit.text
    event = next(e for e in audit.json()["items"]
                 if e["details"]["execution_id"] == execution["id"])
    assert (event["actor"], event["actor_type"], event["resource_type"]) == (
        "test", "token", "step")
    assert event["details"] == {"execution_id": execution["id"], "step": "approve",
                                "comment": "looks good"}


async def test_reject_fails_the_step_and_skips_what_follows(client: httpx.AsyncClient
                                                            ) -> None:
    pipeline = await create(client, gated())
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"], waiting)
    answer = await client.post(f"/api/v1/executions/{execution['id']}/steps/approve/reject",
                               json={"comment": "not today"})
    assert answer.status_code == 200, answer.text
    record = await wait_for(client, execution["id"])
    assert record["status"] == "failed"
    gate = step_of(record, "approve")
    assert gate["status"] == "failed" and gate["error_code"] == "rejected"
    assert gate["error"] == "rejected by test: not today"
    assert gate["approval"]["decision"] == "rejected"
    assert step_of(record, "deploy")["status"] == "skipped"
    again = await client.post(f"/api/v1/executions/{execution['id']}/steps/approve/approve")
    assert_envelope(again, 409, "conflict")


async def test_only_named_approvers_may_decide(settings: Settings, serve: Serve) -> None:
    async with serve(settings) as client:
        resources = client._transport.app.state.resources  # type: ignore[attr-defined]
        alice = await mint_token(resources, "trigger", name="alice")
        bob = await mint_token(resources, "trigger", name="bob")
        reader = await mint_token(resources, "read", name="alice")
        pipeline = await create(client, gated(approvers=["alice"]))
        execution = await start(client, pipeline["id"])
        record = await wait_for(client, execution["id"], waiting)
        assert step_of(record, "approve")["waiting_for"] == ["an approval by alice"]
        url = f"/api/v1/executions/{execution['id']}/steps/approve/approve"
        for token, status in ((bob, 403), (reader, 403), (None, 401)):
            headers = {"Authorization": f"Bearer {token}" if token else ""}
            assert_envelope(await client.post(url, headers=headers), status)
        # the admin token of the client is not named either
        forbidden = assert_envelope(await client.post(url), 403, "forbidden")
        assert forbidden["message"] == "step 'approve' may only be decided by: alice"
        answer = await client.post(url, headers={"Authorization": f"Bearer {alice}"})
        assert answer.status_code == 200, answer.text
        record = await wait_for(client, execution["id"])
        assert record["status"] == "success"
        assert step_of(record, "approve")["approval"]["decided_by"] == "alice"


@pytest.mark.parametrize(("path", "status", "message"), [
    ("steps/build/approve", 409, "step 'build' is a 'custom' step, not an approval"),
    ("steps/ghost/approve", 404, "has no step named 'ghost'"),
    ("steps/deploy/reject", 409, "step 'deploy' is a 'custom' step, not an approval"),
])
async def test_deciding_something_else_is_refused(client: httpx.AsyncClient, path: str,
                                                  status: int, message: str) -> None:
    pipeline = await create(client, gated())
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"], waiting)
    error = assert_envelope(
        await client.post(f"/api/v1/executions/{execution['id']}/{path}"), status)
    assert message in error["message"]
    bad_body = await client.post(f"/api/v1/executions/{execution['id']}/steps/approve/approve",
                                 json={"comment": "x" * 5000})
    assert_envelope(bad_body, 422)
    cancel = await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    assert cancel.status_code == 202
    record = await wait_for(client, execution["id"])
    assert record["status"] == "cancelled"
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        "build": "success", "approve": "cancelled", "deploy": "cancelled"}
    assert step_of(record, "approve")["approval"]["decision"] == "cancelled"


@pytest.mark.parametrize("verb", ["approve", "reject"])
async def test_the_caller_is_checked_before_the_execution_is_read(client: httpx.AsyncClient,
                                                                  verb: str) -> None:
    """No token, or a read token: 401 or 403 even for an execution that does not exist
    (nothing is read for a caller who may not decide)."""
    url = f"/api/v1/executions/999999999/steps/approve/{verb}"
    assert_envelope(await client.post(url, headers={"Authorization": "Bearer nope"}), 401)
    resources = client._transport.app.state.resources  # type: ignore[attr-defined]
    reader = await mint_token(resources, "read", name="reader")
    assert_envelope(await client.post(url, headers={"Authorization": f"Bearer {reader}"}), 403)


async def test_an_unanswered_approval_times_out(settings: Settings, serve: Serve) -> None:
    fast_sweep = settings.model_copy(update={"sweep_interval_seconds": 1})
    async with serve(fast_sweep) as client:
        pipeline = await create(client, gated(timeout=1))
        execution = await start(client, pipeline["id"])
        record = await wait_for(client, execution["id"], waiting)
        expires = step_of(record, "approve")["approval"]["expires_at"]
        record = await wait_for(client, execution["id"], within=15)
        assert record["status"] == "failed", record
        gate = step_of(record, "approve")
        assert gate["status"] == "failed" and gate["error_code"] == "approval_timeout"
        assert gate["error"] == "no decision within 1s"
        assert gate["approval"]["decision"] == "timed_out"
        assert ts(gate["completed_at"]) >= ts(expires)
        assert step_of(record, "deploy")["status"] == "skipped"
        late = await client.post(
            f"/api/v1/executions/{execution['id']}/steps/approve/approve")
        assert_envelope(late, 409)


async def test_the_events_stream_shows_the_wait_and_the_decision(
        client: httpx.AsyncClient) -> None:
    pipeline = await create(client, gated())
    execution = await start(client, pipeline["id"])
    await wait_for(client, execution["id"], waiting)

    async def decide_soon() -> None:
        await asyncio.sleep(0.5)
        answer = await client.post(
            f"/api/v1/executions/{execution['id']}/steps/approve/reject")
        assert answer.status_code == 200, answer.text

    decider = asyncio.create_task(decide_soon())
    response = await asyncio.wait_for(client.get(
        f"/api/v1/executions/{execution['id']}/events", params={"interval": 0.05}),
        timeout=30)
    await decider
    events = [(kind, data) for kind, data in parse(response.text)]
    statuses = [(d["step"], d["status"]) for kind, d in events if kind == "step"]
    assert statuses.index(("approve", "waiting")) < statuses.index(("approve", "failed"))
    assert statuses.index(("approve", "failed")) < statuses.index(("deploy", "skipped"))
    assert events[-1] == ("end", {"id": execution["id"], "status": "failed"})
